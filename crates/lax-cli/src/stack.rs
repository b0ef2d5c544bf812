//! A local LAX stack: a `nats-server` child with JetStream plus the broker in this process.

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
};

use lax_broker::{Broker, BrokerConfig, RunningBroker};

use crate::{
    failure::Failure,
    nats_server::{EmbeddedNats, NatsServerSpec, bind_port},
};

/// How long the broker's shutdown waits for calls still running.
const BROKER_SHUTDOWN_TIMEOUT_MS: u64 = 5_000;

/// Where the stack listens and keeps its data; port 0 picks a free port.
#[derive(Debug, Clone)]
pub(crate) struct StackSpec {
    pub(crate) host: IpAddr,
    pub(crate) nats_port: u16,
    pub(crate) monitor_port: u16,
    pub(crate) grpc_port: u16,
    pub(crate) metrics_port: u16,
    pub(crate) data_dir: PathBuf,
}

/// The running stack.
#[derive(Debug)]
pub(crate) struct LocalStack {
    nats: EmbeddedNats,
    broker: RunningBroker,
}

impl LocalStack {
    /// Binds the broker's ports (so a taken one fails before anything starts), starts
    /// `nats-server` and waits for it, then starts the broker with one replica for the
    /// replicated tier (a single node has no more).
    pub(crate) async fn start(spec: &StackSpec) -> Result<Self, Failure> {
        let grpc = listener(bind_port(spec.host, spec.grpc_port, "gRPC", "--grpc-port")?)?;
        let metrics = listener(bind_port(
            spec.host,
            spec.metrics_port,
            "metrics",
            "--metrics-port",
        )?)?;
        let nats = EmbeddedNats::start(&NatsServerSpec {
            host: spec.host,
            port: spec.nats_port,
            monitor_port: spec.monitor_port,
            data_dir: spec.data_dir.clone(),
        })
        .await?;
        let mut config = BrokerConfig::new([nats.url()]);
        config.replicated_replicas = 1;
        config.shutdown_timeout_ms = BROKER_SHUTDOWN_TIMEOUT_MS;
        let started = Broker::builder(config)
            .grpc_listener(grpc)
            .metrics_listener(metrics)
            .start()
            .await;
        match started {
            Ok(broker) => Ok(LocalStack { nats, broker }),
            Err(error) => {
                if let Err(stop) = nats.stop().await {
                    tracing::warn!(%stop, "stopping nats-server after the broker failed");
                }
                Err(error.into())
            }
        }
    }

    /// The NATS URL.
    pub(crate) fn nats_url(&self) -> String {
        self.nats.url()
    }

    /// The NATS monitoring base URL.
    pub(crate) fn nats_monitor_url(&self) -> String {
        self.nats.monitor_url()
    }

    /// The `nats-server` process id.
    pub(crate) fn nats_pid(&self) -> u32 {
        self.nats.pid()
    }

    /// The broker's gRPC address.
    pub(crate) fn grpc_addr(&self) -> SocketAddr {
        self.broker.grpc_addr()
    }

    /// The broker's Prometheus endpoint.
    pub(crate) fn metrics_url(&self) -> String {
        match self.broker.metrics_addr() {
            Some(addr) => format!("http://{addr}/metrics"),
            None => "(off)".to_owned(),
        }
    }

    /// Runs until `signal` completes, then stops the broker and then `nats-server`. Fails when
    /// `nats-server` or the broker stops on its own first.
    pub(crate) async fn run_until(self, signal: impl Future<Output = ()>) -> Result<(), Failure> {
        let LocalStack { mut nats, broker } = self;
        let mut nats_died = None;
        let served = broker
            .run_until(async {
                tokio::select! {
                    () = signal => {}
                    failure = nats.exited() => nats_died = Some(failure),
                }
            })
            .await;
        let stopped = nats.stop().await;
        if let Some(failure) = nats_died {
            return Err(failure);
        }
        served?;
        stopped
    }

    /// Stops the broker, then `nats-server`.
    pub(crate) async fn stop(self) -> Result<(), Failure> {
        let served = self.broker.shutdown().await;
        let stopped = self.nats.stop().await;
        served?;
        stopped
    }
}

fn listener(listener: std::net::TcpListener) -> Result<tokio::net::TcpListener, Failure> {
    listener
        .set_nonblocking(true)
        .and_then(|()| tokio::net::TcpListener::from_std(listener))
        .map_err(|e| Failure::runtime(format!("cannot set up a listening socket: {e}")))
}
