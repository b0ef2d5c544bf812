//! A `nats-server` child process with JetStream, as `lax dev` and `lax demo` run it, on
//! `lax-nats-server`'s supervision.
//!
//! The server runs in a process group of its own, so a Ctrl-C in the terminal reaches only
//! `lax`, which then stops the broker first and the server second; a watchdog kills the server
//! should `lax` die without cleaning up (SIGKILL, a crash). Dropping an [`EmbeddedNats`] kills
//! the server too.

use std::{
    io,
    net::{IpAddr, SocketAddr, TcpListener},
    path::PathBuf,
    time::Duration,
};

use lax_nats_server::{NotReady, ProcessGroup, Readiness, ServerProcess};

use crate::failure::Failure;

/// How long the server may take to answer `/healthz`.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// How long a stopping server may take after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Lines of the server log quoted when it fails.
const LOG_TAIL_LINES: usize = 20;

/// Where and how to run the server.
#[derive(Debug, Clone)]
pub(crate) struct NatsServerSpec {
    /// Address to listen on.
    pub(crate) host: IpAddr,
    /// Client port; 0 picks a free one.
    pub(crate) port: u16,
    /// Monitoring port; 0 picks a free one.
    pub(crate) monitor_port: u16,
    /// Holds the JetStream store and the server log.
    pub(crate) data_dir: PathBuf,
}

/// A running `nats-server` child.
#[derive(Debug)]
pub(crate) struct EmbeddedNats {
    process: ServerProcess,
    client_addr: SocketAddr,
    monitor_addr: SocketAddr,
    log_path: PathBuf,
}

impl EmbeddedNats {
    /// Starts the server and waits until `/healthz?js-enabled-only=true` answers ok.
    pub(crate) async fn start(spec: &NatsServerSpec) -> Result<Self, Failure> {
        let binary = nats_server_binary()?;
        let port = claim_port(spec.host, spec.port, "NATS", "--nats-port")?;
        let monitor_port = claim_port(
            spec.host,
            spec.monitor_port,
            "NATS monitoring",
            "--monitor-port",
        )?;
        std::fs::create_dir_all(&spec.data_dir).map_err(|e| {
            Failure::runtime(format!(
                "cannot create the data directory {}: {e}",
                spec.data_dir.display()
            ))
        })?;
        let log_path = spec.data_dir.join("nats-server.log");
        let args: Vec<String> = vec![
            "-a".into(),
            spec.host.to_string(),
            "-p".into(),
            port.to_string(),
            "-m".into(),
            monitor_port.to_string(),
            "-js".into(),
            "-sd".into(),
            spec.data_dir.display().to_string(),
        ];
        let process = ServerProcess::spawn(&binary, &args, &log_path, ProcessGroup::Own, None)
            .map_err(|e| Failure::runtime(format!("cannot run {}: {e}", binary.display())))?;
        let mut server = EmbeddedNats {
            process,
            client_addr: SocketAddr::new(spec.host, port),
            monitor_addr: SocketAddr::new(spec.host, monitor_port),
            log_path,
        };
        let readiness = Readiness {
            client_addr: server.client_addr,
            monitor_url: server.monitor_url(),
            jetstream: true,
        };
        match readiness.wait(&mut server.process, STARTUP_TIMEOUT).await {
            Ok(()) => {}
            Err(NotReady::Io(e)) => return Err(io_failure(e)),
            Err(why) => return Err(server.failure(&why.to_string())),
        }
        tracing::debug!(pid = server.pid(), url = %server.url(), "nats-server ready");
        Ok(server)
    }

    fn failure(&self, what: &str) -> Failure {
        Failure::runtime(format!(
            "{what}; the end of its log {}:\n{}",
            self.log_path.display(),
            lax_nats_server::log_tail(&self.log_path, LOG_TAIL_LINES)
        ))
    }

    /// `nats://host:port`.
    pub(crate) fn url(&self) -> String {
        format!("nats://{}", self.client_addr)
    }

    /// The monitoring endpoint's base URL.
    pub(crate) fn monitor_url(&self) -> String {
        format!("http://{}", self.monitor_addr)
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Completes when the server exits on its own, with a description of why.
    pub(crate) async fn exited(&mut self) -> Failure {
        match self.process.exited().await {
            Ok(status) => self.failure(&format!("nats-server stopped unexpectedly ({status})")),
            Err(e) => io_failure(e),
        }
    }

    /// Stops the server: SIGTERM (it finishes its JetStream writes), then SIGKILL if it has
    /// not exited within the stop timeout.
    pub(crate) async fn stop(mut self) -> Result<(), Failure> {
        let pid = self.pid();
        let how = self.process.stop(STOP_TIMEOUT).await.map_err(io_failure)?;
        tracing::debug!(pid, ?how, "nats-server stopped");
        Ok(())
    }
}

/// The `nats-server` binary (see [`lax_nats_server::nats_server_binary`] for where it looks).
pub(crate) fn nats_server_binary() -> Result<PathBuf, Failure> {
    lax_nats_server::nats_server_binary().map_err(|error| Failure::runtime(error.to_string()))
}

/// Checks that `port` is free on `host` (or picks a free one for 0), naming the flag that
/// changes it when it is taken.
pub(crate) fn claim_port(host: IpAddr, port: u16, what: &str, flag: &str) -> Result<u16, Failure> {
    let listener = bind_port(host, port, what, flag)?;
    listener
        .local_addr()
        .map(|addr| addr.port())
        .map_err(io_failure)
}

/// Binds `host:port`, explaining a taken port.
pub(crate) fn bind_port(
    host: IpAddr,
    port: u16,
    what: &str,
    flag: &str,
) -> Result<TcpListener, Failure> {
    TcpListener::bind((host, port)).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            Failure::runtime(format!(
                "port {port} ({what}) on {host} is already in use — is another `lax dev` or \
                 nats-server running? Stop it, or pick another port with {flag} (0 picks a \
                 free one)"
            ))
        } else {
            Failure::runtime(format!("cannot listen on {host}:{port} ({what}): {e}"))
        }
    })
}

fn io_failure(error: io::Error) -> Failure {
    Failure::runtime(format!("managing nats-server: {error}"))
}
