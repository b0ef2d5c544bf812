//! `lax broker --otlp-endpoint`: the broker's spans reach an OpenTelemetry collector over
//! OTLP/gRPC. A fake collector (the OTLP `TraceService`, served by tonic on a free loopback
//! port) records what it is sent; a real `lax broker` process on a real nats-server stores
//! one message that arrives with a W3C context and one that arrives without, and is stopped
//! with SIGTERM, which must send the last batch. The exported `lax.broker.publish` spans must
//! continue the given trace (same trace id, the caller's span as parent) or start one, and
//! carry the ids the broker wrote into the stored message's `traceparent`.

use std::{
    net::TcpListener as StdTcpListener,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::jetstream;
use lax_proto::broker::v1::{self as proto, broker_service_client::BrokerServiceClient};
use lax_testkit::{NatsServer, wait_for};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    common::v1::any_value::Value,
    trace::v1::Span,
};
use tokio::process::Command;

const DEADLINE: Duration = Duration::from_secs(60);

/// The caller's context: its trace, and its span the broker's span must be a child of.
const UPSTREAM: &str = "00-5bf92f3577b34da6a3ce929d0e0e4736-10f067aa0ba902b7-01";

/// An OTLP trace collector that keeps every span it is sent, with its service's name.
#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<(String, Span)>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.0.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|resource| &resource.attributes)
                .find(|kv| kv.key == "service.name")
                .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                .map(|value| match value {
                    Value::StringValue(name) => name.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for scope_spans in resource_spans.scope_spans {
                spans.extend(scope_spans.spans.into_iter().map(|s| (service.clone(), s)));
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    /// Serves on a free loopback port, returning its `http://` endpoint.
    async fn serve(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        endpoint
    }

    /// The `lax.broker.publish` span of message `id`, with its service name.
    fn broker_publish(&self, id: &str) -> Option<(String, Span)> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .find(|(_, span)| {
                span.name == "lax.broker.publish"
                    && span.attributes.iter().any(|kv| {
                        kv.key == "message_id"
                            && matches!(
                                kv.value.as_ref().and_then(|v| v.value.as_ref()),
                                Some(Value::StringValue(v)) if v == id
                            )
                    })
            })
            .cloned()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn free_port() -> u16 {
    StdTcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

/// Publishes `payload` as a persistent message through the broker, with `headers`.
async fn publish(
    broker: &mut BrokerServiceClient<tonic::transport::Channel>,
    payload: &str,
    headers: &[(&str, &str)],
) -> proto::PublishResponse {
    broker
        .publish(proto::PublishRequest {
            subject: "otlp.orders".into(),
            payload: payload.to_owned().into(),
            headers: headers
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                .collect(),
            options: Some(proto::PublishOptions {
                tier: "persistent".into(),
                require_ack: true,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("publish through the broker")
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_exports_its_spans_to_the_otlp_endpoint_and_flushes_on_sigterm() {
    let collector = Collector::default();
    let otlp_endpoint = collector.serve().await;
    let nats = NatsServer::start().await.expect("nats-server starts");
    let listen = format!("127.0.0.1:{}", free_port());
    let mut command = Command::new(env!("CARGO_BIN_EXE_lax"));
    for (name, _) in std::env::vars_os() {
        let name_text = name.to_string_lossy();
        if name_text.starts_with("LAX_") || name_text.starts_with("OTEL_") {
            command.env_remove(name);
        }
    }
    let mut broker_process = command
        .args(["broker", "--nats-url", &nats.url(), "--listen", &listen])
        .args(["--no-metrics", "--replicated-replicas", "1"])
        .args(["--otlp-endpoint", &otlp_endpoint])
        // The broker's `lax.*` spans are at INFO; the default batch delay (5 s) outlasts the
        // test, so what arrives was sent by the shutdown.
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("lax broker starts");

    let mut broker = wait_for(DEADLINE, || async {
        BrokerServiceClient::connect(format!("http://{listen}"))
            .await
            .ok()
    })
    .await
    .expect("lax broker serves");
    let traced = publish(&mut broker, "traced", &[("traceparent", UPSTREAM)]).await;
    let bare = publish(&mut broker, "bare", &[]).await;
    drop(broker);

    let pid = Pid::from_raw(broker_process.id().expect("running") as i32);
    kill(pid, Signal::SIGTERM).expect("SIGTERM sent");
    let status = tokio::time::timeout(DEADLINE, broker_process.wait())
        .await
        .expect("lax broker stops after SIGTERM")
        .expect("reaped");
    assert!(status.success(), "{status}");

    // Sent before the process exited; the collector may still be reading the request.
    let (service, span) = wait_for(DEADLINE, || async {
        collector.broker_publish(&traced.message_id)
    })
    .await
    .expect("the traced message's span reached the collector");
    println!(
        "exported by {service}: {} trace={} span={} parent={}",
        span.name,
        hex(&span.trace_id),
        hex(&span.span_id),
        hex(&span.parent_span_id)
    );
    assert_eq!(service, "lax-broker");
    assert_eq!(hex(&span.trace_id), "5bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(hex(&span.parent_span_id), "10f067aa0ba902b7");
    let (_, root) = collector
        .broker_publish(&bare.message_id)
        .expect("the bare message's span was exported in the same batch");
    assert!(
        root.parent_span_id.is_empty(),
        "no context: the broker starts the trace"
    );
    assert_ne!(root.trace_id, span.trace_id);

    // JetStream holds the exported spans' own ids in the stored messages' `traceparent`.
    let js = jetstream::new(nats.client().await.expect("connect to nats-server"));
    let stream = js.get_stream(&traced.stream).await.expect("the stream");
    for (response, exported) in [(&traced, &span), (&bare, &root)] {
        let stored = stream
            .get_raw_message(response.sequence)
            .await
            .expect("the stored message");
        assert_eq!(
            stored
                .headers
                .get("traceparent")
                .map(|v| v.as_str().to_owned()),
            Some(format!(
                "00-{}-{}-01",
                hex(&exported.trace_id),
                hex(&exported.span_id)
            ))
        );
    }
}

#[tokio::test]
async fn a_bad_otlp_endpoint_is_a_usage_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_lax"))
        .args(["broker", "--otlp-endpoint", "collector:4317"])
        .env_remove("RUST_LOG")
        .output()
        .await
        .expect("lax runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("otlp"), "{stderr}");
}
