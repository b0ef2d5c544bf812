//! A real nats-server with JetStream, the in-process LAX broker, and client options for both.

#![allow(dead_code, reason = "each test file uses a different part")]

use std::{net::SocketAddr, time::Duration};

use async_nats::jetstream;
use lax_broker::{Broker, BrokerConfig, RunningBroker};
use lax_client::{
    ClientOptions, LaxClient, ReceivedMessage, StartPosition, SubscribeOptions, Tier,
    admin::StreamConfig,
};
use lax_testkit::NatsServer;
use tokio::sync::mpsc;

pub(crate) const DEADLINE: Duration = Duration::from_secs(30);

pub(crate) struct Env {
    pub(crate) nats: NatsServer,
    pub(crate) js: jetstream::Context,
    pub(crate) core: async_nats::Client,
    broker: Option<RunningBroker>,
    pub(crate) broker_addr: SocketAddr,
}

impl Env {
    pub(crate) async fn start() -> Env {
        let nats = NatsServer::start().await.expect("nats-server starts");
        let core = async_nats::connect(nats.url())
            .await
            .expect("connect to NATS");
        let js = jetstream::new(core.clone());
        let broker = start_broker(&nats.url(), "127.0.0.1:0".parse().unwrap()).await;
        let broker_addr = broker.grpc_addr();
        Env {
            nats,
            js,
            core,
            broker: Some(broker),
            broker_addr,
        }
    }

    /// Options pointing at this NATS and broker, with a small pool and short delays.
    pub(crate) fn options(&self) -> ClientOptions {
        ClientOptions::builder()
            .nats_urls([self.nats.url()])
            .broker_addr(format!("http://{}", self.broker_addr))
            .connection_pool_size(2)
            .retry_initial_delay(Duration::from_millis(20))
            .retry_max_delay(Duration::from_millis(100))
            .build()
            .expect("valid options")
    }

    /// A core subscription the server has registered: `flush` only empties the client's
    /// write buffer, so a request answered by the server's "no responders" proves the `SUB`
    /// was processed before anyone publishes.
    pub(crate) async fn subscribe(&self, subject: &str) -> async_nats::Subscriber {
        let subscriber = self
            .core
            .subscribe(subject.to_owned())
            .await
            .expect("subscribe");
        let probe = format!("_LAX.sync.{}", lax_core::new_message_id());
        match self.core.request(probe, "".into()).await {
            Err(e) if e.kind() == async_nats::client::RequestErrorKind::NoResponders => subscriber,
            other => panic!("round trip to the server failed: {other:?}"),
        }
    }

    /// Messages held by stream `name`.
    pub(crate) async fn count(&self, name: &str) -> u64 {
        let mut stream = self.js.get_stream(name).await.expect("stream exists");
        stream.info().await.expect("stream info").state.messages
    }

    /// Shuts the broker down.
    pub(crate) async fn stop_broker(&mut self) {
        if let Some(broker) = self.broker.take() {
            broker.shutdown().await.expect("broker shuts down");
        }
    }

    /// Starts a new broker on the old one's address.
    pub(crate) async fn restart_broker(&mut self) {
        assert!(self.broker.is_none(), "stop the broker first");
        self.broker = Some(start_broker(&self.nats.url(), self.broker_addr).await);
    }
}

/// Creates the persistent stream `name` on `subject` through the broker.
pub(crate) async fn create_stream(client: &LaxClient, name: &str, subject: &str) {
    client
        .admin()
        .unwrap()
        .create_stream(name, StreamConfig::new([subject]).tier(Tier::Persistent))
        .await
        .expect("stream created");
}

async fn start_broker(nats_url: &str, listen: SocketAddr) -> RunningBroker {
    let mut config = BrokerConfig::single_node([nats_url]);
    config.listen = listen;
    config.no_metrics = true;
    config.shutdown_timeout_ms = 5_000;
    Broker::start(config).await.expect("broker starts")
}

/// Processes `subject` through the broker in the background, sending each message handled.
pub(crate) async fn process_in_background(
    client: &LaxClient,
    subject: &str,
) -> mpsc::UnboundedReceiver<ReceivedMessage> {
    let subscription = client
        .subscribe(
            subject,
            SubscribeOptions::default().start(StartPosition::First),
        )
        .await
        .expect("subscribe");
    let (handled, receiver) = mpsc::unbounded_channel();
    tokio::spawn(subscription.process(move |message| {
        let handled = handled.clone();
        async move { handled.send(message).map_err(|_| "test over") }
    }));
    receiver
}

/// The next message handled by [`process_in_background`], within [`DEADLINE`].
pub(crate) async fn next(
    receiver: &mut mpsc::UnboundedReceiver<ReceivedMessage>,
) -> ReceivedMessage {
    tokio::time::timeout(DEADLINE, receiver.recv())
        .await
        .expect("a message within the deadline")
        .expect("the handler runs")
}

/// The NATS server has registered every subscription this client made: its "no
/// responders" answer to a request comes after them.
pub(crate) async fn subscriptions_registered(client: &LaxClient) {
    let probe = format!("_LAX.sync.{}", lax_core::new_message_id());
    let answer = client.nats().client().request(probe, "".into()).await;
    assert!(
        matches!(&answer, Err(e) if e.kind() == async_nats::client::RequestErrorKind::NoResponders),
        "{answer:?}"
    );
}
