//! # lax-transport-grpc
//!
//! The broker path of LAX: a [`lax_core::Publisher`] that sends messages over gRPC to the LAX
//! broker, which writes them to JetStream and returns the ack.
//!
//! - **A pool of HTTP/2 connections** ([`GrpcOptions::connection_pool_size`], 10 by default)
//!   spread over one or more broker addresses, balanced and repaired by lax-core's
//!   [`lax_core::pool::Pool`]: publishes take the addresses in turn and fill one connection
//!   up to 128 in flight before the next gets any (then the least busy); a broken one is
//!   rebuilt in the background with exponential backoff, trying the next address, and moves
//!   back to its own address when that answers again. HTTP/2 keep-alive pings find dead
//!   connections; a stream's end is reported to the pool by its ack reader.
//! - **Multiplexed streams**: by default ([`PublishMode::Stream`]) each connection carries one
//!   long-lived `StreamPublish` stream with many publishes in flight on it; each ack is
//!   matched back to its caller by message id. A stream that breaks fails only its own
//!   in-flight publishes, as *may be stored* — retrying them with the same message id is safe,
//!   the broker de-duplicates on it. [`PublishMode::Unary`] sends one `Publish` call per
//!   message instead, and [`GrpcPublisher::publish_batch`] one `BatchPublish` for many.
//! - **Deadlines**: a message's timeout (or [`GrpcOptions::publish_timeout`]) travels as
//!   `timeout_ms` in the message and, on unary calls, as `grpc-timeout`; the client enforces it
//!   too. An ack that misses it fails as `TimedOut`, may be stored.
//! - **Errors** are lax-core's: input is validated before anything is sent, and every gRPC
//!   status is mapped by one table, [`status_to_error`].
//! - **Security**: TLS with a custom CA ([`TlsOptions`]) and a bearer token on every call
//!   ([`BearerAuth`]).
//! - **Administration**: streams and consumer groups through [`BrokerAdmin`], in LAX's own
//!   types ([`StreamConfig`], [`StreamInfo`], [`ConsumerGroupConfig`]…), checked before they
//!   are sent.
//! - **Consuming**: [`GrpcPublisher::subscribe`] opens a [`GrpcSubscription`] of
//!   [`BrokerMessage`]s on a pooled connection; its [`Settler`] acks, nacks, marks in progress
//!   or terminates them, pipelined ([`Settler::settle_in_background`]) so that a subscriber
//!   never waits one round trip per message.
//! - **Metrics**: the gauge `{prefix}_grpc_connections` (healthy connections) and the counter
//!   `{prefix}_connection_errors_total{type="grpc"}`.
//!
//! ```no_run
//! use lax_core::{PublishRequest, Publisher, Tier};
//! use lax_transport_grpc::{GrpcOptions, GrpcPublisher};
//!
//! # async fn demo() -> Result<(), lax_core::Error> {
//! let options = GrpcOptions::new(["localhost:50051"])
//!     .connection_pool_size(4)
//!     .auth_token("s3cret");
//! let publisher = GrpcPublisher::connect(options).await?;
//!
//! let request = PublishRequest::new("orders.created", r#"{"order_id":"456"}"#)
//!     .with_tier(Tier::Persistent);
//! let receipt = publisher.publish(request).await?;
//! let ack = receipt.ack.expect("the broker path always acks");
//! println!("stored in {} at sequence {}", ack.stream, ack.sequence);
//!
//! publisher.close().await?; // waits for publishes still in flight
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

mod admin;
mod auth;
mod convert;
mod group;
mod lane;
mod options;
mod publisher;
mod session;
mod status;
mod stream;
mod subscriber;

pub use admin::{BrokerAdmin, GroupJoin};
pub use auth::BearerAuth;
pub use group::{ConsumerGroupConfig, DeliverPolicy};
pub use lane::BrokerClient;
pub use options::{GrpcOptions, PublishMode, TlsOptions};
pub use publisher::{GrpcPublisher, PublishFuture};
pub use status::status_to_error;
pub use stream::{
    ConsumerGroup, ConsumerInfo, DiscardPolicy, ListStreamsOptions, RetentionPolicy, StorageType,
    Stream, StreamConfig, StreamInfo, StreamInfoOptions, StreamPage, StreamState, StreamStats,
};
pub use subscriber::{
    BrokerMessage, GrpcSubscription, MAX_BACKGROUND_SETTLES, MAX_SETTLE_BATCH, Settle, Settler,
    SubscribeSpec,
};
