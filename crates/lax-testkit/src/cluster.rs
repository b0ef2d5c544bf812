//! A JetStream cluster of real `nats-server` processes on loopback.

use std::{
    fmt::Write as _,
    path::PathBuf,
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use crate::{
    NatsServer, TestkitError,
    ports::free_ports,
    server::{
        ClusterSpec, DEFAULT_STARTUP_TIMEOUT, DEFAULT_STOP_TIMEOUT, NatsServerBuilder, ServerSpec,
    },
};

const PORT_ATTEMPTS: usize = 3;
const LOG_TAIL_LINES_PER_NODE: usize = 12;

/// Options for a [`NatsCluster`]; made by [`NatsCluster::builder`].
#[derive(Debug, Clone)]
pub struct NatsClusterBuilder {
    nodes: usize,
    server: NatsServerBuilder,
    startup_timeout: Duration,
    stop_timeout: Duration,
}

impl Default for NatsClusterBuilder {
    fn default() -> Self {
        Self {
            nodes: 3,
            server: NatsServerBuilder::default(),
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
        }
    }
}

impl NatsClusterBuilder {
    /// The number of nodes (default 3).
    pub fn nodes(mut self, nodes: usize) -> Self {
        self.nodes = nodes;
        self
    }

    /// Runs this binary instead of the one [`crate::nats_server_binary`] finds.
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.server = self.server.binary(path);
        self
    }

    /// Adds command-line arguments to every node; see [`NatsServerBuilder::args`].
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.server = self.server.args(args);
        self
    }

    /// Adds a config snippet to every node; see [`NatsServerBuilder::config`].
    pub fn config(mut self, snippet: impl Into<String>) -> Self {
        self.server = self.server.config(snippet);
        self
    }

    /// Sets every node's `max_payload` (bytes).
    pub fn max_payload(mut self, bytes: u32) -> Self {
        self.server = self.server.max_payload(bytes);
        self
    }

    /// How long [`Self::start`], [`NatsCluster::restart_node`] and
    /// [`NatsCluster::wait_ready`] (by default) wait.
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// How long a graceful stop waits after SIGTERM before it sends SIGKILL.
    pub fn stop_timeout(mut self, timeout: Duration) -> Self {
        self.stop_timeout = timeout;
        self
    }

    /// Starts every node and waits until the cluster is ready (see [`NatsCluster::wait_ready`]).
    /// A port collision is retried with fresh ports.
    ///
    /// # Errors
    ///
    /// [`TestkitError::Locate`] without a binary; [`TestkitError::Startup`], with the
    /// last lines of every node's log, when a node exits or the cluster is not ready in time.
    ///
    /// # Panics
    ///
    /// If the number of nodes is 0.
    pub async fn start(self) -> Result<NatsCluster, TestkitError> {
        assert!(self.nodes > 0, "a cluster needs at least one node");
        let binary = self.server.resolved_binary()?;
        let config_text = self.server.config_text();
        let extra_args = self.server.extra_args_list();
        let n = self.nodes;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let started = Instant::now();
            let ports =
                free_ports(3 * n).map_err(|e| TestkitError::io("choosing free ports", e))?;
            let cluster_name = unique_cluster_name();
            let cluster_ports: Vec<u16> = (0..n).map(|i| ports[3 * i + 2]).collect();
            let mut nodes = Vec::with_capacity(n);
            for i in 0..n {
                let spec = ServerSpec {
                    binary: binary.clone(),
                    jetstream: true,
                    port: ports[3 * i],
                    monitor_port: ports[3 * i + 1],
                    name: Some(format!("n{i}")),
                    cluster: Some(ClusterSpec {
                        name: cluster_name.clone(),
                        port: cluster_ports[i],
                        routes: cluster_ports
                            .iter()
                            .enumerate()
                            .filter(|(j, _)| *j != i)
                            .map(|(_, p)| *p)
                            .collect(),
                    }),
                    extra_args: extra_args.clone(),
                    config_text: config_text.clone(),
                };
                nodes.push(NatsServer::spawn(
                    spec,
                    self.startup_timeout,
                    self.stop_timeout,
                )?);
            }
            let mut cluster = NatsCluster {
                nodes,
                name: cluster_name,
                startup_timeout: self.startup_timeout,
            };
            match cluster.wait_ready(self.startup_timeout).await {
                Ok(()) => {
                    tracing::debug!(nodes = n, elapsed = ?started.elapsed(), "nats cluster ready");
                    return Ok(cluster);
                }
                Err(e) if e.is_port_collision() && attempt < PORT_ATTEMPTS => {
                    tracing::debug!(error = %e, "port collision, retrying the cluster with fresh ports");
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn unique_cluster_name() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "lax-test-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A JetStream cluster of `nats-server` processes routed to each other on 127.0.0.1.
///
/// Node `i` is named `n<i>`. Each node has its own temporary directory and store; the cluster
/// name is unique per cluster (`lax-test-<pid>-<k>`), so that clusters of tests running side
/// by side can never route into each other. Every node is killed on drop.
///
/// Readiness (at start, after [`Self::restart_node`], or through [`Self::wait_ready`]) means:
/// every running node accepts TCP and answers `/healthz?js-enabled-only=true`, every running
/// node names the same JetStream meta leader in `/jsz`, and that leader reports every other
/// running node as a current meta-group peer.
///
/// Even then, JetStream may answer the first replicated-stream create with a timeout or
/// "no suitable peers" (10005) while peers are still being reported; create streams with
/// [`crate::create_stream_with_retry`].
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
    name: String,
    startup_timeout: Duration,
}

impl NatsCluster {
    /// Starts a cluster of `nodes` nodes with default options and waits until it is ready.
    ///
    /// # Errors
    ///
    /// As [`NatsClusterBuilder::start`].
    ///
    /// # Panics
    ///
    /// If `nodes` is 0.
    pub async fn start(nodes: usize) -> Result<Self, TestkitError> {
        Self::builder().nodes(nodes).start().await
    }

    /// Options for a cluster (3 nodes by default).
    pub fn builder() -> NatsClusterBuilder {
        NatsClusterBuilder::default()
    }

    /// The cluster name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The number of nodes (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Always false: a cluster has at least one node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every node's client URL, in node order.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    /// Node `i`.
    ///
    /// # Panics
    ///
    /// If `i` is out of range.
    pub fn node(&self, i: usize) -> &NatsServer {
        &self.nodes[i]
    }

    /// Node `i`, mutably (to stop, kill or restart it directly; prefer the cluster's own
    /// methods, which wait for the cluster).
    ///
    /// # Panics
    ///
    /// If `i` is out of range.
    pub fn node_mut(&mut self, i: usize) -> &mut NatsServer {
        &mut self.nodes[i]
    }

    /// All nodes.
    pub fn nodes(&self) -> &[NatsServer] {
        &self.nodes
    }

    /// Connects a NATS client that knows every node's URL (it fails over between them).
    ///
    /// # Errors
    ///
    /// [`TestkitError::Nats`] when no node accepts the connection.
    pub async fn client(&self) -> Result<async_nats::Client, TestkitError> {
        async_nats::connect(self.urls())
            .await
            .map_err(|e| TestkitError::nats(format!("connecting to cluster {}", self.name), e))
    }

    /// Stops node `i` gracefully (SIGTERM, then SIGKILL after the stop timeout).
    ///
    /// # Errors
    ///
    /// As [`NatsServer::stop`].
    ///
    /// # Panics
    ///
    /// If `i` is out of range.
    pub async fn stop_node(&mut self, i: usize) -> Result<(), TestkitError> {
        self.nodes[i].stop().await
    }

    /// Kills node `i` with SIGKILL, as in a crash.
    ///
    /// # Errors
    ///
    /// As [`NatsServer::kill`].
    ///
    /// # Panics
    ///
    /// If `i` is out of range.
    pub async fn kill_node(&mut self, i: usize) -> Result<(), TestkitError> {
        self.nodes[i].kill().await
    }

    /// Starts node `i` again (same ports, same store; stopped gracefully first if it runs),
    /// then waits until the cluster is ready with it (see [`Self::wait_ready`]) and the node's
    /// own full `/healthz` is ok. Measured with nats-server 2.15: that happens before the
    /// node's stream replicas hold every message again (catch-up took ~2–3 s after the restart
    /// for a few hundred messages), so to know a stream caught up, wait on
    /// [`NatsServer::stream_state`].
    ///
    /// # Errors
    ///
    /// As [`Self::wait_ready`].
    ///
    /// # Panics
    ///
    /// If `i` is out of range.
    pub async fn restart_node(&mut self, i: usize) -> Result<(), TestkitError> {
        let deadline = Instant::now() + self.startup_timeout;
        self.nodes[i].restart_unready().await?;
        self.wait_ready(self.startup_timeout).await?;
        // The leader's view of a peer can be stale right after a restart; also require the
        // node's own full /healthz (JetStream enabled and meta group current on the node).
        let node = &self.nodes[i];
        let mut backoff = Duration::from_millis(5);
        loop {
            let healthy = node.healthz().await.unwrap_or(false);
            if healthy {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                let message = format!(
                    "cluster {}: restarted node {} not healthy (/healthz) after {:?}",
                    self.name,
                    node.name().unwrap_or("?"),
                    self.startup_timeout
                );
                return Err(self.startup_error(message));
            }
            tokio::time::sleep(backoff.min(deadline - now)).await;
            backoff = (backoff * 2).min(Duration::from_millis(50));
        }
    }

    /// The meta leader's name as seen by the first running node that knows one.
    ///
    /// # Errors
    ///
    /// [`TestkitError::Http`] or [`TestkitError::Json`] from the last node asked.
    pub async fn meta_leader(&self) -> Result<Option<String>, TestkitError> {
        let mut last_err = None;
        for node in self.nodes.iter().filter(|n| n.pid().is_some()) {
            match node.meta_leader().await {
                Ok(Some(leader)) => return Ok(Some(leader)),
                Ok(None) => {}
                Err(e) => last_err = Some(e),
            }
        }
        match last_err {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }

    /// Polls, until `timeout`, for the cluster to be ready: every running node accepts TCP
    /// and answers `/healthz?js-enabled-only=true`, all running nodes name the same meta
    /// leader, and the leader reports every other running node as a current peer.
    ///
    /// # Errors
    ///
    /// [`TestkitError::Startup`] with the last observation and every node's log tail when a
    /// node exits or the deadline passes.
    pub async fn wait_ready(&mut self, timeout: Duration) -> Result<(), TestkitError> {
        let deadline = Instant::now() + timeout;
        let mut backoff = Duration::from_millis(5);
        let mut last;
        loop {
            for node in &mut self.nodes {
                let had_process = node.pid().is_some();
                if had_process && !node.is_running() {
                    let message = format!(
                        "cluster {}: node {} ({}) exited",
                        self.name,
                        node.name().unwrap_or("?"),
                        node.url()
                    );
                    return Err(self.startup_error(message));
                }
            }
            match self.probe_ready().await {
                Ok(()) => return Ok(()),
                Err(observation) => last = observation,
            }
            let now = Instant::now();
            if now >= deadline {
                let message = format!(
                    "cluster {} not ready after {timeout:?}; last check: {last}",
                    self.name
                );
                return Err(self.startup_error(message));
            }
            tokio::time::sleep(backoff.min(deadline - now)).await;
            backoff = (backoff * 2).min(Duration::from_millis(50));
        }
    }

    async fn probe_ready(&self) -> Result<(), String> {
        let running: Vec<&NatsServer> = self.nodes.iter().filter(|n| n.pid().is_some()).collect();
        if running.is_empty() {
            return Err("no node is running".to_owned());
        }
        let mut leaders = Vec::with_capacity(running.len());
        for node in &running {
            let name = node.name().unwrap_or("?");
            node.probe_ready()
                .await
                .map_err(|e| format!("{name}: {e}"))?;
            let leader = node
                .meta_leader()
                .await
                .map_err(|e| format!("{name}: {e}"))?
                .ok_or_else(|| format!("{name}: no meta leader yet"))?;
            leaders.push(leader);
        }
        let leader = leaders[0].clone();
        if leaders.iter().any(|l| *l != leader) {
            return Err(format!("nodes disagree on the meta leader: {leaders:?}"));
        }
        let Some(leader_node) = running.iter().find(|n| n.name() == Some(leader.as_str())) else {
            return Err(format!(
                "meta leader {leader} is not a running node of this cluster"
            ));
        };
        let jsz = leader_node
            .monitor_json("/jsz")
            .await
            .map_err(|e| format!("{leader}: {e}"))?;
        let replicas = jsz["meta_cluster"]["replicas"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for node in running.iter().filter(|n| n.name() != Some(leader.as_str())) {
            let name = node.name().unwrap_or("?");
            let current = replicas
                .iter()
                .any(|r| r["name"].as_str() == Some(name) && r["current"].as_bool() == Some(true));
            if !current {
                return Err(format!(
                    "leader {leader} does not see {name} as a current peer yet"
                ));
            }
        }
        Ok(())
    }

    fn startup_error(&self, message: String) -> TestkitError {
        let mut log_tail = String::new();
        for node in &self.nodes {
            let _ = writeln!(
                log_tail,
                "[{}] {}",
                node.name().unwrap_or("?"),
                node.log_path().display()
            );
            let _ = writeln!(log_tail, "{}", node.log_tail(LOG_TAIL_LINES_PER_NODE));
        }
        TestkitError::Startup {
            message,
            log_paths: self.nodes.iter().map(NatsServer::log_path).collect(),
            log_tail,
        }
    }
}
