//! Consuming through the broker: [`GrpcPublisher::subscribe`] opens a [`GrpcSubscription`], a
//! [`Stream`] of [`BrokerMessage`]s, and a [`Settler`] that acks, nacks, marks in progress or
//! terminates them by ack id.
//!
//! The subscription tells the broker it settles through the Ack calls (`uses_ack_rpc`), so
//! the broker keeps every message it delivers until the subscriber settles it. Settling is
//! pipelined and batched: [`Settler::settle_in_background`] queues the settlement and
//! returns at once (it waits only while [`MAX_BACKGROUND_SETTLES`] are unanswered); a task
//! of the subscription sends what is queued in `Settle` calls of up to [`MAX_SETTLE_BATCH`],
//! a few at a time, so a busy subscriber sends one call per batch, not one per message (a
//! broker without `Settle` gets one Ack call per message). [`Settler::flush`] waits until
//! everything queued has been answered.

use std::{
    fmt,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use futures::{Stream, StreamExt as _};
use lax_core::{Error, Headers};
use lax_proto::broker::v1 as proto;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tonic::{Response, Status, Streaming};

use crate::{GrpcPublisher, lane::BrokerClient, status::status_to_error};

/// Most settlements queued or in flight per subscription before
/// [`Settler::settle_in_background`] waits.
pub const MAX_BACKGROUND_SETTLES: usize = 4096;
/// Most settlements in one `Settle` call.
pub const MAX_SETTLE_BATCH: usize = 512;
/// `Settle` calls in flight at once per subscription.
const SETTLE_CALLS_IN_FLIGHT: usize = 4;

/// What to subscribe to, and the subscriber's flow control, in the broker's terms. Zero (or
/// `None`) leaves a value to the broker, or in a group, to the group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscribeSpec {
    /// The subject (or filter) to consume.
    pub subject: String,
    /// The consumer group to join; none for a consumer of the subscription's own.
    pub consumer_group: Option<String>,
    /// Where a new consumer starts: `new`, `last`, `first` or `sequence:N`.
    pub start_position: String,
    /// Most messages delivered and not yet settled (the subscriber's credit).
    pub max_inflight: u32,
    /// How long a delivered message may stay unsettled before it is redelivered.
    pub ack_wait: Option<Duration>,
    /// Deliveries before a message is dead-lettered.
    pub max_deliver: u32,
    /// Messages the broker pulls at a time.
    pub prefetch: u32,
    /// Kept for the wire; the broker always paces delivery to what the subscriber reads.
    pub flow_control: bool,
    /// Where dead letters go.
    pub dead_letter_subject: Option<String>,
}

// Builder-style setters, as tonic's `Endpoint`: `SubscribeSpec` is `#[non_exhaustive]`.
impl SubscribeSpec {
    /// A spec consuming `subject`, every other value left to the broker (or the group).
    pub fn new(subject: impl Into<String>) -> Self {
        SubscribeSpec {
            subject: subject.into(),
            ..SubscribeSpec::default()
        }
    }
    /// Sets `consumer_group`: the consumer group to join; none for a consumer of the subscription's
    /// own.
    pub fn consumer_group(mut self, consumer_group: impl Into<String>) -> Self {
        self.consumer_group = Some(consumer_group.into());
        self
    }

    /// Sets `start_position`: where a new consumer starts: `new`, `last`, `first` or `sequence:N`.
    pub fn start_position(mut self, start_position: impl Into<String>) -> Self {
        self.start_position = start_position.into();
        self
    }

    /// Sets `max_inflight`: most messages delivered and not yet settled (the subscriber's credit).
    pub fn max_inflight(mut self, max_inflight: u32) -> Self {
        self.max_inflight = max_inflight;
        self
    }

    /// Sets `ack_wait`: how long a delivered message may stay unsettled before it is redelivered.
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = Some(ack_wait);
        self
    }

    /// Sets `max_deliver`: deliveries before a message is dead-lettered.
    pub fn max_deliver(mut self, max_deliver: u32) -> Self {
        self.max_deliver = max_deliver;
        self
    }

    /// Sets `prefetch`: messages the broker pulls at a time.
    pub fn prefetch(mut self, prefetch: u32) -> Self {
        self.prefetch = prefetch;
        self
    }

    /// Sets `flow_control`: kept for the wire; the broker always paces delivery to what the
    /// subscriber reads.
    pub fn flow_control(mut self, flow_control: bool) -> Self {
        self.flow_control = flow_control;
        self
    }

    /// Sets `dead_letter_subject`: where dead letters go.
    pub fn dead_letter_subject(mut self, dead_letter_subject: impl Into<String>) -> Self {
        self.dead_letter_subject = Some(dead_letter_subject.into());
        self
    }
}

impl SubscribeSpec {
    fn into_request(self) -> Result<proto::SubscribeRequest, Error> {
        let count = |value: u32, name: &str| {
            i32::try_from(value).map_err(|_| Error::invalid_input(format!("{name} is too large")))
        };
        let ack_wait_seconds = match self.ack_wait {
            None => 0,
            Some(wait) => {
                let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                i32::try_from(seconds).map_err(|_| Error::invalid_input("ack_wait is too long"))?
            }
        };
        Ok(proto::SubscribeRequest {
            subject: self.subject,
            consumer_group: self.consumer_group.unwrap_or_default(),
            start_position: self.start_position,
            options: Some(proto::SubscribeOptions {
                max_inflight: count(self.max_inflight, "max_inflight")?,
                manual_ack: true,
                ack_wait_seconds,
                max_deliver: count(self.max_deliver, "max_deliver")?,
                prefetch: count(self.prefetch, "prefetch")?,
                enable_flow_control: self.flow_control,
                dead_letter_subject: self.dead_letter_subject.unwrap_or_default(),
                uses_ack_rpc: true,
            }),
        })
    }
}

/// A message delivered through the broker.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerMessage {
    /// The LAX message id.
    pub id: String,
    /// The subject it was published to.
    pub subject: String,
    /// The payload.
    pub payload: bytes::Bytes,
    /// Its headers.
    pub headers: Headers,
    /// When JetStream stored it.
    pub timestamp: Option<SystemTime>,
    /// Its trace id, if any.
    pub trace_id: Option<String>,
    /// The stream it was read from.
    pub stream: String,
    /// Its sequence in that stream.
    pub sequence: u64,
    /// How many times it has been delivered (1 the first time).
    pub delivery_count: u64,
    /// True when delivered before.
    pub redelivered: bool,
    /// The id that settles this delivery.
    pub ack_id: String,
}

impl From<proto::Message> for BrokerMessage {
    fn from(message: proto::Message) -> Self {
        let timestamp = message.timestamp.and_then(|at| {
            let seconds = u64::try_from(at.seconds).ok()?;
            let nanos = u32::try_from(at.nanos).ok()?;
            UNIX_EPOCH.checked_add(Duration::new(seconds, nanos))
        });
        BrokerMessage {
            id: message.id,
            subject: message.subject,
            payload: message.payload,
            headers: Headers::from(message.headers),
            timestamp,
            trace_id: (!message.trace_id.is_empty()).then_some(message.trace_id),
            stream: message.stream,
            sequence: message.sequence,
            delivery_count: message.delivery_count,
            redelivered: message.redelivered,
            ack_id: message.ack_id,
        }
    }
}

/// How a message is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Settle {
    /// Done with it.
    Ack,
    /// Redeliver it after the delay.
    Nack(Duration),
    /// Still working on it: restart its ack wait.
    InProgress,
    /// Never redeliver it.
    Term,
}

impl Settle {
    fn wire(self, ack_id: String) -> proto::Settlement {
        let (kind, delay_ms) = match self {
            Settle::Ack => (proto::SettleKind::Ack, 0),
            Settle::Nack(delay) => (
                proto::SettleKind::Nack,
                i64::try_from(delay.as_millis()).unwrap_or(i64::MAX),
            ),
            Settle::InProgress => (proto::SettleKind::InProgress, 0),
            Settle::Term => (proto::SettleKind::Term, 0),
        };
        proto::Settlement {
            ack_id,
            kind: kind as i32,
            delay_ms,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Settle::Ack => "ack",
            Settle::Nack(_) => "nack",
            Settle::InProgress => "in-progress",
            Settle::Term => "term",
        }
    }
}

/// Settles messages by ack id; cheap to clone (clones share the connection and the limit on
/// background settles).
#[derive(Clone)]
pub struct Settler {
    client: BrokerClient,
    timeout: Duration,
    background: Arc<Semaphore>,
    queue: mpsc::UnboundedSender<Queued>,
}

/// A settlement waiting for its batch; its permit is released once the broker answered.
struct Queued {
    settlement: proto::Settlement,
    how: Settle,
    _permit: OwnedSemaphorePermit,
}

impl fmt::Debug for Settler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settler")
            .field("timeout", &self.timeout)
            .field(
                "background_in_flight",
                &(MAX_BACKGROUND_SETTLES - self.background.available_permits()),
            )
            .finish_non_exhaustive()
    }
}

impl Settler {
    /// Settles `ack_id` and waits for the broker's confirmation.
    ///
    /// # Errors
    ///
    /// `Rejected` when the broker no longer knows the delivery (settled already, ack wait
    /// elapsed, subscription ended); `Unavailable`/`TimedOut` when it could not confirm.
    pub async fn settle(&self, ack_id: &str, how: Settle) -> Result<(), Error> {
        settle_one(self.client.clone(), self.timeout, ack_id, how).await
    }

    /// Queues the settlement and returns (waiting only while [`MAX_BACKGROUND_SETTLES`] are
    /// unanswered); it goes out in the next batch. A failure is logged, and the message comes
    /// back after its ack wait.
    pub async fn settle_in_background(&self, ack_id: String, how: Settle) {
        let Ok(permit) = Arc::clone(&self.background).acquire_owned().await else {
            return;
        };
        let queued = Queued {
            settlement: how.wire(ack_id),
            how,
            _permit: permit,
        };
        if self.queue.send(queued).is_err() {
            tracing::warn!(
                "the subscription's settle task is gone; the message comes back after its ack wait"
            );
        }
    }

    /// Acks `ack_id` in the background; see [`settle_in_background`](Self::settle_in_background).
    pub async fn ack_in_background(&self, ack_id: String) {
        self.settle_in_background(ack_id, Settle::Ack).await;
    }

    /// Waits until every background settlement has been answered.
    pub async fn flush(&self) {
        let all = u32::try_from(MAX_BACKGROUND_SETTLES).unwrap_or(u32::MAX);
        drop(self.background.acquire_many(all).await);
    }
}

/// One unary settle call, confirmed.
async fn settle_one(
    mut client: BrokerClient,
    timeout: Duration,
    ack_id: &str,
    how: Settle,
) -> Result<(), Error> {
    let ack = || proto::AckRequest {
        ack_id: ack_id.to_owned(),
    };
    let call = async {
        match how {
            Settle::Ack => client.ack(ack()).await,
            Settle::Nack(delay) => {
                client
                    .nack(proto::NackRequest {
                        ack_id: ack_id.to_owned(),
                        delay_ms: i64::try_from(delay.as_millis()).unwrap_or(i64::MAX),
                    })
                    .await
            }
            Settle::InProgress => client.in_progress(ack()).await,
            Settle::Term => client.term(ack()).await,
        }
    };
    confirmed(how, timeout, call).await
}

/// Sends what the subscription queues, in batches, until every [`Settler`] is gone.
async fn send_batches(
    client: BrokerClient,
    timeout: Duration,
    mut queue: mpsc::UnboundedReceiver<Queued>,
) {
    let calls = Arc::new(Semaphore::new(SETTLE_CALLS_IN_FLIGHT));
    while let Some(first) = queue.recv().await {
        // While the calls in flight are answered, what is queued meanwhile joins one batch.
        let Ok(call) = Arc::clone(&calls).acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_SETTLE_BATCH {
            match queue.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let client = client.clone();
        tokio::spawn(async move {
            send_batch(client, timeout, batch).await;
            drop(call);
        });
    }
}

async fn send_batch(mut client: BrokerClient, timeout: Duration, batch: Vec<Queued>) {
    let request = proto::SettleRequest {
        settlements: batch.iter().map(|q| q.settlement.clone()).collect(),
    };
    let answered = tokio::time::timeout(timeout, client.settle(request)).await;
    match answered {
        Ok(Ok(response)) => {
            for (queued, result) in batch.iter().zip(response.into_inner().results) {
                if result.code != 0 {
                    tracing::warn!(ack_id = %queued.settlement.ack_id, code = result.code, error = %result.error, "settling a message failed; it is redelivered after its ack wait");
                }
            }
        }
        // A broker from before the Settle call: one call per message.
        Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => {
            let calls = batch.iter().map(|queued| {
                settle_one(
                    client.clone(),
                    timeout,
                    &queued.settlement.ack_id,
                    queued.how,
                )
            });
            for (queued, settled) in batch.iter().zip(futures::future::join_all(calls).await) {
                if let Err(error) = settled {
                    tracing::warn!(ack_id = %queued.settlement.ack_id, %error, "settling a message failed; it is redelivered after its ack wait");
                }
            }
        }
        Ok(Err(status)) => {
            let error = status_to_error(&status, true);
            tracing::warn!(settlements = batch.len(), %error, "settling messages failed; they are redelivered after their ack wait");
        }
        Err(_) => {
            tracing::warn!(
                settlements = batch.len(),
                ?timeout,
                "the broker did not answer a settle call; the messages are redelivered after their ack wait"
            );
        }
    }
}

async fn confirmed<T>(
    how: Settle,
    timeout: Duration,
    call: impl Future<Output = Result<Response<T>, Status>>,
) -> Result<(), Error> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) => Err(status_to_error(&status, true)),
        Err(_) => Err(Error::timed_out(format!(
            "the broker did not confirm the {} within {timeout:?}",
            how.name()
        ))),
    }
}

/// An open Subscribe call: a [`Stream`] of messages until the broker ends it (with an
/// error: it shut down, the group's consumer was deleted, the connection broke) or it is
/// dropped, which has the broker give every unsettled message back to the group at once.
pub struct GrpcSubscription {
    messages: Streaming<proto::Message>,
    settler: Settler,
}

impl fmt::Debug for GrpcSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcSubscription")
            .field("settler", &self.settler)
            .finish_non_exhaustive()
    }
}

impl GrpcSubscription {
    /// The settler of this subscription's messages.
    pub fn settler(&self) -> &Settler {
        &self.settler
    }
}

impl Stream for GrpcSubscription {
    type Item = Result<BrokerMessage, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.messages.poll_next_unpin(cx).map(|next| {
            next.map(|item| match item {
                Ok(message) => Ok(BrokerMessage::from(message)),
                Err(status) => Err(status_to_error(&status, false)),
            })
        })
    }
}

impl GrpcPublisher {
    /// Opens a subscription on one of the pool's connections. Returns once the broker has
    /// set up the consumer; the options' `call_timeout` bounds that set-up and each
    /// settle call.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for bad options; `Rejected` when no stream captures the subject or a
    /// group exists with other settings; `Unavailable`/`TimedOut` when the broker cannot be
    /// reached.
    pub async fn subscribe(&self, spec: SubscribeSpec) -> Result<GrpcSubscription, Error> {
        let request = spec.into_request()?;
        let mut client = self.broker_client()?;
        let timeout = self.call_timeout();
        let messages = match tokio::time::timeout(timeout, client.subscribe(request)).await {
            Ok(Ok(response)) => response.into_inner(),
            Ok(Err(status)) => return Err(status_to_error(&status, false)),
            Err(_) => {
                return Err(Error::timed_out(format!(
                    "the broker did not open the subscription within {timeout:?}"
                )));
            }
        };
        let (queue, queued) = mpsc::unbounded_channel();
        tokio::spawn(send_batches(client.clone(), timeout, queued));
        Ok(GrpcSubscription {
            messages,
            settler: Settler {
                client,
                timeout,
                background: Arc::new(Semaphore::new(MAX_BACKGROUND_SETTLES)),
                queue,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_become_requests_that_settle_through_the_ack_calls() {
        let request = SubscribeSpec {
            subject: "orders.>".into(),
            consumer_group: Some("workers".into()),
            start_position: "sequence:7".into(),
            max_inflight: 100,
            ack_wait: Some(Duration::from_millis(1_500)),
            max_deliver: 3,
            prefetch: 10,
            flow_control: true,
            dead_letter_subject: Some("dead.orders".into()),
        }
        .into_request()
        .unwrap();
        assert_eq!(request.consumer_group, "workers");
        let options = request.options.unwrap();
        assert_eq!(options.ack_wait_seconds, 2, "rounded up to whole seconds");
        assert_eq!(
            (options.max_deliver, options.prefetch, options.max_inflight),
            (3, 10, 100)
        );
        assert!(options.manual_ack && options.uses_ack_rpc);
        assert_eq!(options.dead_letter_subject, "dead.orders");
        assert!(
            SubscribeSpec {
                max_deliver: u32::MAX,
                ..Default::default()
            }
            .into_request()
            .is_err()
        );
    }
}
