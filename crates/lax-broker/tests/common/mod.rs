//! Shared set-up for the broker's integration tests: a real nats-server, an in-process
//! broker on free ports, and tonic clients generated from `broker.v1`.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use lax_broker::{Broker, BrokerConfig, RunningBroker};
use lax_proto::broker::v1::{
    PublishOptions, PublishRequest, broker_service_client::BrokerServiceClient,
    stream_manager_client::StreamManagerClient,
};
use lax_testkit::NatsServer;
use tonic::transport::Channel;

/// Generous bound for anything a test waits on.
pub const WAIT: Duration = Duration::from_secs(30);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// A broker config for tests: loopback, free ports, single-node replicas.
pub fn test_config(urls: Vec<String>) -> BrokerConfig {
    BrokerConfig::single_node(urls)
}

pub struct Harness {
    pub nats: NatsServer,
    pub broker: RunningBroker,
    pub client: BrokerServiceClient<Channel>,
    pub streams: StreamManagerClient<Channel>,
}

impl Harness {
    pub async fn start() -> Harness {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut BrokerConfig)) -> Harness {
        init_tracing();
        let nats = NatsServer::start().await.expect("nats-server starts");
        let mut config = test_config(vec![nats.url()]);
        adjust(&mut config);
        let broker = Broker::start(config).await.expect("broker starts");
        let (client, streams) = clients(&broker).await;
        Harness {
            nats,
            broker,
            client,
            streams,
        }
    }

    /// A plain NATS client on the same server, for looking behind the broker.
    pub async fn nats_client(&self) -> async_nats::Client {
        self.nats.client().await.expect("NATS client connects")
    }

    pub async fn stream_messages(&self, stream: &str) -> u64 {
        stream_messages(&self.nats, stream).await
    }
}

/// How many messages `stream` holds on `nats` (also once the harness's broker is gone).
pub async fn stream_messages(nats: &NatsServer, stream: &str) -> u64 {
    let js = async_nats::jetstream::new(nats.client().await.expect("NATS client connects"));
    let mut stream = js.get_stream(stream).await.expect("stream exists");
    stream.info().await.expect("stream info").state.messages
}

pub async fn clients(
    broker: &RunningBroker,
) -> (BrokerServiceClient<Channel>, StreamManagerClient<Channel>) {
    let channel = Channel::from_shared(format!("http://{}", broker.grpc_addr()))
        .unwrap()
        .connect()
        .await
        .expect("gRPC connects");
    (
        BrokerServiceClient::new(channel.clone()),
        StreamManagerClient::new(channel),
    )
}

pub fn request(subject: &str, payload: &str, tier: &str) -> PublishRequest {
    PublishRequest {
        subject: subject.into(),
        payload: payload.to_owned().into(),
        options: Some(PublishOptions {
            tier: tier.into(),
            require_ack: true,
            ..Default::default()
        }),
        ..Default::default()
    }
}
