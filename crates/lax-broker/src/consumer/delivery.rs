//! One subscription's task: pulls from the JetStream consumer as much as the subscriber has
//! credit for (see [`super::credit`]), hands each message to the client's response stream
//! (recording it in the ack table), renews the leases of what the subscriber holds while it
//! keeps settling, dead-letters messages whose deliveries ran out, and, when the client goes
//! away or the broker shuts down, gives every message it still holds back to the group at
//! once.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{
    self, AckKind, ErrorCode,
    consumer::{PullConsumer, pull::Batch},
    message::Info,
};
use bytes::Bytes;
use futures::StreamExt as _;
use lax_core::{
    Headers, MESSAGE_ID_HEADER, NATS_MSG_ID_HEADER, TRACE_ID_HEADER,
    trace::{self, TraceContext},
};
use lax_proto::broker::v1 as pb;
use tokio::{
    sync::{Notify, mpsc},
    time::{Instant, MissedTickBehavior},
};
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{Instrument as _, Span, field::Empty};

use super::{
    credit::{Credit, Held},
    dead_letter::DeadLetters,
    group::LaxSettings,
    ledger::{Ledger, Pending, Registry},
    outbox::Outgoing,
};
use crate::{
    error::ApiError,
    jsapi::JsApi,
    metrics::{ConsumerCounters, LiveSubscriber},
    timestamp,
};

/// How long one pull request waits for messages. Pulls are short so that a subscription
/// ending mid-pull has few messages in flight to give back, and a dead server is noticed.
pub(crate) const PULL_EXPIRES: Duration = Duration::from_secs(5);
/// Bounds of the lease round (a quarter of the ack wait): renewals, and expired entries
/// leaving the ack table.
const MIN_LEASE_ROUND: Duration = Duration::from_millis(250);
const MAX_LEASE_ROUND: Duration = Duration::from_secs(5);
/// How long a dead letter that could not be published waits before it is tried again.
const DEAD_LETTER_RETRY: Duration = Duration::from_secs(5);
/// Longest pause between failed pulls.
const MAX_PULL_BACKOFF: Duration = Duration::from_secs(5);
/// How long an ending subscription tries to tell its client why.
const FAREWELL_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a subscription ended.
#[derive(Debug)]
enum Stop {
    ClientGone,
    Shutdown,
    ConsumerGone(Status),
}

/// Everything one subscription task needs.
#[derive(Debug)]
pub(crate) struct Subscription {
    pub(crate) consumer: PullConsumer,
    pub(crate) api: JsApi,
    pub(crate) js: jetstream::Context,
    pub(crate) stream: String,
    pub(crate) consumer_name: String,
    /// The consumer belongs to this subscription alone and is deleted with it.
    pub(crate) ephemeral: bool,
    pub(crate) registry: Arc<Registry>,
    pub(crate) ledger: Arc<Ledger>,
    pub(crate) dead_letters: Arc<DeadLetters>,
    pub(crate) settings: LaxSettings,
    /// The subscriber settles through the Ack calls; otherwise the broker acks each message
    /// as it hands it over.
    pub(crate) settles_itself: bool,
    pub(crate) credit: Credit,
    /// The connection the subscription's acks, naks and lease renewals go out on.
    pub(crate) client: async_nats::Client,
    pub(crate) max_lease: Duration,
    pub(crate) queue: mpsc::Sender<Result<Outgoing, Status>>,
    pub(crate) drained: Arc<Notify>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) counters: ConsumerCounters,
    /// Keeps the subscription's own series on `/metrics` while it runs.
    pub(crate) _live: LiveSubscriber,
}

impl Subscription {
    /// Serves the subscription until its client goes away, the broker shuts down or the
    /// consumer is deleted.
    pub(crate) async fn run(self) {
        let mut batch = None;
        let stop = self.pump(&mut batch).await;
        tracing::debug!(subscription = self.ledger.id(), consumer = %self.consumer_name, ?stop, "subscription ending");
        self.finish(stop, batch).await;
    }

    async fn pump(&self, slot: &mut Option<Batch>) -> Stop {
        let mut failures = 0u32;
        let round = (self.ledger.ack_wait() / 4).clamp(MIN_LEASE_ROUND, MAX_LEASE_ROUND);
        let mut lease = tokio::time::interval(round);
        lease.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            *slot = None;
            // Pull again only once the gRPC stream has taken at least half of what is
            // queued: a subscriber that does not read gets nothing more.
            let grant = tokio::select! {
                stop = self.stopped() => return stop,
                _ = lease.tick() => {
                    self.lease_round().await;
                    continue;
                }
                grant = async {
                    self.until_drained().await;
                    self.credit.grant().await
                } => grant,
            };
            let mut grant = grant;
            let pull = self
                .consumer
                .batch()
                .max_messages(grant.messages())
                .max_bytes(grant.bytes())
                .expires(PULL_EXPIRES)
                .messages();
            let pulled = tokio::select! {
                stop = self.stopped() => return stop,
                pulled = pull => pulled,
            };
            let batch = match pulled {
                Ok(batch) => slot.insert(batch),
                Err(e) => match self.pull_failed(&e.to_string(), &mut failures).await {
                    Some(stop) => return stop,
                    None => continue,
                },
            };
            loop {
                let next = tokio::select! {
                    stop = self.stopped() => return stop,
                    _ = lease.tick() => {
                        self.lease_round().await;
                        continue;
                    }
                    next = batch.next() => next,
                };
                match next {
                    None => break,
                    Some(Ok(message)) => {
                        failures = 0;
                        let held = grant.hold(message_size(&message));
                        if let Some(stop) = self.deliver(message, held).await {
                            return stop;
                        }
                    }
                    Some(Err(e)) => match self.pull_failed(&e.to_string(), &mut failures).await {
                        Some(stop) => return stop,
                        None => break,
                    },
                }
            }
        }
    }

    /// Resolves when the client has gone away or the broker is shutting down.
    async fn stopped(&self) -> Stop {
        tokio::select! {
            () = self.queue.closed() => Stop::ClientGone,
            () = self.shutdown.cancelled() => Stop::Shutdown,
        }
    }

    /// Waits until the gRPC stream has taken at least half of the messages queued for it.
    async fn until_drained(&self) {
        let half = self.queue.max_capacity() / 2;
        while self.queue.max_capacity() - self.queue.capacity() > half {
            self.drained.notified().await;
        }
    }

    /// Renews the leases of what the subscriber holds (when it keeps settling) and forgets
    /// what expired.
    async fn lease_round(&self) {
        self.ledger.sweep();
        if !self.settles_itself {
            return;
        }
        for reply in self.ledger.renew(self.max_lease) {
            if let Err(e) = self
                .client
                .publish(reply, Bytes::from(AckKind::Progress))
                .await
            {
                tracing::debug!(error = %e, "renewing a lease failed; JetStream may redeliver");
            }
        }
    }

    /// A pull failed: ends the subscription when its consumer is gone, else waits before the
    /// next pull (NATS may be reconnecting, a consumer leader being elected).
    async fn pull_failed(&self, error: &str, failures: &mut u32) -> Option<Stop> {
        *failures += 1;
        tracing::debug!(consumer = %self.consumer_name, error, failures, "pull failed");
        match self
            .api
            .consumer_info(&self.stream, &self.consumer_name)
            .await
        {
            Err(ApiError::JetStream(e)) if e.error_code() == ErrorCode::CONSUMER_NOT_FOUND => {
                return Some(Stop::ConsumerGone(Status::not_found(format!(
                    "consumer {} on stream {} was deleted",
                    self.consumer_name, self.stream
                ))));
            }
            _ => {}
        }
        let backoff = Duration::from_millis(100)
            .saturating_mul(2u32.saturating_pow((*failures).min(10)))
            .min(MAX_PULL_BACKOFF);
        tokio::select! {
            stop = self.stopped() => Some(stop),
            () = tokio::time::sleep(backoff) => None,
        }
    }

    /// Hands one message to the client, or dead-letters it when its deliveries ran out.
    async fn deliver(&self, message: jetstream::Message, held: Held) -> Option<Stop> {
        let info = match message.info() {
            Ok(info) => info,
            Err(e) => {
                tracing::warn!(error = %e, subject = %message.subject, "pulled a message without JetStream metadata; skipping it");
                return None;
            }
        };
        let delivery = u64::try_from(info.delivered).unwrap_or(0);
        let span = tracing::info_span!(
            parent: None,
            "lax.broker.deliver",
            subject = %message.subject,
            stream = info.stream,
            sequence = info.stream_sequence,
            consumer = %self.consumer_name,
            subscription = self.ledger.id(),
            delivery,
            message_id = Empty,
            outcome = Empty,
            trace_id = Empty,
            span_id = Empty,
            parent_span_id = Empty,
            invalid_traceparent = Empty,
        );
        if let Some(max_deliver) = self.settings.max_deliver
            && delivery > max_deliver
        {
            drop(held);
            span.record("outcome", "dead_lettered");
            self.dead_letter(&message, &info).instrument(span).await;
            return None;
        }
        let Some(reply) = message.reply.clone() else {
            tracing::warn!(subject = %message.subject, "pulled a message without an ack subject; skipping it");
            return None;
        };
        if delivery > 1 {
            self.counters.redeliveries.increment(1);
        }
        let ack_id = self.ledger.ack_id(info.stream_sequence, delivery);
        let converted = to_proto(
            &message,
            &info,
            delivery,
            if self.settles_itself {
                ack_id.clone()
            } else {
                String::new()
            },
            &span,
        );
        self.ledger.record(
            ack_id.clone(),
            Pending::new(reply, held, self.ledger.ack_wait()),
        );
        let outgoing = Outgoing {
            message: converted,
            ack_on_delivery: (!self.settles_itself).then_some(ack_id),
        };
        let stop = tokio::select! {
            stop = self.stopped() => Some(stop),
            sent = self.queue.send(Ok(outgoing)) => sent.err().map(|_| Stop::ClientGone),
        };
        span.record(
            "outcome",
            if stop.is_none() {
                "delivered"
            } else {
                "not_delivered"
            },
        );
        stop
    }

    async fn dead_letter(&self, message: &jetstream::Message, info: &Info<'_>) {
        let custom = self.settings.dead_letter_subject.as_deref();
        match self.dead_letters.publish(message, info, custom).await {
            Ok(target) => {
                self.counters.dead_letters.increment(1);
                tracing::info!(stream = info.stream, sequence = info.stream_sequence, consumer = info.consumer, %target, "dead-lettered a message");
                if let Err(e) = message.ack_with(AckKind::Term).await {
                    // It comes back and is dead-lettered again; JetStream de-duplicates.
                    tracing::warn!(error = %e, "terminating a dead-lettered message failed");
                }
            }
            Err(error) => {
                tracing::warn!(%error, retry_in = ?DEAD_LETTER_RETRY, "dead-lettering failed; the message comes back");
                if let Err(e) = message
                    .ack_with(AckKind::Nak(Some(DEAD_LETTER_RETRY)))
                    .await
                {
                    tracing::warn!(error = %e, "nak of an undeliverable dead letter failed");
                }
            }
        }
    }

    /// Ends the subscription: unknown to Ack from now on, its client told why, and every
    /// message it held given back to the group (or its ephemeral consumer deleted).
    async fn finish(self, stop: Stop, batch: Option<Batch>) {
        self.registry.close(&self.ledger);
        let farewell = match stop {
            Stop::ClientGone => None,
            Stop::Shutdown => Some(Status::unavailable(
                "the broker is shutting down; subscribe again (unacked messages are redelivered)",
            )),
            Stop::ConsumerGone(status) => Some(status),
        };
        if let Some(status) = farewell {
            let _ = tokio::time::timeout(FAREWELL_TIMEOUT, self.queue.send(Err(status))).await;
        }
        drop(self.queue);
        if self.ephemeral {
            if let Err(e) = self
                .js
                .delete_consumer_from_stream(&self.consumer_name, &self.stream)
                .await
            {
                // JetStream removes it after its inactivity threshold anyway.
                tracing::debug!(consumer = %self.consumer_name, error = %e, "deleting an ephemeral consumer failed");
            }
            return;
        }
        let held = self.ledger.drain();
        let given_back = held.len();
        for reply in held {
            if let Err(e) = self
                .client
                .publish(reply, Bytes::from(AckKind::Nak(None)))
                .await
            {
                tracing::debug!(error = %e, "nak failed; JetStream redelivers after ack_wait");
            }
        }
        // The pull in flight may still bring messages meant for this subscription.
        let mut late = 0;
        if let Some(mut batch) = batch {
            let until = Instant::now() + PULL_EXPIRES + Duration::from_secs(1);
            while let Ok(Some(next)) = tokio::time::timeout_at(until, batch.next()).await {
                if let Ok(message) = next {
                    nak_now(&message).await;
                    late += 1;
                }
            }
        }
        tracing::debug!(consumer = %self.consumer_name, given_back, late, "subscription ended; messages given back");
    }
}

async fn nak_now(message: &jetstream::Message) {
    if let Err(e) = message.ack_with(AckKind::Nak(None)).await {
        tracing::debug!(error = %e, "nak failed; JetStream redelivers after ack_wait");
    }
}

/// What a message counts for against a pull's byte limit.
fn message_size(message: &jetstream::Message) -> usize {
    message.length + message.subject.len()
}

/// The `broker.v1.Message` of one delivery. Its `traceparent` names the
/// `lax.broker.deliver` `span` when that is traced (a child of the stored message's
/// context, else a new trace); untraced, the stored context passes through. `trace_id` is
/// the `Trace-Id` header, else the W3C trace id, for clients that read only the field.
fn to_proto(
    message: &jetstream::Message,
    info: &Info<'_>,
    delivery: u64,
    ack_id: String,
    span: &Span,
) -> pb::Message {
    let mut headers: Headers = message
        .headers
        .iter()
        .flat_map(|headers| headers.iter())
        .filter_map(|(name, values)| {
            values
                .last()
                .map(|value| (name.to_string(), value.as_str().to_owned()))
        })
        .collect();
    let id = headers
        .get(MESSAGE_ID_HEADER)
        .or_else(|| headers.get(NATS_MSG_ID_HEADER))
        .unwrap_or_default()
        .to_owned();
    span.record("message_id", id.as_str());
    let context = if span.is_disabled() {
        TraceContext::from_headers(&headers).ok().flatten()
    } else {
        let context = trace::identify(span, trace::received(span, &headers));
        if let Some(context) = &context {
            context.inject(&mut headers);
        }
        context
    };
    let trace_id = match headers.get(TRACE_ID_HEADER) {
        Some(trace_id) => trace_id.to_owned(),
        None => context.map_or_else(String::new, |c| c.parent.trace_id.to_string()),
    };
    pb::Message {
        id,
        subject: message.subject.to_string(),
        payload: message.payload.clone(),
        timestamp: Some(timestamp::from_datetime(info.published)),
        trace_id,
        headers: headers.into_iter().collect(),
        sequence: info.stream_sequence,
        delivery_count: delivery,
        redelivered: delivery > 1,
        ack_id,
        stream: info.stream.to_owned(),
    }
}
