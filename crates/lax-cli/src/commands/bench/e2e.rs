//! End to end: a subscriber on its own thread and runtime timestamps each message as it
//! arrives, and the publish→delivery latency is its arrival time minus the time the publish
//! was called. Messages carry their index in their first 8 bytes.
//!
//! The direct route is watched by a core NATS subscription, the broker route by an ordered
//! JetStream consumer (ephemeral, flow-controlled, no acks) on the stream holding the subject:
//! a message counts as delivered when a consumer can see it.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use async_nats::jetstream::{self, consumer::DeliverPolicy};
use bytes::{BufMut as _, Bytes, BytesMut};
use futures::StreamExt as _;
use hdrhistogram::Histogram;
use lax_client::Route;
use tokio::sync::{oneshot, watch};

use super::{cpu::this_thread_ticks, driver::latency_histogram};
use crate::failure::Failure;

/// How long the subscriber waits for stragglers once every publish has returned.
const GRACE: Duration = Duration::from_secs(10);

/// The smallest payload that can carry an index.
pub(super) const MIN_SIZE: usize = 8;

/// A payload of `size` bytes starting with `index` (little endian).
pub(super) fn payload(index: u64, size: usize) -> Bytes {
    let mut bytes = BytesMut::with_capacity(size.max(MIN_SIZE));
    bytes.put_u64_le(index);
    bytes.resize(size.max(MIN_SIZE), b'x');
    bytes.freeze()
}

/// The index a payload starts with.
pub(super) fn index_of(payload: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(
        payload.get(..MIN_SIZE)?.try_into().ok()?,
    ))
}

/// When each message's publish was called, in nanoseconds since a shared origin, plus one
/// (0 = not yet published).
#[derive(Debug)]
pub(super) struct SendTimes {
    origin: Instant,
    sent: Vec<AtomicU64>,
}

impl SendTimes {
    pub(super) fn new(msgs: u64) -> Arc<Self> {
        Arc::new(SendTimes {
            origin: Instant::now(),
            sent: (0..msgs).map(|_| AtomicU64::new(0)).collect(),
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX - 1) + 1
    }

    /// Notes that message `index` is being published now.
    pub(super) fn mark(&self, index: u64) {
        if let Some(slot) = usize::try_from(index).ok().and_then(|i| self.sent.get(i)) {
            slot.store(self.now(), Ordering::Release);
        }
    }

    /// The publish→delivery latency of message `index` arriving now, in nanoseconds.
    pub(super) fn arrived(&self, index: u64) -> Option<u64> {
        let slot = usize::try_from(index).ok().and_then(|i| self.sent.get(i))?;
        let sent = slot.load(Ordering::Acquire);
        (sent != 0).then(|| self.now().saturating_sub(sent).max(1))
    }

    fn len(&self) -> u64 {
        self.sent.len() as u64
    }
}

/// What the subscriber saw.
#[derive(Debug)]
pub(super) struct Delivered {
    pub(super) latencies: Histogram<u64>,
    /// Messages of the run received (each index counted once).
    pub(super) received: u64,
    pub(super) expected: u64,
    /// CPU ticks of the subscriber's thread, not the client's.
    pub(super) ticks: u64,
}

/// A running subscriber.
#[derive(Debug)]
pub(super) struct Subscriber {
    done: watch::Sender<bool>,
    thread: thread::JoinHandle<Result<Delivered, String>>,
}

impl Subscriber {
    /// Starts watching `subject` on its own thread and returns once it is subscribed. On the
    /// broker route the stream holding the subject must exist.
    pub(super) async fn start(
        nats_urls: Vec<String>,
        route: Route,
        subject: String,
        times: Arc<SendTimes>,
    ) -> Result<Self, Failure> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (done, done_rx) = watch::channel(false);
        let thread = thread::Builder::new()
            .name("lax-bench-e2e".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("cannot start the subscriber's runtime: {e}"))?;
                runtime.block_on(watch_arrivals(
                    nats_urls, route, subject, times, ready_tx, done_rx,
                ))
            })
            .map_err(|e| Failure::runtime(format!("cannot start the subscriber thread: {e}")))?;
        match ready_rx.await {
            Ok(Ok(())) => Ok(Subscriber { done, thread }),
            Ok(Err(error)) => Err(Failure::runtime(error)),
            Err(_) => Err(Failure::runtime(
                thread
                    .join()
                    .ok()
                    .and_then(Result::err)
                    .unwrap_or_else(|| "the subscriber stopped before it was ready".into()),
            )),
        }
    }

    /// Waits until every message has arrived, or a grace period after the publishes ended.
    pub(super) async fn finish(self) -> Result<Delivered, Failure> {
        let _ = self.done.send(true);
        let thread = self.thread;
        tokio::task::spawn_blocking(move || thread.join())
            .await
            .map_err(|e| Failure::runtime(format!("the subscriber failed: {e}")))?
            .map_err(|_| Failure::runtime("the subscriber panicked"))?
            .map_err(Failure::runtime)
    }
}

async fn watch_arrivals(
    nats_urls: Vec<String>,
    route: Route,
    subject: String,
    times: Arc<SendTimes>,
    ready: oneshot::Sender<Result<(), String>>,
    mut done: watch::Receiver<bool>,
) -> Result<Delivered, String> {
    let subscribed = subscribe(&nats_urls, route, &subject).await;
    let mut messages = match subscribed {
        Ok(messages) => {
            let _ = ready.send(Ok(()));
            messages
        }
        Err(error) => {
            let _ = ready.send(Err(error.clone()));
            return Err(error);
        }
    };
    let expected = times.len();
    let mut seen = vec![false; usize::try_from(expected).unwrap_or(0)];
    let mut latencies = latency_histogram();
    let mut received = 0;
    let mut deadline: Option<tokio::time::Instant> = None;
    while received < expected {
        let grace = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            payload = messages.next() => match payload {
                Some(payload) => {
                    let Some(index) = index_of(&payload) else { continue };
                    let Some(latency) = times.arrived(index) else { continue };
                    if let Some(seen) = usize::try_from(index).ok().and_then(|i| seen.get_mut(i))
                        && !*seen
                    {
                        *seen = true;
                        received += 1;
                        latencies.saturating_record(latency);
                    }
                }
                None => break,
            },
            changed = done.changed(), if deadline.is_none() => {
                if changed.is_err() || *done.borrow() {
                    deadline = Some(tokio::time::Instant::now() + GRACE);
                }
            }
            () = grace => break,
        }
    }
    Ok(Delivered {
        latencies,
        received,
        expected,
        ticks: this_thread_ticks(),
    })
}

/// The payloads arriving on `subject`.
async fn subscribe(
    nats_urls: &[String],
    route: Route,
    subject: &str,
) -> Result<futures::stream::BoxStream<'static, Bytes>, String> {
    let client = async_nats::ConnectOptions::new()
        .name("lax-bench-e2e")
        .connect(nats_urls)
        .await
        .map_err(|e| format!("the subscriber cannot connect: {e}"))?;
    match route {
        Route::Direct => {
            let subscription = client
                .subscribe(subject.to_owned())
                .await
                .map_err(|e| format!("cannot subscribe to {subject}: {e}"))?;
            // The flush makes the server know the subscription before the first publish.
            client
                .flush()
                .await
                .map_err(|e| format!("cannot flush the subscription: {e}"))?;
            Ok(subscription.map(|message| message.payload).boxed())
        }
        Route::Broker => {
            let js = jetstream::new(client);
            let stream = js
                .get_stream(
                    js.stream_by_subject(subject.to_owned())
                        .await
                        .map_err(|e| format!("no stream holds {subject}: {e}"))?,
                )
                .await
                .map_err(|e| format!("cannot read the stream of {subject}: {e}"))?;
            let consumer = stream
                .create_consumer(jetstream::consumer::pull::OrderedConfig {
                    filter_subject: subject.to_owned(),
                    deliver_policy: DeliverPolicy::New,
                    ..Default::default()
                })
                .await
                .map_err(|e| format!("cannot create a consumer on {subject}: {e}"))?;
            let messages = consumer
                .messages()
                .await
                .map_err(|e| format!("cannot read the consumer on {subject}: {e}"))?;
            Ok(messages
                .filter_map(|message| async move { message.ok().map(|m| m.message.payload) })
                .boxed())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_carries_its_index_and_its_size() {
        let bytes = payload(123_456_789, 128);
        assert_eq!(bytes.len(), 128);
        assert_eq!(index_of(&bytes), Some(123_456_789));
        assert_eq!(index_of(b"short"), None);
    }

    #[test]
    fn an_arrival_counts_only_for_a_published_message() {
        let times = SendTimes::new(3);
        assert_eq!(times.arrived(1), None, "not published yet");
        times.mark(1);
        assert!(times.arrived(1).is_some_and(|ns| ns >= 1));
        assert_eq!(times.arrived(7), None, "not of this run");
        times.mark(u64::MAX);
    }
}
