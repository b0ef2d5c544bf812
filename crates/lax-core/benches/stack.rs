//! The cost of the default stack per publish: the full stack (metrics with a Prometheus
//! recorder installed, in-flight cap, route, breaker, timeout; retry on the broker path) over
//! a publisher that succeeds at once, against that publisher alone.
//!
//! `layer/pool` is lax-core's connection pool as a service over 10 such publishers: what
//! choosing, leasing and releasing a member costs, as the gRPC transport does per publish.
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
    Error, PublishRequest, Publisher, PublisherService, Receipt, ServicePublisher, Tier,
    breaker::{BreakerConfig, CircuitBreakerLayer},
    limit::{ConcurrencyLimitLayer, LimitMode},
    metrics::MetricsLayer,
    pool::{Connect, Connected, Pool, PoolService},
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

/// Makes [`Noop`] members, as the gRPC transport makes lanes: the pool's choice, lease and
/// release are what `layer/pool` adds over the bare publisher.
struct NoopMembers;

impl Connect for NoopMembers {
    type Target = &'static str;
    type Member = PublisherService<Noop>;

    async fn connect(&self, _: &&'static str) -> Result<Connected<Self::Member>, Error> {
        Ok(Connected::new(PublisherService::new(Noop)))
    }
}

/// Installs a Prometheus recorder as `lax-client` does: latency buckets, and an upkeep thread
/// folding samples into them. Without upkeep, millions of samples would pile up in memory
/// during the run and the figures would measure that instead.
fn install_prometheus_recorder() {
    let recorder = PrometheusBuilder::new()
        .set_buckets(&[
            0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.1, 1.0, 10.0,
        ])
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
    println!("{:<36} {:>12} {:>16}", "", "ns/publish", "added over bare");
    for ((name, _), ns) in candidates.iter().zip(&best) {
        println!("{name:<36} {ns:>12.1} {:>16.1}", ns - best[0]);
    }
}

/// A candidate timing `service` on clones of `request`.
fn candidate<'a, S>(
    runtime: &'a tokio::runtime::Runtime,
    name: &'static str,
    mut service: S,
    request: &'a PublishRequest,
) -> Candidate<'a>
where
    S: Service<PublishRequest, Response = Receipt> + 'a,
    S::Error: std::fmt::Debug,
{
    (
        name,
        Box::new(move |iters| run(runtime, &mut service, request, iters)),
    )
}

fn stack(c: &mut Criterion) {
    install_prometheus_recorder();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let direct = PublishRequest::new("bench.direct", "payload");
    let broker = PublishRequest::new("bench.broker", "payload").with_tier(Tier::Persistent);
    let noop = || PublisherService::new(Noop);
    let stack = |config: StackConfig| {
        let _guard = runtime.enter();
        StackBuilder::new(config)
            .build(noop(), noop())
            .expect("a valid stack config")
    };
    let without = |strip: fn(&mut StackConfig)| {
        let mut config = StackConfig::default();
        strip(&mut config);
        stack(config)
    };
    let (rt, direct) = (&runtime, &direct);

    let mut candidates = vec![
        candidate(rt, "bare", noop(), direct),
        candidate(rt, "stack/direct", stack(StackConfig::default()), direct),
        candidate(
            &runtime,
            "stack/broker",
            stack(StackConfig::default()),
            &broker,
        ),
        // Where the default stack's cost goes: the same stack without each optional part,
        // with metrics going to a recorder that does nothing, and each layer alone.
        candidate(
            rt,
            "stack/direct, no in-flight cap",
            without(|c| c.limit = None),
            direct,
        ),
        candidate(
            rt,
            "stack/direct, no breakers",
            without(|c| c.breaker = None),
            direct,
        ),
        // As `LaxClient` drives it: a clone of the stack per publish, as a `Publisher`.
        candidate(
            rt,
            "stack/direct via ServicePublisher",
            PublisherService::new(ServicePublisher::new(stack(StackConfig::default()))),
            direct,
        ),
        candidate(
            rt,
            "stack/direct, no-op recorder",
            metrics::with_local_recorder(&metrics::NoopRecorder, || stack(StackConfig::default())),
            direct,
        ),
    ];
    let layers: Vec<Candidate<'_>> = vec![
        candidate(
            rt,
            "layer/metrics",
            MetricsLayer::default().layer(noop()),
            direct,
        ),
        candidate(
            rt,
            "layer/limit",
            ConcurrencyLimitLayer::new(1000, LimitMode::Wait)
                .unwrap()
                .layer(noop()),
            direct,
        ),
        candidate(
            rt,
            "layer/breaker",
            CircuitBreakerLayer::new("direct", BreakerConfig::default())
                .unwrap()
                .layer(noop()),
            direct,
        ),
        candidate(
            rt,
            "layer/timeout",
            TimeoutLayer::new(Duration::from_secs(5)).layer(noop()),
            direct,
        ),
        candidate(rt, "layer/route", Route::new(noop(), noop()), direct),
        // As the gRPC transport's 10 lanes to one broker.
        candidate(
            rt,
            "layer/pool",
            PoolService::new(
                runtime
                    .block_on(
                        Pool::builder(NoopMembers, vec!["broker"])
                            .size(10)
                            .connect(),
                    )
                    .unwrap(),
            ),
            direct,
        ),
    ];
    candidates.extend(layers);

    let mut group = c.benchmark_group("publish");
    for (name, time) in &mut candidates {
        group.bench_function(*name, |b| b.iter_custom(&mut *time));
    }
    group.finish();
    // Only under `cargo bench` (which passes `--bench`): not when a test runner lists or
    // smoke-tests the benchmarks.
    if std::env::args().any(|arg| arg == "--bench") {
        summary(&mut candidates, 25, 100_000);
    }
}

criterion_group!(benches, stack);
criterion_main!(benches);
