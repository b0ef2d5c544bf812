//! The transport's own logic against an in-test tonic server (no NATS): ack matching, stream
//! breaks, timeouts, unary and batch calls, the bearer token, administration.

mod common;

use std::{sync::Arc, time::Duration};

use common::fake::FakeServer;
use lax_core::{ErrorKind, PublishOptions, PublishRequest, Publisher, Tier};
use lax_testkit::wait_until;
use lax_transport_grpc::{
    BrokerAdmin, ConsumerGroupConfig, GroupJoin, GrpcOptions, GrpcPublisher, ListStreamsOptions,
    PublishMode, StreamConfig, StreamInfoOptions,
};

const DEADLINE: Duration = Duration::from_secs(10);

fn options(server: &FakeServer, pool: usize) -> GrpcOptions {
    GrpcOptions::new([server.url()])
        .connection_pool_size(pool)
        .reconnect_initial_backoff(Duration::from_millis(20))
}

fn request(subject: &str) -> PublishRequest {
    PublishRequest::new(subject, "payload").with_tier(Tier::Persistent)
}

#[tokio::test]
async fn the_bearer_token_reaches_the_broker_on_every_call() {
    let server = FakeServer::start().await;
    for mode in [PublishMode::Stream, PublishMode::Unary] {
        let publisher = GrpcPublisher::connect(options(&server, 2).auth_token("t0ken").mode(mode))
            .await
            .unwrap();
        publisher.publish(request("orders.a")).await.unwrap();
        publisher
            .publish_batch(vec![request("orders.b")])
            .await
            .remove(0)
            .unwrap();
        publisher
            .admin()
            .unwrap()
            .list_streams(Default::default())
            .await
            .unwrap();
        publisher.close().await.unwrap();
    }
    let seen = server.broker.authorizations();
    // Stream mode: 2 streams, 1 batch, 1 admin call; unary: 1 publish, 1 batch, 1 admin call.
    assert_eq!(seen.len(), 7, "calls recorded: {seen:?}");
    assert!(
        seen.iter()
            .all(|auth| auth.as_deref() == Some("Bearer t0ken")),
        "{seen:?}"
    );
}

#[tokio::test]
async fn acks_are_matched_to_their_callers_whatever_their_order() {
    let server = FakeServer::start().await;
    let publisher = Arc::new(GrpcPublisher::connect(options(&server, 1)).await.unwrap());
    let held: Vec<_> = (0..5)
        .map(|i| {
            let request = request(&format!("held.{i}"));
            let id = request.message_id.clone();
            (id, tokio::spawn(publisher.publish(request)))
        })
        .collect();
    wait_until(DEADLINE, || async { server.broker.received().len() == 5 })
        .await
        .unwrap();
    publisher.publish(request("release")).await.unwrap();
    for (id, task) in held {
        let receipt = task.await.unwrap().unwrap();
        assert_eq!(receipt.message_id, id);
        assert_eq!(
            receipt.ack.unwrap().sequence,
            server.broker.sequence_of(&id).unwrap(),
            "the ack of {id} went to its own caller"
        );
    }
    publisher.close().await.unwrap();
}

#[tokio::test]
async fn repeated_ids_in_flight_on_one_stream_all_get_answers() {
    let server = FakeServer::start().await;
    let publisher = GrpcPublisher::connect(options(&server, 1)).await.unwrap();
    let first = request("held.dup").with_message_id("same-id");
    let second = first.clone();
    let a = tokio::spawn(publisher.publish(first));
    let b = tokio::spawn(publisher.publish(second));
    wait_until(DEADLINE, || async { server.broker.received().len() == 2 })
        .await
        .unwrap();
    publisher.publish(request("release")).await.unwrap();
    let a = a.await.unwrap().unwrap().ack.unwrap();
    let b = b.await.unwrap().unwrap().ack.unwrap();
    assert_eq!(a.sequence, b.sequence, "one message stored");
    assert!(a.duplicate != b.duplicate, "exactly one is the duplicate");
    publisher.close().await.unwrap();
}

#[tokio::test]
async fn a_missing_ack_times_out_and_the_stream_carries_on() {
    let server = FakeServer::start().await;
    let publisher = GrpcPublisher::connect(options(&server, 1)).await.unwrap();
    let error = publisher
        .publish(request("lost.one").with_timeout(Duration::from_millis(200)))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::TimedOut);
    assert!(error.may_be_stored());
    let received = server.broker.received();
    assert_eq!(
        received[0].options.as_ref().unwrap().timeout_ms,
        200,
        "the deadline travels"
    );
    publisher.publish(request("orders.after")).await.unwrap();
    assert_eq!(publisher.healthy_connections(), 1);
    publisher.close().await.unwrap();
}

#[tokio::test]
async fn a_broken_stream_fails_its_in_flight_publishes_as_maybe_stored_and_is_rebuilt() {
    let server = FakeServer::start().await;
    let publisher = Arc::new(GrpcPublisher::connect(options(&server, 2)).await.unwrap());
    let requests: Vec<_> = (0..4).map(|i| request(&format!("held.{i}"))).collect();
    let tasks: Vec<_> = requests
        .iter()
        .map(|r| tokio::spawn(publisher.publish(r.clone())))
        .collect();
    wait_until(DEADLINE, || async { server.broker.received().len() == 4 })
        .await
        .unwrap();
    server.broker.break_streams().await;
    for task in tasks {
        let error = task.await.unwrap().unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
        assert!(error.may_be_stored(), "{error}");
        assert!(error.is_retryable());
    }
    wait_until(DEADLINE, || async { publisher.healthy_connections() == 2 })
        .await
        .expect("both connections are rebuilt");
    // A retry with the same id goes through on the rebuilt streams.
    for held in requests {
        let mut retry = held.clone();
        retry.subject = "orders.retried".into();
        let receipt = publisher.publish(retry).await.unwrap();
        assert_eq!(receipt.message_id, held.message_id);
        assert!(
            !receipt.ack.unwrap().duplicate,
            "the broken stream stored nothing"
        );
    }
    publisher.close().await.unwrap();
    wait_until(DEADLINE, || async { server.broker.open_streams() == 0 })
        .await
        .expect("close ends the streams");
}

#[tokio::test]
async fn without_a_healthy_connection_publishes_fail_fast_and_unsent() {
    let server = FakeServer::start().await;
    let publisher = GrpcPublisher::connect(
        options(&server, 1)
            .reconnect_initial_backoff(Duration::from_secs(60))
            .reconnect_max_backoff(Duration::from_secs(60)),
    )
    .await
    .unwrap();
    server.broker.break_streams().await;
    wait_until(DEADLINE, || async { publisher.healthy_connections() == 0 })
        .await
        .unwrap();
    let error = publisher.publish(request("orders.x")).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable);
    assert!(!error.may_be_stored());
    publisher.close().await.unwrap();
}

#[tokio::test]
async fn refusals_and_invalid_input() {
    let server = FakeServer::start().await;
    for mode in [PublishMode::Stream, PublishMode::Unary] {
        let publisher = GrpcPublisher::connect(options(&server, 1).mode(mode))
            .await
            .unwrap();
        let refused = publisher.publish(request("refused.x")).await.unwrap_err();
        assert_eq!(refused.kind(), ErrorKind::Rejected, "{mode:?}: {refused}");
        assert!(refused.message().contains("no stream for this tier"));
        assert!(!refused.may_be_stored());

        let before = server.broker.received().len();
        let invalid = publisher.publish(request("a..b")).await.unwrap_err();
        assert_eq!(invalid.kind(), ErrorKind::InvalidInput);
        assert_eq!(server.broker.received().len(), before, "nothing sent");
        publisher.close().await.unwrap();
        let closed = publisher.publish(request("orders.late")).await.unwrap_err();
        assert_eq!(closed.kind(), ErrorKind::Closed);
    }
}

#[tokio::test]
async fn unary_mode_publishes_and_times_out() {
    let server = FakeServer::start().await;
    let publisher = GrpcPublisher::connect(options(&server, 2).mode(PublishMode::Unary))
        .await
        .unwrap();
    let request = request("orders.unary").with_message_id("u-1");
    let receipt = publisher.publish(request).await.unwrap();
    assert_eq!(receipt.message_id, "u-1");
    assert_eq!(receipt.ack.unwrap().stream, "FAKE");
    let lost = publisher
        .publish(self::request("lost.unary").with_timeout(Duration::from_millis(200)))
        .await
        .unwrap_err();
    assert_eq!(lost.kind(), ErrorKind::TimedOut, "{lost}");
    assert!(lost.may_be_stored());
    publisher.close().await.unwrap();
}

#[tokio::test]
async fn batches_answer_in_order_with_per_message_errors() {
    let server = FakeServer::start().await;
    let publisher = GrpcPublisher::connect(options(&server, 1)).await.unwrap();
    let batch = vec![
        request("orders.1").with_message_id("b-1"),
        request("bad subject").with_message_id("b-2"),
        request("refused.3").with_message_id("b-3"),
        request("orders.4").with_message_id("b-4"),
    ];
    let results = publisher.publish_batch(batch).await;
    assert_eq!(results.len(), 4);
    assert_eq!(results[0].as_ref().unwrap().message_id, "b-1");
    assert_eq!(
        results[1].as_ref().unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    assert_eq!(results[2].as_ref().unwrap_err().kind(), ErrorKind::Rejected);
    assert_eq!(results[3].as_ref().unwrap().message_id, "b-4");
    assert_eq!(
        server.broker.received().len(),
        3,
        "the invalid message was not sent"
    );
    publisher.close().await.unwrap();
    let closed = publisher.publish_batch(vec![request("orders.5")]).await;
    assert_eq!(closed[0].as_ref().unwrap_err().kind(), ErrorKind::Closed);
}

#[tokio::test]
async fn the_call_deadline_is_the_time_left_before_the_requests_deadline() {
    let server = FakeServer::start().await;
    let publisher = GrpcPublisher::connect(options(&server, 1)).await.unwrap();
    // The message allows 5 s, but its publish must be over in 300 ms: the call gets those.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
    let started = tokio::time::Instant::now();
    let error = publisher
        .publish(
            request("lost.deadline")
                .with_timeout(Duration::from_secs(5))
                .with_deadline(deadline),
        )
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::TimedOut);
    assert!(started.elapsed() < Duration::from_secs(2), "{error}");
    let timeout_ms = server.broker.received()[0]
        .options
        .as_ref()
        .unwrap()
        .timeout_ms;
    assert!((1..=300).contains(&timeout_ms), "timeout_ms {timeout_ms}");

    // A deadline already past: refused as timed out, nothing sent.
    let before = server.broker.received().len();
    let error = publisher
        .publish(request("late.one").with_deadline(tokio::time::Instant::now()))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::TimedOut);
    assert!(!error.may_be_stored(), "{error}");
    assert_eq!(server.broker.received().len(), before, "nothing sent");
    publisher.close().await.unwrap();
}

#[tokio::test]
async fn a_dedup_id_is_sent_as_message_id_and_the_callers_id_is_kept() {
    let server = FakeServer::start().await;
    let publisher = GrpcPublisher::connect(options(&server, 1)).await.unwrap();
    let request = request("orders.dedup")
        .with_message_id("caller-id")
        .with_options(PublishOptions::tier(Tier::Persistent).with_dedup_id("order-456"));
    let receipt = publisher.publish(request).await.unwrap();
    assert_eq!(receipt.message_id, "caller-id");
    let sent = server.broker.received().remove(0);
    assert_eq!(sent.message_id, "order-456");
    assert_eq!(
        sent.headers.get("Message-Id").map(String::as_str),
        Some("caller-id")
    );
    publisher.close().await.unwrap();
}

#[tokio::test]
async fn connecting_to_nothing_is_unavailable_and_unsent() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let error = GrpcPublisher::connect(
        GrpcOptions::new([addr.to_string()])
            .connection_pool_size(2)
            .connect_timeout(Duration::from_secs(2)),
    )
    .await
    .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
    assert!(!error.may_be_stored());
    let error = GrpcPublisher::connect(GrpcOptions::new(["ftp://x:1"]))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Config);
}

#[tokio::test]
async fn admin_calls_map_statuses_and_join_existing_groups() {
    let server = FakeServer::start().await;
    let admin = BrokerAdmin::connect(&options(&server, 1)).await.unwrap();
    let config = StreamConfig::new(["orders.>"])
        .tier(Tier::Persistent)
        .max_age(Duration::from_secs(60));
    let stream = admin.create_stream("ORDERS", config.clone()).await.unwrap();
    assert_eq!(stream.name, "ORDERS");
    assert_eq!(
        stream.config, config,
        "the fake echoes the configuration sent"
    );
    let missing = admin
        .stream_info("NOPE", StreamInfoOptions::default())
        .await
        .unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::Rejected);
    assert!(missing.message().contains("stream NOPE not found"));
    let invalid = admin
        .update_stream("ORDERS", StreamConfig::default())
        .await
        .unwrap_err();
    assert_eq!(invalid.kind(), ErrorKind::InvalidInput);
    admin.delete_stream("ORDERS").await.unwrap();

    let group = ConsumerGroupConfig::default();
    match admin
        .create_consumer_group("workers", "ORDERS", "", &group)
        .await
        .unwrap()
    {
        GroupJoin::Created(created) => assert_eq!(created.name, "workers"),
        other => panic!("expected a new group, got {other:?}"),
    }
    let joined = admin
        .create_consumer_group("existing", "ORDERS", "", &group)
        .await
        .unwrap();
    assert!(joined.already_existed());
}

#[tokio::test]
async fn bad_admin_input_is_refused_before_anything_is_sent() {
    let server = FakeServer::start().await;
    let admin = BrokerAdmin::connect(&options(&server, 1)).await.unwrap();
    let errors = [
        admin
            .create_stream("OR DERS", StreamConfig::new(["orders.>"]))
            .await
            .unwrap_err(),
        admin
            .create_stream("ORDERS", StreamConfig::new(["orders.>"]).replicas(9))
            .await
            .unwrap_err(),
        admin
            .update_stream("ORDERS", StreamConfig::new(["orders..x"]))
            .await
            .unwrap_err(),
        admin
            .stream_info("a.b", StreamInfoOptions::default())
            .await
            .unwrap_err(),
        admin.delete_stream("").await.unwrap_err(),
        admin
            .list_streams(ListStreamsOptions::default().limit(0))
            .await
            .unwrap_err(),
        admin
            .create_consumer_group("w>", "ORDERS", "", &ConsumerGroupConfig::default())
            .await
            .unwrap_err(),
    ];
    for error in &errors {
        assert_eq!(error.kind(), ErrorKind::InvalidInput, "{error}");
        assert!(!error.may_be_stored());
    }
    assert_eq!(
        server.broker.authorizations(),
        Vec::<Option<String>>::new(),
        "nothing reached the broker"
    );
}
