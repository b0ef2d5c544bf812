//! Consuming through the broker with LaxClient: groups splitting work, settling by hand,
//! the handler helper, dead letters and members leaving, on a real nats-server.

mod common;

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use async_nats::jetstream::consumer::Info;
use common::{DEADLINE, Env, create_stream};
use futures::StreamExt as _;
use lax_client::{
    BatchMessage, ConsumerGroupConfig, DeliverPolicy, ErrorKind, GroupJoin, Json, LaxClient,
    ProcessOptions, PublishOptions, ReceivedMessage, StartPosition, SubscribeOptions, Subscription,
};
use lax_testkit::{wait_for, wait_until};
use serde::{Deserialize, Serialize};

async fn publish_all(
    client: &LaxClient,
    subject: &str,
    payloads: impl IntoIterator<Item = String>,
) {
    let batch = client
        .batch_publish(payloads.into_iter().map(|payload| {
            BatchMessage::new(subject, payload).with_options(PublishOptions::persistent())
        }))
        .await;
    assert_eq!(
        batch.failure_count,
        0,
        "{:?}",
        batch.errors().collect::<Vec<_>>()
    );
}

async fn consumer(env: &Env, stream: &str, name: &str) -> Info {
    env.js
        .get_stream(stream)
        .await
        .expect("stream exists")
        .consumer_info(name)
        .await
        .expect("consumer exists")
}

async fn next(subscription: &mut Subscription) -> ReceivedMessage {
    tokio::time::timeout(DEADLINE, subscription.next())
        .await
        .expect("a message within the deadline")
        .expect("the subscription is open")
        .expect("a message, not an error")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_three_processes_a_thousand_messages_once_each() {
    const MESSAGES: usize = 1_000;
    let env = Env::start().await;
    let client = LaxClient::connect(env.options()).await.unwrap();
    create_stream(&client, "TASKS", "tasks.>").await;

    let seen: Arc<Mutex<Vec<(usize, u64)>>> = Arc::default();
    let mut members = Vec::new();
    for member in 0..3 {
        let subscription = client
            .subscribe(
                "tasks.resize",
                SubscribeOptions::group("resizers").prefetch(10),
            )
            .await
            .expect("subscribed");
        let seen = Arc::clone(&seen);
        members.push(tokio::spawn(subscription.process_with(
            ProcessOptions::concurrency(4),
            move |message| {
                let seen = Arc::clone(&seen);
                async move {
                    seen.lock().unwrap().push((member, message.sequence));
                    Ok::<_, std::convert::Infallible>(())
                }
            },
        )));
    }
    wait_until(DEADLINE, || async {
        consumer(&env, "TASKS", "resizers").await.num_waiting >= 3
    })
    .await
    .expect("every member pulling");
    publish_all(
        &client,
        "tasks.resize",
        (0..MESSAGES).map(|i| i.to_string()),
    )
    .await;

    wait_until(DEADLINE, || async {
        let info = consumer(&env, "TASKS", "resizers").await;
        seen.lock().unwrap().len() >= MESSAGES && info.num_ack_pending == 0 && info.num_pending == 0
    })
    .await
    .expect("every message processed and acked");
    assert_eq!(consumer(&env, "TASKS", "resizers").await.num_redelivered, 0);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), MESSAGES, "none processed twice");
    let distinct: HashSet<u64> = seen.iter().map(|(_, sequence)| *sequence).collect();
    assert_eq!(distinct.len(), MESSAGES, "each processed once");
    let mut split = [0usize; 3];
    for (member, _) in &seen {
        split[*member] += 1;
    }
    println!("client group split of {MESSAGES} messages: {split:?}");
    for count in split {
        assert!(count >= MESSAGES * 15 / 100, "unfair split {split:?}");
    }
    for member in members {
        member.abort();
    }
    client.close().await.unwrap();
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Order {
    order_id: String,
    amount: f64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_settled_by_hand() {
    let env = Env::start().await;
    let client = LaxClient::connect(env.options()).await.unwrap();
    let order = Order {
        order_id: "456".into(),
        amount: 99.99,
    };
    let receipt = client
        .publish_with("orders.created", Json(&order), PublishOptions::persistent())
        .await
        .unwrap();
    let mut orders = client
        .subscribe(
            "orders.created",
            SubscribeOptions::group("billing").start(StartPosition::First),
        )
        .await
        .unwrap();

    let first = next(&mut orders).await;
    assert_eq!(first.json::<Order>().unwrap(), order);
    assert_eq!(first.id, receipt.message_id);
    assert_eq!(first.stream, "ORDERS");
    assert_eq!(first.headers.get("Content-Type"), Some("application/json"));
    assert!(first.timestamp.is_some());
    assert_eq!((first.delivery_count, first.redelivered), (1, false));
    assert_eq!(
        first.json::<Vec<u8>>().unwrap_err().kind(),
        ErrorKind::InvalidInput
    );
    first.nack(Duration::from_millis(300)).await.unwrap();

    let second = next(&mut orders).await;
    assert_eq!((second.delivery_count, second.redelivered), (2, true));
    second.in_progress().await.unwrap();
    second.term().await.unwrap();
    let gone = second.ack().await.unwrap_err();
    assert_eq!(gone.kind(), ErrorKind::Rejected, "{gone}");
    let info = consumer(&env, "ORDERS", "billing").await;
    assert_eq!((info.num_ack_pending, info.num_pending), (0, 0));

    assert_eq!(
        client
            .create_consumer_group(
                "billing",
                "ORDERS",
                "orders.other",
                ConsumerGroupConfig::default()
            )
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::Rejected,
        "a group of that name exists with another filter"
    );
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_handler_dead_letters_after_max_deliver() {
    let env = Env::start().await;
    let client = LaxClient::connect(env.options()).await.unwrap();
    create_stream(&client, "MAIL", "mail.>").await;
    let subscription = client
        .subscribe("mail.send", SubscribeOptions::default().max_deliver(2))
        .await
        .unwrap();
    let attempts: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let counted = Arc::clone(&attempts);
    let worker = tokio::spawn(subscription.process_with(
        ProcessOptions::default().nack_delay(Duration::ZERO),
        move |message| {
            let counted = Arc::clone(&counted);
            async move {
                let text = message.text()?.to_owned();
                *counted.lock().unwrap().entry(text.clone()).or_default() += 1;
                if text == "poison" {
                    Err(lax_client::Error::rejected("cannot send this one"))
                } else {
                    Ok(())
                }
            }
        },
    ));
    publish_all(
        &client,
        "mail.send",
        ["ok-1", "poison", "ok-2"].map(String::from),
    )
    .await;

    let dead = wait_for(DEADLINE, || async {
        let stream = env.js.get_stream("LAX_DLQ").await.ok()?;
        stream
            .get_last_raw_message_by_subject("lax.dlq.MAIL.mail.send")
            .await
            .ok()
    })
    .await
    .expect("the poison message is dead-lettered");
    assert_eq!(&dead.payload[..], b"poison");
    assert_eq!(
        dead.headers
            .get_last("Lax-Dlq-Deliveries")
            .unwrap()
            .as_str(),
        "2"
    );
    assert_eq!(
        dead.headers.get_last("Lax-Dlq-Subject").unwrap().as_str(),
        "mail.send"
    );
    let attempts = attempts.lock().unwrap().clone();
    assert_eq!(attempts["poison"], 2, "handled max_deliver times");
    assert_eq!((attempts["ok-1"], attempts["ok-2"]), (1, 1));
    worker.abort();
    client.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_member_gives_its_messages_to_the_others() {
    const MESSAGES: usize = 50;
    let env = Env::start().await;
    let client = LaxClient::connect(env.options()).await.unwrap();
    create_stream(&client, "JOBS", "jobs.>").await;
    let created = client
        .create_consumer_group(
            "crew",
            "JOBS",
            "jobs.run",
            ConsumerGroupConfig::default()
                .deliver_policy(DeliverPolicy::All)
                .ack_wait(Duration::from_secs(120)),
        )
        .await
        .unwrap();
    assert!(!created.already_existed(), "{created:?}");
    assert!(matches!(
        client
            .create_consumer_group(
                "crew",
                "JOBS",
                "jobs.run",
                ConsumerGroupConfig::default()
                    .deliver_policy(DeliverPolicy::All)
                    .ack_wait(Duration::from_secs(120)),
            )
            .await
            .unwrap(),
        GroupJoin::AlreadyExisted
    ));
    publish_all(&client, "jobs.run", (0..MESSAGES).map(|i| i.to_string())).await;

    let mut leaving = client
        .subscribe("jobs.run", SubscribeOptions::group("crew").prefetch(100))
        .await
        .unwrap();
    let held = next(&mut leaving).await.sequence;
    wait_until(DEADLINE, || async {
        consumer(&env, "JOBS", "crew").await.num_ack_pending as usize == MESSAGES
    })
    .await
    .expect("the leaving member holds every message");
    let mut staying = client
        .subscribe("jobs.run", SubscribeOptions::group("crew"))
        .await
        .unwrap();
    drop(leaving);

    let mut received = HashMap::new();
    while received.len() < MESSAGES {
        let message = next(&mut staying).await;
        message.ack().await.unwrap();
        received.insert(message.sequence, message.delivery_count);
    }
    assert!(
        received[&held] >= 2,
        "the message it was handling came back"
    );
    wait_until(DEADLINE, || async {
        let info = consumer(&env, "JOBS", "crew").await;
        info.num_ack_pending == 0 && info.num_pending == 0
    })
    .await
    .expect("nothing lost");
    client.close().await.unwrap();
}
