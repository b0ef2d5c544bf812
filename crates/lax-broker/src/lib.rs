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
//! - **Consuming.** Subscribe delivers from a JetStream pull consumer (ephemeral, or a
//!   consumer group's durable one shared by its members); Ack, Nack, InProgress and Term
//!   settle each message by its `ack_id`; after `max_deliver` deliveries a message is
//!   dead-lettered (to `lax.dlq.<stream>.<subject>` in `LAX_DLQ` by default), never dropped.
//!   See [`consumer`].
//! - **Honest status codes.** INVALID_ARGUMENT, FAILED_PRECONDITION, NOT_FOUND, UNAVAILABLE
//!   (NATS unreachable; the broker reconnects on its own), RESOURCE_EXHAUSTED (the broker's
//!   in-flight cap), DEADLINE_EXCEEDED (`timeout_ms` or the gRPC deadline).
//! - **Operable.** gRPC health (NOT_SERVING while NATS is down) and reflection (v1 and
//!   v1alpha), Prometheus figures on `/metrics`, graceful shutdown.
//!
//! Run it as a program: `lax-broker --nats-url nats://n1:4222,nats://n2:4222` (this crate's
//! binary, built with the `cli` feature: `cargo install lax-broker --features cli`) or
//! `lax broker …` (the `lax` CLI); every flag is also a `LAX_BROKER_*` environment variable.
//! Or run it in-process (as tests and `lax dev` do), configured with a plain
//! [`BrokerConfig`] (serde, setters; no command-line parser in the library):
//!
//! ```no_run
//! use lax_broker::{Broker, BrokerConfig};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), lax_broker::BrokerError> {
//! let config = BrokerConfig::new(["nats://127.0.0.1:4222"])
//!     .listen("127.0.0.1:0".parse().unwrap())
//!     .no_metrics(true)
//!     .replicated_replicas(1); // single-node dev server
//! let broker = Broker::start(config).await?;
//! let endpoint = format!("http://{}", broker.grpc_addr());
//! # let _ = endpoint;
//! broker.run_until(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```
//!
//! # Running it securely
//!
//! - **TLS on the gRPC port.** `--tls-cert broker.pem --tls-key broker-key.pem` (PEM;
//!   `LAX_BROKER_TLS_CERT`, `LAX_BROKER_TLS_KEY`): the port then speaks TLS only. Add
//!   `--tls-client-ca clients-ca.pem` to require a client certificate signed by that CA
//!   (mutual TLS).
//! - **A bearer token.** `--auth-token-file /run/secrets/lax-token` (or
//!   `LAX_BROKER_AUTH_TOKEN`; `--auth-token` works too but shows up in `ps`): every
//!   BrokerService and StreamManager call must carry `authorization: Bearer <token>`, else it
//!   fails UNAUTHENTICATED ("missing or wrong bearer token"). gRPC health checking and
//!   reflection stay open, so probes need no secret. Tokens are compared in constant time.
//!   Without TLS the token travels in clear text; the broker warns at start-up.
//! - **NATS.** At most one of `--nats-creds`, `--nats-token`, `--nats-user` with
//!   `--nats-password`; `--nats-tls-ca` makes TLS to NATS required, and
//!   `--nats-tls-cert`/`--nats-tls-key` add a client certificate (`LAX_BROKER_NATS_*`).
//!   Credentials NATS refuses and failed TLS handshakes stop the start with
//!   [`BrokerError::Nats`] rather than being retried; an unreachable NATS is retried.
//! - **`/metrics` stays plain HTTP**, without authentication: bind it to a private address
//!   (`--metrics-listen 127.0.0.1:9090`) or turn it off (`--no-metrics`).
//!
//! Bad settings (a certificate without its key, an unreadable or non-PEM file, two NATS
//! authentication methods) fail [`BrokerConfig::validate`], and so the start, with
//! [`BrokerError::Config`] before anything connects.
//!
//! ```no_run
//! use lax_broker::{Broker, BrokerConfig};
//!
//! # async fn demo() -> Result<(), lax_broker::BrokerError> {
//! let mut config = BrokerConfig::new(["tls://nats.internal:4222"]);
//! config.tls_cert = Some("/etc/lax/broker.pem".into());
//! config.tls_key = Some("/etc/lax/broker-key.pem".into());
//! config.auth_token_file = Some("/run/secrets/lax-broker-token".into());
//! config.metrics_listen = "127.0.0.1:9090".parse().unwrap();
//! config.nats_creds = Some("/etc/lax/broker.creds".into());
//! config.nats_tls_ca = Some("/etc/lax/nats-ca.pem".into());
//! let broker = Broker::start(config).await?;
//! // Clients connect to https://<host>:50051 trusting the CA of broker.pem and send the token
//! // (lax-transport-grpc: `GrpcOptions { tls, auth_token, .. }`).
//! broker.run_until(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```
#![forbid(unsafe_code)]

mod answer_log;
mod broker;
#[cfg(feature = "cli")]
pub mod cli;
mod config;
pub mod consumer;
mod error;
pub mod input;
mod jsapi;
pub mod metrics;
mod names;
pub mod publish;
mod routing;
mod security;
mod service;
mod streams;
mod timestamp;

pub use broker::{Broker, BrokerBuilder, RunningBroker};
pub use config::{BrokerConfig, DEFAULT_NATS_URL};
pub use error::BrokerError;
pub use metrics::BrokerMetrics;
pub use security::{Permissions, SecretString};
