//! Running the broker securely: TLS and mutual TLS on the gRPC port, the bearer token, and
//! credentials and TLS toward NATS. Real nats-servers; certificates made at test time.

mod common;

use std::path::Path;

use common::{WAIT, init_tracing, request, test_config};
use lax_broker::{Broker, BrokerConfig, BrokerError, RunningBroker};
use lax_proto::broker::v1::{
    GetStreamInfoRequest, broker_service_client::BrokerServiceClient,
    stream_manager_client::StreamManagerClient,
};
use lax_testkit::{NatsServer, TestPki};
use tonic::{
    Code, Request, Status,
    metadata::AsciiMetadataValue,
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

async fn nats_with<I: IntoIterator<Item = S>, S: Into<String>>(args: I) -> NatsServer {
    init_tracing();
    NatsServer::builder()
        .args(args)
        .start()
        .await
        .expect("nats-server starts")
}

async fn broker(nats: &NatsServer, adjust: impl FnOnce(&mut BrokerConfig)) -> RunningBroker {
    let mut config = test_config(vec![nats.url()]);
    config.no_metrics = true;
    adjust(&mut config);
    Broker::start(config).await.expect("broker starts")
}

async fn start_error(nats: &NatsServer, adjust: impl FnOnce(&mut BrokerConfig)) -> BrokerError {
    let mut config = test_config(vec![nats.url()]);
    config.no_metrics = true;
    adjust(&mut config);
    Broker::start(config)
        .await
        .expect_err("the broker refuses to start")
}

fn serve_tls(pki: &TestPki) -> impl FnOnce(&mut BrokerConfig) + '_ {
    |config| {
        config.tls_cert = Some(pki.server_cert().to_owned());
        config.tls_key = Some(pki.server_key().to_owned());
    }
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).expect("read PEM file")
}

/// TLS trusting `ca`, optionally presenting the client certificate of `identity`.
fn client_tls(ca: &Path, identity: Option<&TestPki>) -> ClientTlsConfig {
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca)));
    match identity {
        Some(pki) => tls.identity(Identity::from_pem(
            read(pki.client_cert()),
            read(pki.client_key()),
        )),
        None => tls,
    }
}

/// A channel to the broker over `tls` (plaintext for `None`).
async fn channel(
    broker: &RunningBroker,
    tls: Option<ClientTlsConfig>,
) -> Result<Channel, tonic::transport::Error> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    let endpoint = Channel::from_shared(format!("{scheme}://{}", broker.grpc_addr()))
        .expect("valid URI")
        .connect_timeout(WAIT);
    let endpoint = match tls {
        Some(tls) => endpoint.tls_config(tls)?,
        None => endpoint,
    };
    endpoint.connect().await
}

/// One acked publish over a fresh channel; any failure on the way is the error.
async fn publish_over(broker: &RunningBroker, tls: Option<ClientTlsConfig>) -> Result<(), String> {
    let channel = channel(broker, tls).await.map_err(|e| format!("{e:?}"))?;
    tokio::time::timeout(
        WAIT,
        BrokerServiceClient::new(channel).publish(request("secure.hello", "hi", "persistent")),
    )
    .await
    .map_err(|_| "the publish hung".to_owned())?
    .map(drop)
    .map_err(|status| format!("{status:?}"))
}

/// An interceptor adding `authorization: <header>` (nothing for `None`).
fn authorization(
    header: Option<&str>,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone + use<> {
    let value = header.map(|h| AsciiMetadataValue::try_from(h).expect("header value"));
    move |mut request: Request<()>| {
        if let Some(value) = &value {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

async fn health(channel: Channel, service: &str) -> Result<i32, Status> {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .map(|r| r.into_inner().status)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_broker_serves_clients_that_trust_its_ca_and_no_others() {
    let nats = nats_with(Vec::<String>::new()).await;
    let pki = TestPki::generate().expect("test certificates");
    let broker = broker(&nats, serve_tls(&pki)).await;

    publish_over(&broker, Some(client_tls(pki.ca_cert(), None)))
        .await
        .expect("a client trusting the CA publishes");

    let error = publish_over(&broker, None)
        .await
        .expect_err("a plaintext client gets nowhere");
    assert!(!error.is_empty());

    let stranger = TestPki::generate().expect("another CA");
    publish_over(&broker, Some(client_tls(stranger.ca_cert(), None)))
        .await
        .expect_err("a client trusting another CA refuses the broker");

    // The metrics endpoint is not part of this: health over TLS reports the broker.
    let channel = channel(&broker, Some(client_tls(pki.ca_cert(), None)))
        .await
        .unwrap();
    assert_eq!(
        health(channel, "broker.v1.BrokerService").await.unwrap(),
        ServingStatus::Serving as i32
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_requires_a_client_certificate_from_the_client_ca() {
    let nats = nats_with(Vec::<String>::new()).await;
    let pki = TestPki::generate().expect("test certificates");
    let broker = broker(&nats, |config| {
        serve_tls(&pki)(config);
        config.tls_client_ca = Some(pki.ca_cert().to_owned());
    })
    .await;

    publish_over(&broker, Some(client_tls(pki.ca_cert(), Some(&pki))))
        .await
        .expect("a client with a certificate from the client CA publishes");

    publish_over(&broker, Some(client_tls(pki.ca_cert(), None)))
        .await
        .expect_err("a client without a certificate is refused");

    let stranger = TestPki::generate().expect("another CA");
    publish_over(&broker, Some(client_tls(pki.ca_cert(), Some(&stranger))))
        .await
        .expect_err("a client certificate from another CA is refused");
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bearer_token_guards_the_broker_services_but_not_health() {
    let nats = nats_with(Vec::<String>::new()).await;
    let broker = broker(&nats, |config| {
        config.auth_token = Some("s3cret-t0ken".into())
    })
    .await;
    let channel = channel(&broker, None).await.unwrap();

    for (header, what) in [
        (None, "no token"),
        (Some("Bearer wrong"), "a wrong token"),
        (Some("Bearer s3cret-t0ke"), "a prefix of the token"),
        (Some("Basic s3cret-t0ken"), "another scheme"),
    ] {
        let mut client =
            BrokerServiceClient::with_interceptor(channel.clone(), authorization(header));
        let status = client
            .publish(request("secure.hello", "hi", "persistent"))
            .await
            .expect_err(what);
        assert_eq!(status.code(), Code::Unauthenticated, "{what}: {status:?}");
        assert_eq!(status.message(), "missing or wrong bearer token", "{what}");
    }

    let right = authorization(Some("Bearer s3cret-t0ken"));
    let mut client = BrokerServiceClient::with_interceptor(channel.clone(), right.clone());
    let ack = client
        .publish(request("secure.hello", "hi", "persistent"))
        .await
        .expect("the right token publishes")
        .into_inner();

    // Streaming calls are refused before their first message.
    let mut anonymous = BrokerServiceClient::new(channel.clone());
    let status = anonymous
        .stream_publish(futures::stream::iter([request(
            "secure.s",
            "x",
            "persistent",
        )]))
        .await
        .expect_err("StreamPublish without a token");
    assert_eq!(status.code(), Code::Unauthenticated);

    let stream_info = GetStreamInfoRequest {
        name: ack.stream.clone(),
        ..Default::default()
    };
    let status = StreamManagerClient::new(channel.clone())
        .get_stream_info(stream_info.clone())
        .await
        .expect_err("StreamManager without a token");
    assert_eq!(status.code(), Code::Unauthenticated);
    StreamManagerClient::with_interceptor(channel.clone(), right)
        .get_stream_info(stream_info)
        .await
        .expect("StreamManager with the token");

    assert_eq!(
        health(channel.clone(), "")
            .await
            .expect("health needs no token"),
        ServingStatus::Serving as i32
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_authenticates_to_nats_with_user_and_password() {
    let nats = nats_with(["--user", "lax", "--pass", "nats-pw"]).await;
    let broker = broker(&nats, |config| {
        config.nats_user = Some("lax".into());
        config.nats_password = Some("nats-pw".into());
    })
    .await;
    publish_over(&broker, None)
        .await
        .expect("publishes through an authenticated connection");
    broker.shutdown().await.unwrap();

    for (password, what) in [
        (Some("wrong-pw"), "a wrong password"),
        (None, "no credentials"),
    ] {
        let error = start_error(&nats, |config| {
            if let Some(password) = password {
                config.nats_user = Some("lax".into());
                config.nats_password = Some(password.into());
            }
        })
        .await;
        let message = error.to_string();
        assert!(
            matches!(error, BrokerError::Nats { .. }),
            "{what}: {message}"
        );
        assert!(
            message.contains("NATS refused the broker's credentials"),
            "{what}: {message}"
        );
        assert!(
            !message.contains("wrong-pw"),
            "the password is not echoed: {message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_authenticates_to_nats_with_a_token() {
    let nats = nats_with(["--auth", "nats-t0ken"]).await;
    let broker = broker(&nats, |config| {
        config.nats_token = Some("nats-t0ken".into())
    })
    .await;
    publish_over(&broker, None)
        .await
        .expect("publishes through a token-authenticated connection");
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_talks_tls_to_nats() {
    let pki = TestPki::generate().expect("test certificates");
    let args = pki.nats_server_args(true);
    let nats = nats_with(args).await;
    let broker = broker(&nats, |config| {
        config.nats_tls_ca = Some(pki.ca_cert().to_owned());
        config.nats_tls_cert = Some(pki.client_cert().to_owned());
        config.nats_tls_key = Some(pki.client_key().to_owned());
    })
    .await;
    publish_over(&broker, None)
        .await
        .expect("publishes over mutual TLS to NATS");
    broker.shutdown().await.unwrap();

    let error = start_error(&nats, |_| {}).await;
    assert!(
        error.to_string().contains("TLS with NATS failed"),
        "without the CA: {error}"
    );
    let error = start_error(&nats, |config| {
        config.nats_tls_ca = Some(pki.ca_cert().to_owned());
    })
    .await;
    assert!(
        error.to_string().contains("TLS with NATS failed"),
        "without a client certificate: {error}"
    );
}

#[tokio::test]
async fn bad_security_settings_stop_the_start_with_a_config_error() {
    let pki = TestPki::generate().expect("test certificates");
    // Nothing listens here: every case must fail before connecting.
    let config = || BrokerConfig::single_node(["nats://127.0.0.1:1"]);
    let cases: Vec<(&str, BrokerConfig, &str)> = vec![
        (
            "cert without key",
            config().tls_cert(pki.server_cert()),
            "--tls-cert and --tls-key go together",
        ),
        (
            "missing cert file",
            config()
                .tls_cert(pki.dir().join("absent.pem"))
                .tls_key(pki.server_key()),
            "cannot read --tls-cert",
        ),
        (
            "key and cert swapped",
            config()
                .tls_cert(pki.server_key())
                .tls_key(pki.server_cert()),
            "holds no PEM certificate",
        ),
        (
            "two NATS auth methods",
            config().nats_token("t").nats_user("u").nats_password("p"),
            "at most one NATS authentication method",
        ),
    ];
    for (what, config, expected) in cases {
        match Broker::start(config).await {
            Err(BrokerError::Config(message)) => {
                assert!(message.contains(expected), "{what}: {message}");
            }
            other => panic!("{what}: expected a config error, got {other:?}"),
        }
    }
}
