//! Authentication and TLS against real nats-servers.

mod common;

use common::{DEADLINE, options};
use futures::StreamExt;
use lax_core::{ErrorKind, PublishRequest, Publisher};
use lax_testkit::{NatsServer, TestPki};
use lax_transport_nats::{
    ConnectionEvent, ConnectionState, NatsAuth, NatsOptions, NatsPublisher, NatsTls,
};

async fn server_with<I: IntoIterator<Item = S>, S: Into<String>>(args: I) -> NatsServer {
    NatsServer::builder()
        .jetstream(false)
        .args(args)
        .start()
        .await
        .expect("nats-server starts")
}

/// Connects, publishes one message, sees it come back on a subscription, and closes.
async fn publish_round_trip(options: NatsOptions) {
    let publisher = NatsPublisher::connect(options).await.expect("connect");
    publish_round_trip_on(&publisher).await;
    publisher.close().await.expect("close");
}

/// Publishes one message and sees it come back on a subscription.
async fn publish_round_trip_on(publisher: &NatsPublisher) {
    let mut subscription = publisher
        .subscribe("secure.>", None)
        .await
        .expect("subscribe");
    let receipt = publisher
        .publish(PublishRequest::new("secure.hello", "hi"))
        .await
        .expect("publish");
    let message = tokio::time::timeout(DEADLINE, subscription.next())
        .await
        .expect("message in time")
        .expect("subscription open");
    assert_eq!(message.message_id, Some(receipt.message_id));
}

async fn refused(options: NatsOptions) -> lax_core::Error {
    NatsPublisher::connect(options)
        .await
        .expect_err("the server refuses the connection")
}

#[tokio::test]
async fn user_and_password() {
    let server = server_with(["--user", "alice", "--pass", "s3cret"]).await;
    let with = |auth: NatsAuth| options(server.url()).auth(auth);
    publish_round_trip(with(NatsAuth::user_password("alice", "s3cret"))).await;

    let error = refused(with(NatsAuth::user_password("alice", "wrong"))).await;
    assert_eq!(error.kind(), ErrorKind::Rejected, "{error}");
    assert!(
        error.message().contains("refused the credentials"),
        "{error}"
    );
    assert!(
        !error.to_string().contains("wrong"),
        "the password is not echoed: {error}"
    );
    assert_eq!(
        refused(with(NatsAuth::default())).await.kind(),
        ErrorKind::Rejected
    );
}

#[tokio::test]
async fn token() {
    let server = server_with(["--auth", "t0ken-abc"]).await;
    let with = |auth: NatsAuth| options(server.url()).auth(auth);
    publish_round_trip(with(NatsAuth::token("t0ken-abc"))).await;
    let error = refused(with(NatsAuth::token("not-it"))).await;
    assert_eq!(error.kind(), ErrorKind::Rejected, "{error}");
    assert!(
        error.message().contains("refused the credentials"),
        "{error}"
    );
}

#[tokio::test]
async fn nkey() {
    let user = nkeys::KeyPair::new_user();
    let server = NatsServer::builder()
        .jetstream(false)
        .config(format!(
            "authorization {{ users = [ {{ nkey: \"{}\" }} ] }}",
            user.public_key()
        ))
        .start()
        .await
        .expect("nats-server starts");
    let seed = user.seed().expect("user seed");
    publish_round_trip(options(server.url()).auth(NatsAuth::nkey_seed(seed))).await;

    let stranger = nkeys::KeyPair::new_user().seed().expect("another seed");
    let error = refused(options(server.url()).auth(NatsAuth::nkey_seed(stranger))).await;
    assert_eq!(error.kind(), ErrorKind::Rejected, "{error}");
}

#[tokio::test]
async fn a_permission_violation_is_reported_as_an_event_and_the_connection_stays_up() {
    let server = NatsServer::builder()
        .jetstream(false)
        .config(
            r#"authorization { users = [ { user: app, password: pw,
                permissions: { publish: { deny: ["secret.>"] } } } ] }"#,
        )
        .start()
        .await
        .expect("nats-server starts");
    let publisher =
        NatsPublisher::connect(options(server.url()).auth(NatsAuth::user_password("app", "pw")))
            .await
            .expect("connect");
    let mut events = publisher.events();
    // Core NATS does not answer a publish: the refusal arrives later, as an event.
    publisher
        .publish(PublishRequest::new("secret.plans", "x"))
        .await
        .expect("handed to the connection");
    let violation = tokio::time::timeout(DEADLINE, async {
        loop {
            match events.recv().await.expect("events open") {
                ConnectionEvent::PermissionViolation(message) => break message,
                _ => continue,
            }
        }
    })
    .await
    .expect("a permission violation event");
    assert!(violation.contains("secret.plans"), "{violation}");
    assert_eq!(
        ConnectionEvent::PermissionViolation(violation).error_type(),
        Some("permission_violation")
    );
    assert_eq!(publisher.state(), ConnectionState::Connected);
    // Once the server has said so, a publish there is refused at once: a permission error,
    // never a timeout, and nothing a breaker counts.
    let refused = publisher
        .publish(PublishRequest::new("secret.plans", "x"))
        .await
        .expect_err("the server refused this subject");
    assert_eq!(refused.kind(), ErrorKind::Rejected, "{refused}");
    assert!(
        refused.message().contains("permissions violation"),
        "{refused}"
    );
    assert!(!refused.trips_breaker() && !refused.is_retryable());
    publish_round_trip_on(&publisher).await;
    publisher.close().await.expect("close");
}

#[tokio::test]
async fn tls_with_a_custom_ca() {
    let pki = TestPki::generate().expect("test certificates");
    let args = pki.nats_server_args(false);
    let server = server_with(args).await;

    publish_round_trip(options(server.url()).tls(NatsTls::with_ca(pki.ca_cert()))).await;

    // The system roots do not know the test CA.
    let error = refused(options(server.url())).await;
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
    assert!(error.message().contains("TLS"), "{error}");
}

#[tokio::test]
async fn requiring_tls_refuses_a_plain_server() {
    let pki = TestPki::generate().expect("test certificates");
    let server = server_with(Vec::<String>::new()).await;
    let error = refused(options(server.url()).tls(NatsTls::with_ca(pki.ca_cert()))).await;
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
    assert!(error.message().contains("TLS"), "{error}");
}

#[tokio::test]
async fn mutual_tls_with_a_client_certificate() {
    let pki = TestPki::generate().expect("test certificates");
    let args = pki.nats_server_args(true);
    let server = server_with(args).await;

    publish_round_trip(options(server.url()).tls(
        NatsTls::with_ca(pki.ca_cert()).with_client_cert(pki.client_cert(), pki.client_key()),
    ))
    .await;

    let error = refused(options(server.url()).tls(NatsTls::with_ca(pki.ca_cert()))).await;
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
}
