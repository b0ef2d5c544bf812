//! Subscribe, Ack/Nack/InProgress/Term, consumer groups, redelivery and dead letters, on a
//! real nats-server.

mod common;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::jetstream;
use common::{Harness, WAIT};
use futures::StreamExt as _;
use lax_broker::consumer::dead_letter::{
    CONSUMER_HEADER, DEAD_LETTER_STREAM, DELIVERIES_HEADER, ORIGINAL_SEQUENCE_HEADER,
    ORIGINAL_STREAM_HEADER, ORIGINAL_SUBJECT_HEADER,
};
use lax_proto::broker::v1::{
    AckRequest, BatchPublishRequest, ConsumerGroupConfig, ConsumerGroupRequest,
    CreateStreamRequest, Message, NackRequest, PublishOptions, PublishRequest, SettleKind,
    SettleRequest, Settlement, StreamConfig, SubscribeOptions, SubscribeRequest,
    broker_service_client::BrokerServiceClient,
};
use lax_testkit::{wait_for, wait_until};
use tokio::time::Instant;
use tonic::{Code, Streaming, transport::Channel};

type Client = BrokerServiceClient<Channel>;

async fn create_stream(h: &mut Harness, name: &str, subject: &str) {
    h.streams
        .create_stream(CreateStreamRequest {
            name: name.into(),
            config: Some(StreamConfig {
                subjects: vec![subject.into()],
                tier: "persistent".into(),
                ..Default::default()
            }),
        })
        .await
        .expect("stream created");
}

/// Publishes `count` messages `0..count` on `subject` in one batch.
async fn publish(client: &mut Client, subject: &str, count: usize) {
    let messages = (0..count)
        .map(|i| PublishRequest {
            subject: subject.into(),
            payload: i.to_string().into(),
            headers: HashMap::from([("Trace-Id".into(), format!("trace-{i}"))]),
            ..Default::default()
        })
        .collect();
    let response = client
        .batch_publish(BatchPublishRequest {
            messages,
            default_options: Some(PublishOptions {
                tier: "persistent".into(),
                require_ack: true,
                ..Default::default()
            }),
        })
        .await
        .expect("batch published")
        .into_inner();
    assert_eq!(response.failure_count, 0, "{response:?}");
}

fn subscription(
    subject: &str,
    group: &str,
    start: &str,
    options: SubscribeOptions,
) -> SubscribeRequest {
    SubscribeRequest {
        subject: subject.into(),
        consumer_group: group.into(),
        options: Some(options),
        start_position: start.into(),
    }
}

fn manual(ack_wait_seconds: i32) -> SubscribeOptions {
    SubscribeOptions {
        manual_ack: true,
        uses_ack_rpc: true,
        ack_wait_seconds,
        ..Default::default()
    }
}

async fn subscribe(client: &mut Client, request: SubscribeRequest) -> Streaming<Message> {
    client
        .subscribe(request)
        .await
        .expect("subscribed")
        .into_inner()
}

async fn next(messages: &mut Streaming<Message>) -> Message {
    tokio::time::timeout(WAIT, messages.next())
        .await
        .expect("a message within the deadline")
        .expect("the subscription is open")
        .expect("a message, not an error")
}

async fn ack(client: &mut Client, ack_id: &str) -> Result<(), tonic::Status> {
    client
        .ack(AckRequest {
            ack_id: ack_id.into(),
        })
        .await
        .map(|r| assert!(r.into_inner().success))
}

async fn consumer_info(h: &Harness, stream: &str, consumer: &str) -> jetstream::consumer::Info {
    let js = jetstream::new(h.nats_client().await);
    js.get_stream(stream)
        .await
        .expect("stream exists")
        .consumer_info(consumer)
        .await
        .expect("consumer exists")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_three_splits_a_thousand_messages() {
    const MESSAGES: usize = 1_000;
    let mut h = Harness::start().await;
    create_stream(&mut h, "WORK", "work.>").await;
    let seen: Arc<Mutex<Vec<(usize, u64)>>> = Arc::default();
    let mut members = Vec::new();
    for member in 0..3 {
        let mut client = h.client.clone();
        let options = SubscribeOptions {
            prefetch: 10,
            ..manual(30)
        };
        let mut messages = subscribe(
            &mut client,
            subscription("work.items", "workers", "first", options),
        )
        .await;
        let seen = Arc::clone(&seen);
        members.push(tokio::spawn(async move {
            while let Some(Ok(message)) = messages.next().await {
                seen.lock().unwrap().push((member, message.sequence));
                ack(&mut client, &message.ack_id).await.expect("acked");
            }
        }));
    }
    // Every member is pulling before the messages arrive, so none gets a head start.
    wait_until(WAIT, || async {
        consumer_info(&h, "WORK", "workers").await.num_waiting >= 3
    })
    .await
    .expect("three members pulling");
    publish(&mut h.client.clone(), "work.items", MESSAGES).await;

    wait_until(WAIT, || async {
        let info = consumer_info(&h, "WORK", "workers").await;
        seen.lock().unwrap().len() >= MESSAGES && info.num_ack_pending == 0 && info.num_pending == 0
    })
    .await
    .expect("every message processed and acked");
    let info = consumer_info(&h, "WORK", "workers").await;
    assert_eq!(info.num_redelivered, 0, "nothing was redelivered");

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), MESSAGES, "no message processed twice");
    let distinct: HashSet<u64> = seen.iter().map(|(_, seq)| *seq).collect();
    assert_eq!(distinct.len(), MESSAGES, "every message processed once");
    let mut split = [0usize; 3];
    for (member, _) in &seen {
        split[*member] += 1;
    }
    println!("group split of {MESSAGES} messages: {split:?}");
    for count in split {
        assert!(count >= MESSAGES * 15 / 100, "unfair split {split:?}");
    }
    for member in members {
        member.abort();
    }
    h.broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacked_message_comes_back_after_ack_wait() {
    let mut h = Harness::start().await;
    create_stream(&mut h, "JOBS", "jobs.>").await;
    let mut client = h.client.clone();
    let mut messages = subscribe(&mut client, subscription("jobs.x", "", "", manual(1))).await;
    publish(&mut client, "jobs.x", 1).await;

    let first = next(&mut messages).await;
    assert_eq!((first.delivery_count, first.redelivered), (1, false));
    assert!(!first.ack_id.is_empty());
    let second = next(&mut messages).await;
    assert_eq!(second.sequence, first.sequence);
    assert_eq!((second.delivery_count, second.redelivered), (2, true));
    assert_ne!(second.ack_id, first.ack_id);

    let expired = ack(&mut client, &first.ack_id).await.unwrap_err();
    assert_eq!(expired.code(), Code::NotFound);
    assert!(
        expired.message().contains("expired"),
        "{}",
        expired.message()
    );
    ack(&mut client, &second.ack_id).await.expect("acked");
    let again = ack(&mut client, &second.ack_id).await.unwrap_err();
    assert_eq!(again.code(), Code::NotFound, "settled once");
    h.broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nacked_message_comes_back_after_its_delay() {
    let mut h = Harness::start().await;
    create_stream(&mut h, "JOBS", "jobs.>").await;
    let mut client = h.client.clone();
    let mut messages = subscribe(&mut client, subscription("jobs.x", "", "", manual(30))).await;
    publish(&mut client, "jobs.x", 1).await;

    let first = next(&mut messages).await;
    let delay = Duration::from_millis(1_500);
    let nacked_at = Instant::now();
    client
        .nack(NackRequest {
            ack_id: first.ack_id.clone(),
            delay_ms: delay.as_millis() as i64,
        })
        .await
        .expect("nacked");
    let second = next(&mut messages).await;
    let waited = nacked_at.elapsed();
    assert_eq!(
        (second.sequence, second.delivery_count),
        (first.sequence, 2)
    );
    assert!(
        waited >= delay - Duration::from_millis(100),
        "back after {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(25),
        "not after ack_wait: {waited:?}"
    );

    // No delay: back at once.
    client
        .nack(NackRequest {
            ack_id: second.ack_id,
            delay_ms: 0,
        })
        .await
        .expect("nacked");
    let third = next(&mut messages).await;
    assert_eq!(third.delivery_count, 3);
    ack(&mut client, &third.ack_id).await.expect("acked");
    h.broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_progress_extends_the_ack_wait_and_term_stops_redelivery() {
    let mut h = Harness::start().await;
    create_stream(&mut h, "JOBS", "jobs.>").await;
    let mut client = h.client.clone();
    let options = manual(2);
    let mut messages = subscribe(&mut client, subscription("jobs.slow", "slow", "", options)).await;
    publish(&mut client, "jobs.slow", 1).await;

    let slow = next(&mut messages).await;
    let received = Instant::now();
    tokio::time::sleep_until(received + Duration::from_millis(1_200)).await;
    client
        .in_progress(AckRequest {
            ack_id: slow.ack_id.clone(),
        })
        .await
        .expect("in progress");
    // Past the first ack wait, within the extended one.
    tokio::time::sleep_until(received + Duration::from_millis(2_600)).await;
    ack(&mut client, &slow.ack_id)
        .await
        .expect("still pending: the ack wait was extended");

    publish(&mut client, "jobs.slow", 1).await;
    let doomed = next(&mut messages).await;
    assert_eq!((doomed.sequence, doomed.delivery_count), (2, 1));
    client
        .term(AckRequest {
            ack_id: doomed.ack_id.clone(),
        })
        .await
        .expect("terminated");
    let info = consumer_info(&h, "JOBS", "slow").await;
    assert_eq!((info.num_ack_pending, info.num_pending), (0, 0));
    assert_eq!(info.num_redelivered, 0, "neither message was redelivered");
    h.broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_failing_max_deliver_times_is_dead_lettered() {
    let mut h = Harness::start().await;
    create_stream(&mut h, "JOBS", "jobs.>").await;
    let mut client = h.client.clone();
    let options = SubscribeOptions {
        max_deliver: 3,
        ..manual(30)
    };
    let mut messages = subscribe(&mut client, subscription("jobs.bad", "", "", options)).await;
    publish(&mut client, "jobs.bad", 1).await;
    let mut sequence = 0;
    for attempt in 1..=3 {
        let message = next(&mut messages).await;
        assert_eq!(message.delivery_count, attempt);
        sequence = message.sequence;
        client
            .nack(NackRequest {
                ack_id: message.ack_id,
                delay_ms: 0,
            })
            .await
            .expect("nacked");
    }

    let js = jetstream::new(h.nats_client().await);
    let dead = wait_for(WAIT, || {
        let js = js.clone();
        async move {
            let stream = js.get_stream(DEAD_LETTER_STREAM).await.ok()?;
            stream
                .get_last_raw_message_by_subject("lax.dlq.JOBS.jobs.bad")
                .await
                .ok()
        }
    })
    .await
    .expect("the message lands on the dead-letter subject");
    assert_eq!(&dead.payload[..], b"0");
    let header = |name: &str| {
        dead.headers
            .get_last(name)
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(header(ORIGINAL_SUBJECT_HEADER), "jobs.bad");
    assert_eq!(header(ORIGINAL_STREAM_HEADER), "JOBS");
    assert_eq!(header(ORIGINAL_SEQUENCE_HEADER), sequence.to_string());
    assert_eq!(header(DELIVERIES_HEADER), "3");
    assert!(!header(CONSUMER_HEADER).is_empty());
    assert_eq!(header("Trace-Id"), "trace-0", "original headers are kept");

    // The application never sees a fourth delivery.
    assert!(
        tokio::time::timeout(Duration::from_secs(1), messages.next())
            .await
            .is_err()
    );
    h.broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_dead_letters_timed_out_messages_to_a_custom_subject() {
    let mut h = Harness::start().await;
    create_stream(&mut h, "JOBS", "jobs.>").await;
    create_stream(&mut h, "DEAD", "dead.>").await;
    let mut client = h.client.clone();

    let uncaptured = SubscribeOptions {
        max_deliver: 2,
        dead_letter_subject: "nowhere.jobs".into(),
        ..manual(1)
    };
    let refused = client
        .subscribe(subscription("jobs.t", "", "", uncaptured))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let looping = SubscribeOptions {
        max_deliver: 2,
        dead_letter_subject: "jobs.dead".into(),
        ..manual(1)
    };
    let refused = client
        .subscribe(subscription("jobs.t", "", "", looping))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");

    let options = SubscribeOptions {
        max_deliver: 2,
        dead_letter_subject: "dead.jobs".into(),
        ..manual(1)
    };
    let mut messages =
        subscribe(&mut client, subscription("jobs.t", "timeouts", "", options)).await;
    publish(&mut client, "jobs.t", 1).await;
    // Never acked: each delivery times out.
    assert_eq!(next(&mut messages).await.delivery_count, 1);
    assert_eq!(next(&mut messages).await.delivery_count, 2);
    let js = jetstream::new(h.nats_client().await);
    let dead = wait_for(WAIT, || {
        let js = js.clone();
        async move {
            let stream = js.get_stream("DEAD").await.ok()?;
            stream
                .get_last_raw_message_by_subject("dead.jobs")
                .await
                .ok()
        }
    })
    .await
    .expect("dead-lettered after the last delivery timed out");
    assert_eq!(
        dead.headers.get_last(CONSUMER_HEADER).unwrap().as_str(),
        "timeouts"
    );
    wait_until(WAIT, || async {
        consumer_info(&h, "JOBS", "timeouts").await.num_ack_pending == 0
    })
    .await
    .expect("the dead letter is terminated");

    let conflicting = SubscribeOptions {
        max_deliver: 5,
        ..manual(1)
    };
    let refused = client
        .subscribe(subscription("jobs.t", "timeouts", "", conflicting))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("max_deliver"), "{refused:?}");
    h.broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_disconnects_gives_its_messages_to_the_others() {
    const MESSAGES: usize = 100;
    let mut h = Harness::start().await;
    create_stream(&mut h, "WORK", "work.>").await;
    publish(&mut h.client.clone(), "work.items", MESSAGES).await;

    // A long ack wait: anything seen again before it elapses was given back, not timed out.
    let options = SubscribeOptions {
        prefetch: 100,
        ..manual(120)
    };
    let mut leaving_client = h.client.clone();
    let mut leaving = subscribe(
        &mut leaving_client,
        subscription("work.items", "crew", "first", options.clone()),
    )
    .await;
    let mut taken = HashSet::new();
    for _ in 0..10 {
        taken.insert(next(&mut leaving).await.sequence);
    }
    wait_until(WAIT, || async {
        consumer_info(&h, "WORK", "crew").await.num_ack_pending as usize == MESSAGES
    })
    .await
    .expect("the leaving member holds every message");

    let mut staying_client = h.client.clone();
    let mut staying = subscribe(
        &mut staying_client,
        subscription("work.items", "crew", "", options),
    )
    .await;
    drop(leaving);

    let started = Instant::now();
    let mut received = HashMap::new();
    while received.len() < MESSAGES {
        let message = next(&mut staying).await;
        ack(&mut staying_client, &message.ack_id)
            .await
            .expect("acked");
        received.insert(message.sequence, message.delivery_count);
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "given back, not timed out"
    );
    for sequence in &taken {
        assert!(
            received[sequence] >= 2,
            "message {sequence} was redelivered"
        );
    }
    wait_until(WAIT, || async {
        let info = consumer_info(&h, "WORK", "crew").await;
        info.num_ack_pending == 0 && info.num_pending == 0
    })
    .await
    .expect("nothing lost");
    h.broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_positions_start_where_they_say() {
    let mut h = Harness::start().await;
    create_stream(&mut h, "LOG", "log.>").await;
    let mut client = h.client.clone();
    publish(&mut client, "log.line", 5).await;
    let auto = SubscribeOptions::default;

    let mut first = subscribe(&mut client, subscription("log.line", "", "first", auto())).await;
    let message = next(&mut first).await;
    assert_eq!((message.sequence, &message.payload[..]), (1, &b"0"[..]));
    assert_eq!(message.subject, "log.line");
    assert_eq!(message.stream, "LOG");
    assert_eq!(message.trace_id, "trace-0");
    assert_eq!(message.headers["Trace-Id"], "trace-0");
    assert!(!message.id.is_empty(), "the message id travels along");
    assert!(message.timestamp.is_some());
    assert!(message.ack_id.is_empty(), "acked on delivery");

    let mut last = subscribe(&mut client, subscription("log.line", "", "last", auto())).await;
    assert_eq!(next(&mut last).await.sequence, 5);
    let mut third = subscribe(
        &mut client,
        subscription("log.line", "", "sequence:3", auto()),
    )
    .await;
    assert_eq!(next(&mut third).await.sequence, 3);
    assert_eq!(next(&mut third).await.sequence, 4);
    let mut new = subscribe(&mut client, subscription("log.line", "", "new", auto())).await;
    publish(&mut client, "log.line", 1).await;
    assert_eq!(next(&mut new).await.sequence, 6);

    for (subject, start, code) in [
        ("log.line", "oldest", Code::InvalidArgument),
        ("log.line", "sequence:0", Code::InvalidArgument),
        ("nothing.here", "first", Code::NotFound),
    ] {
        let refused = client
            .subscribe(subscription(subject, "", start, auto()))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), code, "{subject} {start}: {refused:?}");
    }
    h.broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_on_delivery_and_unknown_ids_are_not_found() {
    let mut h = Harness::start().await;
    create_stream(&mut h, "LOG", "log.>").await;
    let mut client = h.client.clone();
    let mut messages = subscribe(
        &mut client,
        subscription("log.line", "auto", "", SubscribeOptions::default()),
    )
    .await;
    publish(&mut client, "log.line", 20).await;
    for _ in 0..20 {
        assert!(next(&mut messages).await.ack_id.is_empty());
    }
    wait_until(WAIT, || async {
        let info = consumer_info(&h, "LOG", "auto").await;
        info.num_ack_pending == 0 && info.ack_floor.stream_sequence == 20
    })
    .await
    .expect("every message acked on delivery");

    for ack_id in ["nobody.1.1", "x"] {
        assert_eq!(
            ack(&mut client, ack_id).await.unwrap_err().code(),
            Code::NotFound
        );
    }
    assert_eq!(
        ack(&mut client, "").await.unwrap_err().code(),
        Code::InvalidArgument
    );
    let negative = client
        .nack(NackRequest {
            ack_id: "nobody.1.1".into(),
            delay_ms: -1,
        })
        .await
        .unwrap_err();
    assert_eq!(negative.code(), Code::InvalidArgument);
    h.broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_subscriptions_with_unavailable() {
    let mut h = Harness::start().await;
    create_stream(&mut h, "LOG", "log.>").await;
    let mut client = h.client.clone();
    let mut messages = subscribe(
        &mut client,
        subscription("log.line", "", "", SubscribeOptions::default()),
    )
    .await;
    let broker = h.broker;
    let shutdown = tokio::spawn(broker.shutdown());
    let ended = tokio::time::timeout(WAIT, messages.next())
        .await
        .expect("the subscription ends");
    match ended {
        Some(Err(status)) => assert_eq!(status.code(), Code::Unavailable),
        other => panic!("expected UNAVAILABLE, got {other:?}"),
    }
    shutdown.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_controlled_subscriptions_deliver_everything_in_order() {
    let mut h = Harness::start().await;
    create_stream(&mut h, "LOG", "log.>").await;
    let mut client = h.client.clone();
    publish(&mut client, "log.line", 30).await;
    let options = SubscribeOptions {
        prefetch: 5,
        enable_flow_control: true,
        ..manual(30)
    };
    let mut messages = subscribe(
        &mut client,
        subscription("log.line", "paced", "first", options),
    )
    .await;
    for expected in 1..=30 {
        let message = next(&mut messages).await;
        assert_eq!(message.sequence, expected);
        ack(&mut client, &message.ack_id).await.expect("acked");
    }
    let info = consumer_info(&h, "LOG", "paced").await;
    assert_eq!((info.num_ack_pending, info.num_pending), (0, 0));
    h.broker.shutdown().await.unwrap();
}

/// The Python SDK's defaults: a group with max_ack_pending 1000 and max_deliver 5, members
/// with max_inflight 100, prefetch 10, flow control on, and no Ack call.
fn python_group(name: &str, stream: &str, filter: &str) -> ConsumerGroupRequest {
    ConsumerGroupRequest {
        name: name.into(),
        stream: stream.into(),
        subject_filter: filter.into(),
        config: Some(ConsumerGroupConfig {
            deliver_policy: "new".into(),
            max_deliver: 5,
            ack_wait_seconds: 30,
            max_ack_pending: 1000,
            ..Default::default()
        }),
    }
}

fn python_member() -> SubscribeOptions {
    SubscribeOptions {
        max_inflight: 100,
        manual_ack: true,
        max_deliver: 5,
        prefetch: 10,
        enable_flow_control: true,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_consumer_group_flows_join_and_deliver() {
    let mut h = Harness::start().await;
    create_stream(&mut h, "E5D", "e5d.>").await;
    create_stream(&mut h, "ORDERS", "orders.>").await;
    let mut client = h.client.clone();

    // A group over the whole stream (`>`), joined by a member naming one subject: it gets
    // everything the group's filter selects.
    client
        .create_consumer_group(python_group("jobs", "E5D", ">"))
        .await
        .expect("group created");
    let mut jobs = subscribe(
        &mut client,
        subscription("e5d.jobs", "jobs", "", python_member()),
    )
    .await;
    publish(&mut client, "e5d.jobs", 1).await;
    publish(&mut client, "e5d.other", 1).await;
    let (first, second) = (next(&mut jobs).await, next(&mut jobs).await);
    assert_eq!(
        (first.subject.as_str(), second.subject.as_str()),
        ("e5d.jobs", "e5d.other")
    );
    assert!(
        first.ack_id.is_empty(),
        "an old-contract member is acked by the broker"
    );

    // A group on `orders.*` joined on `orders.*`.
    client
        .create_consumer_group(python_group("billing", "ORDERS", "orders.*"))
        .await
        .expect("group created");
    let mut orders = subscribe(
        &mut client,
        subscription("orders.*", "billing", "", python_member()),
    )
    .await;
    publish(&mut client, "orders.created", 3).await;
    for _ in 0..3 {
        assert_eq!(next(&mut orders).await.subject, "orders.created");
    }
    wait_until(WAIT, || async {
        let info = consumer_info(&h, "ORDERS", "billing").await;
        info.num_ack_pending == 0 && info.ack_floor.stream_sequence == 3
    })
    .await
    .expect("acked by the broker on hand-over");

    // Only the group's own settings conflict, and the error names both values.
    let refused = client
        .subscribe(subscription(
            "orders.*",
            "billing",
            "",
            SubscribeOptions {
                ack_wait_seconds: 5,
                ..python_member()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(
        refused.message().contains("ack_wait is 30s, asked for 5s"),
        "{refused:?}"
    );
    // A subject the group's filter never matches is refused.
    let refused = client
        .subscribe(subscription(
            "orders.eu.created",
            "billing",
            "",
            python_member(),
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert!(refused.message().contains("subject_filter"), "{refused:?}");
    h.broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settle_answers_each_settlement_of_a_batch() {
    let mut h = Harness::start().await;
    create_stream(&mut h, "JOBS", "jobs.>").await;
    let mut client = h.client.clone();
    let mut messages = subscribe(
        &mut client,
        subscription("jobs.batch", "batch", "first", manual(30)),
    )
    .await;
    publish(&mut client, "jobs.batch", 4).await;
    let mut ack_ids = Vec::new();
    for _ in 0..4 {
        ack_ids.push(next(&mut messages).await.ack_id);
    }
    let settlement = |ack_id: &str, kind: SettleKind| Settlement {
        ack_id: ack_id.into(),
        kind: kind as i32,
        delay_ms: 0,
    };
    let results = client
        .settle(SettleRequest {
            settlements: vec![
                settlement(&ack_ids[0], SettleKind::Ack),
                settlement("nobody.1.1", SettleKind::Ack),
                settlement(&ack_ids[1], SettleKind::Ack),
                settlement(&ack_ids[2], SettleKind::Term),
                settlement(&ack_ids[3], SettleKind::Nack),
                Settlement {
                    kind: 42,
                    ..settlement(&ack_ids[0], SettleKind::Ack)
                },
            ],
        })
        .await
        .expect("answered")
        .into_inner()
        .results;
    let codes: Vec<i32> = results.iter().map(|r| r.code).collect();
    assert_eq!(
        codes,
        [
            0,
            Code::NotFound as i32,
            0,
            0,
            0,
            Code::InvalidArgument as i32
        ],
        "{results:?}"
    );
    // The nacked one comes back at once; the others are done.
    let again = next(&mut messages).await;
    assert_eq!((again.sequence, again.delivery_count), (4, 2));
    ack(&mut client, &again.ack_id).await.expect("acked");
    wait_until(WAIT, || async {
        let info = consumer_info(&h, "JOBS", "batch").await;
        info.num_ack_pending == 0 && info.ack_floor.stream_sequence == 4
    })
    .await
    .expect("every message settled");
    h.broker.shutdown().await.unwrap();
}
