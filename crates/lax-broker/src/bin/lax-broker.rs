//! `lax-broker`: the LAX broker on its own. Every option is a flag and a `LAX_BROKER_*`
//! environment variable (`lax-broker --help`); logs go to stderr, filtered by `RUST_LOG`
//! (default `info`), and with `--otlp-endpoint` spans go to an OpenTelemetry collector too.
//! Stops gracefully on Ctrl-C or SIGTERM, sending the last spans. Exit codes: 0 after a clean stop,
//! 1 when the broker fails, 2 for a usage error.

use std::process::ExitCode;

/// jemalloc, with its background threads purging freed pages: the broker's RSS comes back
/// after a burst of subscribers ends (glibc's malloc kept it; see docs/CONSUMING.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

use clap::Parser;
use lax_broker::{
    Broker, BrokerConfig, BrokerError,
    cli::{BrokerArgs, init_broker_logging, shutdown_signal},
};

/// The LAX broker: gRPC on --listen, Prometheus /metrics on --metrics-listen.
#[derive(Debug, Parser)]
#[command(name = "lax-broker", version)]
struct Cli {
    #[command(flatten)]
    args: BrokerArgs,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = BrokerConfig::from(cli.args);
    let result = tokio::runtime::Runtime::new()
        .map_err(|e| BrokerError::Serve(format!("cannot start the async runtime: {e}")))
        .and_then(|runtime| {
            runtime.block_on(async {
                let logging = init_broker_logging("info", &config)?;
                let stop = shutdown_signal();
                let served = match Broker::start(config).await {
                    Ok(broker) => broker.run_until(stop).await,
                    Err(error) => Err(error),
                };
                logging.shutdown().await;
                served
            })
        });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}
