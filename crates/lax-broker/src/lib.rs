//! # lax-broker
//!
//! The LAX broker: a gRPC server (`broker.v1`) that writes messages to NATS JetStream by
//! tier and returns JetStream's acks.
//!
//! - **Tiers are streams.** `memory` → memory storage, 1 replica; `persistent` → file
//!   storage, 1 replica; `replicated` → file storage, `--replicated-replicas` (3) replicas. A
//!   publish goes to the stream capturing its subject; when none does, the broker creates one
//!   named after the subject's first token (`orders.created` → `ORDERS` on `orders.>`). A
//!   stream weaker than the tier asked for is refused with FAILED_PRECONDITION.
//! - **Idempotent.** Every message is published with `Nats-Msg-Id` set to its message id, so
//!   a retried publish inside the stream's duplicate window is stored once and answered
//!   `duplicate = true`.
//! - **Pipelined.** BatchPublish and StreamPublish keep many acks in flight; StreamPublish
//!   answers each message as soon as its ack arrives and stops reading when its window is
//!   full.
//! - **Honest status codes.** INVALID_ARGUMENT, FAILED_PRECONDITION, NOT_FOUND, UNAVAILABLE
//!   (NATS unreachable; the broker reconnects on its own), RESOURCE_EXHAUSTED (the broker's
//!   in-flight cap), DEADLINE_EXCEEDED (`timeout_ms` or the gRPC deadline).
//! - **Operable.** gRPC health (NOT_SERVING while NATS is down) and reflection, Prometheus
//!   figures on `/metrics`, graceful shutdown.
//!
//! Run it in-process (as tests and `lax dev` do):
//!
//! ```no_run
//! use lax_broker::{Broker, BrokerConfig};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), lax_broker::BrokerError> {
//! let mut config = BrokerConfig::new(["nats://127.0.0.1:4222"]);
//! config.listen = "127.0.0.1:0".parse().unwrap();
//! config.no_metrics = true;
//! config.replicated_replicas = 1; // single-node dev server
//! let broker = Broker::start(config).await?;
//! let endpoint = format!("http://{}", broker.grpc_addr());
//! # let _ = endpoint;
//! broker.run_until(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```
#![forbid(unsafe_code)]

mod broker;
mod config;
pub mod consumer;
mod error;
mod jsapi;
pub mod metrics;
mod names;
pub mod publish;
mod routing;
mod service;
mod streams;
mod timestamp;

pub use broker::{Broker, BrokerBuilder, RunningBroker};
pub use config::{BrokerConfig, DEFAULT_NATS_URL};
pub use error::BrokerError;
pub use metrics::BrokerMetrics;
