//! Faults on the direct path, through `LaxClient`: nats-server SIGKILLed and restarted under a
//! steady memory-tier load. Core NATS is at-most-once, so messages are lost at the kill; the
//! test counts them by id (accepted, stored, lost, duplicated) against a stream that captures
//! the subjects, prints them, and reads the client's
//! `{prefix}_direct_unconfirmed_at_disconnect_total`.
//!
//! The metric is the client's share of the loss: messages handed to the connection that the
//! server had not confirmed reading when it broke. Messages the server had read but not yet
//! written to the stream when it was killed are lost too, and no client can see them, so the
//! stream's loss is larger (the figures are in `docs/RELIABILITY.md`).

#[path = "support/load.rs"]
mod load;

use std::time::{Duration, Instant};

use async_nats::jetstream::{
    self,
    stream::{Config, StorageType},
};
use lax_client::{ClientOptions, ConnectionState, ErrorKind, LaxClient, PublishOptions, Tier};
use lax_testkit::{Counts, NatsServer, create_stream_with_retry, stored_ids, wait_until};

use crate::load::{Load, LoadSpec};

/// The longest any one step may take before the test fails.
const WAIT: Duration = Duration::from_secs(30);
const STREAM: &str = "MEMORY";
const ACCEPTED_EACH_SIDE: usize = 5_000;

/// Memory-tier publishes across a nats-server SIGKILL and restart: the client reconnects on
/// its own, fails publishes beyond its reconnect buffer with a typed `Unavailable` (then
/// `CircuitOpen` while its breaker rests), duplicates nothing, and counts the messages the
/// server had not confirmed at the disconnect in
/// `lax_client_direct_unconfirmed_at_disconnect_total`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_tier_across_a_nats_kill_counts_what_the_server_never_confirmed() {
    // A stream captures every message the server took in; every write is synced, so what
    // it lacks after the kill was never written by the server.
    let mut nats = NatsServer::builder()
        .config("jetstream { sync_interval: always }")
        .start()
        .await
        .expect("nats-server starts");
    let js = jetstream::new(nats.client().await.expect("connect to nats-server"));
    create_stream_with_retry(
        &js,
        Config {
            name: STREAM.into(),
            subjects: vec!["memory.>".into()],
            storage: StorageType::File,
            ..Default::default()
        },
        WAIT,
    )
    .await
    .expect("the stream");
    let options = ClientOptions::builder()
        .nats_urls([nats.url()])
        // Direct publishes only: the broker is never dialled.
        .broker_addr("http://127.0.0.1:1")
        .nats_reconnect_wait(Duration::from_millis(100))
        // The direct path's breaker opens on the refusals while disconnected; a short rest
        // (the default is 30 s) lets the test see publishing resume soon after the restart.
        .circuit_breaker_timeout(Duration::from_secs(1))
        .build()
        .expect("valid options");
    let client = LaxClient::connect(options).await.expect("client connects");
    let spec = LoadSpec {
        publishers: 2,
        tier: Tier::Memory,
        subject_prefix: "memory",
        timeout: None,
    };
    let load = Load::start(&client, spec, WAIT);
    load.wait_for_acks(ACCEPTED_EACH_SIDE).await;

    let killed_at = Instant::now();
    nats.kill().await.expect("SIGKILL nats-server");
    wait_until(WAIT, || async {
        client.nats_state() == ConnectionState::Disconnected
    })
    .await
    .expect("the client sees the connection break");
    // Publishes are buffered while disconnected, then refused once the buffer is full.
    load.wait_for_errors(1).await;
    nats.restart().await.expect("nats-server comes back");
    let restarted = Instant::now();
    wait_until(WAIT, || async {
        client.nats_state() == ConnectionState::Connected
    })
    .await
    .expect("the client reconnects");
    let reconnected_after = restarted.elapsed();
    load.wait_for_acks(ACCEPTED_EACH_SIDE).await;
    let tally = load.stop().await;

    // A last message on the same connection: once it is stored, so is everything before it.
    client
        .publish_with(
            "memory.last",
            "last",
            PublishOptions::default().message_id("last"),
        )
        .await
        .expect("the last message is accepted");
    wait_until(WAIT, || async {
        let Ok(stream) = js.get_stream(STREAM).await else {
            return false;
        };
        stream
            .get_last_raw_message_by_subject("memory.last")
            .await
            .is_ok()
    })
    .await
    .expect("the last message is stored");

    let mut stored = stored_ids(&js, STREAM, "Message-Id", WAIT)
        .await
        .expect("the stream is read back");
    stored.remove("last");
    let counts = Counts::of(tally.acked.iter().map(String::as_str), &stored);
    let unconfirmed = client.nats().unconfirmed_at_disconnect();
    let metric = client
        .render_metrics()
        .lines()
        .find_map(|line| line.strip_prefix("lax_client_direct_unconfirmed_at_disconnect_total "))
        .and_then(|value| value.trim().parse::<u64>().ok())
        .expect("the metric is exported");
    println!(
        "memory tier across a nats-server SIGKILL: {counts} (accepted = acked), unconfirmed at \
         the disconnect {unconfirmed}, refused while disconnected {} {:?}, reconnected \
         {reconnected_after:?} after the restart ({:?} after the kill)",
        tally.errors.len(),
        tally.errors_by_kind(),
        restarted - killed_at,
    );
    client.close().await.expect("the client closes");

    assert_eq!(metric, unconfirmed, "the metric and the accessor agree");
    // Under a steady load some messages are always handed over and not yet confirmed.
    assert!(
        unconfirmed > 0,
        "a disconnect under load counted nothing unconfirmed"
    );
    assert!(
        unconfirmed <= counts.acked as u64,
        "{unconfirmed} unconfirmed, but only {} accepted",
        counts.acked
    );
    assert_eq!(counts.duplicated, 0, "{counts}");
    tally.assert_failures_within(&[ErrorKind::Unavailable, ErrorKind::CircuitOpen], WAIT);
}
