//! The soak's stack — a `nats-server` and a `lax broker` child process — and its faults.

use std::{
    collections::HashMap,
    fmt,
    fs::File,
    net::TcpListener,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use async_nats::jetstream::{
    self,
    stream::{Config, StorageType},
};
use lax_broker::metrics::RUNTIME_ALIVE_TASKS;
use lax_nats_server::monitor::http_get;
use lax_testkit::{Counts, NatsServer, create_stream_with_retry, stored_ids, wait_until};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tokio::process::{Child, Command};

use crate::failure::Failure;

/// The longest a start, restart or count may take.
const WAIT: Duration = Duration::from_secs(60);
/// How long a frozen broker stays frozen.
const FREEZE: Duration = Duration::from_secs(5);

/// One injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fault {
    /// nats-server SIGKILLed, then started again on its port and store.
    NatsKill,
    /// The broker SIGSTOPped for [`FREEZE`], then SIGCONTinued.
    BrokerFreeze,
    /// The broker SIGKILLed, then started again on its ports.
    BrokerKill,
}

impl Fault {
    /// The faults in the order they are injected, round and round.
    pub(super) const ROTATION: [Fault; 3] =
        [Fault::NatsKill, Fault::BrokerFreeze, Fault::BrokerKill];
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fault::NatsKill => "nats-server SIGKILL + restart",
            Fault::BrokerFreeze => "broker SIGSTOP 5 s + SIGCONT",
            Fault::BrokerKill => "broker SIGKILL + restart",
        })
    }
}

/// The running stack.
pub(super) struct SoakStack {
    nats: NatsServer,
    js: jetstream::Context,
    broker: Child,
    ports: BrokerPorts,
}

/// Where the broker listens and logs, kept across its restarts.
struct BrokerPorts {
    listen: String,
    metrics_listen: String,
    log: PathBuf,
}

fn failed(doing: &str, error: impl fmt::Display) -> Failure {
    Failure::runtime(format!("soak: {doing}: {error}"))
}

fn free_port() -> Result<u16, Failure> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| failed("finding a free port", e))
}

impl BrokerPorts {
    /// Starts `lax broker` (this binary) on these ports and waits until it listens.
    async fn spawn(&self, nats_url: &str) -> Result<Child, Failure> {
        let lax = std::env::current_exe().map_err(|e| failed("finding the lax binary", e))?;
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| failed("opening the broker log", e))?;
        let mut command = Command::new(lax);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("LAX_") {
                command.env_remove(name);
            }
        }
        let child = command
            .args(["broker", "--nats-url", nats_url, "--listen", &self.listen])
            .args(["--metrics-listen", &self.metrics_listen])
            .args(["--replicated-replicas", "1"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| failed("starting lax broker", e))?;
        let listen = self.listen.clone();
        wait_until(WAIT, || async {
            tokio::net::TcpStream::connect(&listen).await.is_ok()
        })
        .await
        .map_err(|e| failed("waiting for the broker to listen", e))?;
        Ok(child)
    }
}

impl SoakStack {
    /// Starts nats-server, creates one file stream per `(subject prefix, stream)` (so that a
    /// nats-server SIGKILL keeps what was stored, and the direct memory tier is captured
    /// too), and starts the broker; its log goes to `out/broker.log`.
    pub(super) async fn start(out: &Path, streams: &[(&str, &str)]) -> Result<Self, Failure> {
        let nats = NatsServer::start()
            .await
            .map_err(|e| failed("starting nats-server", e))?;
        let client = nats
            .client()
            .await
            .map_err(|e| failed("connecting to nats-server", e))?;
        let js = jetstream::new(client);
        for (prefix, stream) in streams {
            let config = Config {
                name: (*stream).to_owned(),
                subjects: vec![format!("{prefix}.>")],
                storage: StorageType::File,
                ..Default::default()
            };
            create_stream_with_retry(&js, config, WAIT)
                .await
                .map_err(|e| failed(&format!("creating stream {stream}"), e))?;
        }
        let ports = BrokerPorts {
            listen: format!("127.0.0.1:{}", free_port()?),
            metrics_listen: format!("127.0.0.1:{}", free_port()?),
            log: out.join("broker.log"),
        };
        let broker = ports.spawn(&nats.url()).await?;
        Ok(SoakStack {
            nats,
            js,
            broker,
            ports,
        })
    }

    pub(super) fn nats_url(&self) -> String {
        self.nats.url()
    }

    pub(super) fn broker_addr(&self) -> String {
        format!("http://{}", self.ports.listen)
    }

    fn signal_broker(&self, signal: Signal) -> Result<(), Failure> {
        let pid = self
            .broker_pid()
            .ok_or_else(|| Failure::runtime("soak: the broker is not running"))?;
        kill(Pid::from_raw(pid as i32), signal).map_err(|e| failed("signalling the broker", e))
    }

    pub(super) fn broker_pid(&self) -> Option<u32> {
        self.broker.id()
    }

    /// Injects `fault` and returns once the stack is whole again.
    pub(super) async fn inject(&mut self, fault: Fault) -> Result<(), Failure> {
        match fault {
            Fault::NatsKill => {
                self.nats
                    .kill()
                    .await
                    .map_err(|e| failed("killing nats-server", e))?;
                self.nats
                    .restart()
                    .await
                    .map_err(|e| failed("restarting nats-server", e))?;
            }
            Fault::BrokerFreeze => {
                self.signal_broker(Signal::SIGSTOP)?;
                tokio::time::sleep(FREEZE).await;
                self.signal_broker(Signal::SIGCONT)?;
            }
            Fault::BrokerKill => {
                self.signal_broker(Signal::SIGKILL)?;
                let _ = self.broker.wait().await;
                self.broker = self.ports.spawn(&self.nats.url()).await?;
            }
        }
        Ok(())
    }

    /// The broker's alive tokio tasks, from its `/metrics`; `None` when it does not answer.
    pub(super) async fn broker_tasks(&self) -> Option<u64> {
        let response = http_get(
            &format!("http://{}", self.ports.metrics_listen),
            "/metrics",
            Duration::from_secs(2),
        )
        .await
        .ok()?;
        response.body.lines().find_map(|line| {
            let value = line.strip_prefix(RUNTIME_ALIVE_TASKS)?.trim();
            value.parse::<f64>().ok().map(|v| v as u64)
        })
    }

    /// What `stream` holds of the `acked` ids of `tier` (the direct path carries the id as
    /// `Message-Id`, the broker as `Nats-Msg-Id`).
    pub(super) async fn count(
        &self,
        tier: lax_client::Tier,
        stream: &str,
        acked: &[String],
    ) -> Result<Counts, Failure> {
        let id_header = match tier {
            lax_client::Tier::Memory => lax_core::MESSAGE_ID_HEADER,
            _ => lax_core::NATS_MSG_ID_HEADER,
        };
        let stored: HashMap<String, usize> = stored_ids(&self.js, stream, id_header, WAIT * 5)
            .await
            .map_err(|e| failed(&format!("reading stream {stream}"), e))?;
        Ok(Counts::of(acked.iter().map(String::as_str), &stored))
    }

    /// Stops the broker, then nats-server.
    pub(super) async fn stop(mut self) {
        let _ = self.broker.kill().await;
        let _ = self.nats.stop().await;
    }
}
