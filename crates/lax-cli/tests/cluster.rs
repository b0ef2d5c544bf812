//! Scale-out: two `lax broker` processes over a 3-node JetStream cluster, behind one
//! `LaxClient` configured with both addresses, publishing replicated messages. One broker is
//! SIGKILLed and restarted on the same port; every message is counted by id (acked, stored,
//! lost, duplicated) and each broker's share of the acks (from its `/metrics`) is printed
//! before, during and after the outage.
//!
//! The test binary is named `cluster` so that nextest runs it beside no other 3-node cluster
//! (`.config/nextest.toml`).

#[path = "support/broker_process.rs"]
mod broker_process;
#[path = "../../lax-client/tests/support/load.rs"]
mod load;

use std::time::{Duration, Instant};

use async_nats::jetstream::{
    self,
    stream::{Config, StorageType},
};
use lax_client::{BreakerState, ClientOptions, LaxClient, Tier};
use lax_testkit::{Counts, NatsCluster, create_stream_with_retry, stored_ids, wait_until};

use crate::{
    broker_process::BrokerProcess,
    load::{Load, LoadSpec},
};

/// The longest any one step may take before the test fails.
const WAIT: Duration = Duration::from_secs(45);
const STREAM: &str = "SCALE";
const PUBLISHERS: usize = 8;
/// Acks wanted in each phase: before the kill, while one broker is down, after its return.
const ACKS_EACH_PHASE: usize = 300;
/// How soon after its restart the killed broker must ack publishes again: the client's
/// connections try their own broker again with a backoff of at most 5 s.
const RETURN_WITHIN: Duration = Duration::from_secs(15);
/// The least share of a phase's acks a serving broker must take when both serve (half is
/// the aim: publishes take the brokers in turn).
const FAIR_SHARE: f64 = 0.2;

/// Acks of each broker so far.
async fn acked(brokers: &[BrokerProcess; 2]) -> [u64; 2] {
    [brokers[0].acked().await, brokers[1].acked().await]
}

/// Each broker's share of the acks between `from` and `to`.
fn shares(from: [u64; 2], to: [u64; 2]) -> [f64; 2] {
    let delta = [to[0].saturating_sub(from[0]), to[1].saturating_sub(from[1])];
    let total = (delta[0] + delta[1]).max(1) as f64;
    [delta[0] as f64 / total, delta[1] as f64 / total]
}

/// Two brokers behind one client; one SIGKILLed under load: no caller error, the other
/// takes the whole load; restarted on the same port, it takes its share again. Nothing
/// acked is lost, no id is stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_broker_hands_its_load_to_the_other_and_takes_it_back() {
    let cluster = NatsCluster::start(3).await.expect("3-node cluster starts");
    let js = jetstream::new(cluster.client().await.expect("connect to the cluster"));
    create_stream_with_retry(
        &js,
        Config {
            name: STREAM.into(),
            subjects: vec!["scale.>".into()],
            storage: StorageType::File,
            num_replicas: 3,
            ..Default::default()
        },
        WAIT,
    )
    .await
    .expect("R3 stream");
    let urls = cluster.urls().join(",");
    let mut brokers = [
        BrokerProcess::start(&urls, &["--replicated-replicas", "3"]).await,
        BrokerProcess::start(&urls, &["--replicated-replicas", "3"]).await,
    ];
    let options = ClientOptions::builder()
        .nats_urls(cluster.urls())
        .broker_addrs(brokers.iter().map(BrokerProcess::addr))
        .enable_metrics(false)
        .build()
        .expect("valid options");
    let client = LaxClient::connect(options).await.expect("client connects");
    let spec = LoadSpec {
        publishers: PUBLISHERS,
        tier: Tier::Replicated,
        subject_prefix: "scale",
        timeout: None,
    };
    let load = Load::start(&client, spec, WAIT);

    let start = acked(&brokers).await;
    load.wait_for_acks(ACKS_EACH_PHASE).await;
    let before_kill = acked(&brokers).await;
    let before = shares(start, before_kill);

    brokers[0].kill().await;
    let killed_at = Instant::now();
    let survivor_at_kill = brokers[1].acked().await;
    load.wait_for_acks(ACKS_EACH_PHASE).await;
    let survivor_took = brokers[1].acked().await - survivor_at_kill;
    let during_took = killed_at.elapsed();

    brokers[0].restart().await;
    let restarted_at = Instant::now();
    let survivor_at_restart = brokers[1].acked().await;
    wait_until(RETURN_WITHIN, || async { brokers[0].acked().await > 0 })
        .await
        .unwrap_or_else(|_| panic!("the restarted broker acks nothing within {RETURN_WITHIN:?}"));
    let back_after = restarted_at.elapsed();
    let returned = acked(&brokers).await;
    load.wait_for_acks(ACKS_EACH_PHASE).await;
    let after = shares(returned, acked(&brokers).await);
    let breaker = client.broker_breaker_state();
    let tally = load.stop().await;
    client.close().await.expect("the client closes");

    let stored = stored_ids(&js, STREAM, "Nats-Msg-Id", WAIT)
        .await
        .expect("the stream is read back");
    let counts = Counts::of(tally.acked.iter().map(String::as_str), &stored);
    println!(
        "scale-out, broker b0 SIGKILLed: {counts}, caller errors {} {:?}, slowest publish {:?}; \
         share b0/b1 before {:.0}%/{:.0}%; during the outage b1 acked {survivor_took} \
         ({ACKS_EACH_PHASE} client acks in {during_took:?}); b0 restarted, acking again \
         {back_after:?} later (b1 acked {} meanwhile); share after {:.0}%/{:.0}%",
        tally.errors.len(),
        tally.errors_by_kind(),
        tally.slowest,
        before[0] * 100.0,
        before[1] * 100.0,
        returned[1] - survivor_at_restart,
        after[0] * 100.0,
        after[1] * 100.0,
    );
    let errors: Vec<_> = tally.errors.iter().map(|f| &f.text).collect();
    assert!(errors.is_empty(), "caller errors: {errors:?}");
    assert_ne!(breaker, Some(BreakerState::Open), "the breaker opened");
    assert!(
        before.iter().all(|&share| share >= FAIR_SHARE),
        "both brokers serve before the kill: {before:?}"
    );
    assert!(
        survivor_took as usize >= ACKS_EACH_PHASE,
        "the surviving broker took the load: {survivor_took} acks"
    );
    assert!(
        after.iter().all(|&share| share >= FAIR_SHARE),
        "both brokers serve after the restart: {after:?}"
    );
    assert_eq!((counts.lost, counts.duplicated), (0, 0), "{counts}");
}
