//! Consuming under load, against a real `lax broker` process and a real nats-server: the
//! scenarios of "consuming under load" (slow consumers, subscribers that never read, large
//! messages with a big prefetch, subscribers SIGKILLed under manual and automatic ack, and
//! clients of the original contract that cannot ack). Each prints what was delivered, acked,
//! redelivered, lost and duplicated, and the broker's RSS where memory is the point.
//!
//! Killed subscribers are real processes: this test binary run again as a subscriber
//! (`child_subscriber`, ignored unless a kill scenario starts it).

use std::{
    collections::HashMap,
    net::TcpListener,
    process::Stdio,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt as _;
use lax_proto::broker::v1::{
    AckRequest, BatchPublishRequest, ConsumerGroupConfig, ConsumerGroupRequest,
    CreateStreamRequest, PublishOptions, PublishRequest, StreamConfig, SubscribeOptions,
    SubscribeRequest, broker_service_client::BrokerServiceClient,
    stream_manager_client::StreamManagerClient,
};
use lax_testkit::{NatsServer, wait_until};
use nix::{sys::signal::Signal, unistd::Pid};
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::{Child, Command},
    time::Instant,
};
use tonic::transport::Channel;

const DEADLINE: Duration = Duration::from_secs(30);
type Client = BrokerServiceClient<Channel>;

/// nats-server plus a `lax broker` process in front of it.
struct Stack {
    nats: NatsServer,
    broker: Child,
    addr: String,
    metrics: String,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl Stack {
    async fn start(extra: &[&str]) -> Stack {
        let nats = NatsServer::start().await.expect("nats-server starts");
        let (port, metrics_port) = (free_port(), free_port());
        let mut command = Command::new(env!("CARGO_BIN_EXE_lax"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("LAX_") {
                command.env_remove(name);
            }
        }
        command
            .args([
                "broker",
                "--nats-url",
                &nats.url(),
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--metrics-listen",
                &format!("127.0.0.1:{metrics_port}"),
                "--replicated-replicas",
                "1",
            ])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let broker = command.spawn().expect("lax broker starts");
        let addr = format!("http://127.0.0.1:{port}");
        let metrics = format!("http://127.0.0.1:{metrics_port}/metrics");
        let stack = Stack {
            nats,
            broker,
            addr,
            metrics,
        };
        wait_until(DEADLINE, || async {
            match Channel::from_shared(stack.addr.clone())
                .unwrap()
                .connect()
                .await
            {
                Ok(channel) => StreamManagerClient::new(channel)
                    .list_streams(lax_proto::broker::v1::ListStreamsRequest::default())
                    .await
                    .is_ok(),
                Err(_) => false,
            }
        })
        .await
        .expect("the broker answers");
        stack
    }

    async fn client(&self) -> Client {
        let channel = Channel::from_shared(self.addr.clone())
            .unwrap()
            .connect()
            .await
            .expect("connected to the broker");
        BrokerServiceClient::new(channel).max_decoding_message_size(8 * 1024 * 1024)
    }

    async fn create_stream(&self, name: &str, subjects: &str) {
        let channel = Channel::from_shared(self.addr.clone())
            .unwrap()
            .connect()
            .await
            .unwrap();
        StreamManagerClient::new(channel)
            .create_stream(CreateStreamRequest {
                name: name.into(),
                config: Some(StreamConfig {
                    subjects: vec![subjects.into()],
                    tier: "persistent".into(),
                    ..Default::default()
                }),
            })
            .await
            .expect("stream created");
    }

    async fn create_group(&self, name: &str, stream: &str, filter: &str, ack_wait: i32) {
        self.client()
            .await
            .create_consumer_group(ConsumerGroupRequest {
                name: name.into(),
                stream: stream.into(),
                subject_filter: filter.into(),
                config: Some(ConsumerGroupConfig {
                    deliver_policy: "all".into(),
                    ack_wait_seconds: ack_wait,
                    max_ack_pending: 1000,
                    ..Default::default()
                }),
            })
            .await
            .expect("group created");
    }

    /// Publishes `count` messages numbered `0..count` with `size`-byte payloads.
    async fn publish(&self, subject: &str, count: usize, size: usize) {
        let mut client = self.client().await;
        let per_batch = (4 * 1024 * 1024 / size.max(1)).clamp(1, 500);
        for start in (0..count).step_by(per_batch) {
            let messages = (start..count.min(start + per_batch))
                .map(|i| {
                    let mut payload = format!("{i} ").into_bytes();
                    payload.resize(size.max(payload.len()), b'x');
                    PublishRequest {
                        subject: subject.into(),
                        payload: payload.into(),
                        ..Default::default()
                    }
                })
                .collect();
            let response = client
                .batch_publish(BatchPublishRequest {
                    messages,
                    default_options: Some(PublishOptions {
                        tier: "persistent".into(),
                        require_ack: true,
                        ..Default::default()
                    }),
                })
                .await
                .expect("batch published")
                .into_inner();
            assert_eq!(response.failure_count, 0);
        }
    }

    /// The broker's resident memory, in MiB.
    fn broker_rss_mib(&self) -> f64 {
        let pid = self.broker.id().expect("running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS");
        kib / 1024.0
    }

    /// One scrape of what the broker holds, by consumer and by live subscription.
    async fn holdings(&self) -> Holdings {
        let scrape = plain_get(&self.metrics).await;
        let values = |prefix: &str| -> Vec<f64> {
            scrape
                .lines()
                .filter(|l| l.starts_with(prefix))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .collect()
        };
        Holdings {
            by_consumer: values("lax_broker_consumer_inflight_messages{")
                .into_iter()
                .sum(),
            by_subscriber: values("lax_broker_subscriber_inflight_messages{"),
        }
    }

    /// The consumer as JetStream sees it; `None` until the broker has created it (a
    /// subscriber's task may not have reached the broker yet).
    async fn consumer(
        &self,
        stream: &str,
        name: &str,
    ) -> Option<async_nats::jetstream::consumer::Info> {
        let js = async_nats::jetstream::new(async_nats::connect(self.nats.url()).await.unwrap());
        let mut consumer: async_nats::jetstream::consumer::PullConsumer = js
            .get_stream(stream)
            .await
            .unwrap()
            .get_consumer(name)
            .await
            .ok()?;
        Some(consumer.info().await.unwrap().clone())
    }
}

/// Messages held for subscribers, from one scrape.
#[derive(Debug)]
struct Holdings {
    /// The consumers' gauges, added up.
    by_consumer: f64,
    /// Each live subscription's own gauge.
    by_subscriber: Vec<f64>,
}

fn subscribe_request(subject: &str, group: &str, options: SubscribeOptions) -> SubscribeRequest {
    SubscribeRequest {
        subject: subject.into(),
        consumer_group: group.into(),
        options: Some(options),
        start_position: "first".into(),
    }
}

fn number(payload: &[u8]) -> u64 {
    let text = std::str::from_utf8(payload).unwrap_or_default();
    text.split(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .expect("numbered payload")
}

/// What every subscriber of one scenario saw.
#[derive(Debug, Default)]
struct Tally {
    delivered: u64,
    acked: u64,
    refused_acks: u64,
    redelivered: u64,
    /// Times each message was processed.
    processed: HashMap<u64, u64>,
}

impl Tally {
    fn processed(&mut self, n: u64) {
        *self.processed.entry(n).or_default() += 1;
    }

    fn duplicated(&self) -> u64 {
        self.processed.values().map(|c| c.saturating_sub(1)).sum()
    }

    fn lost(&self, published: u64) -> u64 {
        (0..published)
            .filter(|n| !self.processed.contains_key(n))
            .count() as u64
    }

    fn print(&self, scenario: &str, published: u64) {
        println!(
            "{scenario}: published {published}, delivered {}, acked {}, refused acks {}, \
             redelivered {}, lost {}, duplicated {}",
            self.delivered,
            self.acked,
            self.refused_acks,
            self.redelivered,
            self.lost(published),
            self.duplicated()
        );
    }
}

/// Reads until `stop` says so, processing each message for `work` and then acking it.
async fn consume(
    mut client: Client,
    request: SubscribeRequest,
    work: Duration,
    tally: Arc<Mutex<Tally>>,
    stop: impl Fn(&Tally) -> bool,
) {
    let mut messages = client
        .subscribe(request)
        .await
        .expect("subscribed")
        .into_inner();
    while !stop(&tally.lock().unwrap()) {
        let Ok(Some(Ok(message))) =
            tokio::time::timeout(Duration::from_millis(200), messages.next()).await
        else {
            continue;
        };
        {
            let mut tally = tally.lock().unwrap();
            tally.delivered += 1;
            tally.redelivered += u64::from(message.redelivered);
            tally.processed(number(&message.payload));
        }
        tokio::time::sleep(work).await;
        if message.ack_id.is_empty() {
            continue;
        }
        let acked = client
            .ack(AckRequest {
                ack_id: message.ack_id,
            })
            .await;
        let mut tally = tally.lock().unwrap();
        match acked {
            Ok(_) => tally.acked += 1,
            Err(_) => tally.refused_acks += 1,
        }
    }
}

fn settling(max_inflight: i32, prefetch: i32) -> SubscribeOptions {
    SubscribeOptions {
        manual_ack: true,
        uses_ack_rpc: true,
        max_inflight,
        prefetch,
        ..Default::default()
    }
}

/// Scenario 3: consumers slower than max_ack_pending ÷ ack_wait. Two members take 20 ms a
/// message with 100 in flight each (2 s of work queued) under an ack wait of 1 s: leases keep
/// every message theirs until they get to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumers_get_no_redelivery_storm() {
    const MESSAGES: u64 = 400;
    let stack = Stack::start(&[]).await;
    stack.create_stream("SLOW", "slow.>").await;
    stack.create_group("slow", "SLOW", "slow.>", 1).await;
    stack.publish("slow.jobs", MESSAGES as usize, 64).await;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let members: Vec<_> = (0..2)
        .map(|_| {
            let (stack_addr, tally) = (stack.addr.clone(), Arc::clone(&tally));
            tokio::spawn(async move {
                let channel = Channel::from_shared(stack_addr)
                    .unwrap()
                    .connect()
                    .await
                    .unwrap();
                consume(
                    BrokerServiceClient::new(channel),
                    subscribe_request("slow.jobs", "slow", settling(100, 10)),
                    Duration::from_millis(20),
                    tally,
                    |t| t.acked + t.refused_acks >= MESSAGES,
                )
                .await;
            })
        })
        .collect();
    let started = Instant::now();
    for member in members {
        tokio::time::timeout(Duration::from_secs(60), member)
            .await
            .expect("drained in time")
            .unwrap();
    }
    let tally = tally.lock().unwrap();
    tally.print(
        "slow consumers (ack_wait 1 s, 2 s of work in flight)",
        MESSAGES,
    );
    println!("drained in {:?}", started.elapsed());
    assert_eq!(tally.refused_acks, 0);
    assert_eq!(tally.lost(MESSAGES), 0);
    assert_eq!(tally.duplicated(), 0);
    assert_eq!(tally.redelivered, 0);
}

/// Scenario 2: subscribers that never read, and one that never acks with a huge
/// max_inflight, hold what their credit allows, not the stream; the broker's memory returns
/// (RSS back within 16 MiB of where it started) when they go, and a publish meanwhile is
/// answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_that_never_read_hold_bounded_memory() {
    const MESSAGES: usize = 2_000;
    const SIZE: usize = 16 * 1024;
    /// What the broker may keep once every subscription has ended.
    const RETURNED_SLACK_MIB: f64 = 16.0;
    let stack = Stack::start(&[]).await;
    stack.create_stream("IDLE", "idle.>").await;
    stack.publish("idle.data", MESSAGES, SIZE).await;
    let before = stack.broker_rss_mib();
    let mut peaks = Vec::new();
    let mut after = before;
    // Two waves: the second reuses what the allocator kept from the first.
    for wave in 1..=2 {
        let mut streams = Vec::new();
        for connection in 0..10 {
            let client = stack.client().await;
            for member in 0..20 {
                let mut client = client.clone();
                let options = SubscribeOptions {
                    max_inflight: 1_000_000,
                    prefetch: 1_000,
                    ..settling(0, 0)
                };
                let group = if member == 0 {
                    format!("idle{connection}")
                } else {
                    String::new()
                };
                streams.push(
                    client
                        .subscribe(subscribe_request("idle.data", &group, options))
                        .await
                        .unwrap_or_else(|status| {
                            panic!(
                                "wave {wave}: subscribed: {status:?}\n--- nats-server log ---\n{}",
                                stack.nats.log_tail(40)
                            )
                        })
                        .into_inner(),
                );
            }
        }
        // A measuring window: the figure is the peak the broker reaches while they idle.
        let mut peak = stack.broker_rss_mib();
        let mut held: f64 = 0.0;
        let mut most_by_one: f64 = 0.0;
        let window_ends = Instant::now() + Duration::from_secs(3);
        while Instant::now() < window_ends {
            peak = peak.max(stack.broker_rss_mib());
            let holdings = stack.holdings().await;
            // Every live subscription has its own series.
            assert_eq!(holdings.by_subscriber.len(), 200, "{holdings:?}");
            held = held.max(holdings.by_consumer);
            most_by_one = holdings
                .by_subscriber
                .iter()
                .copied()
                .fold(most_by_one, f64::max);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Once the pulls are done, the subscriptions' own figures add up to the consumers'
        // and none holds more than the broker's per-subscriber limit (8 MiB by default).
        wait_until(DEADLINE, || async {
            let holdings = stack.holdings().await;
            holdings.by_subscriber.iter().sum::<f64>() == holdings.by_consumer
        })
        .await
        .expect("per-subscription figures add up to the consumers'");
        assert!(
            most_by_one > 0.0 && most_by_one <= (8 * 1024 * 1024 / SIZE) as f64,
            "one subscriber held {most_by_one} messages of {SIZE} bytes"
        );
        let publish_started = Instant::now();
        stack.publish("idle.data", 1, 10).await;
        let publish_took = publish_started.elapsed();
        drop(streams);
        wait_until(DEADLINE, || async {
            let holdings = stack.holdings().await;
            holdings.by_consumer == 0.0 && holdings.by_subscriber.is_empty()
        })
        .await
        .expect("every subscription gives back what it held, and its series ends");
        let freed_at = Instant::now();
        let gone = stack.broker_rss_mib();
        // jemalloc's background threads give freed pages back within its decay time (10 s).
        wait_until(DEADLINE, || async {
            stack.broker_rss_mib() <= before + RETURNED_SLACK_MIB
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "wave {wave}: the broker's memory did not come back: RSS {:.1} MiB, {before:.1} \
                 MiB before the subscribers came",
                stack.broker_rss_mib()
            )
        });
        after = stack.broker_rss_mib();
        println!(
            "wave {wave}: 200 non-reading subscribers on a {} MiB stream: broker RSS before \
             {before:.1} MiB, peak {peak:.1} MiB, {gone:.1} MiB when they had gone, \
             {after:.1} MiB {:.1} s later; {held} messages held at most ({most_by_one} by \
             one subscriber); a publish meanwhile took {publish_took:?}",
            MESSAGES * SIZE / (1024 * 1024),
            freed_at.elapsed().as_secs_f64(),
        );
        peaks.push(peak);
    }
    let peak = peaks[0];
    assert!(
        peak - before < 200.0,
        "the broker's memory is bounded by its consume limits"
    );
    // A leak of what a wave holds would add its 64 MiB; the allocator's own fragmentation
    // has added 0–33 MiB on a loaded machine.
    assert!(
        peaks[1] < peaks[0] + 48.0,
        "a second wave reuses the memory of the first: {peaks:?} (after {after:.1} MiB)"
    );
}

/// Scenario 1: 256 KiB messages with prefetch 1000 and a subscriber that reads slowly do not
/// overrun the broker's NATS connection (nats-server counts no slow consumer) and publishing
/// goes on meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_with_a_big_prefetch_do_not_cut_the_broker_off() {
    const MESSAGES: u64 = 300;
    const SIZE: usize = 256 * 1024;
    let stack = Stack::start(&[]).await;
    stack.create_stream("BIG", "big.>").await;
    stack.publish("big.blobs", MESSAGES as usize, SIZE).await;
    let before = stack.broker_rss_mib();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let reader = {
        let (client, tally) = (stack.client().await, Arc::clone(&tally));
        tokio::spawn(consume(
            client,
            subscribe_request("big.blobs", "", settling(1000, 1000)),
            Duration::from_millis(5),
            tally,
            |t| t.acked >= MESSAGES,
        ))
    };
    let mut publisher = stack.client().await;
    let mut slowest = Duration::ZERO;
    let mut peak = before;
    while !reader.is_finished() {
        let started = Instant::now();
        publisher
            .publish(PublishRequest {
                subject: "big.side".into(),
                payload: "x".into(),
                options: Some(PublishOptions {
                    tier: "persistent".into(),
                    require_ack: true,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("publishing goes on while the big messages are consumed");
        slowest = slowest.max(started.elapsed());
        peak = peak.max(stack.broker_rss_mib());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::timeout(DEADLINE, reader)
        .await
        .unwrap()
        .unwrap();
    let varz: serde_json::Value =
        serde_json::from_str(&plain_get(&format!("{}/varz", stack.nats.monitor_url())).await)
            .unwrap();
    let slow_consumers = varz["slow_consumers"].as_u64().unwrap_or(0);
    let tally = tally.lock().unwrap();
    tally.print("256 KiB messages, prefetch 1000", MESSAGES);
    println!(
        "broker RSS before {before:.1} MiB, peak {peak:.1} MiB; slowest publish meanwhile \
         {slowest:?}; nats-server slow consumers {slow_consumers}"
    );
    assert_eq!(slow_consumers, 0);
    assert_eq!(tally.lost(MESSAGES), 0);
    assert_eq!(tally.duplicated(), 0);
}

/// A plain HTTP GET of the monitoring endpoint (no HTTP client dependency for one call).
async fn plain_get(url: &str) -> String {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest.split_once('/').map_or((rest, "/"), |(h, p)| (h, p));
    let mut socket = tokio::net::TcpStream::connect(host)
        .await
        .expect("monitor port");
    socket
        .write_all(format!("GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    socket.read_to_string(&mut response).await.unwrap();
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}

/// How a child subscriber settles.
#[derive(Debug, Clone, Copy)]
enum ChildMode {
    /// Acks each message through the Ack call after "processing" it.
    Manual,
    /// Acks each message through the Ack call as it receives it, before processing it (what
    /// LAX's client does for manual_ack = false).
    AckOnReceipt,
    /// A client of the original contract: manual_ack = false, no Ack call.
    OldContractAuto,
}

/// The child subscriber's HTTP/2 windows: a gRPC-core client's (the Python SDK's), 64 KiB,
/// not hyper's 2 MiB.
const CHILD_WINDOW: u32 = 65_535;

/// Not a test of its own: the subscriber process the kill scenarios start (this binary run
/// again with `--include-ignored`) and SIGKILL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "the subscriber process of the kill scenarios, started by them"]
async fn child_subscriber() {
    let config = std::env::var("LAX_LOAD_CHILD").expect("started by a kill scenario");
    let mut parts = config.split(' ');
    let (addr, subject, group, mode) = (
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().to_owned(),
        parts.next().unwrap().to_owned(),
    );
    let channel = Channel::from_shared(addr)
        .unwrap()
        .initial_stream_window_size(CHILD_WINDOW)
        .initial_connection_window_size(CHILD_WINDOW)
        .connect()
        .await
        .unwrap();
    let mut client = BrokerServiceClient::new(channel);
    let options = match mode.as_str() {
        "Manual" | "AckOnReceipt" => settling(100, 10),
        _ => SubscribeOptions {
            manual_ack: false,
            max_inflight: 100,
            prefetch: 10,
            ..Default::default()
        },
    };
    let mut messages = client
        .subscribe(subscribe_request(&subject, &group, options))
        .await
        .unwrap()
        .into_inner();
    while let Some(Ok(message)) = messages.next().await {
        // "Processed" once printed: the parent counts what it reads.
        println!("seq {}", number(&message.payload));
        if mode == "AckOnReceipt" {
            let mut client = client.clone();
            let ack_id = message.ack_id.clone();
            tokio::spawn(async move { client.ack(AckRequest { ack_id }).await });
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        if mode == "Manual" {
            let _ = client
                .ack(AckRequest {
                    ack_id: message.ack_id,
                })
                .await;
        }
    }
}

/// Scenarios 4 and 5: a group member is SIGKILLed after processing 500 of 2,000; the other
/// member must get everything the dead one had not processed.
async fn killed_member(mode: ChildMode) -> (Tally, u64) {
    const MESSAGES: u64 = 2_000;
    let stack = Stack::start(&[]).await;
    stack.create_stream("KILL", "kill.>").await;
    stack.create_group("crew", "KILL", "kill.>", 30).await;
    stack.publish("kill.jobs", MESSAGES as usize, 64).await;

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_subscriber",
            "--exact",
            "--include-ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            "LAX_LOAD_CHILD",
            format!("{} kill.jobs crew {mode:?}", stack.addr),
        )
        .stdout(Stdio::piped())
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("child subscriber starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut tally = Tally::default();
    let mut seen_by_child = 0;
    tokio::time::timeout(DEADLINE, async {
        while seen_by_child < 500 {
            let line = lines.next_line().await.unwrap().expect("the child runs");
            // The harness prints "test child_subscriber ... " with no newline before the first.
            if let Some((_, n)) = line.split_once("seq ") {
                tally.processed(n.parse().unwrap());
                seen_by_child += 1;
            }
        }
    })
    .await
    .expect("the child processes 500");
    nix::sys::signal::kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGKILL).unwrap();
    child.wait().await.unwrap();
    // Lines it printed before it died.
    while let Ok(Some(line)) = lines.next_line().await {
        // The harness prints "test child_subscriber ... " with no newline before the first.
        if let Some((_, n)) = line.split_once("seq ") {
            tally.processed(n.parse().unwrap());
        }
    }
    tally.delivered = tally.processed.len() as u64;

    let tally = Arc::new(Mutex::new(tally));
    let survivor_options = settling(100, 50);
    // The survivor reads until JetStream has every message acked (a nak'd message waiting
    // for redelivery counts neither as pending nor as ack pending: the ack floor tells).
    let survivor = {
        let (client, tally) = (stack.client().await, Arc::clone(&tally));
        tokio::spawn(consume(
            client,
            subscribe_request("kill.jobs", "crew", survivor_options),
            Duration::ZERO,
            tally,
            |_| false,
        ))
    };
    let drained = wait_until(DEADLINE, || async {
        stack.consumer("KILL", "crew").await.is_some_and(|info| {
            info.ack_floor.stream_sequence == MESSAGES && info.num_ack_pending == 0
        })
    })
    .await;
    survivor.abort();
    let _ = survivor.await;
    drained.expect("the group drains");
    let tally = Arc::try_unwrap(tally)
        .expect("the survivor is gone")
        .into_inner()
        .unwrap();
    (tally, MESSAGES)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_manual_ack_member_loses_nothing() {
    let (tally, published) = killed_member(ChildMode::Manual).await;
    tally.print("member SIGKILLed after 500, manual ack", published);
    assert_eq!(tally.lost(published), 0);
    assert!(
        tally.duplicated() <= 100,
        "only what the dead member held unacked comes again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_member_acking_on_receipt_loses_nothing_it_had_not_received() {
    let (tally, published) = killed_member(ChildMode::AckOnReceipt).await;
    tally.print("member SIGKILLed after 500, acked on receipt", published);
    assert_eq!(
        tally.lost(published),
        0,
        "only received messages were acked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_old_contract_auto_ack_member_loses_at_most_what_was_in_transit() {
    let (tally, published) = killed_member(ChildMode::OldContractAuto).await;
    tally.print(
        "old-contract member SIGKILLed after 500, acked by the broker",
        published,
    );
    // In transit to a client that never tells what it has read: what its 64 KiB HTTP/2
    // receive window holds (the broker writes to the stream only within that window), each
    // message at least its 64-byte payload plus gRPC's 5-byte frame header.
    let window_holds = CHILD_WINDOW as u64 / (64 + 5);
    assert!(
        tally.lost(published) <= window_holds,
        "the backlog is never acked ahead of delivery: lost {} > {window_holds}",
        tally.lost(published)
    );
}

/// Scenario 5: a client of the original contract (no Ack call) with manual_ack = true, as
/// the Python SDK subscribes: the broker acks on hand-over, so nothing is redelivered or
/// dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_contract_manual_ack_clients_are_acked_by_the_broker() {
    const MESSAGES: u64 = 200;
    let stack = Stack::start(&[]).await;
    stack.create_stream("OLD", "old.>").await;
    stack.publish("old.jobs", MESSAGES as usize, 64).await;
    let tally = Arc::new(Mutex::new(Tally::default()));
    let options = SubscribeOptions {
        manual_ack: true,
        max_deliver: 2,
        ack_wait_seconds: 1,
        max_inflight: 100,
        prefetch: 10,
        enable_flow_control: true,
        ..Default::default()
    };
    let reader = {
        let (client, tally) = (stack.client().await, Arc::clone(&tally));
        tokio::spawn(consume(
            client,
            subscribe_request("old.jobs", "python", options),
            Duration::ZERO,
            tally,
            |_| false,
        ))
    };
    wait_until(DEADLINE, || async {
        stack.consumer("OLD", "python").await.is_some_and(|info| {
            info.ack_floor.stream_sequence == MESSAGES && info.num_ack_pending == 0
        })
    })
    .await
    .expect("every message acked by the broker");
    // Nothing may come back: what would is redelivered after one ack wait (1 s), so the
    // check waits past two.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    reader.abort();
    let info = stack
        .consumer("OLD", "python")
        .await
        .expect("the group's consumer exists");
    let tally = tally.lock().unwrap();
    tally.print("old-contract client, manual_ack = true", MESSAGES);
    assert_eq!(tally.lost(MESSAGES), 0);
    assert_eq!(tally.duplicated(), 0);
    assert_eq!(info.num_redelivered, 0);
    assert_eq!(info.num_ack_pending, 0, "nothing left for dead-lettering");
}
