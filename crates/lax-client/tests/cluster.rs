//! Fault tests on a 3-node JetStream cluster, through `LaxClient`: nodes are SIGKILLed under a
//! steady replicated load, and every message is counted by id — acked, stored, lost (acked but
//! not stored), duplicated (stored more than once) — and printed.
//!
//! Every wait has a deadline: a publish that does not return, a cluster that does not serve
//! again or a stream that cannot be read back fails the test with a message, never hangs it.
//!
//! The test binary is named `cluster` so that nextest runs these one at a time
//! (`.config/nextest.toml`).

#[path = "support/load.rs"]
mod load;

use std::time::{Duration, Instant};

use async_nats::jetstream::{
    self,
    stream::{Config, StorageType},
};
use lax_broker::{Broker, BrokerConfig, RunningBroker};
use lax_client::{BreakerState, ClientOptions, ClientOptionsBuilder, ErrorKind, LaxClient, Tier};
use lax_testkit::{
    Counts, NatsCluster, create_stream_with_retry, stored_ids, wait_for, wait_until,
};

use crate::load::{Load, LoadSpec, Tally};

const STREAM: &str = "FAULTS";
const PUBLISHERS: usize = 8;

/// Replicated publishes from [`PUBLISHERS`] tasks, each bounded by `timeout` (the client's
/// `retry_budget` when `None`).
fn replicated_load(client: &LaxClient, timeout: Option<Duration>) -> Load {
    let spec = LoadSpec {
        publishers: PUBLISHERS,
        tier: Tier::Replicated,
        subject_prefix: "faults",
        timeout,
    };
    Load::start(client, spec, WAIT)
}
/// Acks wanted before the fault, and again after it, so the failover happens under load and
/// the cluster is shown to serve again afterwards.
const ACKS_EACH_SIDE: usize = 300;
/// The longest any one step may take before the test fails (a cluster start, an election
/// plus the acks after it, reading the stream back).
const WAIT: Duration = Duration::from_secs(45);
/// What a publish may overrun its own deadline by on a loaded 2-core machine before the
/// test calls it a missed deadline.
const DEADLINE_SLACK: Duration = Duration::from_secs(1);

/// A cluster, an in-process broker on it, a `LaxClient` and an R3 stream.
struct Rig {
    cluster: NatsCluster,
    _broker: RunningBroker,
    client: LaxClient,
    js: jetstream::Context,
}

impl Rig {
    /// The rig with the client's default options: the retry budget, breaker and timeouts
    /// under test.
    async fn start() -> Rig {
        Rig::start_with(|options| options).await
    }

    async fn start_with(options: impl FnOnce(ClientOptionsBuilder) -> ClientOptionsBuilder) -> Rig {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
        let cluster = NatsCluster::start(3).await.expect("3-node cluster starts");
        let mut config = BrokerConfig::single_node(cluster.urls());
        config.replicated_replicas = 3;
        config.no_metrics = true;
        let broker = Broker::start(config).await.expect("broker starts");
        let js = jetstream::new(cluster.client().await.expect("connect to the cluster"));
        create_stream_with_retry(
            &js,
            Config {
                name: STREAM.into(),
                subjects: vec!["faults.>".into()],
                storage: StorageType::File,
                num_replicas: 3,
                ..Default::default()
            },
            WAIT,
        )
        .await
        .expect("R3 stream");
        let options = options(
            ClientOptions::builder()
                .nats_urls(cluster.urls())
                .broker_addr(format!("http://{}", broker.grpc_addr()))
                .enable_metrics(false),
        )
        .build()
        .expect("valid options");
        let client = LaxClient::connect(options).await.expect("client connects");
        Rig {
            cluster,
            _broker: broker,
            client,
            js,
        }
    }

    /// The node index of the stream's current leader (nodes are named `n<i>`).
    async fn stream_leader(&self) -> usize {
        let leader = wait_for(WAIT, || async {
            let mut stream = self.js.get_stream(STREAM).await.ok()?;
            let info = stream.info().await.ok()?;
            info.cluster.as_ref()?.leader.clone()
        })
        .await
        .expect("the stream has a leader");
        leader
            .strip_prefix('n')
            .and_then(|i| i.parse().ok())
            .expect("nodes are named n<i>")
    }
}

/// Acked, stored, lost and duplicated (counted by id), printed with the caller errors.
async fn count(name: &str, js: &jetstream::Context, tally: &Tally) -> Counts {
    let stored = stored_ids(js, STREAM, "Nats-Msg-Id", WAIT)
        .await
        .expect("the stream is read back");
    let counts = Counts::of(tally.acked.iter().map(String::as_str), &stored);
    println!(
        "{name}: {counts}, caller errors {} {:?}, slowest publish {:?}",
        tally.errors.len(),
        tally.errors_by_kind(),
        tally.slowest,
    );
    counts
}

/// Which node a fault kills, given the stream leader's index.
enum Victim {
    Leader,
    Follower,
}

/// Kills a node under load and checks no caller noticed: no error, the broker-path breaker
/// closed, nothing acked lost, no id stored twice.
async fn kill_under_load_unnoticed(victim: Victim, name: &str) {
    let mut rig = Rig::start().await;
    let load = replicated_load(&rig.client, None);
    load.wait_for_acks(ACKS_EACH_SIDE).await;
    let leader = rig.stream_leader().await;
    let node = match victim {
        Victim::Leader => leader,
        Victim::Follower => (leader + 1) % 3,
    };
    let killed_at = Instant::now();
    rig.cluster.kill_node(node).await.expect("SIGKILL the node");
    load.wait_for_acks(ACKS_EACH_SIDE).await;
    println!(
        "{name}: n{node} killed; {ACKS_EACH_SIDE} more acks {:?} later",
        killed_at.elapsed()
    );
    let breaker = rig.client.broker_breaker_state();
    let tally = load.stop().await;
    let counts = count(name, &rig.js, &tally).await;
    let errors: Vec<_> = tally.errors.iter().map(|f| &f.text).collect();
    assert!(errors.is_empty(), "caller errors: {errors:?}");
    assert_ne!(breaker, Some(BreakerState::Open), "the breaker opened");
    assert_eq!((counts.lost, counts.duplicated), (0, 0), "{counts}");
}

/// A killed stream leader is an election, not an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_is_not_an_error() {
    kill_under_load_unnoticed(Victim::Leader, "leader kill").await;
}

/// A killed follower changes nothing a caller can see.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_kill_is_not_an_error() {
    kill_under_load_unnoticed(Victim::Follower, "follower kill").await;
}

/// The deadline of each publish in the quorum-loss test.
const QUORUM_PUBLISH_TIMEOUT: Duration = Duration::from_secs(3);
/// The breaker's rest in the quorum-loss test (the default is 30 s), so that the test sees
/// it open during the outage and close again soon after.
const QUORUM_BREAKER_REST: Duration = Duration::from_secs(1);

/// 2 of 3 nodes down: the stream has no quorum. Every publish fails within its deadline with
/// a typed retryable error (or fails fast on the open breaker), nothing hangs; the first ack
/// comes within 10 s of the quorum returning; resending the failed ids leaves no duplicates
/// and nothing acked is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_loss_fails_within_the_deadline_and_recovers() {
    let name = "quorum loss";
    let mut rig =
        Rig::start_with(|options| options.circuit_breaker_timeout(QUORUM_BREAKER_REST)).await;
    let load = replicated_load(&rig.client, Some(QUORUM_PUBLISH_TIMEOUT));
    load.wait_for_acks(ACKS_EACH_SIDE).await;
    let leader = rig.stream_leader().await;
    let (first, second) = (leader, (leader + 1) % 3);
    let errors_before = load.errors();
    let killed_at = Instant::now();
    rig.cluster.kill_node(first).await.expect("SIGKILL a node");
    rig.cluster
        .kill_node(second)
        .await
        .expect("SIGKILL a second node");
    // Every publisher sees the outage more than once.
    load.wait_for_errors(2 * PUBLISHERS).await;
    let first_error_after = killed_at.elapsed();
    wait_until(WAIT, || async {
        rig.client.broker_breaker_state() == Some(BreakerState::Open)
    })
    .await
    .expect("the broker-path breaker opens while the stream has no quorum");
    let outage_errors = load.errors() - errors_before;

    let restarting = Instant::now();
    rig.cluster
        .restart_node(first)
        .await
        .expect("the node comes back");
    let quorum_back = Instant::now();
    let acks = load.acks();
    wait_until(WAIT, || async { load.acks() > acks })
        .await
        .expect("an ack after the quorum returns");
    let first_ack = quorum_back.elapsed();
    println!(
        "{name}: n{first} and n{second} killed; {outage_errors} errors by {first_error_after:?}; \
         n{first} restarted in {:?}; first ack {first_ack:?} after the quorum returned",
        quorum_back - restarting
    );
    rig.cluster
        .restart_node(second)
        .await
        .expect("the node comes back");
    load.wait_for_acks(ACKS_EACH_SIDE).await;
    wait_until(WAIT, || async {
        rig.client.broker_breaker_state() == Some(BreakerState::Closed)
    })
    .await
    .expect("the breaker closes again");
    let tally = load.stop().await;
    let counts = count(name, &rig.js, &tally).await;

    assert!(
        first_ack <= Duration::from_secs(10),
        "first ack {first_ack:?} after the quorum returned"
    );
    tally.assert_failures_within(
        &[
            ErrorKind::Unavailable,
            ErrorKind::TimedOut,
            ErrorKind::CircuitOpen,
        ],
        QUORUM_PUBLISH_TIMEOUT + DEADLINE_SLACK,
    );
    assert_eq!((counts.lost, counts.duplicated), (0, 0), "{counts}");
}
