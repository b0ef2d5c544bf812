//! One conformance suite that every [`Publisher`] must pass, in the spirit of Watermill's
//! publisher tests: publishes arrive, headers and ids are preserved, invalid input is refused
//! (and nothing of it arrives), `close` drains what is in flight, and concurrent use is safe.
//!
//! A transport's tests implement [`Harness`] — how to make a publisher and how to watch what
//! reaches the server — and call [`run`]:
//!
//! ```no_run
//! # use lax_core::testing::conformance::{self, Harness, Observer};
//! # async fn demo<H: Harness>(harness: H) {
//! conformance::run(&harness).await;
//! # }
//! ```

use std::{
    collections::HashSet,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use tokio::{sync::mpsc, time::Instant};

use crate::{
    error::ErrorKind,
    message::{Headers, PublishOptions, PublishRequest, SmolStr, new_message_id},
    publisher::Publisher,
};

/// How long the suite waits for messages to arrive.
const ARRIVAL_DEADLINE: Duration = Duration::from_secs(20);

/// A message as the server side saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// Its subject.
    pub subject: String,
    /// Its payload.
    pub payload: Bytes,
    /// Its headers, as delivered (transport headers such as `Nats-Msg-Id` included).
    pub headers: Headers,
    /// The message id the transport carried (the `Message-Id` or `Nats-Msg-Id` header).
    pub message_id: Option<SmolStr>,
}

/// Receives what arrives on the subjects a [`Harness`] watches.
#[derive(Debug)]
pub struct Observer {
    rx: mpsc::UnboundedReceiver<ReceivedMessage>,
}

impl Observer {
    /// An observer and the sender a harness feeds it through.
    pub fn channel() -> (mpsc::UnboundedSender<ReceivedMessage>, Observer) {
        let (tx, rx) = mpsc::unbounded_channel();
        (tx, Observer { rx })
    }

    /// Waits for `n` messages, panicking with what did arrive if the deadline passes first.
    pub async fn take(&mut self, n: usize, deadline: Duration) -> Vec<ReceivedMessage> {
        let until = Instant::now() + deadline;
        let mut got = Vec::with_capacity(n);
        while got.len() < n {
            match tokio::time::timeout_at(until, self.rx.recv()).await {
                Ok(Some(msg)) => got.push(msg),
                Ok(None) => panic!("observer closed after {} of {n} messages", got.len()),
                Err(_) => panic!(
                    "only {} of {n} messages arrived within {deadline:?}",
                    got.len()
                ),
            }
        }
        got
    }
}

/// What the suite needs from a transport's test setup.
pub trait Harness: Send + Sync {
    /// The publisher under test.
    type Publisher: Publisher;

    /// A fresh, connected publisher.
    fn publisher(&self) -> impl Future<Output = Self::Publisher> + Send;

    /// Starts watching every subject under `prefix` (i.e. `prefix.>`) on the server side. The
    /// watch must be in place when the future completes.
    fn observe(&self, prefix: &str) -> impl Future<Output = Observer> + Send;

    /// The options that send messages down this publisher's path (tier, ack).
    fn options(&self) -> PublishOptions;

    /// The first subject token the suite publishes under; broker harnesses may need a stream
    /// capturing it.
    fn subject_root(&self) -> &str {
        "conformance"
    }
}

/// Runs every case of the suite, panicking on the first failure with a message naming it.
pub async fn run<H: Harness>(harness: &H) {
    publishes_arrive(harness).await;
    headers_and_ids_are_preserved(harness).await;
    invalid_input_is_refused(harness).await;
    concurrent_use_is_safe(harness).await;
    close_drains_in_flight_publishes(harness).await;
}

fn prefix<H: Harness>(harness: &H, case: &str) -> String {
    format!("{}.{case}.{}", harness.subject_root(), new_message_id())
}

fn request<H: Harness>(harness: &H, subject: String, payload: impl Into<Bytes>) -> PublishRequest {
    PublishRequest::new(subject, payload).with_options(harness.options())
}

/// Twenty messages published one after another all arrive, in order, intact.
pub async fn publishes_arrive<H: Harness>(harness: &H) {
    let prefix = prefix(harness, "arrive");
    let mut observer = harness.observe(&prefix).await;
    let publisher = harness.publisher().await;
    let mut sent = Vec::new();
    for i in 0..20 {
        let req = request(harness, format!("{prefix}.m{i}"), format!("payload-{i}"));
        sent.push((req.subject.to_string(), req.payload.clone()));
        let receipt = publisher
            .publish(req.clone())
            .await
            .unwrap_or_else(|e| panic!("publishes_arrive: publish {i} failed: {e}"));
        assert_eq!(
            receipt.message_id, req.message_id,
            "publishes_arrive: receipt id"
        );
    }
    let got = observer.take(sent.len(), ARRIVAL_DEADLINE).await;
    let got: Vec<_> = got.into_iter().map(|m| (m.subject, m.payload)).collect();
    assert_eq!(
        got, sent,
        "publishes_arrive: messages differ from what was sent"
    );
    publisher.close().await.expect("publishes_arrive: close");
}

/// Application headers, the caller's message id and binary payloads arrive unchanged.
pub async fn headers_and_ids_are_preserved<H: Harness>(harness: &H) {
    let prefix = prefix(harness, "headers");
    let mut observer = harness.observe(&prefix).await;
    let publisher = harness.publisher().await;
    let id = format!("conformance-{}", new_message_id());
    let payload = Bytes::from_static(&[0, 1, 2, 255, b'\n', b'\r', 0]);
    let req = request(harness, format!("{prefix}.one"), payload.clone())
        .with_header("X-Lax-Test", "value with spaces")
        .with_header("Trace-Id", "abc123")
        .with_message_id(id.clone());
    let receipt = publisher
        .publish(req)
        .await
        .unwrap_or_else(|e| panic!("headers_and_ids: publish failed: {e}"));
    assert_eq!(
        receipt.message_id, id,
        "headers_and_ids: receipt carries the caller's id"
    );
    let got = observer.take(1, ARRIVAL_DEADLINE).await.remove(0);
    assert_eq!(got.payload, payload, "headers_and_ids: payload");
    assert_eq!(got.headers.get("X-Lax-Test"), Some("value with spaces"));
    assert_eq!(got.headers.get("Trace-Id"), Some("abc123"));
    assert_eq!(
        got.message_id.as_deref(),
        Some(id.as_str()),
        "headers_and_ids: message id"
    );
    publisher.close().await.expect("headers_and_ids: close");
}

/// Bad subjects, headers and oversized payloads fail with `InvalidInput`, and none of them
/// reaches the server: the next thing to arrive is a valid sentinel published afterwards.
pub async fn invalid_input_is_refused<H: Harness>(harness: &H) {
    let prefix = prefix(harness, "invalid");
    let mut observer = harness.observe(&prefix).await;
    let publisher = harness.publisher().await;
    let bad = [
        ("empty subject", request(harness, String::new(), "x")),
        ("wildcard *", request(harness, format!("{prefix}.*"), "x")),
        ("wildcard >", request(harness, format!("{prefix}.>"), "x")),
        ("empty token", request(harness, format!("{prefix}..x"), "x")),
        ("space", request(harness, format!("{prefix}.a b"), "x")),
        (
            "header name",
            request(harness, format!("{prefix}.h"), "x").with_header("bad name", "v"),
        ),
        (
            "header value",
            request(harness, format!("{prefix}.h"), "x").with_header("X-Bad", "a\r\nb"),
        ),
        (
            "payload over 64 MiB",
            request(
                harness,
                format!("{prefix}.big"),
                vec![0u8; 64 * 1024 * 1024 + 1],
            ),
        ),
    ];
    for (what, req) in bad {
        match publisher.publish(req).await {
            Err(e) if e.kind() == ErrorKind::InvalidInput => {}
            Err(e) => panic!(
                "invalid_input: {what}: wrong error kind {:?}: {e}",
                e.kind()
            ),
            Ok(_) => panic!("invalid_input: {what}: accepted"),
        }
    }
    let sentinel = request(harness, format!("{prefix}.sentinel"), "ok");
    publisher
        .publish(sentinel.clone())
        .await
        .unwrap_or_else(|e| panic!("invalid_input: sentinel failed: {e}"));
    let got = observer.take(1, ARRIVAL_DEADLINE).await.remove(0);
    assert_eq!(
        got.subject, sentinel.subject,
        "invalid_input: something refused reached the server"
    );
    publisher.close().await.expect("invalid_input: close");
}

/// Eight tasks publishing fifty messages each through one publisher: every publish succeeds and
/// every message arrives once.
pub async fn concurrent_use_is_safe<H: Harness>(harness: &H) {
    const TASKS: usize = 8;
    const EACH: usize = 50;
    let prefix = prefix(harness, "concurrent");
    let mut observer = harness.observe(&prefix).await;
    let publisher = Arc::new(harness.publisher().await);
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let publisher = Arc::clone(&publisher);
        let reqs: Vec<_> = (0..EACH)
            .map(|i| request(harness, format!("{prefix}.t{t}"), format!("{t}-{i}")))
            .collect();
        tasks.push(tokio::spawn(async move {
            for req in reqs {
                publisher.publish(req).await?;
            }
            Ok::<_, crate::Error>(())
        }));
    }
    for task in tasks {
        task.await
            .expect("concurrent_use: task panicked")
            .unwrap_or_else(|e| panic!("concurrent_use: publish failed: {e}"));
    }
    let got = observer.take(TASKS * EACH, ARRIVAL_DEADLINE).await;
    let distinct: HashSet<_> = got.iter().map(|m| m.payload.clone()).collect();
    assert_eq!(
        distinct.len(),
        TASKS * EACH,
        "concurrent_use: duplicates or losses"
    );
    publisher.close().await.expect("concurrent_use: close");
}

/// Publishes in flight when `close` is called all complete and arrive; publishing afterwards
/// fails with `Closed`.
pub async fn close_drains_in_flight_publishes<H: Harness>(harness: &H) {
    const N: usize = 50;
    let prefix = prefix(harness, "close");
    let mut observer = harness.observe(&prefix).await;
    let publisher = Arc::new(harness.publisher().await);
    let started = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..N {
        let publisher = Arc::clone(&publisher);
        let started = Arc::clone(&started);
        let req = request(harness, format!("{prefix}.m"), format!("{i}"));
        tasks.push(tokio::spawn(async move {
            let publish = publisher.publish(req);
            started.fetch_add(1, Ordering::SeqCst);
            publish.await
        }));
    }
    let until = Instant::now() + ARRIVAL_DEADLINE;
    while started.load(Ordering::SeqCst) < N {
        assert!(
            Instant::now() < until,
            "close_drains: publishes did not start"
        );
        tokio::task::yield_now().await;
    }
    publisher.close().await.expect("close_drains: close");
    for task in tasks {
        task.await
            .expect("close_drains: task panicked")
            .unwrap_or_else(|e| panic!("close_drains: an in-flight publish failed: {e}"));
    }
    observer.take(N, ARRIVAL_DEADLINE).await;
    let after = request(harness, format!("{prefix}.late"), "late");
    match publisher.publish(after).await {
        Err(e) if e.kind() == ErrorKind::Closed => {}
        other => panic!("close_drains: publish after close gave {other:?}, want Closed"),
    }
}
