//! `lax bench`: publish N messages of S bytes over a route and tier with C in flight and report
//! throughput and latency percentiles, optionally next to raw async-nats doing the same.

mod driver;
mod report;

use std::{io::IsTerminal as _, path::PathBuf, time::Duration};

use async_nats::{HeaderMap, jetstream};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use lax_client::{ClientOptions, LaxClient, PublishOptions, Route, Tier};
use lax_core::{MESSAGE_ID_HEADER, NATS_MSG_ID_HEADER, new_message_id};

use self::{
    driver::{Plan, Run, drive},
    report::{Comparison, Figures},
};
use crate::{
    client_args::{ClientArgs, TierArg, connect},
    failure::Failure,
};

/// JetStream acks the raw comparison keeps in flight on acked routes.
const RAW_ACKS_IN_FLIGHT: usize = 256;

/// Options of `lax bench`.
#[derive(Debug, Clone, Args)]
pub(crate) struct BenchArgs {
    /// Route: `direct` (core NATS, memory tier, no ack) or `broker` (gRPC, acked).
    #[arg(long, value_enum, default_value_t = RouteArg::Direct)]
    route: RouteArg,
    /// Storage tier [default: memory for direct, persistent for broker].
    #[arg(long, value_enum)]
    tier: Option<TierArg>,
    /// Messages to publish.
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..))]
    msgs: u64,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 128)]
    size: usize,
    /// Publishes in flight.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    concurrency: u64,
    /// Pace the publishes at this many messages per second (latency then counts from when
    /// each message was due).
    #[arg(long, value_name = "MSGS_PER_SEC", value_parser = clap::value_parser!(u64).range(1..))]
    rate: Option<u64>,
    /// Subject to publish to [default: bench_<tier>.<route>; the broker keeps acked messages
    /// in stream BENCH_<TIER>].
    #[arg(long)]
    subject: Option<String>,
    /// Also run the workload through raw async-nats (core publish with the same headers for
    /// the direct route; JetStream publish with 256 acks in flight for the broker route) and
    /// print LAX's throughput as a ratio of raw's.
    #[arg(long)]
    compare_raw: bool,
    /// Print one JSON object instead of text (and no progress bar).
    #[arg(long)]
    json: bool,
    /// Also write a self-contained HTML report with a latency plot to FILE.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
    #[command(flatten)]
    client: ClientArgs,
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
    plan: Plan,
}

impl BenchArgs {
    fn workload(&self) -> Result<Workload, Failure> {
        let (route, tier) = match (self.route, self.tier.map(Tier::from)) {
            (RouteArg::Direct, None | Some(Tier::Memory)) => (Route::Direct, Tier::Memory),
            (RouteArg::Direct, Some(tier)) => {
                return Err(Failure::usage(format!(
                    "the direct route carries only the memory tier, not {tier}: use --route \
                     broker --tier {tier}"
                )));
            }
            (RouteArg::Broker, tier) => (Route::Broker, tier.unwrap_or(Tier::Persistent)),
        };
        let concurrency = usize::try_from(self.concurrency)
            .map_err(|_| Failure::usage("--concurrency is too large"))?;
        Ok(Workload {
            route,
            tier,
            subject: self
                .subject
                .clone()
                .unwrap_or_else(|| format!("bench_{tier}.{route}")),
            size: self.size,
            plan: Plan {
                msgs: self.msgs,
                concurrency,
                rate: self.rate,
            },
        })
    }
}

impl Workload {
    fn publish_options(&self) -> PublishOptions {
        PublishOptions::tier(self.tier).require_ack(self.route == Route::Broker)
    }

    fn payload(&self) -> Bytes {
        Bytes::from(vec![b'x'; self.size])
    }
}

pub(crate) async fn run(args: BenchArgs) -> Result<(), Failure> {
    let workload = args.workload()?;
    let options = args.client.options()?;
    let show_progress = !args.json && std::io::stderr().is_terminal();

    let client = connect(&options).await?;
    let measured = measure_lax(&client, &workload, &options, show_progress).await;
    let closed = client.close().await;
    let lax = measured?;
    closed?;
    let raw = if args.compare_raw {
        Some(measure_raw(&options, &workload, show_progress).await?)
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

async fn measure_lax(
    client: &LaxClient,
    workload: &Workload,
    options: &ClientOptions,
    show_progress: bool,
) -> Result<Figures, Failure> {
    let progress = progress_bar(show_progress, "LAX", workload.plan.msgs);
    let (subject, payload, publish_options) = (
        workload.subject.clone(),
        workload.payload(),
        workload.publish_options(),
    );
    let publisher = client.clone();
    let run = drive(workload.plan, &progress, move |_| {
        let (client, subject, payload, publish_options) = (
            publisher.clone(),
            subject.clone(),
            payload.clone(),
            publish_options.clone(),
        );
        async move {
            client
                .publish_with(subject, payload, publish_options)
                .await
                .map(drop)
        }
    })
    .await?;
    let flushed = client.flush().await;
    let elapsed = run.started.elapsed();
    progress.finish_and_clear();
    if let Some((error, failed)) = run.failure {
        let failure = match workload.route {
            Route::Broker => Failure::from_broker(error, options),
            Route::Direct => Failure::from(error),
        };
        return Err(Failure::runtime(format!(
            "{failed} publish(es) failed, the first with: {failure}"
        )));
    }
    flushed?;
    Ok(Figures::new(
        "LAX",
        workload.plan.concurrency,
        run.latencies,
        elapsed,
    ))
}

async fn measure_raw(
    options: &ClientOptions,
    workload: &Workload,
    show_progress: bool,
) -> Result<Figures, Failure> {
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
    let payload = workload.payload();
    let (plan, run) = match workload.route {
        Route::Direct => {
            let plan = workload.plan;
            let progress = progress_bar(show_progress, "raw", plan.msgs);
            let publisher = client.clone();
            let run = drive(plan, &progress, move |_| {
                let (client, subject, payload) =
                    (publisher.clone(), subject.clone(), payload.clone());
                async move {
                    client
                        .publish_with_headers(subject, id_headers(MESSAGE_ID_HEADER), payload)
                        .await
                        .map_err(|e| e.to_string())
                }
            })
            .await?;
            progress.finish_and_clear();
            (plan, run)
        }
        Route::Broker => {
            let plan = Plan {
                concurrency: RAW_ACKS_IN_FLIGHT,
                ..workload.plan
            };
            let progress = progress_bar(show_progress, "raw", plan.msgs);
            let js = jetstream::new(client.clone());
            let run = drive(plan, &progress, move |_| {
                let (js, subject, payload) = (js.clone(), subject.clone(), payload.clone());
                async move {
                    let ack = js
                        .publish_with_headers(subject, id_headers(NATS_MSG_ID_HEADER), payload)
                        .await
                        .map_err(|e| e.to_string())?;
                    ack.await.map(drop).map_err(|e| e.to_string())
                }
            })
            .await?;
            progress.finish_and_clear();
            (plan, run)
        }
    };
    let flushed = tokio::time::timeout(Duration::from_secs(30), client.flush()).await;
    let elapsed = run.started.elapsed();
    check_raw(&run)?;
    match flushed {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            return Err(Failure::runtime(format!(
                "raw async-nats flush failed: {e}"
            )));
        }
        Err(_) => {
            return Err(Failure::runtime(
                "raw async-nats flush did not finish in 30 s",
            ));
        }
    }
    Ok(Figures::new(
        "raw",
        plan.concurrency,
        run.latencies,
        elapsed,
    ))
}

fn check_raw(run: &Run<String>) -> Result<(), Failure> {
    match &run.failure {
        Some((error, failed)) => Err(Failure::runtime(format!(
            "raw async-nats: {failed} publish(es) failed, the first with: {error}"
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

    fn workload(args: &[&str]) -> Result<Workload, Failure> {
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
            .expect("flags parse");
        cli.bench.workload()
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
}
