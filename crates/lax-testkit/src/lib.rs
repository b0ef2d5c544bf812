//! Test support for LAX: real `nats-server` processes, one node or a JetStream cluster, that
//! start fast, are waited on with deadlines instead of sleeps, and never outlive their test.
//!
//! Every crate's integration tests use it as a dev-dependency:
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use async_nats::jetstream::{self, stream::{Config, StorageType}};
//! use lax_testkit::{NatsServer, create_stream_with_retry};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! // nats-server -js -a 127.0.0.1 -p <free port> -m <free port> -sd <temp dir>
//! let mut server = NatsServer::start().await?;
//! let js = jetstream::new(async_nats::connect(server.url()).await?);
//! let config = Config {
//!     name: "ORDERS".into(),
//!     subjects: vec!["orders.>".into()],
//!     storage: StorageType::File,
//!     ..Default::default()
//! };
//! create_stream_with_retry(&js, config, Duration::from_secs(10)).await?;
//! let ack = js.publish("orders.created", "hello".into()).await?.await?;
//! assert_eq!(ack.sequence, 1);
//!
//! server.kill().await?;    // SIGKILL, as in a crash
//! server.restart().await?; // same port, same store directory
//! # Ok(()) }
//! ```
//!
//! # Finding `nats-server`
//!
//! [`nats_server_binary`] looks at `LAX_NATS_SERVER`, then `PATH`, then
//! `$LAX_TOOLS_DIR/bin/nats-server`, then the workspace's `.tools/bin/nats-server`, where
//! `cargo xtask setup` (and `cargo xtask test`) installs it. When none has one, the error says
//! to run `cargo xtask setup`.
//!
//! # Readiness
//!
//! [`NatsServer::start`] returns once the server accepts TCP connections and its monitoring
//! endpoint answers `/healthz?js-enabled-only=true` with ok. [`NatsCluster::start`] also waits
//! until every node names the same JetStream meta leader and that leader sees every peer as
//! current. Everything polls with a short backoff up to a deadline, and start-up failures
//! quote the last lines of the server log.
//!
//! # TLS
//!
//! With the `tls` feature, `TestPki` generates a CA and server and client certificates as
//! PEM files for tests of TLS and mutual TLS.
//!
//! # No orphan servers
//!
//! `unsafe` is forbidden here, so children cannot use `PR_SET_PDEATHSIG`. Instead:
//! dropping a [`NatsServer`] (also while a test panics) SIGKILLs and reaps it; servers stay in
//! the test's process group, so Ctrl-C and nextest's timeouts reach them; and each server has
//! a tiny `/bin/sh` watchdog reading a pipe that only the test process holds: if the test
//! process dies without unwinding (SIGKILL, abort), the pipe closes and the watchdog kills the
//! server and removes its temporary directory.

#![forbid(unsafe_code)]

mod cluster;
mod count;
mod error;
mod jetstream;
pub mod monitor;
mod ports;
mod server;
#[cfg(feature = "tls")]
mod tls;
mod wait;

pub use cluster::{NatsCluster, NatsClusterBuilder};
pub use count::{Counts, stored_ids};
pub use error::TestkitError;
pub use jetstream::{
    create_stream_with_retry, is_transient_create_error, is_transient_publish_error,
    publish_with_retry,
};
pub use lax_nats_server::{
    BinaryLocator, ENV_NATS_SERVER, ENV_TOOLS_DIR, LocateError, SETUP_COMMAND, Watchdog,
    default_tools_dir, log_tail, nats_server_binary, workspace_root,
};
pub use server::{
    DEFAULT_STARTUP_TIMEOUT, DEFAULT_STOP_TIMEOUT, MonitorStreamState, NatsServer,
    NatsServerBuilder,
};
#[cfg(feature = "tls")]
pub use tls::{SERVER_NAMES, TestPki};
pub use wait::{wait_for, wait_until};
