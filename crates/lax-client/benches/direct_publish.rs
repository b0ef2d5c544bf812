//! Heap allocations and CPU time per direct publish: `LaxClient` against raw async-nats, side
//! by side against one local nats-server (started by `lax-testkit`).
//!
//! `cargo bench -p lax-client --bench direct_publish`
//!
//! Both sides publish the same messages one at a time (one in flight): a 128-byte payload
//! with a fresh message id in a `Message-Id` header, as `lax bench --compare-raw` does. Raw
//! async-nats builds that header map itself; LAX does it from the request. A counting global
//! allocator counts every allocation in the process during each round (the client's
//! connection task included, on both sides), and `getrusage` gives the process's CPU time.
//! Rounds alternate LAX and raw, so drift on a shared machine hits both alike; the medians
//! are printed last.

// A bench binary's main has nothing to document.
#![allow(missing_docs)]

use std::{
    alloc::System,
    time::{Duration, Instant},
};

use async_nats::HeaderMap;
use bytes::Bytes;
use lax_client::{ClientOptions, LaxClient, PublishOptions};
use lax_core::{MESSAGE_ID_HEADER, new_message_id};
use lax_testkit::NatsServer;
use nix::sys::resource::{UsageWho, getrusage};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const SUBJECT: &str = "bench.direct";
const PAYLOAD_SIZE: usize = 128;
const WARM_UP: u64 = 20_000;
const PER_ROUND: u64 = 100_000;
const ROUNDS: usize = 5;

/// What one round of `PER_ROUND` publishes cost.
#[derive(Debug, Clone, Copy)]
struct Cost {
    allocations_per_publish: f64,
    bytes_per_publish: f64,
    cpu_ns_per_publish: f64,
    wall_ns_per_publish: f64,
}

fn cpu_time() -> Duration {
    let usage = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage(RUSAGE_SELF)");
    let to_duration =
        |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1_000);
    to_duration(usage.user_time()) + to_duration(usage.system_time())
}

/// Runs `publish` `PER_ROUND` times, then `flush`, and measures it all.
async fn round<P, F>(mut publish: P, flush: F) -> Cost
where
    P: AsyncFnMut(),
    F: AsyncFnOnce(),
{
    let region = Region::new(GLOBAL);
    let (cpu, wall) = (cpu_time(), Instant::now());
    for _ in 0..PER_ROUND {
        publish().await;
    }
    flush().await;
    let (cpu, wall) = (cpu_time() - cpu, wall.elapsed());
    let stats = region.change();
    let per = |total: f64| total / PER_ROUND as f64;
    Cost {
        allocations_per_publish: per(stats.allocations as f64 + stats.reallocations as f64),
        bytes_per_publish: per(stats.bytes_allocated as f64),
        cpu_ns_per_publish: per(cpu.as_nanos() as f64),
        wall_ns_per_publish: per(wall.as_nanos() as f64),
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    // Only under `cargo bench` (which passes `--bench`), not when a test run smoke-tests it.
    if !std::env::args().any(|arg| arg == "--bench") {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let nats = NatsServer::start().await.expect("nats-server starts");
        let options = ClientOptions::builder()
            .nats_urls([nats.url()])
            .build()
            .expect("valid options");
        let lax = LaxClient::connect(options).await.expect("LAX connects");
        let raw = async_nats::connect(nats.url())
            .await
            .expect("raw async-nats connects");
        let payload = Bytes::from(vec![b'x'; PAYLOAD_SIZE]);
        let raw_subject = async_nats::Subject::from(SUBJECT);

        let mut publish_lax = async || {
            lax.publish_with(SUBJECT, payload.clone(), PublishOptions::default())
                .await
                .expect("LAX publish");
        };
        let mut publish_raw = async || {
            let mut headers = HeaderMap::new();
            headers.insert(MESSAGE_ID_HEADER, new_message_id().as_str());
            raw.publish_with_headers(raw_subject.clone(), headers, payload.clone())
                .await
                .expect("raw publish");
        };
        for _ in 0..WARM_UP {
            publish_lax().await;
            publish_raw().await;
        }
        let (mut lax_costs, mut raw_costs) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            lax_costs.push(round(&mut publish_lax, async || lax.flush().await.unwrap()).await);
            raw_costs.push(round(&mut publish_raw, async || raw.flush().await.unwrap()).await);
        }

        println!(
            "direct publish, {PAYLOAD_SIZE} B, 1 in flight, {ROUNDS} alternating rounds of \
             {PER_ROUND}: medians"
        );
        println!(
            "{:<6} {:>14} {:>14} {:>14} {:>14}",
            "", "allocs/msg", "bytes/msg", "cpu ns/msg", "wall ns/msg"
        );
        let row = |name: &str, costs: &[Cost]| {
            let pick = |f: fn(&Cost) -> f64| median(costs.iter().map(f).collect());
            let figures = [
                pick(|c| c.allocations_per_publish),
                pick(|c| c.bytes_per_publish),
                pick(|c| c.cpu_ns_per_publish),
                pick(|c| c.wall_ns_per_publish),
            ];
            println!(
                "{name:<6} {:>14.2} {:>14.1} {:>14.0} {:>14.0}",
                figures[0], figures[1], figures[2], figures[3]
            );
            figures
        };
        let l = row("LAX", &lax_costs);
        let r = row("raw", &raw_costs);
        println!(
            "LAX - raw: {:+.2} allocations/msg; LAX/raw: {:.2}x CPU time, {:.2}x wall time \
             (raw/LAX throughput {:.2})",
            l[0] - r[0],
            l[2] / r[2],
            l[3] / r[3],
            r[3] / l[3]
        );
        lax.close().await.expect("LAX closes");
    });
}
