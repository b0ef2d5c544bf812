//! Against a real nats-server and the in-process LAX broker: the lax-core conformance suite,
//! 10,000 concurrent publishes, and a broker going away mid-stream.

mod common;

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use async_nats::jetstream::{self, consumer::pull::OrderedConfig};
use common::broker::Env;
use futures::StreamExt;
use lax_core::{
    Headers, NATS_MSG_ID_HEADER, PublishOptions, PublishRequest, Publisher, Tier,
    testing::conformance::{self, Harness, Observer, ReceivedMessage},
};
use lax_testkit::wait_until;
use lax_transport_grpc::{GrpcOptions, GrpcPublisher};

const DEADLINE: Duration = Duration::from_secs(60);

/// Publishes through the broker; watches the `CONFORMANCE` stream with an ordered consumer,
/// so what is observed is what JetStream stored.
struct BrokerHarness {
    options: GrpcOptions,
    stream: jetstream::stream::Stream,
}

impl Harness for BrokerHarness {
    type Publisher = GrpcPublisher;

    async fn publisher(&self) -> GrpcPublisher {
        GrpcPublisher::connect(self.options.clone())
            .await
            .expect("publisher connects")
    }

    async fn observe(&self, prefix: &str) -> Observer {
        let (tx, observer) = Observer::channel();
        let consumer = self
            .stream
            .create_consumer(OrderedConfig {
                filter_subject: format!("{prefix}.>"),
                ..Default::default()
            })
            .await
            .expect("ordered consumer");
        let mut messages = consumer.messages().await.expect("consumer messages");
        tokio::spawn(async move {
            while let Some(Ok(message)) = messages.next().await {
                let headers: Headers = message
                    .headers
                    .iter()
                    .flat_map(|headers| headers.iter())
                    .filter_map(|(name, values)| {
                        let value = values.first()?;
                        Some((name.to_string(), value.as_str().to_owned()))
                    })
                    .collect();
                let received = ReceivedMessage {
                    subject: message.subject.to_string(),
                    payload: message.payload.clone(),
                    message_id: headers.get(NATS_MSG_ID_HEADER).map(Into::into),
                    headers,
                };
                if tx.send(received).is_err() {
                    return;
                }
            }
        });
        observer
    }

    fn options(&self) -> PublishOptions {
        PublishOptions::tier(Tier::Persistent).with_ack(true)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_the_conformance_suite() {
    let env = Env::start().await;
    let stream = env.stream("CONFORMANCE", &["conformance.>"]).await;
    let harness = BrokerHarness {
        options: env.options(2),
        stream,
    };
    conformance::run(&harness).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_concurrent_publishes_are_each_acked_once() {
    const N: usize = 10_000;
    let env = Env::start().await;
    env.stream("LOAD", &["load.>"]).await;
    let publisher = GrpcPublisher::connect(env.options(4).publish_timeout(Duration::from_secs(60)))
        .await
        .unwrap();
    assert_eq!(publisher.healthy_connections(), 4);
    let requests: Vec<_> = (0..N)
        .map(|i| {
            PublishRequest::new(format!("load.m{}", i % 16), format!("{i}"))
                .with_tier(Tier::Persistent)
        })
        .collect();
    let started = Instant::now();
    let receipts =
        futures::future::join_all(requests.iter().map(|r| publisher.publish(r.clone()))).await;
    let elapsed = started.elapsed();
    let mut sequences = HashSet::new();
    for (request, receipt) in requests.iter().zip(receipts) {
        let receipt =
            receipt.unwrap_or_else(|e| panic!("publish {} failed: {e}", request.message_id));
        assert_eq!(receipt.message_id, request.message_id);
        let ack = receipt.ack.unwrap();
        assert_eq!(ack.stream, "LOAD");
        assert!(!ack.duplicate);
        assert!(
            sequences.insert(ack.sequence),
            "sequence {} acked twice",
            ack.sequence
        );
    }
    assert_eq!(
        env.count("LOAD").await,
        N as u64,
        "the stream holds each message once"
    );
    println!(
        "{N} concurrent publishes over 4 connections: {:.0} msgs/s ({elapsed:?})",
        N as f64 / elapsed.as_secs_f64()
    );
    publisher.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_going_away_fails_in_flight_publishes_as_maybe_stored_and_retries_store_once() {
    const N: usize = 5_000;
    let mut env = Env::start().await;
    env.stream("KILL", &["kill.>"]).await;
    let publisher = Arc::new(
        GrpcPublisher::connect(
            env.options(2)
                .publish_timeout(Duration::from_secs(30))
                .reconnect_initial_backoff(Duration::from_millis(50))
                .reconnect_max_backoff(Duration::from_millis(500)),
        )
        .await
        .unwrap(),
    );
    let requests: Vec<_> = (0..N)
        .map(|i| {
            PublishRequest::new(format!("kill.m{}", i % 8), format!("{i}"))
                .with_tier(Tier::Persistent)
        })
        .collect();
    let tasks: Vec<_> = requests
        .iter()
        .map(|r| tokio::spawn(publisher.publish(r.clone())))
        .collect();
    // Mid-stream: some messages stored, most still to come.
    wait_until(DEADLINE, || async { env.count("KILL").await >= 200 })
        .await
        .unwrap();
    env.stop_broker().await;

    let mut failed = Vec::new();
    let mut maybe_stored = 0;
    for (request, task) in requests.iter().zip(tasks) {
        if let Err(error) = task.await.unwrap() {
            assert!(error.is_retryable(), "{error}");
            if error.may_be_stored() {
                maybe_stored += 1;
            }
            failed.push(request.clone());
        }
    }
    assert!(
        maybe_stored > 0,
        "publishes in flight on the broken streams may be stored"
    );
    println!(
        "{} of {N} publishes failed when the broker went away ({maybe_stored} may be stored)",
        failed.len()
    );

    env.restart_broker().await;
    wait_until(DEADLINE, || async { publisher.healthy_connections() == 2 })
        .await
        .expect("the pool reconnects to the new broker");
    let retries =
        futures::future::join_all(failed.iter().map(|r| publisher.publish(r.clone()))).await;
    for (request, retry) in failed.iter().zip(retries) {
        let receipt =
            retry.unwrap_or_else(|e| panic!("retry of {} failed: {e}", request.message_id));
        assert_eq!(receipt.message_id, request.message_id);
    }
    assert_eq!(
        env.count("KILL").await,
        N as u64,
        "every message is stored exactly once"
    );
    publisher.close().await.unwrap();
}
