//! # lax-transport-nats
//!
//! The LAX direct path: a [`lax_core::Publisher`] that sends messages straight to NATS with a
//! core `PUBLISH` (no JetStream, no ack, lowest latency), plus core NATS subscriptions. It
//! stands on its own — the `lax-client` facade routes memory-tier, un-acked publishes here,
//! but an application can use it directly.
//!
//! - [`NatsPublisher::connect`] takes [`NatsOptions`]: several servers, connect timeout,
//!   reconnect policy, client name, token / user-password / `.creds` / NKey auth, TLS with a
//!   custom CA and client certificates, liveness pings, and the bound on what is buffered
//!   while disconnected. The options deserialise with `serde` and are validated up front.
//! - Publishes are validated (subject, headers, size against the server's `max_payload`)
//!   before anything is sent; the message id travels in a `Message-Id` header; the receipt
//!   is [`Receipt::direct`](lax_core::Receipt::direct).
//! - While reconnecting, publishes are buffered up to a bound and fail with
//!   [`ErrorKind::Unavailable`](lax_core::ErrorKind::Unavailable) beyond it, so a circuit
//!   breaker sees the outage. See [`NatsPublisher`] for the exact behaviour.
//! - The connection's [`ConnectionState`] is watchable, its [`ConnectionEvent`]s are
//!   broadcast, and both feed the metrics `{prefix}_nats_connections`,
//!   `{prefix}_connection_errors_total{type="nats"}` and
//!   `{prefix}_nats_connection_errors_total{kind}`. A connection that goes silent without closing
//!   is declared disconnected after three unanswered ping intervals: 9 s by default
//!   ([`NatsOptions::stall_detection_time`]).
//! - [`close`](lax_core::Publisher::close) refuses new publishes, waits for those in flight,
//!   flushes and drains the connection.
//!
//! ```no_run
//! use futures::StreamExt;
//! use lax_core::{PublishRequest, Publisher};
//! use lax_transport_nats::{NatsOptions, NatsPublisher};
//!
//! # async fn demo() -> Result<(), lax_core::Error> {
//! let publisher = NatsPublisher::connect(NatsOptions::new(["nats://127.0.0.1:4222"])).await?;
//! let mut orders = publisher.subscribe("orders.>", None).await?;
//!
//! let receipt = publisher
//!     .publish(PublishRequest::new("orders.created", "order 42").with_header("Trace-Id", "t-1"))
//!     .await?;
//!
//! let message = orders.next().await.expect("subscription open");
//! assert_eq!(message.message_id.as_deref(), Some(receipt.message_id.as_str()));
//! assert_eq!(message.headers.get("Trace-Id"), Some("t-1"));
//! publisher.close().await?;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod confirm;
mod error;
mod future;
mod headers;
pub mod options;
mod publisher;
mod state;
mod subscription;

pub use future::PublishFuture;
pub use options::{NatsAuth, NatsOptions, NatsTls, ReconnectPolicy};
pub use publisher::NatsPublisher;
pub use state::{ConnectionEvent, ConnectionState};
pub use subscription::{DirectMessage, DirectSubscription};
