//! The broker's own Prometheus figures and the `/metrics` HTTP endpoint.
//!
//! Each broker has its own recorder (not the process-global one), so several brokers in one
//! process (tests, `lax dev`) keep separate figures. Handles are registered on that recorder
//! directly through [`metrics::Recorder`].

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt::Write as _,
    sync::{
        Arc, Mutex, OnceLock, PoisonError, RwLock, Weak,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use axum::{Router, routing::get};
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, Unit};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::jsapi::JsApi;

/// Requests answered, by `rpc` and gRPC `code`.
pub const REQUESTS_TOTAL: &str = "lax_broker_requests_total";
/// Publishes answered, by `tier` and `result` (`stored`, `duplicate` or the gRPC code).
pub const PUBLISH_TOTAL: &str = "lax_broker_publish_total";
/// Seconds from receiving a publish to answering it, by `rpc` and `tier`.
pub const PUBLISH_LATENCY_SECONDS: &str = "lax_broker_publish_latency_seconds";
/// Publishes holding a slot of the broker's in-flight cap.
pub const INFLIGHT_PUBLISHES: &str = "lax_broker_inflight_publishes";
/// JetStream failures, by `kind` (one of [`JETSTREAM_ERROR_KINDS`]).
pub const JETSTREAM_ERRORS_TOTAL: &str = "lax_broker_jetstream_errors_total";
/// The kinds of [`JETSTREAM_ERRORS_TOTAL`], each exported (at 0) from the start so that a
/// dashboard's `rate()` has a series before the first failure.
pub const JETSTREAM_ERROR_KINDS: [&str; 7] = [
    "ack_overdue",
    "api",
    "disconnected",
    "no_stream",
    "send",
    "timeout",
    "transient_retry",
];
/// 1 while the NATS connection is up, else 0.
pub const NATS_CONNECTED: &str = "lax_broker_nats_connected";
/// Gauge: messages delivered to subscribers and not yet settled, by stream and consumer (a
/// group's members add up; a subscription without a group has a consumer of its own).
pub const CONSUMER_INFLIGHT_MESSAGES: &str = "lax_broker_consumer_inflight_messages";
/// Gauge: bytes of the messages counted by [`CONSUMER_INFLIGHT_MESSAGES`].
pub const CONSUMER_INFLIGHT_BYTES: &str = "lax_broker_consumer_inflight_bytes";
/// Gauge: messages one live subscription holds delivered and not yet settled, by `stream`,
/// `consumer` and `subscriber` (the subscription's id, the prefix of its ack ids). Rendered
/// for live subscriptions only: a subscription's series ends with it.
pub const SUBSCRIBER_INFLIGHT_MESSAGES: &str = "lax_broker_subscriber_inflight_messages";
/// Gauge: bytes of the messages counted by [`SUBSCRIBER_INFLIGHT_MESSAGES`].
pub const SUBSCRIBER_INFLIGHT_BYTES: &str = "lax_broker_subscriber_inflight_bytes";
/// Messages handed to one live subscription's gRPC stream since it opened, labelled as
/// [`SUBSCRIBER_INFLIGHT_MESSAGES`].
pub const SUBSCRIBER_DELIVERED_TOTAL: &str = "lax_broker_subscriber_delivered_total";
/// Publishes answered, by `stream` and `result` (as [`PUBLISH_TOTAL`]); `stream` is
/// `unknown` for a publish refused before its stream was known.
pub const STREAM_PUBLISH_TOTAL: &str = "lax_broker_stream_publish_total";
/// Gauge: gRPC streams open, by `rpc` (`StreamPublish`, `Subscribe`).
pub const GRPC_STREAMS_OPEN: &str = "lax_broker_grpc_streams_open";
/// Messages handed to subscribers again (a delivery after the first), by `stream` and
/// `consumer`.
pub const REDELIVERIES_TOTAL: &str = "lax_broker_redeliveries_total";
/// Messages moved to their dead-letter subject after their last delivery, by `stream` and
/// `consumer`.
pub const DEAD_LETTERS_TOTAL: &str = "lax_broker_dead_letters_total";
/// Gauge: messages a consumer group has not been delivered yet (its lag), by `stream` and
/// `group`, as JetStream counts them when `/metrics` is scraped.
pub const GROUP_PENDING_MESSAGES: &str = "lax_broker_consumer_group_pending_messages";
/// Gauge: messages delivered to a group's members and not yet acknowledged, by `stream` and
/// `group`, as JetStream counts them when `/metrics` is scraped.
pub const GROUP_ACK_PENDING_MESSAGES: &str = "lax_broker_consumer_group_ack_pending_messages";
/// Gauge: tasks alive in the broker's tokio runtime, read at each scrape (a number that grows
/// with time rather than with load is a leak; the soak, `cargo xtask soak`, plots it).
pub const RUNTIME_ALIVE_TASKS: &str = "lax_broker_runtime_alive_tasks";
/// Gauge: messages of a group delivered more than once and not yet acknowledged, by
/// `stream` and `group`, as JetStream counts them when `/metrics` is scraped.
pub const GROUP_REDELIVERED_MESSAGES: &str = "lax_broker_consumer_group_redelivered_messages";

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The RPCs, tiers and results of the publishes counted on every message.
const HOT_RPCS: [&str; 3] = ["Publish", "BatchPublish", "StreamPublish"];
const HOT_TIERS: [&str; 3] = ["memory", "persistent", "replicated"];
const HOT_RESULTS: [&str; 2] = ["stored", "duplicate"];

/// The handles every answered publish records into, registered on first use: looking a
/// labelled handle up in the recorder costs four `String`s, a `Vec` and a hashed registry
/// lookup, on every message. Failures are rare and take that slow path.
#[derive(Default)]
struct HotHandles {
    /// By tier and result.
    published: [[OnceLock<Counter>; HOT_RESULTS.len()]; HOT_TIERS.len()],
    /// By rpc and tier.
    latency: [[OnceLock<Histogram>; HOT_TIERS.len()]; HOT_RPCS.len()],
}

/// The per-stream publish counters of the results every stored message counts into, by
/// stream name.
type StreamCounters = RwLock<HashMap<String, [Counter; HOT_RESULTS.len()]>>;

/// The broker's figures, recorded into its own Prometheus recorder.
#[derive(Clone)]
pub struct BrokerMetrics {
    recorder: Arc<PrometheusRecorder>,
    hot: Arc<HotHandles>,
    streams: Arc<StreamCounters>,
    /// The consumer groups whose gauges the last scrape set, to zero those gone since.
    groups_seen: Arc<Mutex<HashSet<(String, String)>>>,
    /// The live subscriptions, by id, rendered at each scrape.
    subscribers: Arc<Mutex<BTreeMap<String, Arc<SubscriberFigures>>>>,
    inflight: Gauge,
    connected: Gauge,
}

impl std::fmt::Debug for BrokerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerMetrics").finish_non_exhaustive()
    }
}

impl Default for BrokerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl BrokerMetrics {
    /// A fresh recorder with the broker's metrics described.
    pub fn new() -> Self {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(PUBLISH_LATENCY_SECONDS.to_owned()),
                LATENCY_BUCKETS,
            )
            .expect("the latency bucket list is non-empty")
            .build_recorder();
        let describe = |name: &'static str, unit: Option<Unit>, help: &'static str| {
            recorder.describe_counter(KeyName::from_const_str(name), unit, help.into());
        };
        describe(
            REQUESTS_TOTAL,
            None,
            "gRPC requests answered, by rpc and code",
        );
        describe(
            PUBLISH_TOTAL,
            None,
            "publishes answered, by tier and result",
        );
        describe(JETSTREAM_ERRORS_TOTAL, None, "JetStream failures, by kind");
        recorder.describe_histogram(
            KeyName::from_const_str(PUBLISH_LATENCY_SECONDS),
            Some(Unit::Seconds),
            "seconds from receiving a publish to answering it".into(),
        );
        recorder.describe_gauge(
            KeyName::from_const_str(INFLIGHT_PUBLISHES),
            None,
            "publishes holding a slot of the in-flight cap".into(),
        );
        recorder.describe_gauge(
            KeyName::from_const_str(NATS_CONNECTED),
            None,
            "1 while the NATS connection is up".into(),
        );
        recorder.describe_gauge(
            KeyName::from_const_str(CONSUMER_INFLIGHT_MESSAGES),
            None,
            "messages delivered to subscribers and not yet settled, by stream and consumer".into(),
        );
        recorder.describe_gauge(
            KeyName::from_const_str(CONSUMER_INFLIGHT_BYTES),
            Some(Unit::Bytes),
            "bytes delivered to subscribers and not yet settled, by stream and consumer".into(),
        );
        describe(
            STREAM_PUBLISH_TOTAL,
            None,
            "publishes answered, by stream and result",
        );
        describe(
            REDELIVERIES_TOTAL,
            None,
            "messages handed to subscribers again, by stream and consumer",
        );
        describe(
            DEAD_LETTERS_TOTAL,
            None,
            "messages dead-lettered after their last delivery, by stream and consumer",
        );
        for (name, help) in [
            (GRPC_STREAMS_OPEN, "gRPC streams open, by rpc"),
            (
                GROUP_PENDING_MESSAGES,
                "messages a consumer group has not been delivered yet (lag), by stream and group",
            ),
            (
                GROUP_ACK_PENDING_MESSAGES,
                "messages delivered to a group and not yet acknowledged, by stream and group",
            ),
            (
                GROUP_REDELIVERED_MESSAGES,
                "messages of a group delivered more than once and not yet acknowledged",
            ),
            (
                RUNTIME_ALIVE_TASKS,
                "tasks alive in the broker's tokio runtime, read at each scrape",
            ),
        ] {
            recorder.describe_gauge(KeyName::from_const_str(name), None, help.into());
        }
        for kind in JETSTREAM_ERROR_KINDS {
            let labels = vec![Label::new("kind", kind)];
            recorder
                .register_counter(&Key::from_parts(JETSTREAM_ERRORS_TOTAL, labels), &METADATA)
                .increment(0);
        }
        let inflight =
            recorder.register_gauge(&Key::from_static_name(INFLIGHT_PUBLISHES), &METADATA);
        let connected = recorder.register_gauge(&Key::from_static_name(NATS_CONNECTED), &METADATA);
        BrokerMetrics {
            recorder: Arc::new(recorder),
            hot: Arc::default(),
            streams: Arc::default(),
            groups_seen: Arc::default(),
            subscribers: Arc::default(),
            inflight,
            connected,
        }
    }

    /// A handle that renders the recorder's figures in the Prometheus text format (without
    /// the per-subscription ones; see [`render`](Self::render)).
    pub fn handle(&self) -> PrometheusHandle {
        self.recorder.handle()
    }

    /// Every figure in the Prometheus text format: the recorder's, then one series per live
    /// subscription. Those are rendered here rather than registered on the recorder, which
    /// can never drop a series: subscription ids are unbounded, so their series must end
    /// with the subscription.
    pub fn render(&self) -> String {
        let mut text = self.handle().render();
        let subscribers: Vec<Arc<SubscriberFigures>> =
            lock(&self.subscribers).values().map(Arc::clone).collect();
        if subscribers.is_empty() {
            return text;
        }
        let families = [
            (
                SUBSCRIBER_INFLIGHT_MESSAGES,
                "gauge",
                "messages a live subscription holds delivered and not yet settled",
                &SubscriberFigures::messages as &dyn Fn(&SubscriberFigures) -> u64,
            ),
            (
                SUBSCRIBER_INFLIGHT_BYTES,
                "gauge",
                "bytes of the messages a live subscription holds delivered and not yet settled",
                &SubscriberFigures::bytes,
            ),
            (
                SUBSCRIBER_DELIVERED_TOTAL,
                "counter",
                "messages handed to a live subscription's stream since it opened",
                &SubscriberFigures::delivered,
            ),
        ];
        for (name, kind, help, figure) in families {
            let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for subscriber in &subscribers {
                let _ = writeln!(
                    text,
                    "{name}{{stream=\"{}\",consumer=\"{}\",subscriber=\"{}\"}} {}",
                    escape_label(&subscriber.stream),
                    escape_label(&subscriber.consumer),
                    escape_label(&subscriber.id),
                    figure(subscriber),
                );
            }
            text.push('\n');
        }
        text
    }

    /// Registers a live subscription's figures; its series end when the returned guard drops.
    pub(crate) fn subscriber(
        &self,
        stream: &str,
        consumer: &str,
        id: &str,
    ) -> (Arc<SubscriberFigures>, LiveSubscriber) {
        let figures = Arc::new(SubscriberFigures {
            stream: stream.to_owned(),
            consumer: consumer.to_owned(),
            id: id.to_owned(),
            messages: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
        });
        lock(&self.subscribers).insert(id.to_owned(), Arc::clone(&figures));
        let guard = LiveSubscriber {
            subscribers: Arc::downgrade(&self.subscribers),
            id: id.to_owned(),
        };
        (figures, guard)
    }

    fn gauge(&self, name: &'static str, labels: [(&'static str, String); 2]) -> Gauge {
        let labels: Vec<Label> = labels.into_iter().map(|(k, v)| Label::new(k, v)).collect();
        self.recorder
            .register_gauge(&Key::from_parts(name, labels), &METADATA)
    }

    fn counter(&self, name: &'static str, labels: [(&'static str, String); 2]) -> Counter {
        let labels: Vec<Label> = labels.into_iter().map(|(k, v)| Label::new(k, v)).collect();
        self.recorder
            .register_counter(&Key::from_parts(name, labels), &METADATA)
    }

    fn histogram(&self, name: &'static str, labels: [(&'static str, String); 2]) -> Histogram {
        let labels: Vec<Label> = labels.into_iter().map(|(k, v)| Label::new(k, v)).collect();
        self.recorder
            .register_histogram(&Key::from_parts(name, labels), &METADATA)
    }

    /// Counts one answered request.
    pub(crate) fn request(&self, rpc: &'static str, code: tonic::Code) {
        self.counter(
            REQUESTS_TOTAL,
            [("rpc", rpc.to_owned()), ("code", code_label(code))],
        )
        .increment(1);
    }

    /// Counts one answered unary request by its status code, and wraps a success in a
    /// response.
    pub(crate) fn answered<T>(
        &self,
        rpc: &'static str,
        result: Result<T, tonic::Status>,
    ) -> Result<tonic::Response<T>, tonic::Status> {
        let code = result
            .as_ref()
            .map_or_else(tonic::Status::code, |_| tonic::Code::Ok);
        self.request(rpc, code);
        result.map(tonic::Response::new)
    }

    /// Counts one answered publish and records its latency.
    pub(crate) fn publish(&self, rpc: &'static str, tier: &str, result: &str, elapsed: Duration) {
        let position = |names: &[&str], name: &str| names.iter().position(|n| *n == name);
        let (rpc_at, tier_at, result_at) = (
            position(&HOT_RPCS, rpc),
            position(&HOT_TIERS, tier),
            position(&HOT_RESULTS, result),
        );
        let published = || {
            self.counter(
                PUBLISH_TOTAL,
                [("tier", tier.to_owned()), ("result", result.to_owned())],
            )
        };
        match tier_at.zip(result_at) {
            Some((t, r)) => self.hot.published[t][r].get_or_init(published).increment(1),
            None => published().increment(1),
        }
        let latency = || {
            self.histogram(
                PUBLISH_LATENCY_SECONDS,
                [("rpc", rpc.to_owned()), ("tier", tier.to_owned())],
            )
        };
        let seconds = elapsed.as_secs_f64();
        match rpc_at.zip(tier_at) {
            Some((p, t)) => self.hot.latency[p][t].get_or_init(latency).record(seconds),
            None => latency().record(seconds),
        }
    }

    /// Counts one answered publish under its stream (`None`: refused before one was known).
    /// Stored and duplicate messages count into handles cached per stream.
    pub(crate) fn stream_publish(&self, stream: Option<&str>, result: &str) {
        let Some(stream) = stream else {
            return self
                .counter(
                    STREAM_PUBLISH_TOTAL,
                    [
                        ("stream", "unknown".to_owned()),
                        ("result", result.to_owned()),
                    ],
                )
                .increment(1);
        };
        let Some(at) = HOT_RESULTS.iter().position(|r| *r == result) else {
            return self
                .counter(
                    STREAM_PUBLISH_TOTAL,
                    [("stream", stream.to_owned()), ("result", result.to_owned())],
                )
                .increment(1);
        };
        let cached = self
            .streams
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(stream)
            .map(|counters| counters[at].clone());
        let counter = cached.unwrap_or_else(|| {
            let counters = HOT_RESULTS.map(|result| {
                self.counter(
                    STREAM_PUBLISH_TOTAL,
                    [("stream", stream.to_owned()), ("result", result.to_owned())],
                )
            });
            let counter = counters[at].clone();
            self.streams
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(stream.to_owned(), counters);
            counter
        });
        counter.increment(1);
    }

    /// Counts a gRPC stream of `rpc` as open until the returned guard is dropped.
    pub(crate) fn grpc_stream_opened(&self, rpc: &'static str) -> OpenStream {
        let labels = vec![Label::new("rpc", rpc)];
        let gauge = self
            .recorder
            .register_gauge(&Key::from_parts(GRPC_STREAMS_OPEN, labels), &METADATA);
        gauge.increment(1.0);
        OpenStream(gauge)
    }

    /// The redelivery and dead-letter counters of one consumer.
    pub(crate) fn consumer_counters(&self, stream: &str, consumer: &str) -> ConsumerCounters {
        let labels = || {
            [
                ("stream", stream.to_owned()),
                ("consumer", consumer.to_owned()),
            ]
        };
        ConsumerCounters {
            redeliveries: self.counter(REDELIVERIES_TOTAL, labels()),
            dead_letters: self.counter(DEAD_LETTERS_TOTAL, labels()),
        }
    }

    /// Sets the consumer-group gauges to `groups` (stream, group, pending, ack pending,
    /// redelivered); groups seen by the last call and gone since are set to zero.
    pub(crate) fn set_groups(&self, groups: Vec<(String, String, [u64; 3])>) {
        let mut seen = lock(&self.groups_seen);
        let mut now = HashSet::with_capacity(groups.len());
        for (stream, group, figures) in groups {
            self.set_group(&stream, &group, figures);
            now.insert((stream, group));
        }
        for (stream, group) in seen.difference(&now) {
            self.set_group(stream, group, [0; 3]);
        }
        *seen = now;
    }

    fn set_group(&self, stream: &str, group: &str, figures: [u64; 3]) {
        let names = [
            GROUP_PENDING_MESSAGES,
            GROUP_ACK_PENDING_MESSAGES,
            GROUP_REDELIVERED_MESSAGES,
        ];
        for (name, value) in names.into_iter().zip(figures) {
            self.gauge(
                name,
                [("stream", stream.to_owned()), ("group", group.to_owned())],
            )
            .set(value as f64);
        }
    }

    /// The in-flight gauges of one consumer, and those of `subscriber`, one of its
    /// subscriptions.
    pub(crate) fn consumer_inflight(
        &self,
        stream: &str,
        consumer: &str,
        subscriber: Arc<SubscriberFigures>,
    ) -> crate::consumer::InflightGauges {
        let gauge = |name: &'static str| {
            let labels = vec![
                Label::new("stream", stream.to_owned()),
                Label::new("consumer", consumer.to_owned()),
            ];
            self.recorder
                .register_gauge(&Key::from_parts(name, labels), &METADATA)
        };
        crate::consumer::InflightGauges {
            messages: gauge(CONSUMER_INFLIGHT_MESSAGES),
            bytes: gauge(CONSUMER_INFLIGHT_BYTES),
            subscriber,
        }
    }

    /// Counts one JetStream failure.
    pub(crate) fn jetstream_error(&self, kind: &'static str) {
        debug_assert!(JETSTREAM_ERROR_KINDS.contains(&kind), "{kind} is listed");
        let labels = vec![Label::new("kind", kind)];
        self.recorder
            .register_counter(&Key::from_parts(JETSTREAM_ERRORS_TOTAL, labels), &METADATA)
            .increment(1);
    }

    pub(crate) fn inflight_changed(&self, delta: f64) {
        self.inflight.increment(delta);
    }

    pub(crate) fn set_connected(&self, connected: bool) {
        self.connected.set(if connected { 1.0 } else { 0.0 });
    }
}

/// A gRPC stream counted in [`GRPC_STREAMS_OPEN`] while this lives.
#[derive(Debug)]
pub(crate) struct OpenStream(Gauge);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// What one consumer's deliveries count into.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerCounters {
    pub(crate) redeliveries: Counter,
    pub(crate) dead_letters: Counter,
}

/// The snake_case label of a gRPC code (`ok`, `invalid_argument`, ...).
pub(crate) fn code_label(code: tonic::Code) -> String {
    let mut label = String::new();
    for (i, word) in format!("{code:?}").char_indices() {
        if word.is_uppercase() && i > 0 {
            label.push('_');
        }
        label.push(word.to_ascii_lowercase());
    }
    label
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A label value in the Prometheus text format: backslash, double quote and line feed
/// escaped.
fn escape_label(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => escaped.push_str("\\\\"),
            '"' => escaped.push_str("\\\""),
            '\n' => escaped.push_str("\\n"),
            c => escaped.push(c),
        }
    }
    escaped
}

/// One live subscription's figures, updated as it holds, settles and delivers messages.
#[derive(Debug)]
pub(crate) struct SubscriberFigures {
    stream: String,
    consumer: String,
    id: String,
    messages: AtomicU64,
    bytes: AtomicU64,
    delivered: AtomicU64,
}

impl SubscriberFigures {
    fn messages(&self) -> u64 {
        self.messages.load(Ordering::Relaxed)
    }

    fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// One message of `size` bytes is now held.
    pub(crate) fn held(&self, size: usize) {
        self.messages.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(size as u64, Ordering::Relaxed);
    }

    /// One message of `size` bytes is settled (or given back).
    pub(crate) fn released(&self, size: usize) {
        self.messages.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(size as u64, Ordering::Relaxed);
    }

    /// One message was handed to the subscription's gRPC stream.
    pub(crate) fn delivered_one(&self) {
        self.delivered.fetch_add(1, Ordering::Relaxed);
    }
}

/// Keeps a subscription's series rendered; they end when it drops.
#[derive(Debug)]
pub(crate) struct LiveSubscriber {
    subscribers: Weak<Mutex<BTreeMap<String, Arc<SubscriberFigures>>>>,
    id: String,
}

impl Drop for LiveSubscriber {
    fn drop(&mut self) {
        if let Some(subscribers) = self.subscribers.upgrade() {
            lock(&subscribers).remove(&self.id);
        }
    }
}

/// How often the recorder's upkeep drains the samples histograms buffer into their buckets.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Runs the recorder's upkeep until `shutdown` fires. Histograms buffer every sample until
/// upkeep (or a render) drains them, so this runs whether or not the `/metrics` endpoint
/// does: without it a broker with metrics off grew by every publish's latency sample.
pub(crate) async fn upkeep(metrics: BrokerMetrics, shutdown: CancellationToken) {
    let handle = metrics.handle();
    let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => handle.run_upkeep(),
        }
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` fires; each scrape first reads the
/// consumer groups' figures from JetStream through `api`.
pub(crate) async fn serve(
    listener: TcpListener,
    metrics: BrokerMetrics,
    api: JsApi,
    shutdown: CancellationToken,
) {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let (metrics, api) = (metrics.clone(), api.clone());
            async move {
                crate::consumer::lag::refresh(&api, &metrics).await;
                let tasks = tokio::runtime::Handle::current()
                    .metrics()
                    .num_alive_tasks();
                metrics
                    .recorder
                    .register_gauge(&Key::from_static_name(RUNTIME_ALIVE_TASKS), &METADATA)
                    .set(tasks as f64);
                metrics.render()
            }
        }),
    );
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    if let Err(error) = served {
        tracing::warn!(%error, "metrics endpoint stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_subscriptions_render_until_they_end() {
        let metrics = BrokerMetrics::new();
        let (figures, live) = metrics.subscriber("ORDERS", "bill\"ing", "7");
        figures.held(100);
        figures.held(50);
        figures.delivered_one();
        figures.released(100);
        let rendered = metrics.render();
        let labels = r#"{stream="ORDERS",consumer="bill\"ing",subscriber="7"}"#;
        for (name, value) in [
            (SUBSCRIBER_INFLIGHT_MESSAGES, 1),
            (SUBSCRIBER_INFLIGHT_BYTES, 50),
            (SUBSCRIBER_DELIVERED_TOTAL, 1),
        ] {
            assert!(
                rendered.contains(&format!("{name}{labels} {value}\n")),
                "{name} in {rendered}"
            );
        }
        assert!(rendered.contains("# TYPE lax_broker_subscriber_delivered_total counter"));
        drop(live);
        assert!(!metrics.render().contains("lax_broker_subscriber_"));
    }

    #[test]
    fn codes_become_snake_case_labels() {
        assert_eq!(code_label(tonic::Code::Ok), "ok");
        assert_eq!(code_label(tonic::Code::InvalidArgument), "invalid_argument");
        assert_eq!(
            code_label(tonic::Code::ResourceExhausted),
            "resource_exhausted"
        );
    }

    #[test]
    fn figures_render_per_broker() {
        let a = BrokerMetrics::new();
        let b = BrokerMetrics::new();
        a.request("Publish", tonic::Code::Ok);
        a.publish("Publish", "persistent", "stored", Duration::from_millis(3));
        a.jetstream_error("timeout");
        let rendered = a.handle().render();
        assert!(
            rendered.contains("lax_broker_requests_total{rpc=\"Publish\",code=\"ok\"} 1"),
            "{rendered}"
        );
        assert!(
            rendered.contains("lax_broker_publish_latency_seconds_bucket"),
            "{rendered}"
        );
        assert!(rendered.contains("lax_broker_jetstream_errors_total{kind=\"timeout\"} 1"));
        assert!(!b.handle().render().contains("lax_broker_requests_total{"));
    }

    #[test]
    fn cached_and_uncached_publishes_count_into_the_same_series() {
        let metrics = BrokerMetrics::new();
        let clone = metrics.clone();
        metrics.publish(
            "StreamPublish",
            "persistent",
            "stored",
            Duration::from_millis(1),
        );
        clone.publish(
            "StreamPublish",
            "persistent",
            "stored",
            Duration::from_millis(2),
        );
        metrics.publish(
            "StreamPublish",
            "persistent",
            "duplicate",
            Duration::from_millis(1),
        );
        metrics.publish(
            "StreamPublish",
            "persistent",
            "unavailable",
            Duration::from_millis(1),
        );
        metrics.publish("Other", "persistent", "stored", Duration::from_millis(1));
        let rendered = metrics.handle().render();
        for (series, count) in [
            (
                r#"lax_broker_publish_total{tier="persistent",result="stored"}"#,
                3,
            ),
            (
                r#"lax_broker_publish_total{tier="persistent",result="duplicate"}"#,
                1,
            ),
            (
                r#"lax_broker_publish_total{tier="persistent",result="unavailable"}"#,
                1,
            ),
            (
                r#"lax_broker_publish_latency_seconds_count{rpc="StreamPublish",tier="persistent"}"#,
                4,
            ),
            (
                r#"lax_broker_publish_latency_seconds_count{rpc="Other",tier="persistent"}"#,
                1,
            ),
        ] {
            assert!(
                rendered.contains(&format!("{series} {count}\n")),
                "{series} {count} in {rendered}"
            );
        }
        assert!(
            !rendered.contains(r#"tier="memory""#),
            "handles register on first use only"
        );
    }

    /// Asserts that each of `lines` (series and value) is in the rendered text.
    fn assert_rendered(metrics: &BrokerMetrics, lines: &[&str]) {
        let rendered = metrics.handle().render();
        for line in lines {
            assert!(
                rendered.contains(&format!("{line}\n")),
                "{line} in {rendered}"
            );
        }
    }

    #[test]
    fn per_stream_publishes_count_by_result_and_unknown_streams_apart() {
        let metrics = BrokerMetrics::new();
        metrics.stream_publish(Some("ORDERS"), "stored");
        metrics.clone().stream_publish(Some("ORDERS"), "stored");
        metrics.stream_publish(Some("ORDERS"), "duplicate");
        metrics.stream_publish(Some("ORDERS"), "deadline_exceeded");
        metrics.stream_publish(None, "invalid_argument");
        assert_rendered(
            &metrics,
            &[
                r#"lax_broker_stream_publish_total{stream="ORDERS",result="stored"} 2"#,
                r#"lax_broker_stream_publish_total{stream="ORDERS",result="duplicate"} 1"#,
                r#"lax_broker_stream_publish_total{stream="ORDERS",result="deadline_exceeded"} 1"#,
                r#"lax_broker_stream_publish_total{stream="unknown",result="invalid_argument"} 1"#,
            ],
        );
    }

    #[test]
    fn open_streams_are_counted_while_their_guards_live() {
        let metrics = BrokerMetrics::new();
        let open = |m: &BrokerMetrics| {
            let rendered = m.handle().render();
            rendered
                .lines()
                .find_map(|l| l.strip_prefix(r#"lax_broker_grpc_streams_open{rpc="Subscribe"} "#))
                .map(str::to_owned)
        };
        let first = metrics.grpc_stream_opened("Subscribe");
        let second = metrics.grpc_stream_opened("Subscribe");
        assert_eq!(open(&metrics).as_deref(), Some("2"));
        drop(first);
        drop(second);
        assert_eq!(open(&metrics).as_deref(), Some("0"));
    }

    #[test]
    fn groups_gone_since_the_last_scrape_are_zeroed() {
        let metrics = BrokerMetrics::new();
        metrics.set_groups(vec![
            ("ORDERS".into(), "billing".into(), [5, 2, 1]),
            ("ORDERS".into(), "audit".into(), [7, 0, 0]),
        ]);
        metrics.set_groups(vec![("ORDERS".into(), "billing".into(), [4, 1, 0])]);
        assert_rendered(
            &metrics,
            &[
                r#"lax_broker_consumer_group_pending_messages{stream="ORDERS",group="billing"} 4"#,
                r#"lax_broker_consumer_group_ack_pending_messages{stream="ORDERS",group="billing"} 1"#,
                r#"lax_broker_consumer_group_redelivered_messages{stream="ORDERS",group="billing"} 0"#,
                r#"lax_broker_consumer_group_pending_messages{stream="ORDERS",group="audit"} 0"#,
            ],
        );
    }
}
