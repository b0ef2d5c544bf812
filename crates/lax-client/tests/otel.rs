//! OpenTelemetry (feature `opentelemetry`): the spans of the client, the in-process broker
//! and the consumers, exported through `tracing-opentelemetry` into opentelemetry_sdk's
//! `InMemorySpanExporter`, on a real nats-server. Whatever publishes — direct or through the
//! broker and JetStream — and whatever consumes, the exported spans form ONE OpenTelemetry
//! trace whose parent span ids follow the message's path, and the ids LAX sends in
//! `traceparent` are the exported spans' own. A message from a client that sends no context
//! gets a root span at the broker.

mod common;

use std::{fmt::Write as _, sync::OnceLock};

use common::{DEADLINE, Env, create_stream, next, process_in_background, subscriptions_registered};
use lax_client::{DirectProcess, LaxClient, PublishOptions};
use lax_proto::broker::v1::{self as proto, broker_service_client::BrokerServiceClient};
use lax_testkit::wait_for;
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use tracing::Instrument as _;
use tracing_subscriber::{
    Layer as _, filter::filter_fn, layer::SubscriberExt as _, util::SubscriberInitExt as _,
};

/// The process-wide export, installed once (the broker's tasks run on other threads): LAX's
/// spans and the test's own `app.*` spans go through a `tracing-opentelemetry` layer into
/// memory, each as soon as it ends.
fn exporter() -> InMemorySpanExporter {
    static EXPORTER: OnceLock<(InMemorySpanExporter, SdkTracerProvider)> = OnceLock::new();
    EXPORTER
        .get_or_init(|| {
            let exporter = InMemorySpanExporter::default();
            let provider = SdkTracerProvider::builder()
                .with_simple_exporter(exporter.clone())
                .build();
            tracing_subscriber::registry()
                .with(
                    tracing_opentelemetry::layer()
                        .with_tracer(provider.tracer("otel-test"))
                        .with_filter(filter_fn(|meta| {
                            meta.name().starts_with("lax.") || meta.name().starts_with("app.")
                        })),
                )
                .init();
            (exporter, provider)
        })
        .0
        .clone()
}

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.as_str().into_owned())
}

/// The one exported span named `name` whose `message_id` is `id`.
async fn exported(exporter: &InMemorySpanExporter, name: &str, id: &str) -> SpanData {
    wait_for(DEADLINE, || async {
        let spans = exporter.get_finished_spans().expect("the exporter is up");
        let found: Vec<SpanData> = spans
            .into_iter()
            .filter(|s| s.name == name && attribute(s, "message_id").as_deref() == Some(id))
            .collect();
        match found.len() {
            0 => None,
            1 => found.into_iter().next(),
            n => panic!("{n} spans {name} of message {id}"),
        }
    })
    .await
    .unwrap_or_else(|e| panic!("exported span {name} of message {id}: {e}"))
}

/// Asserts `child`'s OpenTelemetry parent is `parent`, in the same trace.
fn assert_child(child: &SpanData, parent: &SpanData) {
    assert_eq!(
        child.span_context.trace_id(),
        parent.span_context.trace_id(),
        "{} and {} are in one trace",
        child.name,
        parent.name
    );
    assert_eq!(
        child.parent_span_id,
        parent.span_context.span_id(),
        "{} is a child of {}",
        child.name,
        parent.name
    );
}

/// The W3C ids LAX recorded in the span's fields (and sent in `traceparent`) are the
/// exported span's own: one id scheme.
fn assert_same_ids(span: &SpanData) {
    assert_eq!(
        attribute(span, "trace_id"),
        Some(span.span_context.trace_id().to_string()),
        "{}",
        span.name
    );
    assert_eq!(
        attribute(span, "span_id"),
        Some(span.span_context.span_id().to_string()),
        "{}",
        span.name
    );
    let parent = (span.parent_span_id != SpanId::INVALID).then(|| span.parent_span_id.to_string());
    assert_eq!(attribute(span, "parent_span_id"), parent, "{}", span.name);
}

/// The exported spans of `trace_id` as an indented tree.
fn tree(exporter: &InMemorySpanExporter, trace_id: TraceId) -> String {
    let spans: Vec<SpanData> = exporter
        .get_finished_spans()
        .unwrap()
        .into_iter()
        .filter(|s| s.span_context.trace_id() == trace_id)
        .collect();
    fn walk(out: &mut String, spans: &[SpanData], parent: SpanId, depth: usize) {
        let mut children: Vec<&SpanData> = spans
            .iter()
            .filter(|s| s.parent_span_id == parent)
            .collect();
        children.sort_by_key(|s| s.start_time);
        for span in children {
            let show = |key: &str| {
                attribute(span, key)
                    .map(|v| format!(" {key}={v}"))
                    .unwrap_or_default()
            };
            let _ = writeln!(
                out,
                "{:indent$}└─ {} span={}{}{}{}{}",
                "",
                span.name,
                span.span_context.span_id(),
                show("subject"),
                show("route"),
                show("stream"),
                show("outcome"),
                indent = depth * 3
            );
            walk(out, spans, span.span_context.span_id(), depth + 1);
        }
    }
    let mut out = format!("OpenTelemetry trace {trace_id}\n");
    walk(&mut out, &spans, SpanId::INVALID, 0);
    out
}

/// The exported `lax.broker.publish` → `lax.broker.deliver` → `lax.process` chain of
/// message `id`.
async fn through_the_broker(exporter: &InMemorySpanExporter, id: &str) -> [SpanData; 3] {
    let stored = exported(exporter, "lax.broker.publish", id).await;
    let deliver = exported(exporter, "lax.broker.deliver", id).await;
    let process = exported(exporter, "lax.process", id).await;
    assert_child(&deliver, &stored);
    assert_child(&process, &deliver);
    for span in [&stored, &deliver, &process] {
        assert_same_ids(span);
    }
    [stored, deliver, process]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_routes_through_the_broker_and_jetstream_make_one_opentelemetry_trace() {
    let exporter = exporter();
    let env = Env::start().await;
    let client = LaxClient::connect(env.options()).await.unwrap();
    create_stream(&client, "OTEL", "otel.>").await;
    let mut orders = process_in_background(&client, "otel.orders").await;
    let mut followups = process_in_background(&client, "otel.followups").await;
    // A direct consumer whose handler publishes on through the broker.
    let clicks = client
        .subscribe_direct("oteldirect.clicks", None)
        .await
        .expect("direct subscription");
    let forwarder = client.clone();
    tokio::spawn(clicks.process(move |message| {
        let client = forwarder.clone();
        async move {
            client
                .publish_with(
                    "otel.followups",
                    message.message_id.unwrap_or_default(),
                    PublishOptions::persistent().message_id("otel-followup-1"),
                )
                .await
                .map(drop)
        }
    }));
    subscriptions_registered(&client).await;

    // The application's own request span, exported by the same layer: both publishes made
    // inside it continue its trace.
    let request = tracing::info_span!("app.request");
    let (order, click) = async {
        let order = client
            .publish_with("otel.orders", "order-1", PublishOptions::persistent())
            .await
            .expect("persistent publish");
        let click = client
            .publish("oteldirect.clicks", "click")
            .await
            .expect("direct publish");
        (order, click)
    }
    .instrument(request.clone())
    .await;
    drop(request);
    assert_eq!(next(&mut orders).await.id, order.message_id);
    let delivered = next(&mut followups).await;
    assert_eq!(delivered.text().unwrap(), click.message_id);

    // Broker route: app.request → lax.publish → lax.broker.publish → lax.broker.deliver →
    // lax.process.
    let publish = exported(&exporter, "lax.publish", &order.message_id).await;
    let [stored, _, process] = through_the_broker(&exporter, &order.message_id).await;
    let request = wait_for(DEADLINE, || async {
        exporter
            .get_finished_spans()
            .unwrap()
            .into_iter()
            .find(|s| s.name == "app.request")
    })
    .await
    .expect("the request span is exported");
    let trace_id = request.span_context.trace_id();
    println!("{}", tree(&exporter, trace_id));
    assert_eq!(request.parent_span_id, SpanId::INVALID, "the trace's root");
    assert_child(&publish, &request);
    assert_child(&stored, &publish);
    assert_same_ids(&publish);
    assert_eq!(attribute(&publish, "route").as_deref(), Some("broker"));
    assert_eq!(attribute(&process, "outcome").as_deref(), Some("ok"));
    // JetStream keeps the broker span's context: the exported span's ids.
    let sequence = order.ack.as_ref().expect("acked").sequence;
    let stored_message = env
        .js
        .get_stream("OTEL")
        .await
        .unwrap()
        .get_raw_message(sequence)
        .await
        .expect("the stored message");
    assert_eq!(
        stored_message
            .headers
            .get("traceparent")
            .map(|v| v.as_str().to_owned()),
        Some(format!(
            "00-{}-{}-01",
            stored.span_context.trace_id(),
            stored.span_context.span_id()
        ))
    );

    // Direct route: app.request → lax.publish (direct) → lax.process (direct consumer) →
    // lax.publish → lax.broker.publish → lax.broker.deliver → lax.process.
    let direct = exported(&exporter, "lax.publish", &click.message_id).await;
    let handled = exported(&exporter, "lax.process", &click.message_id).await;
    let republish = exported(&exporter, "lax.publish", "otel-followup-1").await;
    let [restored, _, reprocess] = through_the_broker(&exporter, "otel-followup-1").await;
    assert_eq!(attribute(&direct, "route").as_deref(), Some("direct"));
    assert_child(&direct, &request);
    assert_child(&handled, &direct);
    assert_child(&republish, &handled);
    assert_child(&restored, &republish);
    for span in [&direct, &handled, &republish] {
        assert_same_ids(span);
    }
    assert_eq!(reprocess.span_context.trace_id(), trace_id, "one trace");
    // The wire field existing clients read carries the same trace id.
    assert_eq!(delivered.trace_id, Some(trace_id.to_string()));

    client.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_without_context_gets_a_root_span_at_the_broker() {
    let exporter = exporter();
    let env = Env::start().await;
    let client = LaxClient::connect(env.options()).await.unwrap();
    create_stream(&client, "OTELBARE", "otelbare.>").await;
    let mut received = process_in_background(&client, "otelbare.orders").await;

    // A client that sends no trace context, on the wire.
    let mut raw = BrokerServiceClient::connect(format!("http://{}", env.broker_addr))
        .await
        .expect("raw gRPC client connects");
    let answer = raw
        .publish(proto::PublishRequest {
            subject: "otelbare.orders".into(),
            payload: "bare".into(),
            options: Some(proto::PublishOptions {
                tier: "persistent".into(),
                require_ack: true,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("raw publish")
        .into_inner();
    let message = next(&mut received).await;
    assert_eq!(message.id, answer.message_id);

    let [stored, ..] = through_the_broker(&exporter, &answer.message_id).await;
    println!("{}", tree(&exporter, stored.span_context.trace_id()));
    assert_eq!(
        stored.parent_span_id,
        SpanId::INVALID,
        "the broker starts the trace"
    );
    assert!(stored.span_context.is_sampled());
    assert_eq!(
        message.trace_id,
        Some(stored.span_context.trace_id().to_string())
    );
    client.close().await.expect("close");
}

/// `otlp_endpoint`: checked as a URL, a layer for the application to add, shut down by
/// `close`. (Spans reaching a collector over OTLP are checked on the broker, by lax-cli's
/// `otlp` test; here the process-wide subscriber is the in-memory one.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_otlp_option_gives_a_layer_and_close_shuts_the_export_down() {
    let env = Env::start().await;
    let mut options = env.options();
    assert!(
        LaxClient::connect(options.clone())
            .await
            .unwrap()
            .otel_layer::<tracing_subscriber::Registry>()
            .is_none(),
        "no endpoint, no layer"
    );
    options.otlp_endpoint = Some("collector:4317".into());
    let refused = options.validate().expect_err("not a URL");
    assert!(refused.to_string().contains("otlp_endpoint"), "{refused}");

    options.otlp_endpoint = Some("http://127.0.0.1:9".into());
    let client = LaxClient::connect(options).await.unwrap();
    assert!(
        client
            .otel_layer::<tracing_subscriber::Registry>()
            .is_some()
    );
    assert_eq!(
        client.otlp().map(|otlp| otlp.endpoint()),
        Some("http://127.0.0.1:9")
    );
    client.close().await.expect("close shuts the export down");
}
