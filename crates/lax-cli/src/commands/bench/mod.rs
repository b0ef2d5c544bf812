//! `lax bench`: publish N messages of S bytes over a route and tier with C in flight and report
//! throughput, latency percentiles, CPU per message and (with `--e2e`) publish→delivery
//! latency, optionally next to raw async-nats doing the same; `lax bench sweep` runs a grid of
//! concurrencies and sizes into a table and an HTML report.

mod cpu;
mod driver;
mod e2e;
mod pacer;
mod report;
mod sweep;

use std::{
    io::IsTerminal as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use async_nats::{HeaderMap, jetstream};

use bytes::Bytes;
use clap::{Args, Subcommand, ValueEnum};
use futures::{StreamExt as _, TryStreamExt as _, stream::FuturesUnordered};
use indicatif::{ProgressBar, ProgressStyle};
use lax_client::{BatchMessage, ClientOptions, LaxClient, PublishOptions, Route, SmolStr, Tier};
use lax_core::{MESSAGE_ID_HEADER, NATS_MSG_ID_HEADER, new_message_id};
use serde::Deserialize;

use self::{
    cpu::{Meter, Process},
    driver::{Plan, Run, drive},
    e2e::{SendTimes, Subscriber},
    report::{Comparison, Figures},
};
use crate::{
    client_args::{ClientArgs, TierArg, connect},
    failure::Failure,
};

/// The file `lax dev` writes its process ids to, in its data directory.
pub(crate) const DEV_PIDS_FILE: &str = "lax-dev.pids";

/// The future of one raw JetStream ack.
type PublishAckFuture = <jetstream::context::PublishAckFuture as IntoFuture>::IntoFuture;

/// Most JetStream acks a raw batch leaves pending while it sends.
const RAW_BATCH_ACKS_IN_FLIGHT: usize = 1024;

/// Options of `lax bench`.
#[derive(Debug, Clone, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    command: Option<BenchCommand>,
    #[command(flatten)]
    run: RunArgs,
}

/// `lax bench` subcommands.
#[derive(Debug, Clone, Subcommand)]
enum BenchCommand {
    /// Run LAX and raw async-nats over concurrency × size on one route; print a table and
    /// write an HTML report with throughput and p99 plots.
    Sweep(sweep::SweepArgs),
}

/// What is measured and where: shared by `lax bench` and `lax bench sweep`.
#[derive(Debug, Clone, Args)]
struct TargetArgs {
    /// Route: `direct` (core NATS, memory tier, no ack) or `broker` (gRPC, acked).
    #[arg(long, value_enum, default_value_t = RouteArg::Direct)]
    route: RouteArg,
    /// Storage tier [default: memory for direct, persistent for broker].
    #[arg(long, value_enum)]
    tier: Option<TierArg>,
    /// Subject to publish to [default: bench_{tier}.{route}; the broker keeps acked messages
    /// in stream BENCH_{TIER}].
    #[arg(long)]
    subject: Option<String>,
    /// Process id of the broker, to report its CPU per message [default: from the pid file
    /// of `lax dev`].
    #[arg(long, value_name = "PID")]
    broker_pid: Option<u32>,
    /// Process id of nats-server, to report its CPU per message [default: from the pid file
    /// of `lax dev`].
    #[arg(long, value_name = "PID")]
    server_pid: Option<u32>,
    /// The pid file `lax dev` writes (broker and nats-server process ids).
    #[arg(
        long,
        value_name = "FILE",
        env = "LAX_DEV_PIDS",
        default_value = "./lax-dev-data/lax-dev.pids"
    )]
    dev_pids: PathBuf,
    #[command(flatten)]
    client: ClientArgs,
}

/// Options of one `lax bench` run.
#[derive(Debug, Clone, Args)]
struct RunArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Messages to publish.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    msgs: u64,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 128)]
    size: usize,
    /// Publishes (or batches) in flight.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    concurrency: u64,
    /// Pace the publishes at this many messages per second (latency then counts from when
    /// each message was due; the pacer's own lateness is reported).
    #[arg(long, value_name = "MSGS_PER_SEC", value_parser = clap::value_parser!(u64).range(1..))]
    rate: Option<u64>,
    /// Publish in batches of N messages (`batch_publish`; raw sends N then awaits the N
    /// acks); latency is then per batch. --msgs must be a multiple of N.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    batch: Option<u64>,
    /// Also measure publish→delivery: a subscriber (core NATS on the direct route, an ordered
    /// JetStream consumer on the broker route) timestamps every arrival. Needs --size >= 8.
    #[arg(long)]
    e2e: bool,
    /// Also run the same workload (concurrency, rate, size, batch, headers) through raw
    /// async-nats: core publish for the direct route, JetStream publish awaiting the ack for
    /// the broker route; print LAX's throughput as a ratio of raw's.
    #[arg(long)]
    compare_raw: bool,
    /// Print one JSON object instead of text (and no progress bar).
    #[arg(long)]
    json: bool,
    /// Also write a self-contained HTML report with a latency plot to FILE.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

/// The route on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RouteArg {
    /// Core NATS, fire and forget.
    Direct,
    /// Through the LAX broker to JetStream, acked.
    Broker,
}

/// What is measured.
#[derive(Debug, Clone)]
struct Workload {
    route: Route,
    tier: Tier,
    subject: String,
    size: usize,
    /// Messages per publish call: 1, or the batch size.
    batch: u64,
    /// `plan.msgs` counts publish calls (batches when batching).
    plan: Plan,
    e2e: bool,
}

impl TargetArgs {
    fn route_and_tier(&self) -> Result<(Route, Tier), Failure> {
        match (self.route, self.tier.map(Tier::from)) {
            (RouteArg::Direct, None | Some(Tier::Memory)) => Ok((Route::Direct, Tier::Memory)),
            (RouteArg::Direct, Some(tier)) => Err(Failure::usage(format!(
                "the direct route carries only the memory tier, not {tier}: use --route \
                 broker --tier {tier}"
            ))),
            (RouteArg::Broker, tier) => Ok((Route::Broker, tier.unwrap_or(Tier::Persistent))),
        }
    }

    fn subject(&self, route: Route, tier: Tier) -> String {
        self.subject
            .clone()
            .unwrap_or_else(|| format!("bench_{tier}.{route}"))
    }

    /// The broker and nats-server to measure: the flags, else the pid file of `lax dev` when
    /// it names live processes of the right names.
    fn meter(&self) -> Result<Meter, Failure> {
        let from_file = DevPids::read(&self.dev_pids);
        let broker = match (
            self.broker_pid,
            from_file.as_ref().and_then(|f| f.broker_pid),
        ) {
            (Some(pid), _) => Some(Process::check(pid, &[]).map_err(Failure::usage)?),
            (None, Some(pid)) => Process::check(pid, &["lax"]).ok(),
            (None, None) => None,
        };
        let server = match (
            self.server_pid,
            from_file.as_ref().and_then(|f| f.nats_server_pid),
        ) {
            (Some(pid), _) => Some(Process::check(pid, &[]).map_err(Failure::usage)?),
            (None, Some(pid)) => Process::check(pid, &["nats-server"]).ok(),
            (None, None) => None,
        };
        Ok(Meter { broker, server })
    }
}

/// The process ids `lax dev` writes to its pid file.
#[derive(Debug, Deserialize)]
pub(crate) struct DevPids {
    broker_pid: Option<u32>,
    nats_server_pid: Option<u32>,
}

impl DevPids {
    /// The pid file's content as `lax dev` writes it.
    pub(crate) fn contents(broker_pid: u32, nats_server_pid: u32) -> String {
        serde_json::json!({ "broker_pid": broker_pid, "nats_server_pid": nats_server_pid })
            .to_string()
    }

    fn read(path: &Path) -> Option<Self> {
        serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()
    }
}

impl RunArgs {
    fn workload(&self) -> Result<Workload, Failure> {
        let (route, tier) = self.target.route_and_tier()?;
        let concurrency = usize::try_from(self.concurrency)
            .map_err(|_| Failure::usage("--concurrency is too large"))?;
        let batch = self.batch.unwrap_or(1);
        if !self.msgs.is_multiple_of(batch) {
            return Err(Failure::usage(format!(
                "--msgs {} is not a multiple of --batch {batch}",
                self.msgs
            )));
        }
        if self.e2e && self.size < e2e::MIN_SIZE {
            return Err(Failure::usage(format!(
                "--e2e needs --size of at least {} bytes (each message carries its index)",
                e2e::MIN_SIZE
            )));
        }
        Ok(Workload {
            route,
            tier,
            subject: self.target.subject(route, tier),
            size: self.size,
            batch,
            plan: Plan {
                msgs: self.msgs / batch,
                concurrency,
                rate: self.rate.map(|rate| (rate / batch).max(1)),
            },
            e2e: self.e2e,
        })
    }
}

impl Workload {
    fn publish_options(&self) -> PublishOptions {
        PublishOptions::tier(self.tier).require_ack(self.route == Route::Broker)
    }

    /// Messages in the run.
    fn msgs(&self) -> u64 {
        self.plan.msgs * self.batch
    }

    /// The payloads of a run: one shared buffer, or with `--e2e` one per message carrying its
    /// index, its publish time noted.
    fn payloads(&self, times: Option<Arc<SendTimes>>) -> Payloads {
        Payloads {
            shared: Bytes::from(vec![b'x'; self.size]),
            size: self.size,
            times,
        }
    }
}

/// Makes each message's payload.
#[derive(Debug, Clone)]
struct Payloads {
    shared: Bytes,
    size: usize,
    times: Option<Arc<SendTimes>>,
}

impl Payloads {
    fn get(&self, index: u64) -> Bytes {
        match &self.times {
            Some(times) => {
                times.mark(index);
                e2e::payload(index, self.size)
            }
            None => self.shared.clone(),
        }
    }

    /// The indexes of publish call `call` of a run in batches of `batch`.
    fn indexes(call: u64, batch: u64) -> std::ops::Range<u64> {
        call * batch..(call + 1) * batch
    }
}

pub(crate) async fn run(args: BenchArgs) -> Result<(), Failure> {
    match args.command {
        Some(BenchCommand::Sweep(sweep)) => sweep::run(sweep).await,
        None => run_once(args.run).await,
    }
}

async fn run_once(args: RunArgs) -> Result<(), Failure> {
    let workload = args.workload()?;
    let options = args.target.client.options()?;
    let bench = Bench::new(&options, &args.target, args.json)?;
    let client = connect(&options).await?;
    let measured = bench.measure_lax(&client, &workload).await;
    let closed = client.close().await;
    let lax = measured?;
    closed?;
    let raw = if args.compare_raw {
        Some(bench.measure_raw(&workload).await?)
    } else {
        None
    };
    let comparison = Comparison {
        workload: &workload,
        lax: &lax,
        raw: raw.as_ref(),
    };
    if args.json {
        println!("{}", comparison.json());
    } else {
        print!("{}", comparison.text());
    }
    if let Some(path) = &args.html {
        std::fs::write(path, comparison.html())
            .map_err(|e| Failure::runtime(format!("cannot write {}: {e}", path.display())))?;
        if !args.json {
            println!("report written to {}", path.display());
        }
    }
    Ok(())
}

fn progress_bar(show: bool, label: &str, msgs: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let style = ProgressStyle::with_template(
        "{prefix:>4} [{elapsed_precise}] {wide_bar} {pos}/{len} {per_sec} eta {eta}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::new(msgs)
        .with_style(style)
        .with_prefix(label.to_owned())
}

/// How runs are measured.
#[derive(Debug)]
struct Bench<'a> {
    options: &'a ClientOptions,
    meter: Meter,
    show_progress: bool,
}

/// A publish call's error, as text.
type Failed = String;

impl<'a> Bench<'a> {
    /// Measures runs against `options`' servers; a progress bar only on a terminal and without
    /// `--json`.
    fn new(options: &'a ClientOptions, target: &TargetArgs, json: bool) -> Result<Self, Failure> {
        Ok(Bench {
            options,
            meter: target.meter()?,
            show_progress: !json && std::io::stderr().is_terminal(),
        })
    }

    /// Measures LAX on `client`.
    async fn measure_lax(
        &self,
        client: &LaxClient,
        workload: &Workload,
    ) -> Result<Figures, Failure> {
        // A `SmolStr` subject clones without copying, as an application publishing to one
        // subject keeps it; raw async-nats gets its `Subject` the same way.
        let (subject, options, batch) = (
            SmolStr::from(workload.subject.as_str()),
            workload.publish_options(),
            workload.batch,
        );
        // One publish first: connections are up and the broker has made the stream.
        client
            .publish_with(
                subject.clone(),
                workload.payloads(None).get(0),
                options.clone(),
            )
            .await
            .map_err(|e| self.lax_failure(workload, e))?;
        let publisher = client.clone();
        let measured = self
            .measure("LAX", workload, move |payloads, call| {
                let (client, subject, options) =
                    (publisher.clone(), subject.clone(), options.clone());
                async move {
                    if batch == 1 {
                        return client
                            .publish_with(subject, payloads.get(call), options)
                            .await
                            .map(drop)
                            .map_err(|e| e.to_string());
                    }
                    let messages = Payloads::indexes(call, batch).map(|index| {
                        BatchMessage::new(subject.clone(), payloads.get(index))
                            .with_options(options.clone())
                    });
                    let result = client.batch_publish(messages).await;
                    match result.errors().next() {
                        None => Ok(()),
                        Some((_, error)) => Err(format!(
                            "{} of a batch of {batch} failed, the first with: {error}",
                            result.failure_count
                        )),
                    }
                }
            })
            .await;
        let flushed = client.flush().await;
        let figures = measured?;
        flushed?;
        Ok(figures)
    }

    fn lax_failure(&self, workload: &Workload, error: lax_client::Error) -> Failure {
        match workload.route {
            Route::Broker => Failure::from_broker(error, self.options),
            Route::Direct => Failure::from(error),
        }
    }

    /// Measures raw async-nats doing what LAX did: same concurrency, rate, size, batch and
    /// headers.
    async fn measure_raw(&self, workload: &Workload) -> Result<Figures, Failure> {
        let options = self.options;
        let client = async_nats::ConnectOptions::new()
            .name("lax-bench-raw")
            .connect(options.nats_urls.as_slice())
            .await
            .map_err(|e| {
                Failure::runtime(format!(
                    "raw async-nats cannot connect to {}: {e}",
                    options.nats_urls.join(",")
                ))
            })?;
        let subject = async_nats::Subject::from(workload.subject.as_str());
        let batch = workload.batch;
        let measured = match workload.route {
            Route::Direct => {
                let publisher = client.clone();
                self.measure("raw", workload, move |payloads, call| {
                    let (client, subject) = (publisher.clone(), subject.clone());
                    async move {
                        for index in Payloads::indexes(call, batch) {
                            client
                                .publish_with_headers(
                                    subject.clone(),
                                    id_headers(MESSAGE_ID_HEADER),
                                    payloads.get(index),
                                )
                                .await
                                .map_err(|e| e.to_string())?;
                        }
                        Ok(())
                    }
                })
                .await
            }
            Route::Broker => {
                let js = jetstream::new(client.clone());
                js.publish(subject.clone(), workload.payloads(None).get(0))
                    .await
                    .map_err(|e| Failure::runtime(format!("raw JetStream publish: {e}")))?
                    .await
                    .map_err(|e| Failure::runtime(format!("raw JetStream publish: {e}")))?;
                self.measure("raw", workload, move |payloads, call| {
                    let (js, subject) = (js.clone(), subject.clone());
                    async move {
                        // Send the whole batch and await its acks as they come, at most
                        // RAW_BATCH_ACKS_IN_FLIGHT pending: async-nats stops sending at 5,000
                        // unawaited acks.
                        let mut acks = FuturesUnordered::<PublishAckFuture>::new();
                        for index in Payloads::indexes(call, batch) {
                            if acks.len() >= RAW_BATCH_ACKS_IN_FLIGHT
                                && let Some(ack) = acks.next().await
                            {
                                ack.map_err(|e| e.to_string())?;
                            }
                            let ack = js
                                .publish_with_headers(
                                    subject.clone(),
                                    id_headers(NATS_MSG_ID_HEADER),
                                    payloads.get(index),
                                )
                                .await
                                .map_err(|e| e.to_string())?;
                            acks.push(ack.into_future());
                        }
                        acks.try_collect::<Vec<_>>()
                            .await
                            .map(drop)
                            .map_err(|e| e.to_string())
                    }
                })
                .await
            }
        };
        let flushed = tokio::time::timeout(Duration::from_secs(30), client.flush()).await;
        let figures = measured?;
        match flushed {
            Ok(Ok(())) => Ok(figures),
            Ok(Err(e)) => Err(Failure::runtime(format!(
                "raw async-nats flush failed: {e}"
            ))),
            Err(_) => Err(Failure::runtime(
                "raw async-nats flush did not finish in 30 s",
            )),
        }
    }

    /// Runs `workload` with `publish(payloads, call)`, with the subscriber of `--e2e` and the
    /// CPU meter around it.
    async fn measure<P, F>(
        &self,
        label: &'static str,
        workload: &Workload,
        publish: P,
    ) -> Result<Figures, Failure>
    where
        P: Fn(Payloads, u64) -> F + Clone + Send + Sync + 'static,
        F: Future<Output = Result<(), Failed>> + Send,
    {
        let times = workload.e2e.then(|| SendTimes::new(workload.msgs()));
        let subscriber = match &times {
            Some(times) => Some(
                Subscriber::start(
                    self.options.nats_urls.clone(),
                    workload.route,
                    workload.subject.clone(),
                    Arc::clone(times),
                )
                .await?,
            ),
            None => None,
        };
        let payloads = workload.payloads(times);
        let progress = progress_bar(self.show_progress, label, workload.plan.msgs);
        let cpu_before = self.meter.snapshot();
        let run = drive(workload.plan, &progress, move |call| {
            publish(payloads.clone(), call)
        })
        .await?;
        let elapsed = run.started.elapsed();
        progress.finish_and_clear();
        let delivered = match subscriber {
            Some(subscriber) => Some(subscriber.finish().await?),
            None => None,
        };
        let bench_ticks = run.pacer_ticks + delivered.as_ref().map_or(0, |d| d.ticks);
        let cpu = self.meter.per_msg(
            cpu_before,
            run.latencies.len() * workload.batch,
            bench_ticks,
        );
        check(label, &run)?;
        Ok(Figures {
            label,
            concurrency: workload.plan.concurrency,
            batch: workload.batch,
            latencies: run.latencies,
            elapsed,
            lateness: run.lateness,
            cpu: Some(cpu),
            delivered,
        })
    }
}

fn check(label: &str, run: &Run<Failed>) -> Result<(), Failure> {
    match &run.failure {
        Some((error, failed)) => Err(Failure::runtime(format!(
            "{label}: {failed} publish(es) failed, the first with: {error}"
        ))),
        None => Ok(()),
    }
}

/// A header map holding a fresh message id under `name`, as LAX sends it.
fn id_headers(name: &'static str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert(name, new_message_id().as_str());
    headers
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    fn parse(args: &[&str]) -> BenchArgs {
        Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
            .expect("flags parse")
            .bench
    }

    fn workload(args: &[&str]) -> Result<Workload, Failure> {
        parse(args).run.workload()
    }

    #[test]
    fn routes_and_tiers_combine_by_the_routing_table() {
        let direct = workload(&[]).unwrap();
        assert_eq!((direct.route, direct.tier), (Route::Direct, Tier::Memory));
        assert_eq!(direct.subject, "bench_memory.direct");
        assert_eq!(direct.publish_options().route(), Route::Direct);

        let broker = workload(&["--route", "broker"]).unwrap();
        assert_eq!(
            (broker.route, broker.tier),
            (Route::Broker, Tier::Persistent)
        );
        assert!(broker.publish_options().message.require_ack);

        let memory_acked = workload(&["--route", "broker", "--tier", "memory"]).unwrap();
        assert_eq!(memory_acked.publish_options().route(), Route::Broker);

        let refused = workload(&["--route", "direct", "--tier", "replicated"]);
        assert!(matches!(refused, Err(Failure::Usage(m)) if m.contains("--route broker")));
    }

    #[test]
    fn batches_divide_the_messages_and_the_rate() {
        let batched = workload(&["--msgs", "10000", "--batch", "100", "--rate", "5000"]).unwrap();
        assert_eq!((batched.plan.msgs, batched.batch), (100, 100));
        assert_eq!(batched.msgs(), 10_000);
        assert_eq!(batched.plan.rate, Some(50));
        assert_eq!(Payloads::indexes(3, 100), 300..400);
        let uneven = workload(&["--msgs", "1000", "--batch", "300"]);
        assert!(matches!(uneven, Err(Failure::Usage(m)) if m.contains("multiple")));
    }

    #[test]
    fn end_to_end_messages_carry_their_index() {
        let tiny = workload(&["--e2e", "--size", "4"]);
        assert!(matches!(tiny, Err(Failure::Usage(m)) if m.contains("--size")));
        let e2e = workload(&["--e2e", "--msgs", "10"]).unwrap();
        let times = SendTimes::new(e2e.msgs());
        let payloads = e2e.payloads(Some(Arc::clone(&times)));
        assert_eq!(e2e::index_of(&payloads.get(7)), Some(7));
        assert!(times.arrived(7).is_some(), "the publish time is noted");
        assert_eq!(payloads.get(7).len(), 128);
    }

    #[test]
    fn sweep_is_a_subcommand_and_pids_come_from_flags_or_the_dev_file() {
        assert!(matches!(
            parse(&["sweep", "--route", "broker"]).command,
            Some(BenchCommand::Sweep(_))
        ));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(DEV_PIDS_FILE);
        // This test process (`lax-<hash>`) passes for a broker, not for nats-server.
        let me = std::process::id();
        std::fs::write(&file, DevPids::contents(me, me)).unwrap();
        let from_file = parse(&["--dev-pids", file.to_str().unwrap()])
            .run
            .target
            .meter()
            .unwrap();
        assert_eq!(from_file.broker.map(|p| p.pid), Some(me));
        assert!(
            from_file.server.is_none(),
            "a pid of another program is ignored"
        );
        let me = me.to_string();
        let flagged = parse(&["--broker-pid", &me, "--server-pid", &me])
            .run
            .target
            .meter()
            .unwrap();
        assert_eq!(flagged.broker.map(|p| p.pid), Some(std::process::id()));
        assert!(flagged.server.is_some());
    }
}
