//! `lax dev`: nats-server with JetStream plus the broker, on fixed local ports, until Ctrl-C.

use std::{io::Write as _, net::IpAddr, path::PathBuf};

use clap::Args;

use lax_broker::cli::shutdown_signal;

use crate::{
    commands::bench::{DEV_PIDS_FILE, DevPids},
    failure::Failure,
    stack::{LocalStack, StackSpec},
};

/// Options of `lax dev`.
#[derive(Debug, Clone, Args)]
pub(crate) struct DevArgs {
    /// Address every server listens on.
    #[arg(long, env = "LAX_DEV_HOST", default_value = "127.0.0.1")]
    host: IpAddr,
    /// NATS client port (0 picks a free one).
    #[arg(long, env = "LAX_DEV_NATS_PORT", default_value_t = 4222)]
    nats_port: u16,
    /// NATS monitoring port (`/healthz`, `/jsz`; 0 picks a free one).
    #[arg(long, env = "LAX_DEV_MONITOR_PORT", default_value_t = 8222)]
    monitor_port: u16,
    /// Broker gRPC port (0 picks a free one).
    #[arg(long, env = "LAX_DEV_GRPC_PORT", default_value_t = 50051)]
    grpc_port: u16,
    /// Broker Prometheus `/metrics` port (0 picks a free one).
    #[arg(long, env = "LAX_DEV_METRICS_PORT", default_value_t = 9090)]
    metrics_port: u16,
    /// Directory of the JetStream store and the nats-server log (kept between runs).
    #[arg(long, env = "LAX_DEV_DATA_DIR", default_value = "./lax-dev-data")]
    data_dir: PathBuf,
}

impl DevArgs {
    fn spec(&self) -> StackSpec {
        StackSpec {
            host: self.host,
            nats_port: self.nats_port,
            monitor_port: self.monitor_port,
            grpc_port: self.grpc_port,
            metrics_port: self.metrics_port,
            data_dir: self.data_dir.clone(),
        }
    }
}

pub(crate) async fn run(args: DevArgs) -> Result<(), Failure> {
    // Listening before the stack starts: a SIGTERM sent once it answers is a clean stop.
    let stop = shutdown_signal();
    let stack = LocalStack::start(&args.spec()).await?;
    // `lax bench` reads the pids to report the broker's and nats-server's CPU per message.
    let pids_file = args.data_dir.join(DEV_PIDS_FILE);
    let pids = DevPids::contents(std::process::id(), stack.nats_pid());
    if let Err(error) = std::fs::write(&pids_file, pids) {
        tracing::warn!(%error, file = %pids_file.display(), "cannot write the pid file");
    }
    let banner = format!(
        "LAX dev stack is up — Ctrl-C to stop\n\
         \x20 NATS     {nats}  (nats-server pid {pid}, JetStream data in {data})\n\
         \x20 monitor  {monitor}/healthz\n\
         \x20 gRPC     {grpc}  (LAX broker, pid {broker_pid}; pids in {pids_file})\n\
         \x20 metrics  {metrics}\n\
         \x20 tiers    memory · persistent (1 replica) · replicated with 1 replica: a single-node \
         dev server (production runs 3)\n\
         \x20 try      lax demo · lax sub 'events.>' --direct · lax pub events.hello hi\n",
        nats = stack.nats_url(),
        pid = stack.nats_pid(),
        data = args.data_dir.display(),
        monitor = stack.nats_monitor_url(),
        grpc = stack.grpc_addr(),
        broker_pid = std::process::id(),
        pids_file = pids_file.display(),
        metrics = stack.metrics_url(),
    );
    let mut stdout = std::io::stdout().lock();
    // A closed stdout must not stop the stack.
    let _ = stdout
        .write_all(banner.as_bytes())
        .and_then(|()| stdout.flush());
    drop(stdout);
    let stopped = stack.run_until(stop).await;
    let _ = std::fs::remove_file(&pids_file);
    stopped?;
    eprintln!("LAX dev stack stopped");
    Ok(())
}
