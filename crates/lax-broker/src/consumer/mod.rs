//! Consuming: Subscribe, the Ack/Nack/InProgress/Term calls that settle what it delivers, and
//! consumer groups as durable JetStream pull consumers.
//!
//! - **Subscribe** reads from a pull consumer on the stream capturing the subject: an
//!   ephemeral one of its own without a consumer group; with one, the group's durable
//!   consumer (created when missing), whose members split the messages. `start_position`
//!   (`new` by default, `last`, `first`, `sequence:N`) is the consumer's deliver policy and
//!   `ack_wait_seconds` its ack wait.
//! - **Credit.** `max_inflight` is the subscriber's own flow control, not a consumer
//!   setting: the most messages it has delivered and not settled (capped by the broker's
//!   per-subscriber limits in messages and bytes, and by its broker-wide consume limits).
//!   The broker pulls from JetStream only what the subscriber has room for, at most
//!   `prefetch` messages a pull (64 by default), and pulls again only once the gRPC stream
//!   has taken at least half of what is queued for it: a subscriber that stops reading
//!   stops pulling (HTTP/2 flow control paces the stream to the client). Flow control is
//!   therefore always on; `enable_flow_control` is accepted and changes nothing.
//! - **Joining a group.** A subscriber joins a group whatever its own flow control; only
//!   what belongs to the group can conflict (ack wait, max deliver, dead-letter subject),
//!   refused with FAILED_PRECONDITION naming the setting and both values. A group is one
//!   cursor whose members share its messages: a member receives everything the group's
//!   filter selects, even when it subscribed to a narrower subject (a group created with
//!   the filter `>` delivers every subject of its stream to each member in turn); a subject
//!   the group's filter cannot match at all is refused.
//! - **Settling.** A subscriber that says `uses_ack_rpc` gets an `ack_id`
//!   (`<subscription>.<stream sequence>.<delivery>`) on each message for Ack, Nack (with a
//!   delay), InProgress (restarts the ack wait) and Term. An id that is unknown, already
//!   settled, past its ack wait (JetStream redelivers the message then) or whose
//!   subscription ended answers NOT_FOUND. With `manual_ack = false`, or without
//!   `uses_ack_rpc` (clients of the original contract, which have no Ack call), the broker
//!   acks each message itself as it hands it to the gRPC stream: at most once, and what
//!   such a subscriber can lose when it dies is what was in transit to it, never the
//!   backlog.
//! - **Leases.** ack wait counts from when the subscriber can have a message: while a
//!   subscriber keeps settling messages, the broker renews JetStream's ack wait (in
//!   progress) for every message it holds for it, up to the broker's maximum lease. A
//!   subscriber that settles nothing for a whole ack wait (stuck, or not reading) gets no
//!   renewal: its messages go to the group's other members.
//! - **Dead letters.** `max_deliver` is the number of deliveries applications get. The
//!   broker keeps JetStream's own limit unlimited and counts instead: the delivery after
//!   the last one comes to the broker, which publishes the message to the dead-letter
//!   subject (see [`dead_letter`]) and terminates it; if that publish fails the message
//!   comes back and is tried again. So a message is never dropped silently, whether its
//!   last delivery was nak'd, timed out, or held by a broker that crashed.
//! - **Leaving.** When a subscription ends (the client goes away, the broker shuts down)
//!   the messages it held, including those still queued for the client or in its pull, are
//!   nak'd without delay, so the group's remaining members get them at once.

mod credit;
pub mod dead_letter;
mod delivery;
pub(crate) mod group;
pub(crate) mod lag;
mod ledger;
mod outbox;
pub(crate) mod spec;

use std::{pin::Pin, sync::Arc, time::Duration};

use async_nats::jetstream::{
    self, AckKind, ErrorCode,
    consumer::{self, FromConsumer as _, PullConsumer, pull},
};
use bytes::Bytes;
use futures::Stream;
use lax_proto::broker::v1 as pb;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tonic::Status;

pub(crate) use credit::{ConsumeLimits, InflightGauges};
pub use group::{
    DEAD_LETTER_METADATA, FLOW_CONTROL_METADATA, IDLE_HEARTBEAT_METADATA, MAX_DELIVER_METADATA,
};

use self::{
    credit::{Budget, Credit},
    dead_letter::DeadLetters,
    delivery::Subscription,
    group::{Comparison, LaxSettings, config_difference, group_consumer_config, group_of},
    ledger::{Missing, Registry},
    outbox::Outbox,
    spec::SubscribeSpec,
};
use crate::{
    error::{ApiError, status_for_api},
    jsapi::JsApi,
    metrics::BrokerMetrics,
    names::validate_name,
};

/// How long an ephemeral consumer outlives a broker that died without deleting it.
pub(crate) const EPHEMERAL_INACTIVE_THRESHOLD: Duration = Duration::from_secs(120);

/// The messages of one Subscribe call.
pub(crate) type MessageStream = Pin<Box<dyn Stream<Item = Result<pb::Message, Status>> + Send>>;

/// What consuming needs from the broker.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerSettings {
    /// Replicas of the dead-letter stream the broker creates.
    pub(crate) dead_letter_replicas: usize,
    /// Deadline of the JetStream calls settling a message.
    pub(crate) request_timeout: Duration,
    /// How much subscribers may hold unsettled.
    pub(crate) limits: ConsumeLimits,
    /// Longest lease of a message held by a subscriber that keeps settling.
    pub(crate) max_lease: Duration,
    /// Where the in-flight gauges go.
    pub(crate) metrics: BrokerMetrics,
}

/// Consumer groups and subscriptions of one broker.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerGroups {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    api: JsApi,
    js: jetstream::Context,
    client: async_nats::Client,
    registry: Arc<Registry>,
    dead_letters: Arc<DeadLetters>,
    request_timeout: Duration,
    budget: Arc<Budget>,
    max_lease: Duration,
    metrics: BrokerMetrics,
    shutdown: CancellationToken,
}

/// JetStream's "consumer already exists" (a create with another configuration).
const CONSUMER_ALREADY_EXISTS: u64 = 10148;

fn already_exists(error: &ApiError) -> bool {
    matches!(error, ApiError::JetStream(e)
        if e.error_code() == ErrorCode::CONSUMER_NAME_EXIST || e.error_code().0 == CONSUMER_ALREADY_EXISTS)
}

fn consumer_missing(error: &ApiError) -> bool {
    matches!(error, ApiError::JetStream(e) if e.error_code() == ErrorCode::CONSUMER_NOT_FOUND)
}

impl ConsumerGroups {
    pub(crate) fn new(
        api: JsApi,
        client: async_nats::Client,
        settings: ConsumerSettings,
        shutdown: CancellationToken,
    ) -> Self {
        let js = jetstream::ContextBuilder::new()
            .timeout(settings.request_timeout)
            .build(client.clone());
        let budget = Arc::new(Budget::new(settings.limits, largest_message(&client)));
        ConsumerGroups {
            inner: Arc::new(Inner {
                dead_letters: Arc::new(DeadLetters::new(
                    api.clone(),
                    js.clone(),
                    settings.dead_letter_replicas,
                )),
                api,
                js,
                client,
                registry: Arc::new(Registry::default()),
                request_timeout: settings.request_timeout,
                budget,
                max_lease: settings.max_lease,
                metrics: settings.metrics,
                shutdown,
            }),
        }
    }

    /// Opens a subscription; see the module docs.
    pub(crate) async fn subscribe(
        &self,
        request: pb::SubscribeRequest,
    ) -> Result<MessageStream, Status> {
        let spec = SubscribeSpec::parse(request)?;
        let inner = &self.inner;
        let stream = self.stream_for(&spec.subject).await?;
        let ephemeral_name = format!("lax_{}", nuid::next());
        let wanted = spec.consumer_config(&ephemeral_name);
        let info = match &spec.group {
            Some(group) => self.join_group(&stream, group, &wanted).await?,
            None => {
                let what = format!(
                    "creating a consumer for {:?} on stream {stream}",
                    spec.subject
                );
                inner
                    .api
                    .create_consumer(&stream, &wanted)
                    .await
                    .map_err(|e| status_for_api(&what, &e))?
            }
        };
        let ephemeral = spec.group.is_none();
        let settings = LaxSettings::of(&info.config);
        let consumer_name = info.name.clone();
        let opened = async {
            if settings.max_deliver.is_some() {
                inner
                    .dead_letters
                    .prepare(
                        &stream,
                        &spec.subject,
                        settings.dead_letter_subject.as_deref(),
                    )
                    .await?;
            }
            let config =
                pull::Config::try_from_consumer_config(info.config.clone()).map_err(|e| {
                    Status::failed_precondition(format!(
                        "consumer {consumer_name} on stream {stream} is not a pull consumer: {e}"
                    ))
                })?;
            Ok::<PullConsumer, Status>(consumer::Consumer::new(config, info, inner.js.clone()))
        }
        .await;
        let consumer = match opened {
            Ok(consumer) => consumer,
            Err(status) => {
                if ephemeral {
                    let _ = inner
                        .js
                        .delete_consumer_from_stream(&consumer_name, &stream)
                        .await;
                }
                return Err(status);
            }
        };
        let ledger = inner.registry.open(settings.ack_wait);
        let (figures, live) = inner
            .metrics
            .subscriber(&stream, &consumer_name, ledger.id());
        let credit = Credit::new(
            Arc::clone(&inner.budget),
            spec.max_inflight,
            spec.prefetch,
            largest_message(&inner.client),
            inner
                .metrics
                .consumer_inflight(&stream, &consumer_name, Arc::clone(&figures)),
        );
        let (queue, outbox) = mpsc::channel(spec.prefetch);
        let drained = Arc::new(Notify::new());
        tracing::debug!(subscription = ledger.id(), %stream, consumer = %consumer_name, subject = %spec.subject, "subscribed");
        let counters = inner.metrics.consumer_counters(&stream, &consumer_name);
        let subscription = Subscription {
            consumer,
            api: inner.api.clone(),
            js: inner.js.clone(),
            stream,
            consumer_name,
            ephemeral,
            registry: Arc::clone(&inner.registry),
            ledger: Arc::clone(&ledger),
            dead_letters: Arc::clone(&inner.dead_letters),
            settings,
            settles_itself: spec.settles_itself(),
            credit,
            client: inner.client.clone(),
            max_lease: inner.max_lease,
            queue,
            drained: Arc::clone(&drained),
            shutdown: inner.shutdown.clone(),
            counters,
            _live: live,
        };
        tokio::spawn(subscription.run());
        Ok(Box::pin(Outbox::new(
            outbox,
            ledger,
            drained,
            inner.client.clone(),
            inner.metrics.grpc_stream_opened("Subscribe"),
            figures,
        )))
    }

    /// The one stream capturing `subject`.
    async fn stream_for(&self, subject: &str) -> Result<String, Status> {
        let page = self
            .inner
            .api
            .stream_page(0, Some(subject))
            .await
            .map_err(|e| status_for_api(&format!("looking up the stream for {subject:?}"), &e))?;
        let mut names: Vec<String> = page
            .streams
            .unwrap_or_default()
            .into_iter()
            .map(|info| info.config.name)
            .collect();
        match names.len() {
            0 => Err(Status::not_found(format!(
                "no stream captures subject {subject:?}; publish to it through the broker \
                 (which creates one) or create one with StreamManager.CreateStream"
            ))),
            1 => Ok(names.remove(0)),
            _ => Err(Status::invalid_argument(format!(
                "subject {subject:?} spans several streams ({}); subscribe to each one's subjects",
                names.join(", ")
            ))),
        }
    }

    /// The group's durable consumer, created when missing; refused when it exists with
    /// settings other than those the subscriber asked for.
    async fn join_group(
        &self,
        stream: &str,
        group: &str,
        wanted: &consumer::Config,
    ) -> Result<consumer::Info, Status> {
        let what = format!("consumer group {group} on stream {stream}");
        let (info, existed) = self.find_or_create(stream, wanted, &what).await?;
        if existed
            && let Some(difference) = config_difference(&info.config, wanted, Comparison::Join)
        {
            return Err(Status::failed_precondition(format!(
                "{what} exists with other settings: {difference}; subscribe with its settings \
                 (or leave them unset) to join it"
            )));
        }
        if existed {
            tracing::debug!(%group, %stream, "joining consumer group");
        } else {
            tracing::info!(%group, %stream, "created consumer group for a subscriber");
        }
        Ok(info)
    }

    /// The durable consumer `wanted` names: the existing one (`true`) or a new one (`false`).
    async fn find_or_create(
        &self,
        stream: &str,
        wanted: &consumer::Config,
        what: &str,
    ) -> Result<(consumer::Info, bool), Status> {
        let api = &self.inner.api;
        let name = wanted.durable_name.as_deref().unwrap_or_default();
        match api.consumer_info(stream, name).await {
            Ok(existing) => return Ok((existing, true)),
            Err(e) if consumer_missing(&e) => {}
            Err(e) => return Err(status_for_api(&format!("looking up {what}"), &e)),
        }
        match api.create_consumer(stream, wanted).await {
            Ok(info) => Ok((info, false)),
            // Created meanwhile by another member.
            Err(e) if already_exists(&e) => match api.consumer_info(stream, name).await {
                Ok(existing) => Ok((existing, true)),
                Err(e) => Err(status_for_api(&format!("looking up {what}"), &e)),
            },
            Err(e) => Err(status_for_api(&format!("creating {what}"), &e)),
        }
    }

    /// Creates the group's durable pull consumer. A group that exists with the same
    /// configuration answers ALREADY_EXISTS ("exists, join it"); one with another
    /// configuration answers FAILED_PRECONDITION naming the difference.
    pub(crate) async fn create_group(
        &self,
        request: pb::ConsumerGroupRequest,
    ) -> Result<pb::ConsumerGroup, Status> {
        validate_name("consumer group", &request.name)?;
        validate_name("stream", &request.stream)?;
        let wanted = group_consumer_config(&request)?;
        let what = format!(
            "consumer group {} on stream {}",
            request.name, request.stream
        );
        let (info, existed) = self.find_or_create(&request.stream, &wanted, &what).await?;
        if !existed {
            tracing::info!(group = %request.name, stream = %request.stream, "created consumer group");
            return Ok(group_of(&info));
        }
        Err(
            match config_difference(&info.config, &wanted, Comparison::Create) {
                None => Status::already_exists(format!(
                    "{what} already exists with this configuration; join it"
                )),
                Some(difference) => Status::failed_precondition(format!(
                    "{what} already exists with another configuration: {difference}"
                )),
            },
        )
    }

    pub(crate) async fn ack(&self, request: pb::AckRequest) -> Result<pb::AckResponse, Status> {
        self.settle(&request.ack_id, AckKind::Ack).await
    }

    pub(crate) async fn nack(&self, request: pb::NackRequest) -> Result<pb::AckResponse, Status> {
        let delay = u64::try_from(request.delay_ms).map_err(|_| {
            Status::invalid_argument(format!(
                "delay_ms is {}; it must not be negative",
                request.delay_ms
            ))
        })?;
        let delay = (delay > 0).then(|| Duration::from_millis(delay));
        self.settle(&request.ack_id, AckKind::Nak(delay)).await
    }

    pub(crate) async fn in_progress(
        &self,
        request: pb::AckRequest,
    ) -> Result<pb::AckResponse, Status> {
        self.settle(&request.ack_id, AckKind::Progress).await
    }

    pub(crate) async fn term(&self, request: pb::AckRequest) -> Result<pb::AckResponse, Status> {
        self.settle(&request.ack_id, AckKind::Term).await
    }

    /// Tells JetStream what became of the message `ack_id` names and waits for its answer.
    async fn settle(&self, ack_id: &str, kind: AckKind) -> Result<pb::AckResponse, Status> {
        let claim = self.claim(ack_id, kind)?;
        match self.confirm(claim.reply.clone(), kind).await {
            Ok(()) => Ok(pb::AckResponse { success: true }),
            Err(reason) => Err(claim.give_back(&reason)),
        }
    }

    /// Settles many messages in one call. The settlements of one subscription go out in
    /// order on one connection, and JetStream's answer to the last of them confirms the lot
    /// (it has taken every earlier one by then); one result per settlement, in order.
    pub(crate) async fn settle_many(
        &self,
        request: pb::SettleRequest,
    ) -> Result<pb::SettleResponse, Status> {
        if request.settlements.len() > MAX_SETTLEMENTS {
            return Err(Status::invalid_argument(format!(
                "{} settlements in one call; at most {MAX_SETTLEMENTS}",
                request.settlements.len()
            )));
        }
        let mut results = vec![pb::SettleResult::default(); request.settlements.len()];
        // Claims by subscription, in request order.
        let mut claims: Vec<(String, Vec<(usize, Claim)>)> = Vec::new();
        for (index, settlement) in request.settlements.into_iter().enumerate() {
            let claimed =
                settle_kind(&settlement).and_then(|kind| self.claim(&settlement.ack_id, kind));
            match claimed {
                Ok(claim) => {
                    let subscription = claim.ledger.id().to_owned();
                    match claims.iter_mut().find(|(id, _)| *id == subscription) {
                        Some((_, group)) => group.push((index, claim)),
                        None => claims.push((subscription, vec![(index, claim)])),
                    }
                }
                Err(status) => results[index] = result_of(&status),
            }
        }
        let sends = claims
            .into_iter()
            .map(|(_, group)| self.send_in_order(group));
        for failed in futures::future::join_all(sends).await {
            for (index, status) in failed {
                results[index] = result_of(&status);
            }
        }
        Ok(pb::SettleResponse { results })
    }

    /// Sends one subscription's claims: all but the last as plain publishes, the last as a
    /// request whose answer confirms them all. Answers the failures, by index.
    async fn send_in_order(&self, mut group: Vec<(usize, Claim)>) -> Vec<(usize, Status)> {
        let Some((last_index, last)) = group.pop() else {
            return Vec::new();
        };
        let mut failed = Vec::new();
        let mut sent = Vec::new();
        for (index, claim) in group {
            let payload = Bytes::from(claim.kind);
            match self
                .inner
                .client
                .publish(claim.reply.clone(), payload)
                .await
            {
                Ok(()) => sent.push((index, claim)),
                Err(e) => failed.push((index, claim.give_back(&e.to_string()))),
            }
        }
        match self.confirm(last.reply.clone(), last.kind).await {
            Ok(()) => failed,
            Err(reason) => {
                // Which of the others JetStream took is unknown: each may be settled again
                // (JetStream ignores a second ack of the same delivery).
                failed.push((last_index, last.give_back(&reason)));
                failed.extend(
                    sent.into_iter()
                        .map(|(index, claim)| (index, claim.give_back(&reason))),
                );
                failed
            }
        }
    }

    /// Takes the message `ack_id` names out of its subscription's table (or, for
    /// in-progress, renews it there), to settle it.
    fn claim(&self, ack_id: &str, kind: AckKind) -> Result<Claim, Status> {
        if ack_id.is_empty() {
            return Err(Status::invalid_argument(
                "ack_id is empty (a subscription with manual_ack = false acks on delivery)",
            ));
        }
        let Some(ledger) = self.inner.registry.find(ack_id) else {
            return Err(unknown(ack_id));
        };
        let (reply, taken) = match kind {
            AckKind::Progress => match ledger.extend(ack_id) {
                Ok(reply) => (reply, None),
                Err(missing) => return Err(not_pending(ack_id, missing, &ledger)),
            },
            _ => match ledger.take(ack_id) {
                Ok(pending) => (pending.reply.clone(), Some(pending)),
                Err(missing) => return Err(not_pending(ack_id, missing, &ledger)),
            },
        };
        Ok(Claim {
            ledger,
            ack_id: ack_id.to_owned(),
            kind,
            reply,
            taken,
        })
    }

    /// Sends an ack of `kind` as a request, so that JetStream's answer confirms it.
    async fn confirm(&self, reply: async_nats::Subject, kind: AckKind) -> Result<(), String> {
        let request = self.inner.client.request(reply, Bytes::from(kind));
        match tokio::time::timeout(self.inner.request_timeout, request).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {:?}", self.inner.request_timeout)),
        }
    }
}

/// Most settlements in one Settle call.
const MAX_SETTLEMENTS: usize = 10_000;

/// A message taken out of its subscription's table to be settled.
struct Claim {
    ledger: Arc<ledger::Ledger>,
    ack_id: String,
    kind: AckKind,
    reply: async_nats::Subject,
    /// The entry, unless the settlement keeps it (in progress).
    taken: Option<ledger::Pending>,
}

impl Claim {
    /// The settlement could not be confirmed: the entry goes back so the subscriber may try
    /// again; answers the UNAVAILABLE to report.
    fn give_back(self, reason: &str) -> Status {
        if let Some(pending) = self.taken {
            self.ledger.restore(self.ack_id.clone(), pending);
        }
        Status::unavailable(format!(
            "JetStream did not confirm the {} of {:?}: {reason}; try again",
            kind_name(self.kind),
            self.ack_id
        ))
    }
}

/// The JetStream ack of one settlement.
fn settle_kind(settlement: &pb::Settlement) -> Result<AckKind, Status> {
    Ok(match pb::SettleKind::try_from(settlement.kind) {
        Ok(pb::SettleKind::Ack) => AckKind::Ack,
        Ok(pb::SettleKind::InProgress) => AckKind::Progress,
        Ok(pb::SettleKind::Term) => AckKind::Term,
        Ok(pb::SettleKind::Nack) => {
            let delay = u64::try_from(settlement.delay_ms).map_err(|_| {
                Status::invalid_argument(format!(
                    "delay_ms is {}; it must not be negative",
                    settlement.delay_ms
                ))
            })?;
            AckKind::Nak((delay > 0).then(|| Duration::from_millis(delay)))
        }
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "unknown settle kind {}",
                settlement.kind
            )));
        }
    })
}

fn result_of(status: &Status) -> pb::SettleResult {
    pb::SettleResult {
        code: status.code() as i32,
        error: status.message().to_owned(),
    }
}

/// The largest message NATS may deliver: its max_payload, and room for the subject and
/// JetStream's own headers.
fn largest_message(client: &async_nats::Client) -> usize {
    const ENVELOPE: usize = 4 * 1024;
    client.server_info().max_payload.max(1024 * 1024) + ENVELOPE
}

/// Why `ack_id` cannot be settled.
fn not_pending(ack_id: &str, missing: Missing, ledger: &ledger::Ledger) -> Status {
    match missing {
        Missing::Expired => Status::not_found(format!(
            "ack_id {ack_id:?} expired: its ack wait of {:?} elapsed, so JetStream \
             redelivers the message (under a new ack_id)",
            ledger.ack_wait()
        )),
        Missing::Unknown => unknown(ack_id),
    }
}

fn unknown(ack_id: &str) -> Status {
    Status::not_found(format!(
        "ack_id {ack_id:?} is unknown: never issued, already settled, or its subscription ended \
         (its messages were given back to the group)"
    ))
}

fn kind_name(kind: AckKind) -> &'static str {
    match kind {
        AckKind::Ack => "ack",
        AckKind::Nak(_) => "nack",
        AckKind::Progress => "in-progress",
        AckKind::Term => "term",
        AckKind::Next => "ack-next",
    }
}
