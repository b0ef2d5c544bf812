//! Waiting until a started server serves: its client port accepts TCP and its monitoring
//! `/healthz` (with `js-enabled-only=true` when JetStream is on) answers ok.

use std::{
    error::Error as StdError,
    fmt, io,
    net::SocketAddr,
    process::ExitStatus,
    time::{Duration, Instant},
};

use crate::{ServerProcess, monitor::http_get};

/// How long one probe (a TCP connect, one `/healthz` request) may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Where a server answers once it is ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// The client address (`-a`/`-p`).
    pub client_addr: SocketAddr,
    /// The monitoring base URL, `http://host:port` (`-m`).
    pub monitor_url: String,
    /// Whether JetStream must be up too (`-js`).
    pub jetstream: bool,
}

impl Readiness {
    /// One check: `Ok` when the server serves, else what was observed.
    ///
    /// # Errors
    ///
    /// A description of the failed check (refused port, a `/healthz` status or error).
    pub async fn probe(&self) -> Result<(), String> {
        let connect = tokio::net::TcpStream::connect(self.client_addr);
        match tokio::time::timeout(PROBE_TIMEOUT, connect).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(format!("client port: {e}")),
            Err(_) => return Err("client port: connect timed out".to_owned()),
        }
        let path = if self.jetstream {
            "/healthz?js-enabled-only=true"
        } else {
            "/healthz"
        };
        match http_get(&self.monitor_url, path, PROBE_TIMEOUT).await {
            Ok(r) if r.status == 200 && r.body.contains("ok") => Ok(()),
            Ok(r) => Err(format!("{path}: {} {}", r.status, r.body.trim())),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Probes with a short backoff until the server serves, it exits, or `timeout` passes.
    ///
    /// # Errors
    ///
    /// [`NotReady`]: the server exited while starting, was not ready in time (with the last
    /// observation), or could not be waited on.
    pub async fn wait(
        &self,
        process: &mut ServerProcess,
        timeout: Duration,
    ) -> Result<(), NotReady> {
        let started = Instant::now();
        let deadline = started + timeout;
        let mut backoff = Duration::from_millis(2);
        loop {
            if let Some(status) = process.try_exited().map_err(NotReady::Io)? {
                return Err(NotReady::Exited(status));
            }
            let last = match self.probe().await {
                Ok(()) => {
                    tracing::debug!(addr = %self.client_addr, elapsed = ?started.elapsed(), "nats-server ready");
                    return Ok(());
                }
                Err(observation) => observation,
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(NotReady::Timeout {
                    after: timeout,
                    last,
                });
            }
            tokio::time::sleep(backoff.min(deadline - now)).await;
            backoff = (backoff * 2).min(Duration::from_millis(50));
        }
    }
}

/// Why a server did not become ready.
#[derive(Debug)]
#[non_exhaustive]
pub enum NotReady {
    /// It exited while starting (its log says why).
    Exited(ExitStatus),
    /// It was still not serving when the deadline passed.
    Timeout {
        /// How long was waited.
        after: Duration,
        /// The last failed check.
        last: String,
    },
    /// The process could not be waited on.
    Io(io::Error),
}

impl fmt::Display for NotReady {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exited(status) => write!(f, "nats-server exited while starting: {status}"),
            Self::Timeout { after, last } => {
                write!(
                    f,
                    "nats-server not ready after {after:?}; last check: {last}"
                )
            }
            Self::Io(e) => write!(f, "waiting for nats-server: {e}"),
        }
    }
}

impl StdError for NotReady {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::Io(e) => Some(e),
            _ => None,
        }
    }
}
