//! `lax_core`'s conformance suite against a real nats-server, observed by an independent core
//! NATS subscription.

mod common;

use async_nats::client::RequestErrorKind;
use futures::StreamExt;
use lax_core::{
    PublishOptions,
    testing::conformance::{self, Harness, Observer, ReceivedMessage},
};
use lax_testkit::NatsServer;
use lax_transport_nats::{DirectMessage, NatsPublisher};

struct NatsHarness {
    server: NatsServer,
    observer: async_nats::Client,
}

impl Harness for NatsHarness {
    type Publisher = NatsPublisher;

    async fn publisher(&self) -> NatsPublisher {
        NatsPublisher::connect(common::options(self.server.url()))
            .await
            .expect("connect")
    }

    async fn observe(&self, prefix: &str) -> Observer {
        let mut subscriber = self
            .observer
            .subscribe(format!("{prefix}.>"))
            .await
            .expect("subscribe");
        // A request nobody answers comes back as "no responders" only after the server has
        // processed everything sent before it on this connection, the SUB included.
        let probe = self
            .observer
            .request(self.observer.new_inbox(), "".into())
            .await;
        assert_eq!(
            probe.expect_err("nobody answers the probe").kind(),
            RequestErrorKind::NoResponders
        );
        let (tx, observer) = Observer::channel();
        tokio::spawn(async move {
            while let Some(message) = subscriber.next().await {
                let message = DirectMessage::from(message);
                let received = ReceivedMessage {
                    subject: message.subject,
                    payload: message.payload,
                    headers: message.headers,
                    message_id: message.message_id,
                };
                if tx.send(received).is_err() {
                    break;
                }
            }
        });
        observer
    }

    fn options(&self) -> PublishOptions {
        PublishOptions::default()
    }
}

#[tokio::test]
async fn nats_publisher_passes_the_conformance_suite() {
    let server = common::server().await;
    let observer = server.client().await.expect("observer connects");
    let harness = NatsHarness { server, observer };
    conformance::run(&harness).await;
}
