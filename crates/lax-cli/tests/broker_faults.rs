//! Faults of the broker process itself, under a `LaxClient` publishing persistent messages
//! through a real `lax broker` process to a real nats-server. Every message is counted by id
//! (acked, stored, lost, duplicated) and the counts are printed.

#[path = "support/broker_process.rs"]
mod broker_process;
#[path = "../../lax-client/tests/support/load.rs"]
mod load;

use std::time::{Duration, Instant};

use async_nats::jetstream::{
    self,
    stream::{Config, StorageType},
};
use lax_client::{BreakerState, ClientOptions, ErrorKind, LaxClient, Tier};
use lax_testkit::{Counts, NatsServer, create_stream_with_retry, stored_ids, wait_until};
use nix::sys::signal::Signal;

use crate::{
    broker_process::BrokerProcess,
    load::{Load, LoadSpec},
};

/// The longest any one step may take before the test fails.
const WAIT: Duration = Duration::from_secs(45);
const STREAM: &str = "FREEZE";
const ACKS_EACH_SIDE: usize = 200;
/// How long the broker stays frozen.
const FREEZE: Duration = Duration::from_secs(10);
/// The deadline of each publish, retries included.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(2);
/// What a publish may overrun its deadline by on a loaded 2-core machine.
const DEADLINE_SLACK: Duration = Duration::from_secs(1);
/// The breaker's rest (the default is 30 s), so that it is seen to close soon after the thaw.
const BREAKER_REST: Duration = Duration::from_secs(1);

/// The broker frozen with SIGSTOP for 10 s while 4 tasks publish: every publish ends within
/// its deadline (no hang), the client's broker-path breaker opens, and after SIGCONT the
/// broker serves again, the breaker closes, nothing acked is lost and the resent ids are
/// stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_broker_fails_publishes_within_their_deadline_and_recovers() {
    let nats = NatsServer::start().await.expect("nats-server starts");
    let js = jetstream::new(nats.client().await.expect("connect to nats-server"));
    create_stream_with_retry(
        &js,
        Config {
            name: STREAM.into(),
            subjects: vec!["freeze.>".into()],
            storage: StorageType::File,
            ..Default::default()
        },
        WAIT,
    )
    .await
    .expect("the stream");
    let broker = BrokerProcess::start(&nats.url(), &["--replicated-replicas", "1"]).await;
    let options = ClientOptions::builder()
        .nats_urls([nats.url()])
        .broker_addr(broker.addr())
        .enable_metrics(false)
        .circuit_breaker_timeout(BREAKER_REST)
        .build()
        .expect("valid options");
    let client = LaxClient::connect(options).await.expect("client connects");
    let spec = LoadSpec {
        publishers: 4,
        tier: Tier::Persistent,
        subject_prefix: "freeze",
        timeout: Some(PUBLISH_TIMEOUT),
    };
    let load = Load::start(&client, spec, WAIT);
    load.wait_for_acks(ACKS_EACH_SIDE).await;

    broker.signal(Signal::SIGSTOP);
    let frozen_at = Instant::now();
    let opened = wait_until(WAIT, || async {
        client.broker_breaker_state() == Some(BreakerState::Open)
    })
    .await;
    let opened_after = frozen_at.elapsed();
    let errors_while_frozen = load.errors();
    // The fault itself lasts FREEZE, whatever the test has seen meanwhile.
    tokio::time::sleep_until((frozen_at + FREEZE).into()).await;
    let acks_before_thaw = load.acks();
    broker.signal(Signal::SIGCONT);
    let thawed_at = Instant::now();
    opened.expect("the broker-path breaker opens while the broker is frozen");
    load.wait_for_acks(1).await;
    let first_ack = thawed_at.elapsed();
    load.wait_for_acks(ACKS_EACH_SIDE).await;
    wait_until(WAIT, || async {
        client.broker_breaker_state() == Some(BreakerState::Closed)
    })
    .await
    .expect("the breaker closes after the thaw");
    let tally = load.stop().await;
    client.close().await.expect("the client closes");

    let stored = stored_ids(&js, STREAM, "Nats-Msg-Id", WAIT)
        .await
        .expect("the stream is read back");
    let counts = Counts::of(tally.acked.iter().map(String::as_str), &stored);
    println!(
        "broker SIGSTOP {FREEZE:?}: {counts}, caller errors {} {:?} ({errors_while_frozen} by the \
         time the breaker opened, {opened_after:?} after the freeze), slowest publish {:?}, \
         acks when thawed {acks_before_thaw}, first ack {first_ack:?} after SIGCONT",
        tally.errors.len(),
        tally.errors_by_kind(),
        tally.slowest,
    );
    tally.assert_failures_within(
        &[
            ErrorKind::TimedOut,
            ErrorKind::Unavailable,
            ErrorKind::CircuitOpen,
        ],
        PUBLISH_TIMEOUT + DEADLINE_SLACK,
    );
    assert_eq!((counts.lost, counts.duplicated), (0, 0), "{counts}");
}
