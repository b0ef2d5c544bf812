//! LaxClient against a real nats-server and the in-process broker: the routing table, what
//! arrives, breakers and retries with the broker down, exactly-once storage of a retried
//! publish, and the in-flight cap.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use common::{DEADLINE, Env};
use futures::StreamExt;
use lax_client::{
    BatchMessage, BreakerState, ErrorKind, Json, LaxClient, OverloadBehavior, PublishOptions,
    Route, Tier,
};
use lax_testkit::wait_until;
use serde_json::json;

async fn next_message(sub: &mut async_nats::Subscriber) -> async_nats::Message {
    tokio::time::timeout(DEADLINE, sub.next())
        .await
        .expect("a message arrives in time")
        .expect("subscription open")
}

#[tokio::test]
async fn each_row_of_the_routing_table_goes_the_documented_way() {
    let env = Env::start().await;
    let client = LaxClient::connect(env.options()).await.unwrap();
    let mut core = env.subscribe("route.>").await;

    // memory, no ack → direct: a core subscriber sees it, no stream is made for it.
    let direct = client.publish("route.direct", "d").await.unwrap();
    assert_eq!(direct.route, Route::Direct);
    assert!(direct.ack.is_none());
    let seen = next_message(&mut core).await;
    assert_eq!(seen.subject.as_str(), "route.direct");
    assert_eq!(
        seen.headers
            .as_ref()
            .and_then(|h| h.get("Message-Id"))
            .map(|v| v.as_str()),
        Some(direct.message_id.as_str())
    );
    assert!(
        env.js.get_stream("ROUTE").await.is_err(),
        "no stream for direct traffic"
    );

    // memory with ack, persistent, replicated → broker: stored in a stream of that tier.
    let cases = [
        (
            "ack.memory.x",
            PublishOptions::default().require_ack(true),
            "ACK",
        ),
        (
            "persist.orders.x",
            PublishOptions::tier(Tier::Persistent),
            "PERSIST",
        ),
        (
            "replica.orders.x",
            PublishOptions::tier(Tier::Replicated),
            "REPLICA",
        ),
    ];
    for (subject, options, stream) in cases {
        let receipt = client.publish_with(subject, "b", options).await.unwrap();
        assert_eq!(receipt.route, Route::Broker, "{subject}");
        let ack = receipt.ack.expect("acked");
        assert_eq!(ack.stream, stream);
        assert_eq!(ack.sequence, 1);
        assert!(!ack.duplicate);
        assert_eq!(env.count(stream).await, 1);
    }
    let info = env
        .js
        .get_stream("ACK")
        .await
        .unwrap()
        .cached_info()
        .clone();
    assert_eq!(
        info.config.storage,
        async_nats::jetstream::stream::StorageType::Memory
    );
    let info = env
        .js
        .get_stream("PERSIST")
        .await
        .unwrap()
        .cached_info()
        .clone();
    assert_eq!(
        info.config.storage,
        async_nats::jetstream::stream::StorageType::File
    );
    client.close().await.unwrap();
}

#[tokio::test]
async fn headers_ids_and_json_arrive_intact() {
    let env = Env::start().await;
    let client = LaxClient::connect(env.options()).await.unwrap();
    let mut core = env.subscribe("intact.>").await;
    let order = json!({"order_id": "456", "amount": 99.99, "tags": ["a", "b"]});

    let receipt = client
        .publish_with(
            "intact.direct",
            Json(&order),
            PublishOptions::default()
                .header("trace-id", "abc123")
                .message_id("my-id-1"),
        )
        .await
        .unwrap();
    assert_eq!(receipt.message_id, "my-id-1");
    let seen = next_message(&mut core).await;
    let headers = seen.headers.clone().unwrap();
    assert_eq!(headers.get("trace-id").unwrap().as_str(), "abc123");
    assert_eq!(headers.get("Message-Id").unwrap().as_str(), "my-id-1");
    assert_eq!(
        headers.get("Content-Type").unwrap().as_str(),
        "application/json"
    );
    let back: serde_json::Value = serde_json::from_slice(&seen.payload).unwrap();
    assert_eq!(back, order);

    let receipt = client
        .publish_with(
            "intact.stored",
            Json(&order),
            PublishOptions::persistent()
                .header("trace-id", "def456")
                .message_id("my-id-2"),
        )
        .await
        .unwrap();
    let ack = receipt.ack.unwrap();
    let stored = env
        .js
        .get_stream(&ack.stream)
        .await
        .unwrap()
        .get_raw_message(ack.sequence)
        .await
        .unwrap();
    assert_eq!(stored.headers.get("trace-id").unwrap().as_str(), "def456");
    assert_eq!(
        stored.headers.get("Nats-Msg-Id").unwrap().as_str(),
        "my-id-2"
    );
    let back: serde_json::Value = serde_json::from_slice(&stored.payload).unwrap();
    assert_eq!(back, order);

    // A batch: one id per message, all stored or seen.
    let batch = client
        .batch_publish([
            BatchMessage::json("intact.click", &json!({"button": "submit"})),
            BatchMessage::json("intact.view", &json!({"page": "/home"}))
                .with_options(PublishOptions::persistent()),
            BatchMessage::new("intact..bad", "refused alone"),
        ])
        .await;
    assert_eq!((batch.success_count, batch.failure_count), (2, 1));
    let (index, error) = batch.errors().next().unwrap();
    assert_eq!((index, error.kind()), (2, ErrorKind::InvalidInput));
    assert_eq!(batch.message_ids.len(), 3);
    client.close().await.unwrap();
}

#[tokio::test]
async fn breaker_opens_with_the_broker_down_and_closes_when_it_returns_while_direct_works() {
    let mut env = Env::start().await;
    let mut options = env.options();
    options.retry_attempts = 3;
    options.circuit_breaker_threshold = 6;
    options.circuit_breaker_timeout = Duration::from_millis(500);
    options.circuit_breaker_half_open_requests = 1;
    let client = LaxClient::connect(options).await.unwrap();
    let mut core = env.subscribe("breaker.>").await;
    client
        .publish_with("breaker.ok", "x", PublishOptions::persistent())
        .await
        .unwrap();

    env.stop_broker().await;
    wait_until(DEADLINE, || async { client.broker_connections() == 0 })
        .await
        .expect("the client sees the broker gone");

    // Three attempts per publish and six failures to open: two publishes open it, so the
    // retries happened; the third fails fast.
    for _ in 0..2 {
        let err = client
            .publish_with("breaker.down", "x", PublishOptions::persistent())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    }
    assert_eq!(client.broker_breaker_state(), Some(BreakerState::Open));
    let err = client
        .publish_with("breaker.down", "x", PublishOptions::persistent())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CircuitOpen);

    // Direct publishes keep working throughout.
    client
        .publish("breaker.direct", "still here")
        .await
        .unwrap();
    assert_eq!(next_message(&mut core).await.subject.as_str(), "breaker.ok");
    assert_eq!(
        next_message(&mut core).await.subject.as_str(),
        "breaker.direct"
    );
    assert_eq!(client.direct_breaker_state(), Some(BreakerState::Closed));

    env.restart_broker().await;
    wait_until(DEADLINE, || async {
        client
            .publish_with("breaker.back", "x", PublishOptions::persistent())
            .await
            .is_ok()
    })
    .await
    .expect("publishes succeed again after the broker returns");
    assert_eq!(client.broker_breaker_state(), Some(BreakerState::Closed));
    client.close().await.unwrap();
}

#[tokio::test]
async fn a_publish_retried_after_a_broker_restart_is_stored_once() {
    let mut env = Env::start().await;
    let client = LaxClient::connect(env.options()).await.unwrap();
    let options = PublishOptions::persistent().message_id("order-789");
    let first = client
        .publish_with("once.orders", "x", options.clone())
        .await
        .unwrap();
    assert!(!first.ack.as_ref().unwrap().duplicate);

    env.stop_broker().await;
    env.restart_broker().await;
    wait_until(DEADLINE, || async { client.broker_connections() > 0 })
        .await
        .expect("the client reconnects");

    let again = client
        .publish_with("once.orders", "x", options)
        .await
        .unwrap();
    let ack = again.ack.unwrap();
    assert!(ack.duplicate, "JetStream recognised the retried id");
    assert_eq!(ack.sequence, first.ack.unwrap().sequence);
    assert_eq!(env.count("ONCE").await, 1);
    client.close().await.unwrap();
}

#[tokio::test]
async fn the_in_flight_cap_holds_under_ten_times_its_size() {
    const CAP: usize = 10;
    let env = Env::start().await;
    let mut options = env.options();
    options.max_concurrent_publishes = CAP;
    options.overload = OverloadBehavior::FailFast;
    options.publish_timeout = Duration::from_secs(60);
    let client = LaxClient::connect(options).await.unwrap();
    client
        .publish_with("cap.warm", "x", PublishOptions::persistent())
        .await
        .unwrap();

    // Freeze nats-server: the broker's JetStream publishes wait for acks, so every publish
    // admitted stays in flight until it thaws.
    let pid = nix::unistd::Pid::from_raw(env.nats.pid().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let overloaded = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..CAP * 10 {
        let client = client.clone();
        let overloaded = Arc::clone(&overloaded);
        tasks.push(tokio::spawn(async move {
            let result = client
                .publish_with(format!("cap.m{i}"), "x", PublishOptions::persistent())
                .await;
            if matches!(&result, Err(e) if e.kind() == ErrorKind::Overloaded) {
                overloaded.fetch_add(1, Ordering::SeqCst);
            }
            result
        }));
    }
    let refused = wait_until(DEADLINE, || async {
        overloaded.load(Ordering::SeqCst) == CAP * 9
    })
    .await;
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT).unwrap();
    refused.expect("all but the cap are refused at once");

    let mut stored = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => stored += 1,
            Err(e) => assert_eq!(e.kind(), ErrorKind::Overloaded, "{e}"),
        }
    }
    assert_eq!(stored, CAP);
    assert_eq!(overloaded.load(Ordering::SeqCst), CAP * 9);
    client.close().await.unwrap();
}

#[tokio::test]
async fn close_drains_and_refuses_new_publishes() {
    let env = Env::start().await;
    let client = LaxClient::connect(env.options()).await.unwrap();
    let publishes: Vec<_> = (0..50)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                client
                    .publish_with(format!("drain.m{i}"), "x", PublishOptions::persistent())
                    .await
            })
        })
        .collect();
    wait_until(DEADLINE, || async {
        client.in_flight() > 0 || env.js.get_stream("DRAIN").await.is_ok()
    })
    .await
    .unwrap();
    client.close().await.unwrap();
    let mut stored = 0;
    for publish in publishes {
        match publish.await.unwrap() {
            Ok(_) => stored += 1,
            Err(e) => assert_eq!(
                e.kind(),
                ErrorKind::Closed,
                "only never-started publishes fail: {e}"
            ),
        }
    }
    assert!(stored > 0);
    assert_eq!(
        env.count("DRAIN").await,
        stored,
        "every publish that returned Ok is stored"
    );
    let err = client.publish("drain.late", "x").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
    assert!(!client.is_connected());
}
