//! Helpers shared by the integration tests.
#![allow(dead_code)] // each test binary uses its own subset

use std::time::Duration;

use lax_testkit::NatsServer;
use lax_transport_nats::{ConnectionState, NatsOptions, NatsPublisher, ReconnectPolicy};

/// Deadline for anything that should happen promptly on loopback.
pub(crate) const DEADLINE: Duration = Duration::from_secs(15);

/// A plain core NATS server (no JetStream: faster to start, not needed here).
pub(crate) async fn server() -> NatsServer {
    NatsServer::builder()
        .jetstream(false)
        .start()
        .await
        .expect("nats-server starts")
}

/// Options for `url` with quick reconnects, so tests do not wait on back-off.
pub(crate) fn options(url: impl Into<String>) -> NatsOptions {
    NatsOptions::new([url.into()])
        .reconnect(
            ReconnectPolicy::default()
                .initial_delay(Duration::from_millis(50))
                .max_delay(Duration::from_millis(250))
                .jitter(Duration::ZERO),
        )
        .connect_timeout(Duration::from_secs(2))
}

/// Waits until the publisher reports `want`, failing the test after `DEADLINE`.
pub(crate) async fn wait_for_state(publisher: &NatsPublisher, want: ConnectionState) {
    let mut watch = publisher.watch_state();
    tokio::time::timeout(DEADLINE, watch.wait_for(|state| *state == want))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "state {want} not reached within {DEADLINE:?}; still {}",
                publisher.state()
            )
        })
        .expect("state watch open");
}
