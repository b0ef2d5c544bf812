//! [`LaxClient`]: one handle per application, cheap to clone, that publishes by tier over the
//! direct or the broker path through lax-core's layer stack.

use std::{fmt, sync::Arc, time::Duration};

use bytes::Bytes;
use futures::future::join_all;
#[cfg(feature = "opentelemetry")]
use lax_core::trace::{OtlpLayer, OtlpTracing};
use lax_core::{
    BoxError, Error, Headers, PublishRequest, Publisher, PublisherService, Receipt, Route,
    ServicePublisher, SmolStr, Tier,
    breaker::{BreakerHandle, BreakerState},
    stack::{Stack, StackBuilder},
    trace::{self, TraceContext},
};
use lax_transport_grpc::{BrokerAdmin, GrpcPublisher};
use lax_transport_nats::{ConnectionState, DirectSubscription, NatsPublisher};
use tower::{Layer, Service, ServiceExt, util::BoxCloneSyncService};
use tracing::{Instrument as _, Span, field::Empty};

use crate::{
    metrics::MetricsTarget,
    options::ClientOptions,
    payload::{Json, Payload},
};

/// The publish stack the client drives: lax-core's default stack plus any layers added with
/// [`LaxClientBuilder::layer`], boxed.
pub type ClientStack = BoxCloneSyncService<PublishRequest, Receipt, BoxError>;

/// lax-core's default stack (its public layers, composed) over the client's two transports.
type DefaultStack = Stack<PublisherService<NatsPublisher>, PublisherService<GrpcPublisher>>;

/// What the client publishes through: the default stack as it is, or boxed under the layers
/// added with [`LaxClientBuilder::layer`]. Unboxed, a publish allocates nothing for the
/// stack's sake.
///
/// Not `tower::util::Either`: its `Service` impl bounds each side's error by
/// `Into<BoxError>`, and with a boxed error on one side rustc can no longer prove an async
/// fn awaiting the publish `Send` (the axum example stops compiling).
#[derive(Clone)]
#[allow(
    clippy::large_enum_variant,
    reason = "cloned for every publish: a boxed stack would cost an allocation per clone"
)]
enum Publishing {
    Default(DefaultStack),
    Layered(ClientStack),
}

impl Service<PublishRequest> for Publishing {
    type Response = Receipt;
    type Error = BoxError;
    type Future = futures::future::Either<
        <DefaultStack as Service<PublishRequest>>::Future,
        <ClientStack as Service<PublishRequest>>::Future,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        match self {
            Publishing::Default(stack) => stack.poll_ready(cx),
            Publishing::Layered(stack) => stack.poll_ready(cx),
        }
    }

    fn call(&mut self, request: PublishRequest) -> Self::Future {
        match self {
            Publishing::Default(stack) => futures::future::Either::Left(stack.call(request)),
            Publishing::Layered(stack) => futures::future::Either::Right(stack.call(request)),
        }
    }
}

/// Per-publish options: tier, ack, timeout, headers, ids and retries.
///
/// ```
/// use std::time::Duration;
/// use lax_client::{PublishOptions, Route, Tier};
///
/// let options = PublishOptions::tier(Tier::Replicated)
///     .header("trace-id", "abc123")
///     .timeout(Duration::from_secs(2));
/// assert_eq!(options.route(), Route::Broker);
/// assert_eq!(PublishOptions::default().route(), Route::Direct);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishOptions {
    /// What travels with the message through the stack: tier, ack, timeout (retries
    /// included; the client's `publish_timeout` when unset), dedup id and attempts.
    pub message: lax_core::PublishOptions,
    /// Application headers.
    pub headers: Headers,
    /// The message id; generated when unset.
    pub message_id: Option<SmolStr>,
}

impl From<lax_core::PublishOptions> for PublishOptions {
    fn from(message: lax_core::PublishOptions) -> Self {
        PublishOptions {
            message,
            ..Default::default()
        }
    }
}

impl PublishOptions {
    /// Options for `tier`.
    pub fn tier(tier: Tier) -> Self {
        lax_core::PublishOptions::tier(tier).into()
    }

    /// Persistent tier with ack: the Python SDK's
    /// `PublishOptions(tier=PERSISTENT, require_ack=True)`.
    pub fn persistent() -> Self {
        Self::tier(Tier::Persistent).require_ack(true)
    }

    /// Sets whether an ack is required (forces the broker path).
    pub fn require_ack(mut self, require_ack: bool) -> Self {
        self.message.require_ack = require_ack;
        self
    }

    /// Sets the deadline, retries included.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.message.timeout = Some(timeout);
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// Sets the message id.
    pub fn message_id(mut self, id: impl Into<SmolStr>) -> Self {
        self.message_id = Some(id.into());
        self
    }

    /// Sets the key JetStream de-duplicates on (the message id when unset).
    pub fn dedup_id(mut self, id: impl Into<SmolStr>) -> Self {
        self.message.dedup_id = Some(id.into());
        self
    }

    /// Sets the attempts for this message (1 = no retry).
    pub fn retry_attempts(mut self, attempts: u32) -> Self {
        self.message.retry_attempts = Some(attempts);
        self
    }

    /// The route these options take under the LAX routing table.
    pub fn route(&self) -> Route {
        self.message.default_route()
    }

    fn into_request(
        self,
        subject: SmolStr,
        payload: Bytes,
        content_type: Option<&'static str>,
    ) -> PublishRequest {
        let mut request = PublishRequest::new(subject, payload)
            .with_options(self.message)
            .with_headers(self.headers);
        if let Some(content_type) = content_type
            && request.headers.get("Content-Type").is_none()
        {
            request.headers.insert("Content-Type", content_type);
        }
        if let Some(id) = self.message_id {
            request.message_id = id;
        }
        request
    }
}

/// One message of a [`LaxClient::batch_publish`].
#[derive(Debug)]
pub struct BatchMessage {
    subject: SmolStr,
    payload: Result<(Bytes, Option<&'static str>), Error>,
    options: PublishOptions,
}

impl BatchMessage {
    /// A message with default (memory-tier) options.
    pub fn new(subject: impl Into<SmolStr>, data: impl Payload) -> Self {
        BatchMessage {
            subject: subject.into(),
            payload: data.into_payload(),
            options: PublishOptions::default(),
        }
    }

    /// A message whose data is sent as JSON.
    pub fn json<T: serde::Serialize>(subject: impl Into<SmolStr>, value: &T) -> Self {
        Self::new(subject, Json(value))
    }

    /// Sets the options.
    pub fn with_options(mut self, options: PublishOptions) -> Self {
        self.options = options;
        self
    }
}

/// The outcome of a [`LaxClient::batch_publish`], one entry per message in order.
#[derive(Debug)]
pub struct BatchResult {
    /// Messages published.
    pub success_count: usize,
    /// Messages that failed.
    pub failure_count: usize,
    /// The id of every message, in order; empty for a message whose data could not be
    /// encoded (it was never given one).
    pub message_ids: Vec<SmolStr>,
    /// Each message's receipt or error, in order.
    pub results: Vec<Result<Receipt, Error>>,
}

impl BatchResult {
    /// The failures with their positions in the batch.
    pub fn errors(&self) -> impl Iterator<Item = (usize, &Error)> {
        self.results
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.as_ref().err().map(|e| (i, e)))
    }
}

/// Builds a [`LaxClient`]; add layers of your own on top of the default stack here.
pub struct LaxClientBuilder {
    options: ClientOptions,
    layers: Vec<Box<dyn FnOnce(ClientStack) -> ClientStack + Send>>,
    global_metrics: bool,
}

impl fmt::Debug for LaxClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LaxClientBuilder")
            .field("options", &self.options)
            .field("extra_layers", &self.layers.len())
            .field("global_metrics", &self.global_metrics)
            .finish()
    }
}

impl LaxClientBuilder {
    /// Wraps the whole stack in `layer` (layers added later wrap earlier ones).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use lax_client::{ClientOptions, LaxClient};
    ///
    /// # async fn demo() -> Result<(), lax_client::Error> {
    /// let client = LaxClient::new(ClientOptions::default())
    ///     // Any tower layer whose service is `Clone`: here, a hard cap of 2 s per publish
    ///     // on top of the client's own deadlines.
    ///     .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(2)))
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn layer<L>(mut self, layer: L) -> Self
    where
        L: Layer<ClientStack> + Send + 'static,
        L::Service: Service<PublishRequest, Response = Receipt> + Clone + Send + Sync + 'static,
        <L::Service as Service<PublishRequest>>::Error: Into<BoxError>,
        <L::Service as Service<PublishRequest>>::Future: Send + 'static,
    {
        self.layers.push(Box::new(move |stack| {
            BoxCloneSyncService::new(layer.layer(stack).map_err(Into::into))
        }));
        self
    }

    /// Records the metrics into the application's global `metrics` recorder (whatever it
    /// installed) instead of the client's own Prometheus registry. Without the `prometheus`
    /// feature that is where they go anyway; with `enable_metrics: false`, nowhere.
    pub fn global_metrics(mut self) -> Self {
        self.global_metrics = true;
        self
    }

    /// Validates the options, connects to NATS and the brokers, and composes the stack.
    ///
    /// NATS must be reachable. The brokers need not be: their connections keep trying in the
    /// background and broker publishes fail with `Unavailable` (and open the breaker) until
    /// one is up, while direct publishes work.
    pub async fn connect(self) -> Result<LaxClient, Error> {
        let options = self.options;
        options.validate()?;
        let metrics = MetricsTarget::new(options.enable_metrics, self.global_metrics);
        let (nats, grpc, layers) = metrics
            .register(&options.metrics_prefix, async {
                let nats = NatsPublisher::connect(options.nats_options()).await?;
                let grpc = GrpcPublisher::connect_lazy(options.grpc_options()).await?;
                let layers = StackBuilder::new(options.stack_config()).layers()?;
                Ok::<_, Error>((nats, grpc, layers))
            })
            .await?;
        let stack = layers.service(
            PublisherService::new(nats.clone()),
            PublisherService::new(grpc.clone()),
        );
        let direct_breaker = layers.direct_breaker();
        let broker_breaker = layers.broker_breaker();
        let service = if self.layers.is_empty() {
            Publishing::Default(stack)
        } else {
            let mut layered: ClientStack = BoxCloneSyncService::new(stack);
            for wrap in self.layers {
                layered = wrap(layered);
            }
            Publishing::Layered(layered)
        };
        let publisher = ServicePublisher::new(service)
            .with_lifecycle(Arc::new(nats.clone()))
            .with_lifecycle(Arc::new(grpc.clone()));
        #[cfg(feature = "opentelemetry")]
        let otlp = options
            .otlp_endpoint
            .as_deref()
            .map(|endpoint| OtlpTracing::new(endpoint, "lax-client"))
            .transpose()
            .map_err(|e| Error::config(e.to_string()))?;
        tracing::info!(
            nats = %options.nats_urls.join(","),
            brokers = %options.broker_addrs.join(","),
            "LAX client connected"
        );
        Ok(LaxClient {
            inner: Arc::new(Inner {
                options,
                publisher,
                nats,
                grpc,
                direct_breaker,
                broker_breaker,
                metrics,
                #[cfg(feature = "opentelemetry")]
                otlp,
            }),
        })
    }
}

/// Records how a publish ended on its `lax.publish` span.
fn record_publish(span: &Span, published: &Result<Receipt, Error>) {
    if span.is_disabled() {
        return;
    }
    match published {
        Ok(receipt) => {
            span.record("route", receipt.route.as_str());
            match &receipt.ack {
                None => span.record("outcome", "published"),
                Some(ack) => {
                    span.record("stream", ack.stream.as_str());
                    span.record("sequence", ack.sequence);
                    span.record("duplicate", ack.duplicate);
                    span.record(
                        "outcome",
                        if ack.duplicate { "duplicate" } else { "stored" },
                    )
                }
            };
        }
        Err(error) => {
            span.record("outcome", "error");
            span.record("error_kind", tracing::field::debug(error.kind()));
            span.record("may_be_stored", error.may_be_stored());
        }
    }
}

struct Inner {
    metrics: MetricsTarget,
    options: ClientOptions,
    publisher: ServicePublisher<Publishing>,
    nats: NatsPublisher,
    grpc: GrpcPublisher,
    direct_breaker: Option<BreakerHandle>,
    broker_breaker: Option<BreakerHandle>,
    /// The span export of `otlp_endpoint`, shut down by `close`.
    #[cfg(feature = "opentelemetry")]
    otlp: Option<OtlpTracing>,
}

/// The LAX client: publishes each message by the LAX routing table — memory tier without ack
/// straight to NATS, everything else through the broker to JetStream — with retries, a
/// circuit breaker per path, a pool of broker connections, an in-flight cap, timeouts and
/// metrics around both paths.
///
/// Cheap to clone: share one per application.
///
/// # Where a publish is checked
///
/// Once in this process: the transport that sends the message (NATS for the direct path,
/// gRPC for the broker path) checks it with [`lax_core::validate::validate_request`] before
/// anything is sent, against the NATS server's `max_payload`, and refuses a bad one with
/// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) (a `ValueError` in the
/// metrics, never retried, never counted by a breaker). The client and the layers do not
/// check it again; the broker checks once more on its side of the wire. See
/// [`PublishRequest`]'s docs for the request the stack carries and its deadline.
///
/// ```no_run
/// use lax_client::{ClientOptions, Json, LaxClient, PublishOptions};
///
/// # async fn demo() -> Result<(), lax_client::Error> {
/// let client = LaxClient::connect(ClientOptions::default()).await?;
/// // Memory tier: straight to NATS.
/// client.publish("events.user.login", Json(serde_json::json!({"user_id": "123"}))).await?;
/// // Persistent tier with ack: through the broker, stored in JetStream.
/// let receipt = client
///     .publish_with("orders.created", Json(serde_json::json!({"order_id": "456"})), PublishOptions::persistent())
///     .await?;
/// println!("stored as {:?}", receipt.ack);
/// client.close().await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LaxClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for LaxClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LaxClient")
            .field("nats", &self.inner.nats.state())
            .field("broker_connections", &self.inner.grpc.healthy_connections())
            .field("in_flight", &self.inner.publisher.in_flight())
            .field("closed", &self.inner.publisher.is_closed())
            .finish()
    }
}

impl LaxClient {
    /// A builder for a client with these options; connect it with
    /// [`LaxClientBuilder::connect`] (as the Python SDK's `LaxClient(options)` then
    /// `await client.connect()`), after adding layers if you like.
    #[allow(
        clippy::new_ret_no_self,
        reason = "a client exists only once connected"
    )]
    pub fn new(options: ClientOptions) -> LaxClientBuilder {
        LaxClientBuilder {
            options,
            layers: Vec::new(),
            global_metrics: false,
        }
    }

    /// Connects a client with these options.
    pub async fn connect(options: ClientOptions) -> Result<Self, Error> {
        Self::new(options).connect().await
    }

    /// Publishes `data` on `subject` with default options (memory tier, no ack: direct).
    pub async fn publish(
        &self,
        subject: impl Into<SmolStr>,
        data: impl Payload,
    ) -> Result<Receipt, Error> {
        self.publish_with(subject, data, PublishOptions::default())
            .await
    }

    /// Publishes `value` as JSON with default options.
    pub async fn publish_json<T: serde::Serialize>(
        &self,
        subject: impl Into<SmolStr>,
        value: &T,
    ) -> Result<Receipt, Error> {
        self.publish(subject, Json(value)).await
    }

    /// Publishes `data` on `subject` with `options`; the receipt carries the message id, the
    /// route taken and, for acked publishes, the stream, sequence and duplicate flag.
    pub async fn publish_with(
        &self,
        subject: impl Into<SmolStr>,
        data: impl Payload,
        options: PublishOptions,
    ) -> Result<Receipt, Error> {
        let (payload, content_type) = data.into_payload()?;
        let request = options.into_request(subject.into(), payload, content_type);
        self.publish_traced(request).await
    }

    /// One logical publish, retries included, in a `lax.publish` span whose trace context
    /// travels in the message's `traceparent` header (see [`lax_core::trace`]). The
    /// parent is the caller's own `traceparent` header, else the task's
    /// [`TraceContext::current`], else none: a new trace.
    async fn publish_traced(&self, mut request: PublishRequest) -> Result<Receipt, Error> {
        let span = tracing::info_span!(
            "lax.publish",
            subject = %request.subject,
            tier = %request.options.tier,
            route = %request.default_route(),
            message_id = %request.message_id,
            stream = Empty,
            sequence = Empty,
            duplicate = Empty,
            attempts = Empty,
            outcome = Empty,
            error_kind = Empty,
            may_be_stored = Empty,
            trace_id = Empty,
            span_id = Empty,
            parent_span_id = Empty,
        );
        // A malformed `traceparent` of the caller's stays as it is, for the transport's
        // validation to refuse.
        if let Ok(given) = TraceContext::from_headers(&request.headers) {
            let passes_through = given.is_some() && span.is_disabled();
            if !passes_through
                && let Some(context) = trace::identify(&span, given.or_else(TraceContext::current))
            {
                context.inject(&mut request.headers);
            }
        }
        let published = self
            .inner
            .publisher
            .publish(request)
            .instrument(span.clone())
            .await;
        record_publish(&span, &published);
        published
    }

    /// Publishes many messages at once and reports each outcome.
    ///
    /// The publishes run concurrently through the stack: direct messages are pipelined on
    /// the NATS connection, broker messages are multiplexed over the broker streams — no
    /// message waits for another's round trip. A bad message fails alone.
    pub async fn batch_publish(
        &self,
        messages: impl IntoIterator<Item = BatchMessage>,
    ) -> BatchResult {
        let mut message_ids = Vec::new();
        let publishes: Vec<_> = messages
            .into_iter()
            .map(|message| {
                let request = message.payload.map(|(payload, content_type)| {
                    message
                        .options
                        .into_request(message.subject, payload, content_type)
                });
                message_ids.push(
                    request
                        .as_ref()
                        .map(|r| r.message_id.clone())
                        .unwrap_or_default(),
                );
                async move { self.publish_traced(request?).await }
            })
            .collect();
        let results = join_all(publishes).await;
        let success_count = results.iter().filter(|r| r.is_ok()).count();
        BatchResult {
            success_count,
            failure_count: results.len() - success_count,
            message_ids,
            results,
        }
    }

    /// Subscribes to `subject` over core NATS (memory-tier traffic), in `queue_group` when
    /// given so that the group's members share the messages.
    pub async fn subscribe_direct(
        &self,
        subject: impl Into<String>,
        queue_group: Option<String>,
    ) -> Result<DirectSubscription, Error> {
        self.inner.nats.subscribe(subject, queue_group).await
    }

    /// Stream and consumer-group administration through the broker.
    pub fn admin(&self) -> Result<BrokerAdmin, Error> {
        self.inner.grpc.admin()
    }

    /// True while NATS is connected and at least one broker connection is up.
    pub fn is_connected(&self) -> bool {
        self.inner.nats.state() == ConnectionState::Connected
            && self.inner.grpc.healthy_connections() > 0
    }

    /// The NATS connection's state.
    pub fn nats_state(&self) -> ConnectionState {
        self.inner.nats.state()
    }

    /// Broker connections up, of `connection_pool_size`.
    pub fn broker_connections(&self) -> usize {
        self.inner.grpc.healthy_connections()
    }

    /// The direct path's circuit breaker state.
    pub fn direct_breaker_state(&self) -> Option<BreakerState> {
        self.inner.direct_breaker.as_ref().map(BreakerHandle::state)
    }

    /// The broker path's circuit breaker state.
    pub fn broker_breaker_state(&self) -> Option<BreakerState> {
        self.inner.broker_breaker.as_ref().map(BreakerHandle::state)
    }

    /// Publishes in flight.
    pub fn in_flight(&self) -> usize {
        self.inner.publisher.in_flight()
    }

    /// The options the client was made with.
    pub fn options(&self) -> &ClientOptions {
        &self.inner.options
    }

    /// The direct transport, for what the facade does not cover.
    pub fn nats(&self) -> &NatsPublisher {
        &self.inner.nats
    }

    /// The broker transport, for what the facade does not cover.
    pub fn broker(&self) -> &GrpcPublisher {
        &self.inner.grpc
    }

    /// Waits until everything published so far has left (direct) or been acked (broker).
    pub async fn flush(&self) -> Result<(), Error> {
        self.inner.publisher.flush().await
    }

    /// The Prometheus text of this client's metrics, for a `/metrics` route; empty when it
    /// records into the global recorder or not at all (see [`crate::metrics`]).
    #[cfg(feature = "prometheus")]
    pub fn render_metrics(&self) -> String {
        self.metrics_handle()
            .map(|handle| handle.render())
            .unwrap_or_default()
    }

    /// The handle of this client's own Prometheus registry, if it has one.
    #[cfg(feature = "prometheus")]
    pub fn metrics_handle(&self) -> Option<metrics_exporter_prometheus::PrometheusHandle> {
        match &self.inner.metrics {
            MetricsTarget::Own(own) => Some(own.handle()),
            _ => None,
        }
    }

    /// A `tracing` layer exporting spans to the `otlp_endpoint` collector, when the options
    /// set one; add it to the application's subscriber (the client installs none). Spans of
    /// every `tracing` span the subscriber records are exported, LAX's and the
    /// application's, with the W3C trace context LAX sends on (see [`lax_core::trace`]).
    ///
    /// ```no_run
    /// use lax_client::{ClientOptions, LaxClient};
    /// use tracing_subscriber::{EnvFilter, layer::SubscriberExt as _, util::SubscriberInitExt as _};
    ///
    /// # async fn demo() -> Result<(), lax_client::Error> {
    /// // LAX_OTLP_ENDPOINT=http://otel-collector:4317
    /// let client = LaxClient::connect(ClientOptions::from_env()?).await?;
    /// tracing_subscriber::registry()
    ///     .with(EnvFilter::new("info"))
    ///     .with(tracing_subscriber::fmt::layer())
    ///     .with(client.otel_layer())
    ///     .init();
    /// // … publish and process …
    /// client.close().await?; // sends the last spans
    /// # Ok(()) }
    /// ```
    #[cfg(feature = "opentelemetry")]
    pub fn otel_layer<S>(&self) -> Option<OtlpLayer<S>>
    where
        S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
    {
        self.inner.otlp.as_ref().map(OtlpTracing::layer)
    }

    /// The span export of `otlp_endpoint`, if the options set one.
    #[cfg(feature = "opentelemetry")]
    pub fn otlp(&self) -> Option<&OtlpTracing> {
        self.inner.otlp.as_ref()
    }

    /// Refuses new publishes, waits for the ones in flight, flushes and closes both
    /// connections, and stops the client's metrics task. Every clone of the client is
    /// closed. With an `otlp_endpoint`, then sends the spans not yet exported and stops the
    /// export.
    pub async fn close(&self) -> Result<(), Error> {
        let closed = self.inner.publisher.close().await;
        self.inner.metrics.stop();
        #[cfg(feature = "opentelemetry")]
        if let Some(otlp) = &self.inner.otlp
            && let Err(error) = otlp.shutdown().await
        {
            tracing::warn!(%error, "the last spans were not exported");
        }
        closed
    }
}
