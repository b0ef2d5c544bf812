//! A Python SDK user's settings and calls, unchanged, against a real nats-server and the
//! broker: the option names of `lax-nats-client`, a `trace-id` header in its lower case, and
//! a subscription with the Python defaults.

mod common;

use std::time::{Duration, Instant};

use common::{DEADLINE, Env, create_stream};
use futures::StreamExt as _;
use lax_broker::{Broker, BrokerConfig};
use lax_client::{
    ClientOptions, ConsumerGroupConfig, ErrorKind, LaxClient, PublishOptions, StartPosition,
    SubscribeOptions, admin::StreamInfoOptions,
};
use lax_testkit::{NatsServer, TestPki, wait_for};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_configuration_publishes_and_consumes_unchanged() {
    let env = Env::start().await;
    let options: ClientOptions = serde_json::from_value(json!({
        "nats_urls": [env.nats.url()],
        "broker_addr": format!("http://{}", env.broker_addr),
        "retry_attempts": 0,
        "retry_delay": 0.05,
        "max_retry_delay": 0.5,
        "nats_max_reconnect_attempts": -1,
        "nats_reconnect_wait": 2.0,
        "grpc_timeout": 10.0,
        "connection_pool_size": 2,
    }))
    .expect("every Python option name is accepted");
    let client = LaxClient::connect(options).await.expect("client connects");

    // Direct: a memory-tier publish reaches a core NATS subscriber.
    let mut logins = env.subscribe("pyevents.login").await;
    client
        .publish("pyevents.login", "alice")
        .await
        .expect("direct publish");
    let login = tokio::time::timeout(DEADLINE, logins.next())
        .await
        .expect("a login within the deadline")
        .expect("the subscription is open");
    assert_eq!(&login.payload[..], b"alice");

    // Broker: the Python user's lower-case `trace-id` header travels as the wire trace_id,
    // through JetStream, to the subscriber.
    let receipt = client
        .publish_with(
            "pyorders.created",
            "order-1",
            PublishOptions::persistent().header("trace-id", "abc123"),
        )
        .await
        .expect("persistent publish");
    let mut orders = client
        .subscribe(
            "pyorders.created",
            SubscribeOptions::default().start(StartPosition::First),
        )
        .await
        .expect("subscribe with the Python defaults");
    let order = tokio::time::timeout(DEADLINE, orders.next())
        .await
        .expect("an order within the deadline")
        .expect("the subscription is open")
        .expect("a message, not an error");
    assert_eq!(order.id, receipt.message_id);
    assert_eq!(&order.payload[..], b"order-1");
    assert_eq!(order.trace_id.as_deref(), Some("abc123"));
    order.ack().await.expect("ack");
    client.close().await.expect("close");
}

/// Python's `grpc_timeout` bounds the broker calls that are not publishes (stream
/// administration, consumer groups) on its own: with nats-server frozen the broker cannot
/// answer, and each call ends `TimedOut` after about `grpc_timeout`, though `publish_timeout`
/// is far longer. Once NATS thaws, the same client's calls succeed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_timeout_bounds_stream_and_group_calls() {
    const GRPC_TIMEOUT: Duration = Duration::from_secs(1);
    let env = Env::start().await;
    let options: ClientOptions = serde_json::from_value(json!({
        "nats_urls": [env.nats.url()],
        "broker_addr": format!("http://{}", env.broker_addr),
        "grpc_timeout": GRPC_TIMEOUT.as_secs_f64(),
        "publish_timeout": 20.0,
    }))
    .expect("Python option names");
    let client = LaxClient::connect(options).await.expect("client connects");
    create_stream(&client, "FROZEN", "frozen.>").await;
    let admin = client.admin().expect("admin");

    let frozen = Frozen::stop(&env);
    let started = Instant::now();
    let info = admin
        .stream_info("FROZEN", StreamInfoOptions::default())
        .await;
    let info_took = started.elapsed();
    let started = Instant::now();
    let group = client
        .create_consumer_group(
            "frozen-workers",
            "FROZEN",
            "frozen.>",
            ConsumerGroupConfig::default(),
        )
        .await;
    let group_took = started.elapsed();
    drop(frozen);

    for (call, result, took) in [
        ("stream_info", info.map(drop), info_took),
        ("create_consumer_group", group.map(drop), group_took),
    ] {
        let err = result.expect_err("no answer while NATS is frozen");
        assert_eq!(err.kind(), ErrorKind::TimedOut, "{call}: {err}");
        assert!(
            took >= GRPC_TIMEOUT.mul_f64(0.9) && took < GRPC_TIMEOUT + Duration::from_secs(3),
            "{call} ended after {took:?}, grpc_timeout is {GRPC_TIMEOUT:?}"
        );
        eprintln!("{call}: {err} after {took:?}");
    }
    wait_for(DEADLINE, || async {
        admin
            .stream_info("FROZEN", StreamInfoOptions::default())
            .await
            .ok()
    })
    .await
    .expect("the broker answers again once NATS thaws");
    client.close().await.expect("close");
}

/// nats-server SIGSTOPped until dropped.
struct Frozen(Pid);

impl Frozen {
    fn stop(env: &Env) -> Frozen {
        let pid = Pid::from_raw(env.nats.pid().expect("nats-server runs") as i32);
        kill(pid, Signal::SIGSTOP).expect("SIGSTOP nats-server");
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

/// Python's `use_tls` with `tls_cert_path` (the CA to trust) reaches a broker that serves
/// TLS; the same options without `use_tls` do not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_tls_and_tls_cert_path_reach_a_tls_broker() {
    let nats = NatsServer::start().await.expect("nats-server starts");
    let pki = TestPki::generate().expect("test certificates");
    let mut config = BrokerConfig::single_node([nats.url()]);
    config.no_metrics = true;
    config.tls_cert = Some(pki.server_cert().to_owned());
    config.tls_key = Some(pki.server_key().to_owned());
    let broker = Broker::start(config).await.expect("broker starts");
    let python_options = |use_tls: bool| -> ClientOptions {
        let mut options = json!({
            "nats_urls": [nats.url()],
            "broker_addr": format!("127.0.0.1:{}", broker.grpc_addr().port()),
            "use_tls": use_tls,
            "retry_attempts": 0,
            "publish_timeout": 2.0,
        });
        if use_tls {
            options["tls_cert_path"] = json!(pki.ca_cert());
        }
        serde_json::from_value(options).expect("Python option names")
    };

    let client = LaxClient::connect(python_options(true))
        .await
        .expect("client connects over TLS");
    let receipt = client
        .publish_with("tlsorders.created", "order-1", PublishOptions::persistent())
        .await
        .expect("persistent publish over TLS");
    assert!(receipt.ack.is_some(), "JetStream acked it");
    client.close().await.expect("close");

    let plaintext = async {
        let client = LaxClient::connect(python_options(false)).await?;
        client
            .publish_with("tlsorders.created", "order-2", PublishOptions::persistent())
            .await
    };
    let err = tokio::time::timeout(DEADLINE, plaintext)
        .await
        .expect("a plaintext client fails within the deadline")
        .expect_err("a TLS broker refuses a plaintext client");
    eprintln!("without use_tls: {err}");
    broker.shutdown().await.expect("broker shuts down");
}
