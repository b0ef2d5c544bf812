//! StreamPublish: throughput, one ack per message, a bad message failing alone, the window,
//! shutdown.

mod common;

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use common::{Harness, WAIT, request};
use futures::{FutureExt as _, StreamExt as _};
use lax_proto::broker::v1::PublishAck;
use lax_testkit::wait_until;
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tonic::{Code, Status, Streaming};

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

/// The broker's `lax_broker_inflight_publishes` gauge.
fn inflight(h: &Harness) -> f64 {
    let text = h.broker.metrics().render();
    text.lines()
        .find_map(|line| line.strip_prefix("lax_broker_inflight_publishes "))
        .map_or(0.0, |value| value.trim().parse().expect("a number"))
}

/// Freezes nats-server until the guard is dropped, so sent messages wait for their acks.
struct Frozen(Pid);

impl Frozen {
    fn nats(h: &Harness) -> Frozen {
        let pid = Pid::from_raw(h.nats.pid().expect("nats-server runs") as i32);
        kill(pid, Signal::SIGSTOP).expect("SIGSTOP");
        Frozen(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        let _ = kill(self.0, Signal::SIGCONT);
    }
}

async fn next_ack(acks: &mut Streaming<PublishAck>) -> Option<Result<PublishAck, Status>> {
    tokio::time::timeout(WAIT, acks.next())
        .await
        .expect("the call answers")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_window_stops_reading_until_acks_make_room() {
    const WINDOW: usize = 4;
    const SENT: usize = 20;
    let mut h = Harness::start_with(|config| config.stream_window = WINDOW as u32).await;
    // The broker knows the stream of the subject before NATS freezes.
    h.client
        .publish(request("jobs.run", "x", "persistent"))
        .await
        .unwrap();
    let frozen = Frozen::nats(&h);
    let taken = Arc::new(AtomicUsize::new(0));
    let requests = {
        let taken = Arc::clone(&taken);
        futures::stream::iter((0..SENT).map(|i| {
            let mut r = request("jobs.run", "x", "persistent");
            r.message_id = format!("job-{i}");
            r
        }))
        .inspect(move |_| {
            taken.fetch_add(1, Ordering::SeqCst);
        })
    };
    let mut acks = h
        .client
        .stream_publish(requests)
        .await
        .unwrap()
        .into_inner();
    wait_until(WAIT, || async {
        taken.load(Ordering::SeqCst) == SENT && inflight(&h) >= WINDOW as f64
    })
    .await
    .expect("the client hands over every request and the broker sends a window of them");
    // The other requests are at the broker now; with no ack to make room, none is read.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        inflight(&h),
        WINDOW as f64,
        "the window bounds what is sent"
    );
    drop(frozen);
    let mut acked = HashMap::new();
    while let Some(ack) = next_ack(&mut acks).await {
        let ack = ack.expect("the call ends OK");
        assert!(ack.success, "{ack:?}");
        *acked.entry(ack.message_id).or_insert(0) += 1;
    }
    assert_eq!(
        acked.len(),
        SENT,
        "every request is read once acks make room"
    );
    assert!(
        acked.values().all(|&n| n == 1),
        "each acked once: {acked:?}"
    );
    assert_eq!(h.stream_messages("JOBS").await, 1 + SENT as u64);
    h.broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_the_messages_awaiting_acks_and_reads_no_more() {
    let mut h = Harness::start().await;
    // The broker knows the stream of the subject before NATS freezes.
    h.client
        .publish(request("jobs.run", "x", "persistent"))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let mut acks = h
        .client
        .stream_publish(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let job = |i: usize| {
        let mut r = request("jobs.run", "x", "persistent");
        r.message_id = format!("job-{i}");
        r
    };
    let frozen = Frozen::nats(&h);
    for i in 0..3 {
        tx.send(job(i)).await.unwrap();
    }
    wait_until(WAIT, || async { inflight(&h) == 3.0 })
        .await
        .expect("the broker sends the three messages");
    // The first poll of `shutdown` tells every call to stop reading.
    let mut shutdown = Box::pin(h.broker.shutdown());
    assert!((&mut shutdown).now_or_never().is_none(), "calls still run");
    let shutdown = tokio::spawn(shutdown);
    tx.send(job(3)).await.unwrap();
    drop(frozen);
    let mut acked = Vec::new();
    let end = loop {
        match next_ack(&mut acks).await {
            Some(Ok(ack)) => {
                assert!(ack.success, "{ack:?}");
                acked.push(ack.message_id);
            }
            other => break other,
        }
    };
    acked.sort();
    assert_eq!(
        acked,
        ["job-0", "job-1", "job-2"],
        "what was sent is answered"
    );
    match end {
        Some(Err(status)) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        other => panic!("expected the call to end UNAVAILABLE, got {other:?}"),
    }
    shutdown.await.unwrap().unwrap();
    drop(tx);
    let stored = common::stream_messages(&h.nats, "JOBS").await;
    assert_eq!(
        stored, 4,
        "the warm-up and the three answered; job-3 was never read"
    );
}
