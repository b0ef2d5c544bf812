//! `lax`: the LAX command line.
//!
//! `lax broker …` runs the LAX broker; every option is also an environment variable
//! (`LAX_BROKER_*`, see `lax broker --help`). Logs go to stderr through `tracing`, filtered by
//! `RUST_LOG` (default `info`). Exit codes: 0 after a clean stop, 1 when running fails, 2 for
//! a usage error.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lax_broker::{Broker, BrokerConfig};
use tracing_subscriber::EnvFilter;

/// LAX: publish to NATS JetStream by tier, through a gRPC broker or straight to NATS.
#[derive(Debug, Parser)]
#[command(name = "lax", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the LAX broker: gRPC on --listen, Prometheus /metrics on --metrics-listen.
    Broker(BrokerConfig),
}

/// Exit code for a failure while running.
const EXIT_RUNTIME: u8 = 1;
/// Exit code for bad usage (clap's own code too).
const EXIT_USAGE: u8 = 2;

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
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the async runtime");
            return ExitCode::from(EXIT_RUNTIME);
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Broker(config) => run_broker(config).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            eprintln!("error: {message}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(Failure::Runtime(message)) => {
            tracing::error!("{message}");
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}

/// Why a command failed, deciding the exit code.
#[derive(Debug)]
enum Failure {
    Usage(String),
    Runtime(String),
}

impl From<lax_broker::BrokerError> for Failure {
    fn from(error: lax_broker::BrokerError) -> Self {
        match error {
            lax_broker::BrokerError::Config(_) => Failure::Usage(error.to_string()),
            other => Failure::Runtime(other.to_string()),
        }
    }
}

async fn run_broker(config: BrokerConfig) -> Result<(), Failure> {
    let broker = Broker::start(config).await?;
    broker.run_until(shutdown_signal()).await?;
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
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
        let Command::Broker(config) = cli.command;
        assert_eq!(config.nats_urls, ["nats://x:4222"]);
        assert_eq!(config.replicated_replicas, 1);
    }
}
