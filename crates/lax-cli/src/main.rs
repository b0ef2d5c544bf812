//! `lax`: the LAX command line.
//!
//! - `lax dev` runs a local stack — `nats-server` with JetStream plus the broker — until
//!   Ctrl-C; `lax demo` walks through the quick start against it (or against a stack of its
//!   own when none runs).
//! - `lax pub`, `lax sub` and `lax streams …` publish, receive and administer streams;
//!   `lax bench` measures a route and tier, optionally against raw async-nats.
//! - `lax soak` runs mixed traffic against a stack of its own under injected faults and plots
//!   memory and tasks (`cargo xtask soak`).
//! - `lax broker …` runs the LAX broker; every option is also an environment variable
//!   (`LAX_BROKER_*`, see `lax broker --help`).
//!
//! Client commands share `--nats-url` (`LAX_NATS_URLS`), `--broker-addr` (`LAX_BROKER_ADDR`)
//! and `--broker-token` (`LAX_BROKER_TOKEN`); every other client option is read from its
//! `LAX_*` environment variable. Logs go to stderr through `tracing`, filtered by `RUST_LOG`.
//! Exit codes: 0 on success, 1 when running fails, 2 for a usage error.
#![forbid(unsafe_code)]

/// jemalloc, with its background threads purging freed pages: the broker's RSS comes back
/// after a burst of subscribers ends (glibc's malloc kept it: 42 → 157 MiB, still 157 MiB
/// after 200 idle subscribers had gone; with jemalloc back to 43 MiB within 8 s; see
/// docs/CONSUMING.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

mod chart;
mod client_args;
mod commands;
mod failure;
mod format;
mod nats_server;
mod stack;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lax_broker::{
    Broker, BrokerConfig,
    cli::{BrokerArgs, init_broker_logging, init_logging},
};

use crate::{
    commands::{
        bench::BenchArgs, demo::DemoArgs, dev::DevArgs, publish::PubArgs, soak::SoakArgs,
        streams::StreamsArgs, subscribe::SubArgs,
    },
    failure::{EXIT_USAGE, Failure},
};

/// LAX: publish to NATS JetStream by tier, through a gRPC broker or straight to NATS.
#[derive(Debug, Parser)]
#[command(name = "lax", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once per run; boxing would only complicate the clap derive"
)]
enum Command {
    /// Run a local stack until Ctrl-C: nats-server with JetStream plus the LAX broker.
    Dev(DevArgs),
    /// Walk through the quick start: publish by tier, subscribe, read the order back.
    Demo(DemoArgs),
    /// Publish a message by tier.
    Pub(PubArgs),
    /// Print the messages published to a subject.
    Sub(SubArgs),
    /// List, describe, create and delete streams through the broker.
    Streams(StreamsArgs),
    /// Measure publish throughput and latency over a route and tier.
    Bench(BenchArgs),
    /// Run the LAX broker: gRPC on --listen, Prometheus /metrics on --metrics-listen.
    Broker(BrokerArgs),
    /// Soak a stack of its own: mixed tiers at a steady rate, a fault every minute, RSS and
    /// tasks sampled and plotted (`cargo xtask soak`).
    Soak(SoakArgs),
    /// Print a shell completion script, e.g. `lax completions bash > ~/.local/share/bash-completion/completions/lax`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

impl Command {
    /// The log level when `RUST_LOG` is unset: servers say what they do, client commands
    /// keep stderr for warnings.
    fn default_log_filter(&self) -> &'static str {
        match self {
            Command::Dev(_) | Command::Broker(_) => Self::BROKER_LOG_FILTER,
            _ => "warn",
        }
    }

    /// Servers say what they do.
    const BROKER_LOG_FILTER: &str = "info";
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // --help and --version are "errors" to clap but exit 0.
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let result = tokio::runtime::Runtime::new()
        .map_err(|e| Failure::runtime(format!("cannot start the async runtime: {e}")))
        .and_then(|runtime| runtime.block_on(run(cli.command)));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {failure}");
            failure.exit_code()
        }
    }
}

/// Writes the completion script for `shell` to stdout.
fn print_completions(shell: clap_complete::Shell) {
    use clap::CommandFactory as _;
    clap_complete::generate(shell, &mut Cli::command(), "lax", &mut std::io::stdout());
}

async fn run(command: Command) -> Result<(), Failure> {
    // The broker's logging may export spans, which takes the runtime this runs in.
    if !matches!(command, Command::Broker(_)) {
        init_logging(command.default_log_filter());
    }
    match command {
        Command::Dev(args) => commands::dev::run(args).await,
        Command::Demo(args) => commands::demo::run(args).await,
        Command::Pub(args) => commands::publish::run(args).await,
        Command::Sub(args) => commands::subscribe::run(args).await,
        Command::Streams(args) => commands::streams::run(args).await,
        Command::Bench(args) => commands::bench::run(args).await,
        Command::Broker(args) => run_broker(args.into()).await,
        Command::Soak(args) => commands::soak::run(args).await,
        Command::Completions { shell } => {
            print_completions(shell);
            Ok(())
        }
    }
}

async fn run_broker(config: BrokerConfig) -> Result<(), Failure> {
    let logging = init_broker_logging(Command::BROKER_LOG_FILTER, &config)?;
    let stop = lax_broker::cli::shutdown_signal();
    let served = match Broker::start(config).await {
        Ok(broker) => broker.run_until(stop).await,
        Err(error) => Err(error),
    };
    // Sends the last spans, whether the broker stopped cleanly or failed.
    logging.shutdown().await;
    Ok(served?)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn broker_flags_reach_the_config() {
        let cli = Cli::try_parse_from([
            "lax",
            "broker",
            "--nats-url",
            "nats://x:4222",
            "--replicated-replicas",
            "1",
        ])
        .unwrap();
        let Command::Broker(args) = cli.command else {
            panic!("not the broker command");
        };
        let config = BrokerConfig::from(args);
        assert_eq!(config.nats_urls, ["nats://x:4222"]);
        assert_eq!(config.replicated_replicas, 1);
    }

    #[test]
    fn client_flags_are_accepted_after_subcommands_and_bad_values_refused() {
        let cli = Cli::try_parse_from([
            "lax",
            "streams",
            "ls",
            "--broker-addr",
            "b:1",
            "--nats-url",
            "nats://a:1,nats://b:2",
        ]);
        assert!(cli.is_ok(), "{cli:?}");
        for bad in [
            &["lax", "pub"][..],
            &["lax", "pub", "s", "--tier", "gold"],
            &["lax", "pub", "s", "--header", "novalue"],
            &["lax", "pub", "s", "--count", "0"],
            &["lax", "bench", "--route", "sideways"],
            &["lax", "streams", "create", "S"],
        ] {
            let error = Cli::try_parse_from(bad).unwrap_err();
            assert!(error.use_stderr(), "{bad:?}");
        }
    }
}
