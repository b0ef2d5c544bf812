//! # lax-client
//!
//! The LAX client for NATS JetStream. An application calls
//! [`publish`](LaxClient::publish) and LAX picks the path by the routing table:
//!
//! | tier | `require_ack` | route | what you get |
//! |---|---|---|---|
//! | `memory` | no | **direct**: core NATS publish | lowest latency, at most once |
//! | `memory` | yes | **broker** → JetStream memory stream | an ack with stream and sequence |
//! | `persistent` | any | **broker** → JetStream file stream, 1 replica | an ack; survives restarts |
//! | `replicated` | any | **broker** → JetStream file stream, 3 replicas | an ack; survives a node loss |
//!
//! Around both paths the client composes lax-core's layers: metrics → in-flight cap → route
//! → direct: breaker → timeout → NATS; broker: retry → breaker → timeout → pooled gRPC
//! streams. Retries reuse the message id, sent as `Nats-Msg-Id`, so JetStream stores a
//! retried message once.
//!
//! ## Quick start
//!
//! ```no_run
//! use lax_client::{ClientOptions, Json, LaxClient, PublishOptions, Tier};
//! use serde_json::json;
//!
//! # async fn demo() -> Result<(), lax_client::Error> {
//! let client = LaxClient::connect(ClientOptions::default()).await?;
//!
//! // Memory tier: direct NATS.
//! client.publish("events.user.login", Json(json!({"user_id": "123", "ip": "192.168.1.1"}))).await?;
//!
//! // Persistent tier with ack: through the broker, stored in JetStream.
//! let receipt = client
//!     .publish_with(
//!         "orders.created",
//!         Json(json!({"order_id": "456", "amount": 99.99})),
//!         PublishOptions::tier(Tier::Persistent).require_ack(true),
//!     )
//!     .await?;
//! let ack = receipt.ack.expect("acked");
//! println!("{} stored in {} at {}", receipt.message_id, ack.stream, ack.sequence);
//!
//! client.close().await?;
//! # Ok(()) }
//! ```
//!
//! ## Three ways in
//!
//! - **An application** uses [`LaxClient`] with [`ClientOptions`] (from code, a config file
//!   section via `serde`, or `LAX_*` environment variables with
//!   [`ClientOptions::from_env`]). Add tower layers of your own with
//!   [`LaxClientBuilder::layer`]; use [`blocking::BlockingClient`] from synchronous code.
//! - **One transport alone**: `lax_transport_nats::NatsPublisher` or
//!   `lax_transport_grpc::GrpcPublisher`, each a `lax_core::Publisher`.
//! - **A custom stack**: [`ClientOptions::stack_config`] gives the configuration the client
//!   uses; `lax_core::stack::StackBuilder` compiles it over any two services, and every layer
//!   is also usable on its own from `lax_core`.
//!
//! ## Consuming
//!
//! [`LaxClient::subscribe`] reads through the broker from JetStream: a [`Subscription`] is a
//! stream of [`ReceivedMessage`]s to [`ack`](ReceivedMessage::ack),
//! [`nack`](ReceivedMessage::nack), [`in_progress`](ReceivedMessage::in_progress) or
//! [`term`](ReceivedMessage::term), and [`Subscription::process`] runs a handler per message,
//! acking on `Ok` and nacking on `Err`. Members of a consumer group
//! ([`SubscribeOptions::group`]) split the messages; see the [`subscribe`] module.
//! Memory-tier traffic is read over core NATS with [`LaxClient::subscribe_direct`]
//! ([`DirectProcess`] runs a handler per message).
//!
//! ## Tracing
//!
//! Each publish runs in a `lax.publish` span (its retries are `lax.publish.attempt` events
//! inside it) and each handled message in a `lax.process` span. The trace travels with the
//! message as a W3C `traceparent` header, through the broker (`lax.broker.publish`,
//! `lax.broker.deliver`) and JetStream, so a handler's span continues the publisher's
//! trace; see `lax_core::trace`. To continue a trace that came with an HTTP request, run
//! the publish in its context (`TraceContext::scope`) or set the `traceparent` header.
//!
//! With the `opentelemetry` feature, spans recorded by a `tracing-opentelemetry` layer take
//! their ids from OpenTelemetry, so the client's, the broker's and the application's
//! exported spans join into one trace; a publish inside an application's OpenTelemetry span
//! is its child. [`ClientOptions::otlp_endpoint`] makes the client build an OTLP/gRPC
//! exporter whose layer `LaxClient::otel_layer` hands out for the application to add to
//! its subscriber (the client installs none); [`LaxClient::close`] sends the last spans.
//!
//! ## Errors
//!
//! Every failure is a [`Error`] whose [`kind`](Error::kind) says what happened
//! ([`ErrorKind::CircuitOpen`], [`ErrorKind::TimedOut`], …) and whose
//! [`may_be_stored`](Error::may_be_stored) says whether a broker publish might have been
//! stored anyway (retrying with the same message id is then safe).
#![forbid(unsafe_code)]

#[cfg(feature = "axum")]
pub mod axum;
pub mod blocking;
mod client;
pub mod metrics;
mod options;
mod payload;
pub mod subscribe;

pub use client::{
    BatchMessage, BatchResult, ClientStack, LaxClient, LaxClientBuilder, PublishOptions,
};
pub use lax_core::{
    Ack, Error, ErrorKind, Headers, Receipt, Route, SmolStr, Tier, breaker::BreakerState,
};
pub use lax_transport_grpc::{BrokerAdmin, ConsumerGroupConfig, DeliverPolicy, GroupJoin};

/// Stream and consumer-group administration through the broker ([`LaxClient::admin`]), in
/// LAX's own types: checked before they are sent, independent of the wire.
///
/// ```no_run
/// use lax_client::{LaxClient, Tier, admin::{StreamConfig, StreamInfoOptions}};
///
/// # async fn demo(client: LaxClient) -> Result<(), lax_client::Error> {
/// let admin = client.admin()?;
/// admin
///     .create_stream("ORDERS", StreamConfig::new(["orders.>"]).tier(Tier::Persistent))
///     .await?;
/// let info = admin.stream_info("ORDERS", StreamInfoOptions::default()).await?;
/// println!("{} messages", info.stream.state.messages);
/// # Ok(()) }
/// ```
pub mod admin {
    pub use lax_transport_grpc::{
        BrokerAdmin, ConsumerGroup, ConsumerGroupConfig, ConsumerInfo, DeliverPolicy,
        DiscardPolicy, GroupJoin, ListStreamsOptions, RetentionPolicy, StorageType, Stream,
        StreamConfig, StreamInfo, StreamInfoOptions, StreamPage, StreamState, StreamStats,
    };
}
pub use lax_transport_nats::{ConnectionState, DirectMessage, DirectSubscription};
pub use options::{
    BrokerTls, ClientOptions, ClientOptionsBuilder, NatsAuth, NatsTls, OverloadBehavior,
};
pub use payload::{JSON_CONTENT_TYPE, Json, Payload};
pub use subscribe::{
    BrokerMessage, DirectProcess, ProcessOptions, ReceivedMessage, StartPosition, SubscribeOptions,
    Subscription,
};

/// Installs a `tracing` subscriber printing to stderr, filtered by `RUST_LOG` when set, else
/// by the options' `log_level`. For applications and examples that have no subscriber of
/// their own (feature `init-tracing`; the library itself never installs one); does nothing
/// when one is already installed.
#[cfg(feature = "init-tracing")]
pub fn init_tracing(options: &ClientOptions) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(options.log_level.to_ascii_lowercase()))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let _already_installed = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
