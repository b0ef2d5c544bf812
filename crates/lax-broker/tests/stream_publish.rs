//! StreamPublish: throughput, one ack per message, a bad message failing alone, shutdown.

mod common;

use std::{collections::HashMap, time::Instant};

use common::{Harness, WAIT, request};
use futures::StreamExt as _;
use tonic::Code;

const MESSAGES: usize = 10_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_are_each_acked_exactly_once() {
    let mut h = Harness::start().await;
    // Create the stream first so the figure measures publishing, not stream creation.
    h.client
        .publish(request("metrics.warmup", "x", "persistent"))
        .await
        .unwrap();
    let requests: Vec<_> = (0..MESSAGES)
        .map(|i| {
            let mut r = request(
                &format!("metrics.cpu.{}", i % 16),
                &format!("{{\"v\":{i}}}"),
                "persistent",
            );
            r.message_id = format!("m-{i}");
            if i == 5_000 {
                r.subject = "metrics..bad".into();
            }
            r
        })
        .collect();
    let started = Instant::now();
    let mut acks = h
        .client
        .stream_publish(futures::stream::iter(requests))
        .await
        .unwrap()
        .into_inner();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut failed = Vec::new();
    while let Some(ack) = tokio::time::timeout(WAIT, acks.next())
        .await
        .expect("acks keep coming")
    {
        let ack = ack.expect("the call stays healthy");
        *seen.entry(ack.message_id.clone()).or_default() += 1;
        if !ack.success {
            failed.push(ack);
        } else {
            assert_eq!(ack.stream, "METRICS");
        }
    }
    let elapsed = started.elapsed();
    println!(
        "StreamPublish: {MESSAGES} messages in {:.3} s = {:.0} msgs/s",
        elapsed.as_secs_f64(),
        MESSAGES as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(seen.len(), MESSAGES);
    assert!(
        seen.values().all(|&n| n == 1),
        "every id acked exactly once"
    );
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].message_id, "m-5000");
    assert_eq!(failed[0].error_code, Code::InvalidArgument as i32);
    assert_eq!(h.stream_messages("METRICS").await, MESSAGES as u64);
    h.broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_what_was_sent_and_ends_the_call_unavailable() {
    let h = Harness::start().await;
    let mut client = h.client.clone();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let mut acks = client
        .stream_publish(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    for i in 0..3 {
        let mut r = request("jobs.run", "x", "persistent");
        r.message_id = format!("job-{i}");
        tx.send(r).await.unwrap();
    }
    let mut acked = Vec::new();
    while acked.len() < 3 {
        let ack = tokio::time::timeout(WAIT, acks.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(ack.success, "{ack:?}");
        acked.push(ack.message_id);
    }
    let shutdown = tokio::spawn(h.broker.shutdown());
    let end = tokio::time::timeout(WAIT, acks.next()).await.unwrap();
    match end {
        Some(Err(status)) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        other => panic!("expected the call to end UNAVAILABLE, got {other:?}"),
    }
    drop(tx);
    shutdown.await.unwrap().unwrap();
}
