//! `lax soak`: a long run of mixed traffic under injected faults, watching memory and tasks.
//!
//! It starts its own stack — a `nats-server` (JetStream, file store; `lax-testkit`) and a
//! `lax broker` child process (this binary) — then, for `--minutes`:
//!
//! - one `LaxClient` publishes each tier at a steady `--rate` (messages per second per
//!   tier): `memory` direct to NATS, `persistent` and `replicated` (one replica) through
//!   the broker; a failed publish is sent again with the same id until it is accepted;
//! - a consumer-group member reads the persistent tier and acks every message;
//! - every `--fault-every` seconds one fault, in turn: nats-server SIGKILLed and restarted,
//!   the broker frozen (SIGSTOP for 5 s, then SIGCONT), the broker SIGKILLed and restarted;
//! - every `--sample-every` seconds the client's and the broker's RSS (`/proc/PID/status`)
//!   and alive tokio tasks (the client's runtime; the broker's
//!   `lax_broker_runtime_alive_tasks` from its `/metrics`).
//!
//! At the end it counts by id what each tier acked, stored, lost and duplicated, what the
//! group received, and writes `soak.csv` and `soak.svg` (RSS and tasks over time) to
//! `--out`. Run it as `cargo xtask soak --minutes N`; it is not part of CI.

mod report;
mod stack;

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Args;
use futures::StreamExt as _;
use lax_client::{
    ClientOptions, ConsumerGroupConfig, LaxClient, PublishOptions, SubscribeOptions, Tier,
};
use tokio::{task::JoinHandle, time::MissedTickBehavior};

use self::{
    report::{Sample, Summary, TierFigures},
    stack::{Fault, SoakStack},
};
use crate::failure::Failure;

/// The tiers published, with the subject prefix and stream of each.
const TIERS: [(Tier, &str, &str); 3] = [
    (Tier::Memory, "soak.memory", "SOAK_MEMORY"),
    (Tier::Persistent, "soak.persistent", "SOAK_PERSISTENT"),
    (Tier::Replicated, "soak.replicated", "SOAK_REPLICATED"),
];
/// The consumer group reading the persistent tier.
const GROUP: &str = "soak-readers";
/// The pause after a failed publish (or a lost subscription) before trying again.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// How long the group may take to catch up after the load stops.
const DRAIN: Duration = Duration::from_secs(60);

/// Options of `lax soak`.
#[derive(Debug, Clone, Args)]
pub(crate) struct SoakArgs {
    /// How long to run, in minutes.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    minutes: u64,
    /// Messages per second published on each tier.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    rate: u32,
    /// Seconds between two faults.
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(5..))]
    fault_every: u64,
    /// Seconds between two samples of RSS and tasks.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    sample_every: u64,
    /// Where soak.csv, soak.svg and the servers' logs go.
    #[arg(long, default_value = "target/soak")]
    out: PathBuf,
}

/// What one tier's publisher saw. It sends ids `{tier}-0`, `{tier}-1`, … one at a time,
/// each until accepted, so the accepted ids are exactly the first `acked_count`: the soak
/// keeps no set of them, so the client's RSS is the client's, not the harness's.
#[derive(Debug, Default)]
struct Published {
    acked_count: AtomicU64,
    errors: AtomicU64,
}

impl Published {
    fn acked_ids(&self, tier: Tier) -> Vec<String> {
        (0..self.acked_count.load(Ordering::Relaxed))
            .map(|n| message_id(tier, n))
            .collect()
    }
}

fn message_id(tier: Tier, n: u64) -> String {
    format!("{tier}-{n}")
}

/// What the group member saw.
#[derive(Debug, Default)]
struct Received {
    /// Whether persistent message `n` was received and acked (one byte per message).
    acked: Mutex<Vec<bool>>,
    deliveries: AtomicU64,
    redelivered: AtomicU64,
    resubscribes: AtomicU64,
}

pub(crate) async fn run(args: SoakArgs) -> Result<(), Failure> {
    std::fs::create_dir_all(&args.out)
        .map_err(|e| Failure::runtime(format!("cannot create {}: {e}", args.out.display())))?;
    let mut stack = SoakStack::start(
        &args.out,
        &TIERS.map(|(_, prefix, stream)| (prefix, stream)),
    )
    .await?;
    let options = ClientOptions::builder()
        .nats_urls([stack.nats_url()])
        .broker_addr(stack.broker_addr())
        // The default 30 s rest would hide most of a minute's traffic after each broker fault.
        .circuit_breaker_timeout(Duration::from_secs(5))
        .build()?;
    let client = LaxClient::connect(options).await?;
    // Unlimited deliveries: a message redelivered across the faults is never dead-lettered.
    let mut group = ConsumerGroupConfig::default();
    group.max_deliver = None;
    client
        .create_consumer_group(GROUP, "SOAK_PERSISTENT", "soak.persistent.>", group)
        .await?;

    let stop = Arc::new(AtomicBool::new(false));
    let published: Vec<Arc<Published>> = TIERS.iter().map(|_| Arc::default()).collect();
    let publishers: Vec<JoinHandle<()>> = TIERS
        .iter()
        .zip(&published)
        .map(|(&(tier, prefix, _), published)| {
            tokio::spawn(publish_steadily(
                client.clone(),
                tier,
                prefix,
                args.rate,
                Arc::clone(published),
                Arc::clone(&stop),
            ))
        })
        .collect();
    let received = Arc::new(Received::default());
    let reader = tokio::spawn(read_group(client.clone(), Arc::clone(&received)));

    let started = Instant::now();
    let until = started + Duration::from_secs(args.minutes * 60);
    let mut samples = Vec::new();
    let mut faults = Vec::new();
    let mut next_fault = started + Duration::from_secs(args.fault_every);
    let mut sampler = tokio::time::interval(Duration::from_secs(args.sample_every));
    sampler.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut fault_kinds = Fault::ROTATION.iter().cycle();
    while Instant::now() < until {
        sampler.tick().await;
        let sample = Sample::take(started, &stack, &published).await;
        println!("{}", sample.line());
        samples.push(sample);
        if Instant::now() >= next_fault && Instant::now() < until {
            let fault = *fault_kinds.next().expect("the rotation never ends");
            let at = started.elapsed();
            println!("{:>6.0} s  fault: {fault}", at.as_secs_f64());
            stack.inject(fault).await?;
            faults.push((at, fault));
            next_fault += Duration::from_secs(args.fault_every);
        }
    }
    stop.store(true, Ordering::Relaxed);
    for publisher in publishers {
        let _ = publisher.await;
    }
    // Let the group read what was acked before counting what it missed.
    // TIERS[1] is the persistent tier, the one the group reads.
    let persistent_acked = published[1].acked_count.load(Ordering::Relaxed) as usize;
    let missing = || {
        let acked = received.acked.lock().expect("not poisoned");
        (0..persistent_acked)
            .filter(|n| !acked.get(*n).copied().unwrap_or(false))
            .count()
    };
    let drained = Instant::now();
    while drained.elapsed() < DRAIN && missing() > 0 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    reader.abort();
    let mut tiers = Vec::new();
    for ((tier, _, stream), published) in TIERS.iter().zip(&published) {
        let counts = stack
            .count(*tier, stream, &published.acked_ids(*tier))
            .await?;
        tiers.push(TierFigures {
            tier: *tier,
            counts,
            errors: published.errors.load(Ordering::Relaxed),
        });
    }
    let group_missing = missing();
    let summary = Summary {
        minutes: args.minutes,
        rate: args.rate,
        tiers,
        group_received: persistent_acked - group_missing,
        group_missing,
        group_deliveries: received.deliveries.load(Ordering::Relaxed),
        group_redelivered: received.redelivered.load(Ordering::Relaxed),
        group_resubscribes: received.resubscribes.load(Ordering::Relaxed),
        faults,
        samples,
    };
    client.close().await?;
    stack.stop().await;
    summary.write(&args.out)?;
    println!("\n{}", summary.text());
    Ok(())
}

/// Publishes `tier` at `rate` messages per second until `stop`; a failed message is sent
/// again with the same id (after [`RETRY_PAUSE`]) until accepted, as an application that
/// must not lose it would. Ticks missed meanwhile are skipped, not caught up.
async fn publish_steadily(
    client: LaxClient,
    tier: Tier,
    prefix: &'static str,
    rate: u32,
    published: Arc<Published>,
    stop: Arc<AtomicBool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1) / rate);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut n: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let id = message_id(tier, n);
        loop {
            let options = PublishOptions::tier(tier).message_id(&id);
            match client
                .publish_with(format!("{prefix}.{}", n % 8), id.clone(), options)
                .await
            {
                Ok(_) => break,
                Err(_) => {
                    published.errors.fetch_add(1, Ordering::Relaxed);
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
        }
        published.acked_count.fetch_add(1, Ordering::Relaxed);
        n += 1;
    }
}

/// A member of [`GROUP`] acking every persistent message; subscribes again whenever its
/// subscription ends (the broker was killed). It reads on while the load drains, until
/// aborted.
async fn read_group(client: LaxClient, received: Arc<Received>) {
    loop {
        let options = SubscribeOptions::group(GROUP);
        if let Ok(mut subscription) = client.subscribe("soak.persistent.>", options).await {
            while let Some(Ok(message)) = subscription.next().await {
                received.deliveries.fetch_add(1, Ordering::Relaxed);
                if message.redelivered {
                    received.redelivered.fetch_add(1, Ordering::Relaxed);
                }
                // A failed ack is redelivered after the ack wait and counted then.
                let n = message
                    .id
                    .strip_prefix(Tier::Persistent.as_str())
                    .and_then(|rest| rest.strip_prefix('-'))
                    .and_then(|n| n.parse::<usize>().ok());
                if let (true, Some(n)) = (message.ack().await.is_ok(), n) {
                    let mut acked = received.acked.lock().expect("not poisoned");
                    if acked.len() <= n {
                        acked.resize(n + 1, false);
                    }
                    acked[n] = true;
                }
            }
        }
        received.resubscribes.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(RETRY_PAUSE).await;
    }
}
