//! One trace from publish to processing, on a real nats-server and the in-process broker:
//! the `lax.*` spans of the client and the broker, captured in memory, must form one W3C
//! trace per message whose parents follow the message's path (both routes), and a message
//! published without any context must still get a root span at the broker.
//!
//! The capture is a `tracing_subscriber` layer recording every `lax.*` span's fields (the
//! W3C `trace_id`, `span_id`, `parent_span_id` among them) and every `lax.*` event with the
//! span it happened in. Each test prints the span trees it checked.

mod common;

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    sync::{Arc, Mutex, OnceLock},
};

use common::{DEADLINE, Env, create_stream, next, process_in_background, subscriptions_registered};
use lax_client::{DirectProcess, ErrorKind, LaxClient, PublishOptions};
use lax_proto::broker::v1::{self as proto, broker_service_client::BrokerServiceClient};
use lax_testkit::wait_for;
use tracing::{
    Subscriber,
    field::{Field, Visit},
    span,
};
use tracing_subscriber::{
    Layer, filter::filter_fn, layer::Context, layer::SubscriberExt as _, registry::LookupSpan,
    util::SubscriberInitExt as _,
};

/// A span or an event, as captured.
#[derive(Debug, Clone)]
struct Recorded {
    name: String,
    is_event: bool,
    fields: BTreeMap<String, String>,
    /// The position of the `tracing` span it was made in (an event's span, a span's parent).
    within: Option<usize>,
}

impl Recorded {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }

    fn expect(&self, name: &str) -> &str {
        self.field(name)
            .unwrap_or_else(|| panic!("{} has no {name}: {:?}", self.name, self.fields))
    }
}

/// Everything captured, in creation order.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<Recorded>>>);

/// The position of a span's record, kept in the span's extensions.
struct Position(usize);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        let span = ctx.span(id).expect("the span is registered");
        let within = span
            .parent()
            .and_then(|parent| parent.extensions().get::<Position>().map(|p| p.0));
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let mut records = self.0.lock().unwrap();
        records.push(Recorded {
            name: attrs.metadata().name().to_owned(),
            is_event: false,
            fields,
            within,
        });
        span.extensions_mut().insert(Position(records.len() - 1));
    }

    fn on_record(&self, id: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        let span = ctx.span(id).expect("the span is registered");
        if let Some(Position(at)) = span.extensions().get::<Position>() {
            values.record(&mut Fields(&mut self.0.lock().unwrap()[*at].fields));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let within = ctx
            .event_span(event)
            .and_then(|span| span.extensions().get::<Position>().map(|p| p.0));
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().push(Recorded {
            name: event.metadata().name().to_owned(),
            is_event: true,
            fields,
            within,
        });
    }
}

/// The process-wide capture, installed once (the broker's tasks run on other threads, so a
/// thread-local default would miss them). Only `lax.*` spans and events are enabled.
fn capture() -> Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE
        .get_or_init(|| {
            let capture = Capture::default();
            tracing_subscriber::registry()
                .with(
                    capture
                        .clone()
                        .with_filter(filter_fn(|meta| meta.name().starts_with("lax."))),
                )
                .init();
            capture
        })
        .clone()
}

impl Capture {
    fn all(&self) -> Vec<Recorded> {
        self.0.lock().unwrap().clone()
    }

    /// The one span named `name` whose `field` is `value`, once it has recorded `outcome`.
    async fn span(&self, name: &str, field: &str, value: &str) -> Recorded {
        wait_for(DEADLINE, || async {
            let found: Vec<Recorded> = self
                .all()
                .into_iter()
                .filter(|r| !r.is_event && r.name == name && r.field(field) == Some(value))
                .collect();
            match found.as_slice() {
                [one] if one.field("outcome").is_some() => Some(one.clone()),
                [] | [_] => None,
                many => panic!(
                    "{} spans {name} with {field}={value}: {many:#?}",
                    many.len()
                ),
            }
        })
        .await
        .unwrap_or_else(|e| panic!("span {name} with {field}={value}: {e}"))
    }

    /// The `lax.*` spans of `trace_id` as an indented tree by W3C parent.
    fn tree(&self, trace_id: &str) -> String {
        let spans: Vec<Recorded> = self
            .all()
            .into_iter()
            .filter(|r| !r.is_event && r.field("trace_id") == Some(trace_id))
            .collect();
        let mut out = format!("trace {trace_id}\n");
        // Roots: spans whose parent is not among them (none, or an upstream service's).
        let ids: Vec<&str> = spans.iter().filter_map(|s| s.field("span_id")).collect();
        fn walk(out: &mut String, spans: &[Recorded], parent: Option<&str>, depth: usize) {
            for span in spans.iter().filter(|s| s.field("parent_span_id") == parent) {
                let show = |name: &str| {
                    span.field(name)
                        .map(|v| format!(" {name}={v}"))
                        .unwrap_or_default()
                };
                let _ = writeln!(
                    out,
                    "{:indent$}└─ {} span={}{}{}{}{}{}{}",
                    "",
                    span.name,
                    span.expect("span_id"),
                    show("path"),
                    show("subject"),
                    show("route"),
                    show("stream"),
                    show("sequence"),
                    show("outcome"),
                    indent = depth * 3
                );
                walk(out, spans, span.field("span_id"), depth + 1);
            }
        }
        let upstream: BTreeSet<Option<&str>> = spans
            .iter()
            .map(|s| s.field("parent_span_id"))
            .filter(|parent| !parent.is_some_and(|p| ids.contains(&p)))
            .collect();
        for parent in upstream {
            if let Some(parent) = parent {
                let _ = writeln!(out, "(upstream span {parent})");
            }
            walk(&mut out, &spans, parent, 0);
        }
        out
    }
}

/// Asserts that `child`'s W3C parent is `parent`, in the same trace.
fn assert_child(child: &Recorded, parent: &Recorded) {
    assert_eq!(
        child.expect("trace_id"),
        parent.expect("trace_id"),
        "{} and {} are in one trace",
        child.name,
        parent.name
    );
    assert_eq!(
        child.expect("parent_span_id"),
        parent.expect("span_id"),
        "{} is a child of {}",
        child.name,
        parent.name
    );
}

/// The capture, servers, a client, and a persistent stream `stream` on `subjects`.
async fn start(stream: &str, subjects: &str) -> (Capture, Env, LaxClient) {
    let capture = capture();
    let env = Env::start().await;
    let client = LaxClient::connect(env.options()).await.unwrap();
    create_stream(&client, stream, subjects).await;
    (capture, env, client)
}

/// The broker's and the consumer's spans of message `id`, checked to be the chain
/// `lax.broker.publish` → `lax.broker.deliver` → `lax.process`.
async fn through_the_broker(capture: &Capture, id: &str) -> [Recorded; 3] {
    let stored = capture.span("lax.broker.publish", "message_id", id).await;
    let deliver = capture.span("lax.broker.deliver", "message_id", id).await;
    let process = capture.span("lax.process", "message_id", id).await;
    assert_child(&deliver, &stored);
    assert_child(&process, &deliver);
    [stored, deliver, process]
}

/// The wire options of a persistent publish that waits for its ack.
fn persistent_with_ack() -> Option<proto::PublishOptions> {
    Some(proto::PublishOptions {
        tier: "persistent".into(),
        require_ack: true,
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_publish_to_processing_on_both_routes() {
    let (capture, _servers, client) = start("TRACED", "traced.>").await;

    // Broker route: publish → broker → JetStream → broker delivery → handler.
    let mut orders = process_in_background(&client, "traced.orders").await;
    let order = client
        .publish_with("traced.orders", "order-1", PublishOptions::persistent())
        .await
        .expect("persistent publish");
    let delivered = next(&mut orders).await;
    assert_eq!(delivered.id, order.message_id);

    let id = order.message_id.as_str();
    let publish = capture.span("lax.publish", "message_id", id).await;
    let [stored, deliver, process] = through_the_broker(&capture, id).await;
    println!("{}", capture.tree(publish.expect("trace_id")));
    assert_eq!(publish.field("parent_span_id"), None, "a new trace");
    assert_child(&stored, &publish);
    assert_eq!(
        (
            publish.expect("route"),
            publish.expect("tier"),
            publish.expect("stream"),
            publish.expect("outcome")
        ),
        ("broker", "persistent", "TRACED", "stored")
    );
    assert_eq!(publish.expect("sequence"), stored.expect("sequence"));
    assert_eq!(stored.expect("outcome"), "stored");
    assert_eq!(stored.expect("rpc"), "StreamPublish");
    assert_eq!(deliver.expect("outcome"), "delivered");
    assert_eq!(deliver.expect("sequence"), publish.expect("sequence"));
    assert_eq!(
        (process.expect("stream"), process.expect("outcome")),
        ("TRACED", "ok")
    );
    // The retry layer reports the attempt as an event inside the publish span.
    let records = capture.all();
    let position = records
        .iter()
        .position(|r| !r.is_event && r.field("message_id") == Some(id) && r.name == "lax.publish")
        .unwrap();
    let attempts: Vec<&Recorded> = records
        .iter()
        .filter(|r| r.is_event && r.name == "lax.publish.attempt" && r.within == Some(position))
        .collect();
    assert_eq!(attempts.len(), 1, "{attempts:#?}");
    assert_eq!(
        (attempts[0].expect("attempt"), attempts[0].expect("outcome")),
        ("1", "ok")
    );
    assert_eq!(publish.expect("attempts"), "1");
    // Clients that read only the wire field see the W3C trace id there.
    assert_eq!(
        delivered.trace_id.as_deref(),
        Some(publish.expect("trace_id"))
    );

    // Direct route: publish → core NATS → handler, whose own publish continues the trace.
    let mut followups = process_in_background(&client, "traced.followups").await;
    let clicks = client
        .subscribe_direct("tracedirect.clicks", None)
        .await
        .expect("direct subscription");
    let forwarder = client.clone();
    tokio::spawn(clicks.process(move |message| {
        let client = forwarder.clone();
        async move {
            let id = message.message_id.unwrap_or_default();
            client
                .publish_with(
                    "traced.followups",
                    id,
                    PublishOptions::persistent().message_id("followup-1"),
                )
                .await
                .map(drop)
        }
    }));
    subscriptions_registered(&client).await;
    let click = client
        .publish("tracedirect.clicks", "click")
        .await
        .expect("direct publish");
    let followup = next(&mut followups).await;
    assert_eq!(followup.text().unwrap(), click.message_id);

    let id = click.message_id.as_str();
    let publish = capture.span("lax.publish", "message_id", id).await;
    let process = capture.span("lax.process", "message_id", id).await;
    let republish = capture
        .span("lax.publish", "message_id", "followup-1")
        .await;
    let [stored, ..] = through_the_broker(&capture, "followup-1").await;
    println!("{}", capture.tree(publish.expect("trace_id")));
    assert_eq!(
        (publish.expect("route"), publish.expect("outcome")),
        ("direct", "published")
    );
    assert_eq!(publish.field("parent_span_id"), None, "a new trace");
    assert_child(&process, &publish);
    assert_eq!(process.expect("outcome"), "ok");
    assert_child(&republish, &process);
    assert_child(&stored, &republish);

    client.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_published_without_context_gets_a_root_span_at_the_broker() {
    let (capture, env, client) = start("UNTRACED", "untraced.>").await;
    let mut received = process_in_background(&client, "untraced.orders").await;

    // An existing client: no traceparent; the second sends only the wire trace_id.
    let mut raw = BrokerServiceClient::connect(format!("http://{}", env.broker_addr))
        .await
        .expect("raw gRPC client connects");
    let mut ids = Vec::new();
    for (payload, trace_id) in [("first", ""), ("second", "legacy-7")] {
        let answer = raw
            .publish(proto::PublishRequest {
                subject: "untraced.orders".into(),
                payload: payload.into(),
                trace_id: trace_id.into(),
                options: persistent_with_ack(),
                ..Default::default()
            })
            .await
            .expect("raw publish")
            .into_inner();
        ids.push(answer.message_id);
    }

    let first = next(&mut received).await;
    let second = next(&mut received).await;
    assert_eq!(
        (first.id.as_str(), second.id.as_str()),
        (&*ids[0], &*ids[1])
    );

    let [stored, ..] = through_the_broker(&capture, &ids[0]).await;
    println!("{}", capture.tree(stored.expect("trace_id")));
    assert_eq!(
        stored.field("parent_span_id"),
        None,
        "the broker starts the trace"
    );
    assert_eq!(stored.expect("rpc"), "Publish");
    assert_eq!(first.trace_id.as_deref(), Some(stored.expect("trace_id")));
    // The wire trace_id an existing client sent is what existing subscribers read back.
    assert_eq!(second.trace_id.as_deref(), Some("legacy-7"));
    let second_stored = capture
        .span("lax.broker.publish", "message_id", &ids[1])
        .await;
    assert_eq!(second_stored.field("parent_span_id"), None);

    client.close().await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_given_traceparent_is_continued_and_a_malformed_one_refused() {
    let (capture, env, client) = start("GIVEN", "given.>").await;

    let upstream = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let receipt = client
        .publish_with(
            "given.orders",
            "x",
            PublishOptions::persistent()
                .header("traceparent", upstream)
                .header("tracestate", "vendor=1"),
        )
        .await
        .expect("publish with a context");
    let publish = capture
        .span("lax.publish", "message_id", &receipt.message_id)
        .await;
    assert_eq!(
        publish.expect("trace_id"),
        "0af7651916cd43dd8448eb211c80319c"
    );
    assert_eq!(publish.expect("parent_span_id"), "b7ad6b7169203331");
    let stored = capture
        .span("lax.broker.publish", "message_id", &receipt.message_id)
        .await;
    assert_child(&stored, &publish);
    // JetStream keeps the broker span's context, and the vendor state beside it.
    let headers = env
        .js
        .get_stream("GIVEN")
        .await
        .unwrap()
        .get_raw_message(receipt.ack.as_ref().unwrap().sequence)
        .await
        .expect("the stored message")
        .headers;
    let traceparent = headers.get("traceparent").expect("a stored traceparent");
    assert_eq!(
        traceparent.as_str(),
        format!(
            "00-{}-{}-01",
            stored.expect("trace_id"),
            stored.expect("span_id")
        )
    );
    assert_eq!(
        headers.get("tracestate").map(|v| v.as_str()),
        Some("vendor=1")
    );

    // A malformed context is bad input, on the client and at the broker.
    let refused = client
        .publish_with(
            "given.orders",
            "x",
            PublishOptions::persistent().header("traceparent", "00-abc-01"),
        )
        .await
        .expect_err("a malformed traceparent is refused");
    assert_eq!(refused.kind(), ErrorKind::InvalidInput);
    assert!(
        refused.to_string().contains("invalid traceparent"),
        "{refused}"
    );
    let mut raw = BrokerServiceClient::connect(format!("http://{}", env.broker_addr))
        .await
        .unwrap();
    let status = raw
        .publish(proto::PublishRequest {
            subject: "given.orders".into(),
            headers: [("traceparent".to_owned(), "garbage".to_owned())].into(),
            options: persistent_with_ack(),
            ..Default::default()
        })
        .await
        .expect_err("the broker refuses it too");
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    assert_eq!(
        env.count("GIVEN").await,
        1,
        "nothing of a refused message stored"
    );
    client.close().await.expect("close");
}

#[cfg(all(feature = "axum", feature = "init-tracing"))]
#[allow(dead_code, reason = "the example's `main` is not used here")]
#[path = "../../../examples/axum/main.rs"]
mod example;

#[cfg(all(feature = "axum", feature = "init-tracing"))]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_axum_example_continues_the_requests_trace_to_the_consumer() {
    use axum::body::Body;
    use tower::ServiceExt as _;

    let (capture, _servers, client) = start("ORDERS", "orders.>").await;
    let mut orders = process_in_background(&client, "orders.created").await;

    let upstream = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = example::app(client.clone())
        .oneshot(
            axum::http::Request::post("/orders")
                .header("content-type", "application/json")
                .header("traceparent", upstream)
                .body(Body::from(r#"{"id": "o-1", "amount": 99.99}"#))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let id = body["message_id"]
        .as_str()
        .expect("a message id")
        .to_owned();
    assert_eq!(next(&mut orders).await.id, id);

    let publish = capture.span("lax.publish", "message_id", &id).await;
    let request = capture
        .all()
        .into_iter()
        .find(|r| {
            r.name == "lax.http.request" && r.field("span_id") == publish.field("parent_span_id")
        })
        .expect("the publish is a child of the request's span");
    let [stored, ..] = through_the_broker(&capture, &id).await;
    println!("{}", capture.tree("4bf92f3577b34da6a3ce929d0e0e4736"));
    assert_eq!(
        request.expect("trace_id"),
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    assert_eq!(request.expect("parent_span_id"), "00f067aa0ba902b7");
    assert_eq!(request.expect("status"), "200");
    assert_child(&publish, &request);
    assert_child(&stored, &publish);
    client.close().await.expect("close");
}
