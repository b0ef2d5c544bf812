//! A real nats-server with JetStream and the in-process LAX broker in front of it.

use std::{net::SocketAddr, time::Duration};

use async_nats::jetstream::{
    self,
    stream::{Config, StorageType},
};
use lax_broker::{Broker, BrokerConfig, RunningBroker};
use lax_testkit::{NatsServer, create_stream_with_retry};
use lax_transport_grpc::GrpcOptions;

/// NATS, a JetStream context on it and a broker.
pub(crate) struct Env {
    pub(crate) nats: NatsServer,
    pub(crate) js: jetstream::Context,
    pub(crate) broker: Option<RunningBroker>,
    pub(crate) grpc_addr: SocketAddr,
}

impl Env {
    pub(crate) async fn start() -> Env {
        let nats = NatsServer::start().await.expect("nats-server starts");
        let js = jetstream::new(
            async_nats::connect(nats.url())
                .await
                .expect("connect to NATS"),
        );
        let broker = start_broker(&nats.url(), "127.0.0.1:0".parse().unwrap()).await;
        let grpc_addr = broker.grpc_addr();
        Env {
            nats,
            js,
            broker: Some(broker),
            grpc_addr,
        }
    }

    /// Client options for this broker.
    pub(crate) fn options(&self, pool: usize) -> GrpcOptions {
        GrpcOptions::new([format!("http://{}", self.grpc_addr)]).connection_pool_size(pool)
    }

    /// Creates a file-storage stream capturing `subjects`.
    pub(crate) async fn stream(&self, name: &str, subjects: &[&str]) -> jetstream::stream::Stream {
        let config = Config {
            name: name.into(),
            subjects: subjects.iter().map(|s| (*s).to_owned()).collect(),
            storage: StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        };
        create_stream_with_retry(&self.js, config, Duration::from_secs(10))
            .await
            .expect("stream created")
    }

    /// Messages held by stream `name`.
    pub(crate) async fn count(&self, name: &str) -> u64 {
        let mut stream = self.js.get_stream(name).await.expect("stream exists");
        stream.info().await.expect("stream info").state.messages
    }

    /// Shuts the broker down (it answers what it read, then ends every stream).
    pub(crate) async fn stop_broker(&mut self) {
        if let Some(broker) = self.broker.take() {
            // A shutdown that had to cut calls short still stopped the broker.
            let _ = broker.shutdown().await;
        }
    }

    /// Starts a new broker on the old one's address.
    pub(crate) async fn restart_broker(&mut self) {
        assert!(self.broker.is_none(), "stop the broker first");
        self.broker = Some(start_broker(&self.nats.url(), self.grpc_addr).await);
    }
}

async fn start_broker(nats_url: &str, listen: SocketAddr) -> RunningBroker {
    let mut config = BrokerConfig::single_node([nats_url]);
    config.listen = listen;
    config.no_metrics = true;
    config.shutdown_timeout_ms = 5_000;
    Broker::start(config).await.expect("broker starts")
}
