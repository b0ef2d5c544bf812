//! Publish and BatchPublish against a real nats-server.

mod common;

use std::time::Duration;

use async_nats::jetstream;
use common::{Harness, WAIT, request};
use futures::StreamExt as _;
use lax_proto::broker::v1::{
    BatchPublishRequest, CreateStreamRequest, GetStreamInfoRequest, PublishOptions, StreamConfig,
};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_auto_creates_a_stream_and_stores_headers_trace_id_and_key() {
    let mut h = Harness::start().await;
    let mut req = request("orders.created", "{\"order_id\":\"456\"}", "persistent");
    req.headers
        .insert("Content-Type".into(), "application/json".into());
    req.trace_id = "trace-1".into();
    req.key = "customer-9".into();
    let response = h
        .client
        .publish(req)
        .await
        .expect("publish succeeds")
        .into_inner();
    assert_eq!(response.stream, "ORDERS");
    assert_eq!(response.sequence, 1);
    assert!(!response.duplicate);
    assert_eq!(response.message_id.len(), 22, "a generated NUID");
    assert!(response.timestamp.is_some());

    let js = jetstream::new(h.nats_client().await);
    let stream = js.get_stream("ORDERS").await.unwrap();
    assert_eq!(stream.cached_info().config.subjects, ["orders.>"]);
    assert_eq!(
        stream.cached_info().config.storage,
        jetstream::stream::StorageType::File
    );
    let stored = stream.get_raw_message(1).await.unwrap();
    let headers = stored.headers;
    assert_eq!(
        headers.get("Nats-Msg-Id").unwrap().as_str(),
        response.message_id
    );
    assert_eq!(headers.get("Trace-Id").unwrap().as_str(), "trace-1");
    assert_eq!(headers.get("Lax-Key").unwrap().as_str(), "customer-9");
    assert_eq!(
        headers.get("Content-Type").unwrap().as_str(),
        "application/json"
    );
    assert_eq!(&stored.payload[..], b"{\"order_id\":\"456\"}");

    let info = h
        .streams
        .get_stream_info(GetStreamInfoRequest {
            name: "ORDERS".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.config.unwrap().config.unwrap().tier, "persistent");
    h.broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_message_id_is_stored_once_and_reported_duplicate() {
    let mut h = Harness::start().await;
    let mut req = request("payments.settled", "x", "persistent");
    req.message_id = "pay-1".into();
    let first = h.client.publish(req.clone()).await.unwrap().into_inner();
    let second = h.client.publish(req).await.unwrap().into_inner();
    assert_eq!(
        (first.message_id.as_str(), first.duplicate),
        ("pay-1", false)
    );
    assert_eq!(
        (second.message_id.as_str(), second.duplicate),
        ("pay-1", true)
    );
    assert_eq!(second.sequence, first.sequence);

    // Existing clients carry the id in a Message-Id header.
    let mut by_header = request("payments.settled", "y", "persistent");
    by_header
        .headers
        .insert("Message-Id".into(), "pay-2".into());
    let third = h
        .client
        .publish(by_header.clone())
        .await
        .unwrap()
        .into_inner();
    let fourth = h.client.publish(by_header).await.unwrap().into_inner();
    assert_eq!(third.message_id, "pay-2");
    assert!(!third.duplicate && fourth.duplicate);
    assert_eq!(h.stream_messages("PAYMENTS").await, 2);
    h.broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_weaker_than_the_tier_is_refused_and_nothing_is_stored() {
    let mut h = Harness::start().await;
    h.streams
        .create_stream(CreateStreamRequest {
            name: "CACHE".into(),
            config: Some(StreamConfig {
                subjects: vec!["cache.>".into()],
                tier: "memory".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let refused = h
        .client
        .publish(request("cache.put", "x", "persistent"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("stream CACHE"),
        "{}",
        refused.message()
    );
    assert!(
        refused.message().contains("file storage"),
        "{}",
        refused.message()
    );
    // memory + require_ack goes to the memory stream the same way.
    let stored = h
        .client
        .publish(request("cache.put", "y", "memory"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((stored.stream.as_str(), stored.sequence), ("CACHE", 1));
    assert_eq!(h.stream_messages("CACHE").await, 1);

    // A stronger stream than asked for is fine: persistent publish into a replicated-tier
    // stream (replicated-replicas is 1 on this single node).
    let ok = h
        .client
        .publish(request("orders.x", "z", "replicated"))
        .await
        .unwrap()
        .into_inner();
    let weaker = h
        .client
        .publish(request("orders.y", "z", "persistent"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (ok.stream.as_str(), weaker.stream.as_str()),
        ("ORDERS", "ORDERS")
    );
    h.broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_auto_creation_off_an_uncaptured_subject_is_not_found() {
    let mut h = Harness::start_with(|c| c.set_auto_create_streams(false)).await;
    let refused = h
        .client
        .publish(request("audit.login", "x", "persistent"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::NotFound);
    assert!(refused.message().contains("auto-creation is off"));
    h.streams
        .create_stream(CreateStreamRequest {
            name: "AUDIT".into(),
            config: Some(StreamConfig {
                subjects: vec!["audit.>".into()],
                tier: "persistent".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    let stored = h
        .client
        .publish(request("audit.login", "x", "persistent"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.stream, "AUDIT");
    h.broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_invalid_argument_and_never_stored() {
    init_small_payload_test().await;
}

async fn init_small_payload_test() {
    common::init_tracing();
    let nats = lax_testkit::NatsServer::builder()
        .max_payload(1024)
        .start()
        .await
        .unwrap();
    let broker = lax_broker::Broker::start(common::test_config(vec![nats.url()]))
        .await
        .unwrap();
    let (mut client, _) = common::clients(&broker).await;
    client
        .publish(request("inputs.ok", "fine", "persistent"))
        .await
        .unwrap();

    let mut bad_header = request("inputs.x", "x", "persistent");
    bad_header.headers.insert("bad name".into(), "v".into());
    let mut negative_timeout = request("inputs.x", "x", "persistent");
    negative_timeout.options.as_mut().unwrap().timeout_ms = -1;
    let cases = [
        ("bad subject", request("inputs..x", "x", "persistent")),
        ("wildcard subject", request("inputs.*", "x", "persistent")),
        ("unknown tier", request("inputs.x", "x", "gold")),
        (
            "payload over max_payload",
            request("inputs.x", &"x".repeat(2000), "persistent"),
        ),
        ("bad header", bad_header),
        ("negative timeout", negative_timeout),
    ];
    for (what, req) in cases {
        let status = client.publish(req).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    }
    let js = jetstream::new(nats.client().await.unwrap());
    assert_eq!(
        js.get_stream("INPUTS")
            .await
            .unwrap()
            .info()
            .await
            .unwrap()
            .state
            .messages,
        1
    );
    broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_few_servers_for_the_replicas_is_failed_precondition() {
    let mut h = Harness::start_with(|c| c.replicated_replicas = 3).await;
    let refused = h
        .client
        .publish(request("ledger.entry", "x", "replicated"))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    assert!(
        refused.message().contains("3 replica"),
        "{}",
        refused.message()
    );
    h.broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_publish_answers_in_order_and_a_bad_message_fails_alone() {
    let mut h = Harness::start().await;
    let mut messages: Vec<_> = (0..100)
        .map(|i| {
            let mut m = request(&format!("batch.item.{i}"), &format!("payload {i}"), "");
            m.options = None;
            m.message_id = format!("batch-{i}");
            m
        })
        .collect();
    messages[41].subject = "batch..broken".into();
    let response = h
        .client
        .batch_publish(BatchPublishRequest {
            messages,
            default_options: Some(PublishOptions {
                tier: "persistent".into(),
                require_ack: true,
                ..Default::default()
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((response.success_count, response.failure_count), (99, 1));
    for (i, r) in response.responses.iter().enumerate() {
        assert_eq!(r.message_id, format!("batch-{i}"));
        if i == 41 {
            assert_eq!(r.error_code, Code::InvalidArgument as i32);
            assert!(!r.error.is_empty());
        } else {
            assert_eq!((r.error_code, r.stream.as_str()), (0, "BATCH"), "{r:?}");
        }
    }
    let info = jetstream::new(h.nats_client().await)
        .get_stream("BATCH")
        .await
        .unwrap();
    assert_eq!(
        info.cached_info().config.storage,
        jetstream::stream::StorageType::File,
        "default tier applied"
    );
    assert_eq!(h.stream_messages("BATCH").await, 99);
    h.broker.shutdown().await.unwrap();
}

/// A publish held in flight without timing tricks: the stream the broker has cached for the
/// subject is deleted behind its back, and a plain subscriber takes the message without ever
/// answering. Every publish uses the one cached subject (a new subject would be looked up and
/// get a fresh stream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deadlines_and_the_inflight_cap() {
    let mut h = Harness::start_with(|c| c.max_inflight = 1).await;
    h.client
        .publish(request("hang.a", "x", "memory"))
        .await
        .unwrap();
    let nats = h.nats_client().await;
    jetstream::new(nats.clone())
        .delete_stream("HANG")
        .await
        .unwrap();
    let mut silent = nats.subscribe("hang.>").await.unwrap();
    nats.flush().await.unwrap();

    let mut held = h.client.clone();
    let mut slow = request("hang.a", "x", "memory");
    // Long enough that a loaded machine still sends the next publish while this one holds
    // the only slot (at 2 s it once did not).
    slow.options.as_mut().unwrap().timeout_ms = 5_000;
    let in_flight = tokio::spawn(async move { held.publish(slow).await });
    let seen = tokio::time::timeout(WAIT, silent.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.subject.as_str(), "hang.a");

    let full = h
        .client
        .publish(request("hang.a", "x", "memory"))
        .await
        .unwrap_err();
    assert_eq!(full.code(), Code::ResourceExhausted, "{full:?}");
    assert!(full.message().contains("broker buffer full"));

    let timed_out = in_flight.await.unwrap().unwrap_err();
    assert_eq!(timed_out.code(), Code::DeadlineExceeded, "{timed_out:?}");
    assert!(timed_out.message().contains("may have been stored"));

    // The gRPC deadline counts too and wins over the longer default.
    let mut with_deadline = tonic::Request::new(request("hang.a", "x", "memory"));
    with_deadline.set_timeout(Duration::from_millis(300));
    let status = h.client.publish(with_deadline).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    h.broker.shutdown().await.unwrap();
}
