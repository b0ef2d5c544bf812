//! A Python SDK user's settings and calls, unchanged, against a real nats-server and the
//! broker: the option names of `lax-nats-client`, a `trace-id` header in its lower case, and
//! a subscription with the Python defaults.

mod common;

use common::{DEADLINE, Env};
use futures::StreamExt as _;
use lax_client::{ClientOptions, LaxClient, PublishOptions, StartPosition, SubscribeOptions};
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
