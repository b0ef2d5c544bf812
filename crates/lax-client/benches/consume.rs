//! Consume benchmark: drains one stream through the LAX broker (a consumer group of 1 and of 3
//! members, manual ack, LAX's pipelined settles) and, side by side in the same run, with raw
//! async-nats pull consumers acking each message; prints msgs/s for each (the median of the
//! runs) and LAX's ratio to raw.
//!
//! `cargo bench -p lax-client --bench consume` (100,000 messages of 128 bytes, 3 runs;
//! `LAX_BENCH_MSGS`, `LAX_BENCH_RUNS` change them). Under `cargo test` it drains 2,000 once,
//! as a smoke test.

use std::{
    future::IntoFuture as _,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use async_nats::jetstream::{self, consumer::pull, stream};
use futures::StreamExt as _;
use lax_broker::{Broker, BrokerConfig};
use lax_client::{ClientOptions, LaxClient, StartPosition, SubscribeOptions};
use lax_testkit::NatsServer;

const SUBJECT: &str = "cons.bench";
const STREAM: &str = "CONS_BENCH";
const PAYLOAD: usize = 128;
const DEADLINE: Duration = Duration::from_secs(300);

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    // cargo-nextest lists a harness-less target's tests with `--list` (and `--list --ignored`):
    // the short smoke run below is this target's one test.
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        if !args.iter().any(|a| a == "--ignored") {
            println!("smoke: test");
        }
        return;
    }
    let benching = args.iter().any(|a| a == "--bench");
    let (messages, runs) = if benching {
        (
            env_or("LAX_BENCH_MSGS", 100_000),
            env_or("LAX_BENCH_RUNS", 3),
        )
    } else {
        (2_000, 1)
    };
    let nats = NatsServer::start().await.expect("nats-server starts");
    let core = async_nats::connect(nats.url()).await.expect("connect");
    let js = jetstream::new(core.clone());
    js.create_stream(stream::Config {
        name: STREAM.into(),
        subjects: vec!["cons.>".into()],
        ..Default::default()
    })
    .await
    .expect("stream created");
    fill(&js, messages).await;

    let broker = Broker::start(BrokerConfig::single_node([nats.url()]))
        .await
        .expect("broker starts");
    let options = ClientOptions::builder()
        .nats_urls([nats.url()])
        .broker_addr(format!("http://{}", broker.grpc_addr()))
        .build()
        .expect("valid options");
    let client = LaxClient::connect(options).await.expect("client connects");

    ack_round_trips(&client, messages.min(2_000)).await;
    println!("draining {messages} messages of {PAYLOAD} bytes, median of {runs} run(s)");
    println!(
        "{:<10} {:>14} {:>14} {:>8}",
        "members", "LAX msgs/s", "raw msgs/s", "ratio"
    );
    for members in [1usize, 3] {
        let mut lax = Vec::new();
        let mut raw = Vec::new();
        for run in 0..runs {
            let group = format!("lax_{members}_{run}");
            lax.push(drain_lax(&client, &group, members, messages).await);
            let durable = format!("raw_{members}_{run}");
            raw.push(drain_raw(&js, &durable, members, messages).await);
        }
        let (lax, raw) = (median(lax), median(raw));
        println!("{members:<10} {lax:>14.0} {raw:>14.0} {:>7.2}x", lax / raw);
    }
    client.close().await.expect("client closes");
    broker.shutdown().await.expect("broker shuts down");
}

/// Acks `count` messages one at a time, each waiting for the broker's confirmation (which
/// waits for JetStream's), and prints the round trip's percentiles.
async fn ack_round_trips(client: &LaxClient, count: u64) {
    let mut subscription = client
        .subscribe(
            SUBJECT,
            SubscribeOptions::group("ack_rtt").start(StartPosition::First),
        )
        .await
        .expect("subscribed");
    let mut round_trips = Vec::new();
    while (round_trips.len() as u64) < count {
        let message = subscription.next().await.expect("open").expect("a message");
        let started = Instant::now();
        message.ack().await.expect("acked");
        round_trips.push(started.elapsed());
    }
    round_trips.sort();
    let at = |p: f64| round_trips[((round_trips.len() - 1) as f64 * p) as usize];
    println!(
        "ack round trip over {count} sequential acks: p50 {:?}, p99 {:?}, max {:?}",
        at(0.5),
        at(0.99),
        at(1.0)
    );
}

fn median(mut rates: Vec<f64>) -> f64 {
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

async fn fill(js: &jetstream::Context, messages: u64) {
    let payload = bytes::Bytes::from(vec![b'x'; PAYLOAD]);
    let mut acks = futures::stream::FuturesUnordered::new();
    for _ in 0..messages {
        acks.push(
            js.publish(SUBJECT, payload.clone())
                .await
                .expect("publish sent")
                .into_future(),
        );
        if acks.len() >= 256 {
            acks.next().await.unwrap().expect("stored");
        }
    }
    while let Some(ack) = acks.next().await {
        ack.expect("stored");
    }
}

/// Drains the stream through the broker with `members` group members; msgs/s.
async fn drain_lax(client: &LaxClient, group: &str, members: usize, messages: u64) -> f64 {
    let handled = Arc::new(AtomicU64::new(0));
    let mut subscriptions = Vec::new();
    for _ in 0..members {
        subscriptions.push(
            client
                .subscribe(
                    SUBJECT,
                    SubscribeOptions::group(group)
                        .start(StartPosition::First)
                        .max_inflight(1_000)
                        .prefetch(256),
                )
                .await
                .expect("subscribed"),
        );
    }
    let started = Instant::now();
    let tasks: Vec<_> = subscriptions
        .into_iter()
        .map(|subscription| {
            let handled = Arc::clone(&handled);
            tokio::spawn(subscription.process(move |_message| {
                handled.fetch_add(1, Ordering::Relaxed);
                async { Ok::<_, std::convert::Infallible>(()) }
            }))
        })
        .collect();
    rate(started, tasks, &handled, messages).await
}

/// Drains the stream with `members` raw pull consumers sharing one durable; msgs/s.
async fn drain_raw(js: &jetstream::Context, durable: &str, members: usize, messages: u64) -> f64 {
    let stream = js.get_stream(STREAM).await.expect("stream");
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some(durable.into()),
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .expect("consumer created");
    let handled = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..members)
        .map(|_| {
            let consumer = consumer.clone();
            let handled = Arc::clone(&handled);
            tokio::spawn(async move {
                let mut pulled = consumer.messages().await.expect("pulling");
                while let Some(Ok(message)) = pulled.next().await {
                    handled.fetch_add(1, Ordering::Relaxed);
                    message.ack().await.expect("ack sent");
                }
            })
        })
        .collect();
    rate(started, tasks, &handled, messages).await
}

/// Waits until `messages` were handled, stops the consumers and answers msgs/s since
/// `started`.
async fn rate(
    started: Instant,
    consumers: Vec<tokio::task::JoinHandle<impl Sized>>,
    handled: &AtomicU64,
    messages: u64,
) -> f64 {
    let deadline = Instant::now() + DEADLINE;
    while handled.load(Ordering::Relaxed) < messages {
        assert!(Instant::now() < deadline, "not drained within {DEADLINE:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let elapsed = started.elapsed();
    for consumer in consumers {
        consumer.abort();
    }
    messages as f64 / elapsed.as_secs_f64()
}
