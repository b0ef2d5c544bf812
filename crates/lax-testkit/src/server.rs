//! A single real `nats-server` process.

use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use lax_nats_server::{
    NotReady, ProcessGroup, Readiness, ServerProcess, log_tail as tail, nats_server_binary,
};
use tempfile::TempDir;

use crate::{
    TestkitError,
    monitor::{self, DEFAULT_HTTP_TIMEOUT},
    ports::free_ports,
};

/// How long a server (or cluster) may take to become ready, unless configured otherwise.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

/// How long [`NatsServer::stop`] waits after SIGTERM before it sends SIGKILL.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// How many times a start is retried with fresh ports after a port collision.
const PORT_ATTEMPTS: usize = 3;

/// Lines of the server log quoted in start-up errors.
const LOG_TAIL_LINES: usize = 30;

/// A stream's state as a server's monitoring endpoint (`/jsz`) reports it, from the point
/// of view of that server's own replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MonitorStreamState {
    /// Messages held.
    pub messages: u64,
    /// Bytes held.
    pub bytes: u64,
    /// Sequence of the first message held.
    pub first_seq: u64,
    /// Sequence of the last message stored.
    pub last_seq: u64,
}

/// Cluster settings of one node; set by [`crate::NatsCluster`].
#[derive(Debug, Clone)]
pub(crate) struct ClusterSpec {
    pub(crate) name: String,
    pub(crate) port: u16,
    pub(crate) routes: Vec<u16>,
}

/// Everything needed to (re)start a server with the same identity.
#[derive(Debug, Clone)]
pub(crate) struct ServerSpec {
    pub(crate) binary: PathBuf,
    pub(crate) jetstream: bool,
    pub(crate) port: u16,
    pub(crate) monitor_port: u16,
    pub(crate) name: Option<String>,
    pub(crate) cluster: Option<ClusterSpec>,
    pub(crate) extra_args: Vec<String>,
    pub(crate) config_text: Option<String>,
}

/// Options for a [`NatsServer`]; made by [`NatsServer::builder`].
///
/// ```no_run
/// # async fn demo() -> Result<(), lax_testkit::TestkitError> {
/// use lax_testkit::NatsServer;
///
/// // Auth test: a server that wants a user and password.
/// let server = NatsServer::builder()
///     .args(["--user", "alice", "--pass", "s3cret"])
///     .max_payload(64 * 1024)
///     .start()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct NatsServerBuilder {
    binary: Option<PathBuf>,
    jetstream: bool,
    extra_args: Vec<String>,
    config: Vec<String>,
    max_payload: Option<u32>,
    name: Option<String>,
    startup_timeout: Duration,
    stop_timeout: Duration,
}

impl Default for NatsServerBuilder {
    fn default() -> Self {
        Self {
            binary: None,
            jetstream: true,
            extra_args: Vec::new(),
            config: Vec::new(),
            max_payload: None,
            name: None,
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
        }
    }
}

impl NatsServerBuilder {
    /// Runs this binary instead of the one [`crate::nats_server_binary`] finds.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = Some(path.into());
        self
    }

    /// Turns JetStream on (the default) or off.
    pub fn jetstream(mut self, enabled: bool) -> Self {
        self.jetstream = enabled;
        self
    }

    /// Adds one command-line argument (e.g. `--user`); see [`Self::args`].
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra_args.push(arg.into());
        self
    }

    /// Adds command-line arguments after the testkit's own, e.g.
    /// `["--user", "u", "--pass", "p"]` or `["--tls", "--tlscert", ..]`. Do not pass the
    /// options the testkit sets itself (`-a`, `-p`, `-m`, `-sd`, `-js`).
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds a snippet of nats-server configuration (e.g. an `authorization { ... }` or
    /// `tls { ... }` block). Snippets go into a config file passed with `-c`; the testkit's
    /// command-line options (address, ports, store dir) win over the file.
    pub fn config(mut self, snippet: impl Into<String>) -> Self {
        self.config.push(snippet.into());
        self
    }

    /// Sets the server's `max_payload` (bytes).
    pub fn max_payload(mut self, bytes: u32) -> Self {
        self.max_payload = Some(bytes);
        self
    }

    /// Sets the server name (`--name`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// How long [`Self::start`] and [`NatsServer::restart`] wait for readiness.
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// How long [`NatsServer::stop`] waits after SIGTERM before it sends SIGKILL.
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    pub(crate) fn config_text(&self) -> Option<String> {
        if self.config.is_empty() && self.max_payload.is_none() {
            return None;
        }
        let mut text = String::from("# generated by lax-testkit\n");
        if let Some(bytes) = self.max_payload {
            let _ = writeln!(text, "max_payload: {bytes}");
        }
        for snippet in &self.config {
            text.push_str(snippet);
            text.push('\n');
        }
        Some(text)
    }

    pub(crate) fn extra_args_list(&self) -> Vec<String> {
        self.extra_args.clone()
    }

    pub(crate) fn resolved_binary(&self) -> Result<PathBuf, TestkitError> {
        match &self.binary {
            Some(path) => Ok(path.clone()),
            None => Ok(nats_server_binary()?),
        }
    }

    /// Starts the server and waits until it is ready: it accepts TCP connections and its
    /// monitoring `/healthz` (with `js-enabled-only=true` when JetStream is on) answers ok.
    /// A port collision at start-up is retried with fresh ports.
    ///
    /// # Errors
    ///
    /// [`TestkitError::Locate`] without a binary; [`TestkitError::Startup`] (with the
    /// log's last lines) when the server exits or is not ready in time.
    pub async fn start(self) -> Result<NatsServer, TestkitError> {
        let binary = self.resolved_binary()?;
        let config_text = self.config_text();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let ports = free_ports(2).map_err(|e| TestkitError::io("choosing free ports", e))?;
            let spec = ServerSpec {
                binary: binary.clone(),
                jetstream: self.jetstream,
                port: ports[0],
                monitor_port: ports[1],
                name: self.name.clone(),
                cluster: None,
                extra_args: self.extra_args.clone(),
                config_text: config_text.clone(),
            };
            let mut server = NatsServer::spawn(spec, self.startup_timeout, self.stop_timeout)?;
            match server.wait_ready(self.startup_timeout).await {
                Ok(()) => return Ok(server),
                Err(e) if e.is_port_collision() && attempt < PORT_ATTEMPTS => {
                    tracing::debug!(error = %e, "port collision, retrying with fresh ports");
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A real `nats-server` process on 127.0.0.1, in its own temporary directory, killed when
/// dropped.
///
/// The directory holds the JetStream store ([`Self::store_dir`]), the server's log
/// ([`Self::log_path`], stdout and stderr) and the generated config file, if any. It is
/// removed on drop, after the server is dead. See the crate docs for how servers are kept
/// from outliving a test that dies.
#[derive(Debug)]
pub struct NatsServer {
    // `process` is killed in `Drop` before `dir` is removed.
    process: Option<ServerProcess>,
    spec: ServerSpec,
    dir: TempDir,
    startup_timeout: Duration,
    stop_timeout: Duration,
}

impl NatsServer {
    /// Starts a JetStream-enabled server with default options; see [`NatsServerBuilder::start`].
    ///
    /// # Errors
    ///
    /// As [`NatsServerBuilder::start`].
    pub async fn start() -> Result<Self, TestkitError> {
        Self::builder().start().await
    }

    /// Options for a server.
    pub fn builder() -> NatsServerBuilder {
        NatsServerBuilder::default()
    }

    /// Creates the directory and config, and spawns the process without waiting.
    pub(crate) fn spawn(
        spec: ServerSpec,
        startup_timeout: Duration,
        stop_timeout: Duration,
    ) -> Result<Self, TestkitError> {
        let prefix = match &spec.name {
            Some(name) => format!("lax-nats-{name}-"),
            None => "lax-nats-".to_owned(),
        };
        let dir = TempDir::with_prefix(prefix)
            .map_err(|e| TestkitError::io("creating the server's temporary directory", e))?;
        if let Some(text) = &spec.config_text {
            std::fs::write(dir.path().join("nats-server.conf"), text)
                .map_err(|e| TestkitError::io("writing the server's config file", e))?;
        }
        let mut server = Self {
            process: None,
            spec,
            dir,
            startup_timeout,
            stop_timeout,
        };
        server.spawn_process()?;
        Ok(server)
    }

    fn args(&self) -> Vec<String> {
        let spec = &self.spec;
        let dir = self.dir.path();
        let mut args = Vec::new();
        if spec.config_text.is_some() {
            args.push("-c".to_owned());
            args.push(dir.join("nats-server.conf").display().to_string());
        }
        args.extend([
            "-a".to_owned(),
            Ipv4Addr::LOCALHOST.to_string(),
            "-p".to_owned(),
            spec.port.to_string(),
            "-m".to_owned(),
            spec.monitor_port.to_string(),
        ]);
        if spec.jetstream {
            args.push("-js".to_owned());
            args.push("-sd".to_owned());
            args.push(self.store_dir().display().to_string());
        }
        if let Some(name) = &spec.name {
            args.push("--name".to_owned());
            args.push(name.clone());
        }
        if let Some(cluster) = &spec.cluster {
            args.push("--cluster_name".to_owned());
            args.push(cluster.name.clone());
            args.push("--cluster".to_owned());
            args.push(format!("nats://127.0.0.1:{}", cluster.port));
            if !cluster.routes.is_empty() {
                let routes: Vec<String> = cluster
                    .routes
                    .iter()
                    .map(|p| format!("nats://127.0.0.1:{p}"))
                    .collect();
                args.push("--routes".to_owned());
                args.push(routes.join(","));
            }
        }
        args.extend(spec.extra_args.iter().cloned());
        args
    }

    fn spawn_process(&mut self) -> Result<(), TestkitError> {
        let args = self.args();
        tracing::debug!(binary = %self.spec.binary.display(), ?args, "starting nats-server");
        // The test's process group, so that Ctrl-C and nextest's timeouts reach the server.
        let process = ServerProcess::spawn(
            &self.spec.binary,
            &args,
            &self.log_path(),
            ProcessGroup::Inherit,
            Some(self.dir.path()),
        )
        .map_err(|e| TestkitError::io(format!("spawning {}", self.spec.binary.display()), e))?;
        self.process = Some(process);
        Ok(())
    }

    /// Polls until the server accepts TCP and `/healthz` answers ok, failing early if the
    /// process exits.
    pub(crate) async fn wait_ready(&mut self, timeout: Duration) -> Result<(), TestkitError> {
        let readiness = self.readiness();
        let Some(process) = self.process.as_mut() else {
            return Err(TestkitError::NotRunning { url: self.url() });
        };
        match readiness.wait(process, timeout).await {
            Ok(()) => Ok(()),
            Err(NotReady::Io(e)) => Err(TestkitError::io("waiting for nats-server", e)),
            Err(why) => {
                if matches!(why, NotReady::Exited(_)) {
                    self.process = None;
                }
                Err(self.startup_error(format!("{why} ({})", self.url())))
            }
        }
    }

    /// One readiness check: the client port accepts TCP and `/healthz` (with
    /// `js-enabled-only=true` when JetStream is on) answers ok.
    pub(crate) async fn probe_ready(&self) -> Result<(), String> {
        self.readiness().probe().await
    }

    fn readiness(&self) -> Readiness {
        Readiness {
            client_addr: (Ipv4Addr::LOCALHOST, self.spec.port).into(),
            monitor_url: self.monitor_url(),
            jetstream: self.spec.jetstream,
        }
    }

    pub(crate) fn startup_error(&self, message: String) -> TestkitError {
        TestkitError::Startup {
            message,
            log_paths: vec![self.log_path()],
            log_tail: tail(&self.log_path(), LOG_TAIL_LINES),
        }
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.spec.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.spec.port
    }

    /// The monitoring base URL, `http://127.0.0.1:<monitor port>`.
    pub fn monitor_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.spec.monitor_port)
    }

    /// The monitoring port.
    pub fn monitor_port(&self) -> u16 {
        self.spec.monitor_port
    }

    /// The cluster (route) port, for a cluster node.
    pub fn cluster_port(&self) -> Option<u16> {
        self.spec.cluster.as_ref().map(|c| c.port)
    }

    /// The server name, when one was set (cluster nodes are `n0`, `n1`, ...).
    pub fn name(&self) -> Option<&str> {
        self.spec.name.as_deref()
    }

    /// The JetStream store directory (`-sd`); it survives [`Self::stop`], [`Self::kill`] and
    /// [`Self::restart`], and is removed on drop.
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// The server's temporary directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The log file that receives the server's stdout and stderr (appended across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_path(), lines)
    }

    /// The binary this server runs.
    pub fn binary(&self) -> &Path {
        &self.spec.binary
    }

    /// The process id while the server runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(ServerProcess::pid)
    }

    /// True while the process has not been seen to exit.
    pub fn is_running(&mut self) -> bool {
        match self.process.as_mut().map(ServerProcess::try_exited) {
            Some(Ok(None)) => true,
            Some(_) => {
                self.process = None;
                false
            }
            None => false,
        }
    }

    /// Stops the server gracefully: SIGTERM, then waits (see
    /// [`NatsServerBuilder::stop_timeout`]) for it to exit, then SIGKILL. Does nothing if
    /// it is not running.
    ///
    /// # Errors
    ///
    /// [`TestkitError::Io`] if signalling or reaping fails.
    pub async fn stop(&mut self) -> Result<(), TestkitError> {
        let Some(mut process) = self.process.take() else {
            return Ok(());
        };
        let pid = process.pid();
        process
            .stop(self.stop_timeout)
            .await
            .map_err(|e| TestkitError::io(format!("stopping nats-server {pid}"), e))?;
        tracing::debug!(pid, url = %self.url(), "nats-server stopped");
        Ok(())
    }

    /// Kills the server with SIGKILL (no shutdown, as in a crash) and reaps it. Does nothing
    /// if it is not running.
    ///
    /// # Errors
    ///
    /// [`TestkitError::Io`] if signalling or reaping fails.
    pub async fn kill(&mut self) -> Result<(), TestkitError> {
        let Some(mut process) = self.process.take() else {
            return Ok(());
        };
        let pid = process.pid();
        process
            .kill_now()
            .map_err(|e| TestkitError::io(format!("killing nats-server {pid}"), e))?;
        tracing::debug!(pid, url = %self.url(), "nats-server killed");
        Ok(())
    }

    /// Starts the server again on the same ports with the same store directory (stopping it
    /// gracefully first if it runs) and waits until it is ready.
    ///
    /// # Errors
    ///
    /// As [`Self::stop`], then [`TestkitError::Startup`] when it does not come back (for
    /// example because another process took its port meanwhile).
    pub async fn restart(&mut self) -> Result<(), TestkitError> {
        self.stop().await?;
        self.spawn_process()?;
        self.wait_ready(self.startup_timeout).await
    }

    /// Starts the process again without waiting for readiness (cluster nodes wait on the
    /// whole cluster instead).
    pub(crate) async fn restart_unready(&mut self) -> Result<(), TestkitError> {
        self.stop().await?;
        self.spawn_process()
    }

    /// Connects a NATS client to this server.
    ///
    /// # Errors
    ///
    /// [`TestkitError::Nats`] when the connection fails (also when the server wants
    /// credentials: connect with `async_nats::ConnectOptions` yourself then).
    pub async fn client(&self) -> Result<async_nats::Client, TestkitError> {
        async_nats::connect(self.url())
            .await
            .map_err(|e| TestkitError::nats(format!("connecting to {}", self.url()), e))
    }

    /// GETs a monitoring endpoint (e.g. `/varz`, `/jsz?streams=true`) and parses its JSON.
    ///
    /// # Errors
    ///
    /// [`TestkitError::Http`] or [`TestkitError::Json`].
    pub async fn monitor_json(&self, path: &str) -> Result<serde_json::Value, TestkitError> {
        monitor::get_json(&self.monitor_url(), path, DEFAULT_HTTP_TIMEOUT).await
    }

    /// True when `/healthz` answers ok. Without options, nats-server's `/healthz` also checks
    /// JetStream (in a cluster: that this node is current with the meta group and that its
    /// streams and consumers are healthy by the server's own measure, which can be ok while
    /// a replica is still catching up on messages).
    ///
    /// # Errors
    ///
    /// [`TestkitError::Http`] when the monitoring port does not answer.
    pub async fn healthz(&self) -> Result<bool, TestkitError> {
        let response =
            monitor::http_get(&self.monitor_url(), "/healthz", DEFAULT_HTTP_TIMEOUT).await?;
        Ok(response.status == 200)
    }

    /// The JetStream meta-group leader this server knows of (`/jsz` → `meta_cluster.leader`),
    /// `None` while there is none (or outside a cluster).
    ///
    /// # Errors
    ///
    /// [`TestkitError::Http`] or [`TestkitError::Json`].
    pub async fn meta_leader(&self) -> Result<Option<String>, TestkitError> {
        let jsz = self.monitor_json("/jsz").await?;
        Ok(jsz["meta_cluster"]["leader"]
            .as_str()
            .filter(|l| !l.is_empty())
            .map(str::to_owned))
    }

    /// The state of stream `stream` as held by this server's own replica, from
    /// `/jsz?accounts=true&streams=true`; `None` when this server holds no replica of it.
    ///
    /// # Errors
    ///
    /// [`TestkitError::Http`] or [`TestkitError::Json`].
    pub async fn stream_state(
        &self,
        stream: &str,
    ) -> Result<Option<MonitorStreamState>, TestkitError> {
        let jsz = self.monitor_json("/jsz?accounts=true&streams=true").await?;
        Ok(find_stream_state(&jsz, stream))
    }
}

pub(crate) fn find_stream_state(
    jsz: &serde_json::Value,
    stream: &str,
) -> Option<MonitorStreamState> {
    let accounts = jsz["account_details"].as_array()?;
    accounts
        .iter()
        .filter_map(|account| account["stream_detail"].as_array())
        .flatten()
        .find(|detail| detail["name"].as_str() == Some(stream))
        .map(|detail| {
            let state = &detail["state"];
            let n = |key: &str| state[key].as_u64().unwrap_or(0);
            MonitorStreamState {
                messages: n("messages"),
                bytes: n("bytes"),
                first_seq: n("first_seq"),
                last_seq: n("last_seq"),
            }
        })
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut process) = self.process.take()
            && let Err(e) = process.kill_now()
        {
            tracing::warn!(error = %e, url = %self.url(), "failed to kill nats-server on drop");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_state_is_found_in_any_account() {
        let jsz = serde_json::json!({
            "account_details": [
                {"name": "SYS", "stream_detail": []},
                {"name": "$G", "stream_detail": [
                    {"name": "OTHER", "state": {"messages": 1, "last_seq": 1}},
                    {"name": "ORDERS", "state": {"messages": 7, "bytes": 70, "first_seq": 3, "last_seq": 9}}
                ]}
            ]
        });
        assert_eq!(
            find_stream_state(&jsz, "ORDERS"),
            Some(MonitorStreamState {
                messages: 7,
                bytes: 70,
                first_seq: 3,
                last_seq: 9
            })
        );
        assert_eq!(find_stream_state(&jsz, "MISSING"), None);
        assert_eq!(find_stream_state(&serde_json::json!({}), "ORDERS"), None);
    }

    #[test]
    fn config_text_only_when_needed() {
        assert_eq!(NatsServer::builder().config_text(), None);
        let text = NatsServer::builder()
            .max_payload(1024)
            .config("authorization { user: a, password: b }")
            .config_text()
            .unwrap();
        assert!(text.contains("max_payload: 1024\n"));
        assert!(text.contains("authorization { user: a, password: b }\n"));
    }
}
