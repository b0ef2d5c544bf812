//! The cost of the default stack per publish: the full stack (metrics with a Prometheus
//! recorder installed, in-flight cap, route, breaker, timeout; retry on the broker path) over
//! a publisher that succeeds at once, against that publisher alone.
//!
//! `cargo bench -p lax-core --bench stack`. Criterion reports each on its own; the summary
//! printed last times them all interleaved, best of 25 rounds, and gives the time each adds
//! over the bare publisher: the figure to read on a shared machine.

// criterion_group! makes an undocumented pub fn.
#![allow(missing_docs)]

use std::{
    future::{Ready, ready},
    time::{Duration, Instant},
};

use criterion::{Criterion, criterion_group, criterion_main};
use lax_core::{
    Error, PublishRequest, Publisher, PublisherService, Receipt, Tier,
    breaker::{BreakerConfig, CircuitBreakerLayer},
    limit::{ConcurrencyLimitLayer, LimitMode},
    metrics::MetricsLayer,
    route::Route,
    stack::{StackBuilder, StackConfig},
    timeout::TimeoutLayer,
};
use metrics_exporter_prometheus::PrometheusBuilder;
use tower::{Layer, Service, ServiceExt};

/// A publisher that succeeds at once, without allocating.
#[derive(Debug, Clone, Copy)]
struct Noop;

impl Publisher for Noop {
    type Future = Ready<Result<Receipt, Error>>;

    fn publish(&self, request: PublishRequest) -> Self::Future {
        ready(Ok(Receipt::direct(request.message_id)))
    }

    async fn flush(&self) -> Result<(), Error> {
        Ok(())
    }

    async fn close(&self) -> Result<(), Error> {
        Ok(())
    }
}

/// Installs a Prometheus recorder as `lax-client` does: latency buckets, and an upkeep thread
/// folding samples into them. Without upkeep, millions of samples would pile up in memory
/// during the run and the figures would measure that instead.
fn install_prometheus_recorder() {
    let recorder = PrometheusBuilder::new()
        .set_buckets(&[0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.1, 1.0, 10.0])
        .expect("non-empty buckets")
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).expect("installing the Prometheus recorder");
    // More often than the client's 5 s: a benchmark publishes millions a second.
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_millis(100));
            handle.run_upkeep();
        }
    });
}

/// Times `iters` publishes of clones of `request` through `service`.
fn run<S>(
    runtime: &tokio::runtime::Runtime,
    service: &mut S,
    request: &PublishRequest,
    iters: u64,
) -> Duration
where
    S: Service<PublishRequest, Response = Receipt>,
    S::Error: std::fmt::Debug,
{
    runtime.block_on(async {
        let start = Instant::now();
        for _ in 0..iters {
            let ready = service.ready().await.unwrap();
            std::hint::black_box(ready.call(request.clone()).await.unwrap());
        }
        start.elapsed()
    })
}

/// A service to time, by name.
type Candidate<'a> = (&'static str, Box<dyn FnMut(u64) -> Duration + 'a>);

/// Times every candidate in turn, `rounds` times over, and keeps each one's best time per
/// publish: interleaving makes drift on a shared machine hit all of them alike, and the best
/// round is the one least disturbed. Prints the time per publish and the time added over the
/// first candidate (the bare publisher).
fn summary(candidates: &mut [Candidate<'_>], rounds: usize, iters: u64) {
    let mut best = vec![f64::INFINITY; candidates.len()];
    for _ in 0..rounds {
        for ((_, time), best) in candidates.iter_mut().zip(&mut best) {
            let per_publish = time(iters).as_nanos() as f64 / iters as f64;
            *best = best.min(per_publish);
        }
    }
    println!("\nBest of {rounds} interleaved rounds of {iters} publishes:");
    println!("{:<34} {:>12} {:>16}", "", "ns/publish", "added over bare");
    for ((name, _), ns) in candidates.iter().zip(&best) {
        println!("{name:<34} {ns:>12.1} {:>16.1}", ns - best[0]);
    }
}

fn stack(c: &mut Criterion) {
    install_prometheus_recorder();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let direct = PublishRequest::new("bench.direct", "payload");
    let broker = PublishRequest::new("bench.broker", "payload").with_tier(Tier::Persistent);

    let mut group = c.benchmark_group("publish");
    let mut bare = PublisherService::new(Noop);
    group.bench_function("bare", |b| {
        b.iter_custom(|iters| run(&runtime, &mut bare, &direct, iters))
    });
    let mut stack = {
        let _guard = runtime.enter();
        StackBuilder::new(StackConfig::default())
            .build(PublisherService::new(Noop), PublisherService::new(Noop))
            .unwrap()
    };
    group.bench_function("stack/direct", |b| {
        b.iter_custom(|iters| run(&runtime, &mut stack, &direct, iters))
    });
    group.bench_function("stack/broker", |b| {
        b.iter_custom(|iters| run(&runtime, &mut stack, &broker, iters))
    });
    group.finish();

    // Each layer alone over the no-op publisher, to see where the stack's cost goes.
    let mut layers = c.benchmark_group("layer");
    let noop = || PublisherService::new(Noop);
    let mut metrics = MetricsLayer::default().layer(noop());
    layers.bench_function("metrics", |b| {
        b.iter_custom(|iters| run(&runtime, &mut metrics, &direct, iters))
    });
    let mut limit = ConcurrencyLimitLayer::new(1000, LimitMode::Wait)
        .unwrap()
        .layer(noop());
    layers.bench_function("limit", |b| {
        b.iter_custom(|iters| run(&runtime, &mut limit, &direct, iters))
    });
    let mut breaker = CircuitBreakerLayer::new("direct", BreakerConfig::default())
        .unwrap()
        .layer(noop());
    layers.bench_function("breaker", |b| {
        b.iter_custom(|iters| run(&runtime, &mut breaker, &direct, iters))
    });
    let mut timeout = TimeoutLayer::new(Duration::from_secs(5)).layer(noop());
    layers.bench_function("timeout", |b| {
        b.iter_custom(|iters| run(&runtime, &mut timeout, &direct, iters))
    });
    let mut route = Route::new(noop(), noop());
    layers.bench_function("route", |b| {
        b.iter_custom(|iters| run(&runtime, &mut route, &direct, iters))
    });
    layers.finish();

    // Where the default stack's cost goes: the same stack without each optional part, and
    // with metrics going to a recorder that does nothing.
    let build = |config: StackConfig| {
        let _guard = runtime.enter();
        StackBuilder::new(config)
            .build(noop(), noop())
            .expect("a valid stack config")
    };
    let mut no_cap = build(StackConfig {
        limit: None,
        ..StackConfig::default()
    });
    let mut no_breaker = build(StackConfig {
        breaker: None,
        ..StackConfig::default()
    });
    let mut noop_recorder =
        metrics::with_local_recorder(&metrics::NoopRecorder, || build(StackConfig::default()));
    let mut stack_for_broker = stack.clone();
    let mut candidates: Vec<Candidate<'_>> = vec![
        ("bare", Box::new(|n| run(&runtime, &mut bare, &direct, n))),
        (
            "stack/direct",
            Box::new(|n| run(&runtime, &mut stack, &direct, n)),
        ),
        (
            "stack/broker",
            Box::new(|n| run(&runtime, &mut stack_for_broker, &broker, n)),
        ),
        (
            "stack/direct, no in-flight cap",
            Box::new(|n| run(&runtime, &mut no_cap, &direct, n)),
        ),
        (
            "stack/direct, no breakers",
            Box::new(|n| run(&runtime, &mut no_breaker, &direct, n)),
        ),
        (
            "stack/direct, no-op recorder",
            Box::new(|n| run(&runtime, &mut noop_recorder, &direct, n)),
        ),
        (
            "layer/metrics",
            Box::new(|n| run(&runtime, &mut metrics, &direct, n)),
        ),
        (
            "layer/limit",
            Box::new(|n| run(&runtime, &mut limit, &direct, n)),
        ),
        (
            "layer/breaker",
            Box::new(|n| run(&runtime, &mut breaker, &direct, n)),
        ),
        (
            "layer/timeout",
            Box::new(|n| run(&runtime, &mut timeout, &direct, n)),
        ),
        (
            "layer/route",
            Box::new(|n| run(&runtime, &mut route, &direct, n)),
        ),
    ];
    summary(&mut candidates, 25, 100_000);
}

criterion_group!(benches, stack);
criterion_main!(benches);
