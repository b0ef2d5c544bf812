//! The transport's TLS, mutual TLS and bearer token against a real broker that requires them.

use std::time::Duration;

use lax_broker::{Broker, BrokerConfig, RunningBroker};
use lax_core::{Error, ErrorKind, PublishRequest, Publisher, Receipt, Tier};
use lax_testkit::{NatsServer, TestPki};
use lax_transport_grpc::{GrpcOptions, GrpcPublisher, PublishMode, TlsOptions};

const TOKEN: &str = "grpc-s3cret";

/// NATS and a broker serving TLS (and mutual TLS when `client_ca`) and requiring [`TOKEN`].
struct SecureBroker {
    broker: RunningBroker,
    pki: TestPki,
    // Declared last, so dropped last: the broker needs NATS until it stops.
    _nats: NatsServer,
}

impl SecureBroker {
    async fn start(client_ca: bool) -> SecureBroker {
        let nats = NatsServer::start().await.expect("nats-server starts");
        let pki = TestPki::generate().expect("test certificates");
        let mut config = BrokerConfig::single_node([nats.url()]);
        config.no_metrics = true;
        config.tls_cert = Some(pki.server_cert().to_owned());
        config.tls_key = Some(pki.server_key().to_owned());
        config.tls_client_ca = client_ca.then(|| pki.ca_cert().to_owned());
        config.auth_token = Some(TOKEN.into());
        let broker = Broker::start(config).await.expect("broker starts");
        SecureBroker {
            broker,
            pki,
            _nats: nats,
        }
    }

    /// Options trusting the test CA, verifying the certificate as `localhost`, with `token`.
    fn options(&self, mode: PublishMode, token: Option<&str>) -> GrpcOptions {
        let mut options = GrpcOptions::new([format!(
            "https://127.0.0.1:{}",
            self.broker.grpc_addr().port()
        )])
        .mode(mode)
        .connection_pool_size(2)
        .connect_timeout(Duration::from_secs(5))
        .tls(
            TlsOptions::default()
                .ca_file(self.pki.ca_cert())
                .domain("localhost"),
        );
        options.auth_token = token.map(str::to_owned);
        options
    }

    async fn stop(self) {
        self.broker.shutdown().await.expect("broker shuts down");
    }
}

fn persistent(subject: &str) -> PublishRequest {
    PublishRequest::new(subject, "secret payload")
        .with_tier(Tier::Persistent)
        .with_ack(true)
}

/// Connects and publishes one message: the receipt, or the first error on the way.
async fn connect_and_publish(options: GrpcOptions) -> Result<Receipt, Error> {
    let publisher = GrpcPublisher::connect(options).await?;
    let receipt = publisher.publish(persistent("secure.orders")).await;
    publisher.close().await?;
    receipt
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_are_acked_over_tls_with_the_token_in_both_modes() {
    let env = SecureBroker::start(false).await;
    for mode in [PublishMode::Stream, PublishMode::Unary] {
        let receipt = connect_and_publish(env.options(mode, Some(TOKEN)))
            .await
            .unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        let ack = receipt.ack.expect("an acked publish");
        assert_eq!(ack.stream, "SECURE", "{mode:?}");
        assert!(ack.sequence >= 1 && !ack.duplicate, "{mode:?}: {ack:?}");
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_token_is_rejected() {
    let env = SecureBroker::start(false).await;
    for token in [None, Some("not-the-token")] {
        // A unary publisher connects (the token is checked per call); its publish is refused.
        let publisher = GrpcPublisher::connect(env.options(PublishMode::Unary, token))
            .await
            .expect("the TLS connection is fine");
        let error = publisher
            .publish(persistent("secure.orders"))
            .await
            .expect_err("no publish without the token");
        assert_eq!(error.kind(), ErrorKind::Rejected, "{token:?}: {error}");
        assert!(error.message().contains("bearer token"), "{error}");
        publisher.close().await.expect("close");

        // In stream mode the refusal comes when the publish stream opens.
        let error = connect_and_publish(env.options(PublishMode::Stream, token))
            .await
            .expect_err("no stream without the token");
        assert_eq!(
            error.kind(),
            ErrorKind::Rejected,
            "stream {token:?}: {error}"
        );
    }
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_signed_by_an_unknown_ca_or_a_plaintext_client_gets_nowhere() {
    let env = SecureBroker::start(false).await;
    let stranger = TestPki::generate().expect("another CA");
    let mut untrusting = env.options(PublishMode::Unary, Some(TOKEN));
    untrusting.tls = Some(TlsOptions::default().ca_file(stranger.ca_cert().to_owned()));
    let error = connect_and_publish(untrusting)
        .await
        .expect_err("the broker's certificate is not trusted");
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");

    let plaintext = GrpcOptions::new([format!("http://{}", env.broker.grpc_addr())])
        .mode(PublishMode::Unary)
        .auth_token(TOKEN)
        .connect_timeout(Duration::from_secs(5));
    let error = connect_and_publish(plaintext)
        .await
        .expect_err("a plaintext client cannot talk to a TLS broker");
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
    env.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_with_a_client_certificate() {
    let env = SecureBroker::start(true).await;
    let mut options = env.options(PublishMode::Stream, Some(TOKEN));
    if let Some(tls) = &mut options.tls {
        tls.client_cert_file = Some(env.pki.client_cert().to_owned());
        tls.client_key_file = Some(env.pki.client_key().to_owned());
    }
    connect_and_publish(options)
        .await
        .expect("a client with a certificate from the client CA publishes");

    let error = connect_and_publish(env.options(PublishMode::Unary, Some(TOKEN)))
        .await
        .expect_err("a client without a certificate is refused");
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
    env.stop().await;
}
