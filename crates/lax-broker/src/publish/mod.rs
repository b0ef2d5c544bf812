//! Publishing to JetStream: turning a `broker.v1` request into a checked message, sending it
//! under the broker's in-flight cap, and reading JetStream's ack into an answer.
//!
//! A publish is two steps so that callers can pipeline: `PublishCore::send` writes the
//! message to NATS (in call order) and `InFlight::wait` awaits its ack. Every path
//! (Publish, BatchPublish, StreamPublish) goes through both.

pub(crate) mod deadline;

use std::{
    future::IntoFuture,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::Poll,
    time::{Duration, SystemTime},
};

use async_nats::{
    HeaderMap,
    connection::State,
    jetstream::{
        self, ErrorCode,
        context::{PublishAckFuture, PublishErrorKind},
    },
};
use bytes::Bytes;
use futures::FutureExt as _;
use lax_core::{
    Headers, Limits, MESSAGE_ID_HEADER, NATS_MSG_ID_HEADER, SmolStr, TRACE_ID_HEADER, Tier,
    trace::{self, TraceContext},
    validate::validate_request,
};
use lax_proto::broker::v1 as pb;
use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, watch},
    time::{Instant, timeout_at},
};
use tonic::Code;
use tracing::Span;

use crate::{
    error::{PublishFailure, code_for_jetstream, is_transient_jetstream},
    metrics::BrokerMetrics,
    publish::deadline::within,
    routing::{StreamRouter, StreamTarget},
    security::Grant,
};

/// The header carrying a request's `key`.
pub const KEY_HEADER: &str = "Lax-Key";

/// A checked message, ready to send.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub(crate) message_id: String,
    pub(crate) tier: Tier,
    /// As the checked request holds it: cheap to clone for a failure's stream label.
    pub(crate) subject: SmolStr,
    /// Checked headers, turned into NATS's form at each send: building that form costs what
    /// cloning it would, and a message is usually sent once.
    headers: Headers,
    payload: Bytes,
    /// How long to wait for the ack (the request's `timeout_ms` or the broker default).
    ack_timeout: Duration,
}

/// A message the broker refused before sending it.
#[derive(Debug)]
pub(crate) struct Refused {
    pub(crate) message_id: String,
    pub(crate) tier: Option<Tier>,
    pub(crate) failure: PublishFailure,
}

/// What JetStream stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stored {
    pub(crate) stream: String,
    pub(crate) sequence: u64,
    pub(crate) duplicate: bool,
    /// When the broker received the ack (JetStream's ack carries no time).
    pub(crate) timestamp: SystemTime,
}

/// Settings of the publish path.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PublishSettings {
    pub(crate) default_timeout: Duration,
    pub(crate) max_inflight: usize,
}

/// The shared publish machinery of one broker.
#[derive(Debug)]
pub(crate) struct PublishCore {
    client: async_nats::Client,
    /// Follows the publish connection (true while it is up).
    connection: watch::Receiver<bool>,
    /// When a call first found the connection down, while it stays down.
    outage_since: Mutex<Option<Instant>>,
    /// Whether `outage_since` is set: the connected path checks this, not the lock.
    outage_noted: AtomicBool,
    /// The connected server's `max_payload` (0: not read yet, or to read again after an
    /// outage, as the next server may differ): reading it from the client clones the whole
    /// server info, which showed in the profile of every publish.
    max_payload: AtomicUsize,
    jetstream: jetstream::Context,
    router: Arc<StreamRouter>,
    inflight: Arc<Semaphore>,
    settings: PublishSettings,
    metrics: BrokerMetrics,
}

impl PublishCore {
    pub(crate) fn new(
        client: async_nats::Client,
        connection: watch::Receiver<bool>,
        jetstream: jetstream::Context,
        router: Arc<StreamRouter>,
        settings: PublishSettings,
        metrics: BrokerMetrics,
    ) -> Self {
        PublishCore {
            client,
            connection,
            outage_since: Mutex::new(None),
            outage_noted: AtomicBool::new(false),
            max_payload: AtomicUsize::new(0),
            jetstream,
            router,
            inflight: Arc::new(Semaphore::new(settings.max_inflight)),
            settings,
            metrics,
        }
    }

    pub(crate) fn metrics(&self) -> &BrokerMetrics {
        &self.metrics
    }

    /// The stream a publish on `subject` went to, if the router still knows it.
    pub(crate) fn known_stream(&self, subject: &str) -> Option<String> {
        self.router.known_stream(subject)
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    /// True when connected now, or again before `deadline` and within [`RECONNECT_GRACE`] of
    /// the first call that found the connection down: a cluster node's death (the broker
    /// reconnects to another node in well under a second) is then a pause for the caller,
    /// not an error, while a real outage still fails fast once the grace has passed.
    async fn wait_connected(&self, deadline: Instant) -> bool {
        if self.is_connected() {
            if self.outage_noted.load(Ordering::Relaxed) {
                *self.outage() = None;
                self.outage_noted.store(false, Ordering::Relaxed);
            }
            return true;
        }
        let since = *self.outage().get_or_insert_with(Instant::now);
        self.outage_noted.store(true, Ordering::Relaxed);
        self.max_payload.store(0, Ordering::Relaxed);
        let until = deadline.min(since + RECONNECT_GRACE);
        let mut connection = self.connection.clone();
        matches!(
            timeout_at(until, connection.wait_for(|up| *up)).await,
            Ok(Ok(_))
        )
    }

    fn outage(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        // A timestamp: a panicking holder leaves nothing inconsistent.
        self.outage_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Checks a request and builds the message: message id, headers (`Nats-Msg-Id`,
    /// `Trace-Id`, `Lax-Key`, and `traceparent` naming `span` when it is traced), tier and
    /// ack timeout. `defaults` stand in for missing options. The caller's `grant` must allow
    /// the subject; nothing of a refused message reaches JetStream.
    pub(crate) fn prepare(
        &self,
        request: pb::PublishRequest,
        defaults: Option<&pb::PublishOptions>,
        grant: &Grant,
        span: &Span,
    ) -> Result<Prepared, Refused> {
        let Checked {
            message_id,
            tier,
            mut request,
        } = check(request, defaults, grant, &self.limits())?;
        if !span.is_disabled() {
            // Checked above: a malformed `traceparent` was refused.
            let incoming = TraceContext::from_headers(&request.headers).ok().flatten();
            if let Some(context) = trace::identify(span, incoming) {
                context.inject(&mut request.headers);
            }
        }
        Ok(Prepared {
            message_id,
            tier,
            headers: request.headers,
            ack_timeout: request
                .options
                .timeout
                .unwrap_or(self.settings.default_timeout),
            subject: request.subject,
            payload: request.payload,
        })
    }

    /// Limits from the server's advertised `max_payload`; before the first connection the
    /// size is unknown and left to the send, which fails UNAVAILABLE anyway.
    fn limits(&self) -> Limits {
        let mut max_payload = self.max_payload.load(Ordering::Relaxed);
        if max_payload == 0 {
            max_payload = self.client.server_info().max_payload;
            self.max_payload.store(max_payload, Ordering::Relaxed);
        }
        let limits = Limits::default();
        if max_payload == 0 {
            limits.with_max_payload(usize::MAX)
        } else {
            limits.with_max_payload(max_payload)
        }
    }

    /// Takes an in-flight slot and sends the message; the returned [`InFlight`] awaits its
    /// ack. `call_deadline` is the gRPC deadline, if the client set one. A transient failure
    /// of the send (no stream leader yet) is left for [`InFlight::wait`] to retry.
    pub(crate) async fn send(
        self: &Arc<Self>,
        prepared: Prepared,
        call_deadline: Option<Instant>,
    ) -> Result<InFlight, PublishFailure> {
        let permit = self.inflight.clone().try_acquire_owned().map_err(|_| {
            PublishFailure::new(
                Code::ResourceExhausted,
                format!(
                    "broker buffer full: {} publishes in flight; retry later",
                    self.settings.max_inflight
                ),
            )
        })?;
        let permit = InflightPermit::new(permit, self.metrics.clone());
        let own_deadline = Instant::now() + prepared.ack_timeout;
        let deadline = call_deadline.map_or(own_deadline, |d| d.min(own_deadline));
        if !self.wait_connected(deadline).await {
            self.metrics.jetstream_error("disconnected");
            return Err(self.unreachable());
        }
        let attempt = match self.dispatch(&prepared, deadline).await {
            Ok(sent) => Attempt::Sent(sent),
            Err(failure) if failure.transient => Attempt::Failed(failure),
            Err(failure) => return Err(failure),
        };
        Ok(InFlight {
            core: Arc::clone(self),
            prepared,
            attempt,
            deadline,
            _permit: permit,
        })
    }

    fn unreachable(&self) -> PublishFailure {
        PublishFailure::unavailable("NATS is unreachable; the broker is reconnecting")
    }

    /// Finds the stream, checks it is strong enough for the tier and writes the message.
    async fn dispatch(
        &self,
        prepared: &Prepared,
        deadline: Instant,
    ) -> Result<(StreamTarget, PublishAckFuture), PublishFailure> {
        let target = within(
            deadline,
            self.router.resolve(&prepared.subject, prepared.tier),
        )
        .await
        .map_err(|_| self.lookup_timed_out())??;
        if let Some(why) = target.weakness_for(prepared.tier, self.router.replicated_replicas()) {
            return Err(PublishFailure::precondition(format!(
                "refused: {why}; publish with a weaker tier or move the subject to a stronger stream"
            )));
        }
        let publish = jetstream::message::PublishMessage::build()
            .payload(prepared.payload.clone())
            .headers(nats_headers(&prepared.headers));
        let ack = within(
            deadline,
            self.jetstream.send_publish(
                async_nats::Subject::from(prepared.subject.as_str()),
                publish,
            ),
        )
        .await
        .map_err(|_| self.timed_out("sending the message", true))?
        .map_err(|e| self.send_failure(&e))?;
        Ok((target, ack))
    }

    /// The stream lookup ran into the deadline: nothing was sent. Connected, that is
    /// JetStream's API not answering (a meta-leader election, typically): UNAVAILABLE, to
    /// retry, rather than a deadline the caller might read as "maybe stored".
    fn lookup_timed_out(&self) -> PublishFailure {
        if self.is_connected() {
            self.metrics.jetstream_error("timeout");
            PublishFailure::transient("JetStream did not answer the stream lookup in time")
        } else {
            self.metrics.jetstream_error("disconnected");
            self.unreachable()
        }
    }

    fn timed_out(&self, doing: &str, maybe_stored: bool) -> PublishFailure {
        let failure = if self.is_connected() {
            self.metrics.jetstream_error("timeout");
            PublishFailure::new(
                Code::DeadlineExceeded,
                format!("deadline exceeded while {doing}"),
            )
        } else {
            self.metrics.jetstream_error("disconnected");
            self.unreachable()
        };
        if maybe_stored {
            failure.maybe_stored()
        } else {
            failure
        }
    }

    fn send_failure(&self, error: &jetstream::context::PublishError) -> PublishFailure {
        match error.kind() {
            PublishErrorKind::MaxPayloadExceeded => PublishFailure::invalid(format!(
                "message is larger than the server's max_payload of {} bytes: {error}",
                self.client.server_info().max_payload
            )),
            _ => {
                self.metrics.jetstream_error("send");
                PublishFailure::unavailable(format!("could not send to NATS: {error}"))
            }
        }
    }

    /// The failure for an ack that came back as an error.
    fn ack_failure(
        &self,
        target: &StreamTarget,
        error: &jetstream::context::PublishError,
    ) -> PublishFailure {
        match error.kind() {
            PublishErrorKind::TimedOut => self.timed_out("waiting for the JetStream ack", true),
            // The node the broker was connected to went away (the client reconnects to
            // another): worth resending, under the same id, once connected again.
            PublishErrorKind::BrokenPipe => {
                self.metrics.jetstream_error("disconnected");
                PublishFailure::transient("the NATS connection broke before the ack arrived")
                    .maybe_stored()
            }
            // "No responders": nobody took the message, so it was not stored. Whether the
            // stream lost its leader or is gone is for `wait` to find out.
            PublishErrorKind::StreamNotFound => {
                self.metrics.jetstream_error("no_stream");
                PublishFailure::new(
                    Code::NotFound,
                    format!("stream {} no longer captures the subject", target.name),
                )
            }
            _ => {
                self.metrics.jetstream_error("api");
                let js = std::error::Error::source(error)
                    .and_then(|s| s.downcast_ref::<jetstream::Error>());
                match js {
                    Some(js) if is_transient_jetstream(js) => PublishFailure::transient(format!(
                        "stream {} cannot store the message now: {js}",
                        target.name
                    )),
                    Some(js) => {
                        let mut failure = PublishFailure::new(
                            code_for_jetstream(js),
                            format!("stream {} refused the message: {js}", target.name),
                        );
                        if matches!(
                            js.error_code(),
                            ErrorCode::CLUSTER_NO_PEERS | ErrorCode::INSUFFICIENT_RESOURCES
                        ) {
                            failure.message.push_str(&format!(
                                " (stream has {} replicas; too few JetStream servers)",
                                target.replicas
                            ));
                        }
                        failure
                    }
                    None => PublishFailure::new(
                        Code::Internal,
                        format!("unreadable JetStream ack: {error}"),
                    ),
                }
            }
        }
    }
}

/// A request that passed [`check`]: what `prepare` sends once the trace context is added.
#[derive(Debug)]
pub(crate) struct Checked {
    pub(crate) message_id: String,
    pub(crate) tier: Tier,
    /// The message as lax-core sees it: `Nats-Msg-Id`, `Trace-Id` and `Lax-Key` are headers
    /// now, and `options.timeout` is the request's `timeout_ms` (None: the broker default).
    pub(crate) request: lax_core::PublishRequest,
}

/// The broker's checks of a publish request, in order: the caller's `grant` for the subject
/// (PERMISSION_DENIED, or INVALID_ARGUMENT for no subject at all), the tier, `timeout_ms`,
/// then lax-core's [`validate_request`] on the mapped message (subject, every header
/// including the ones the request's fields become, `traceparent`, sizes). Pure: no I/O.
pub(crate) fn check(
    request: pb::PublishRequest,
    defaults: Option<&pb::PublishOptions>,
    grant: &Grant,
    limits: &Limits,
) -> Result<Checked, Refused> {
    let message_id = message_id_of(&request);
    let refuse = |tier, failure| Refused {
        message_id: message_id.clone(),
        tier,
        failure,
    };
    if let Err(denied) = grant.check_publish(&request.subject) {
        return Err(refuse(
            None,
            PublishFailure::new(denied.code(), denied.message()),
        ));
    }
    let options = request
        .options
        .as_ref()
        .or(defaults)
        .cloned()
        .unwrap_or_default();
    let tier: Tier = options
        .tier
        .parse()
        .map_err(|e: lax_core::Error| refuse(None, PublishFailure::from_core(&e)))?;
    if options.timeout_ms < 0 {
        return Err(refuse(
            Some(tier),
            PublishFailure::invalid(format!(
                "timeout_ms is {}; it must not be negative",
                options.timeout_ms
            )),
        ));
    }
    let mut headers = Headers::from(request.headers);
    headers.insert(NATS_MSG_ID_HEADER, message_id.clone());
    if !request.trace_id.is_empty() {
        headers.insert(TRACE_ID_HEADER, request.trace_id);
    }
    if !request.key.is_empty() {
        headers.insert(KEY_HEADER, request.key);
    }
    let timeout =
        (options.timeout_ms > 0).then(|| Duration::from_millis(options.timeout_ms as u64));
    let options = lax_core::PublishOptions::tier(tier).with_ack(options.require_ack);
    let core_request = lax_core::PublishRequest::new(request.subject, request.payload)
        .with_headers(headers)
        .with_message_id(message_id.as_str())
        .with_options(match timeout {
            Some(timeout) => options.with_timeout(timeout),
            None => options,
        });
    validate_request(&core_request, limits)
        .map_err(|e| refuse(Some(tier), PublishFailure::from_core(&e)))?;
    Ok(Checked {
        message_id,
        tier,
        request: core_request,
    })
}

/// The NATS header map of checked headers (async-nats panics on a value with a line break;
/// [`check`] refused those).
pub(crate) fn nats_headers(headers: &Headers) -> HeaderMap {
    let mut nats_headers = HeaderMap::new();
    for (name, value) in headers.iter() {
        nats_headers.insert(name, value);
    }
    nats_headers
}

/// The message id: the request's `message_id`, else its `Nats-Msg-Id` or `Message-Id`
/// header, else a new one.
fn message_id_of(request: &pb::PublishRequest) -> String {
    if !request.message_id.is_empty() {
        return request.message_id.clone();
    }
    [NATS_MSG_ID_HEADER, MESSAGE_ID_HEADER]
        .iter()
        .find_map(|name| {
            request
                .headers
                .get(*name)
                .filter(|v| !v.is_empty())
                .cloned()
        })
        .unwrap_or_else(|| lax_core::new_message_id().into())
}

/// A slot of the in-flight cap, counted in the in-flight gauge while held.
#[derive(Debug)]
struct InflightPermit {
    _permit: OwnedSemaphorePermit,
    metrics: BrokerMetrics,
}

impl InflightPermit {
    fn new(permit: OwnedSemaphorePermit, metrics: BrokerMetrics) -> Self {
        metrics.inflight_changed(1.0);
        InflightPermit {
            _permit: permit,
            metrics,
        }
    }
}

impl Drop for InflightPermit {
    fn drop(&mut self) {
        self.metrics.inflight_changed(-1.0);
    }
}

/// Where a publish stands: sent and awaiting its ack, or failed for a passing reason and
/// waiting to be sent again.
#[derive(Debug)]
enum Attempt {
    Sent((StreamTarget, PublishAckFuture)),
    Failed(PublishFailure),
}

/// How long calls wait for a lost NATS connection to come back before the broker answers
/// UNAVAILABLE at once; see [`PublishCore::wait_connected`].
const RECONNECT_GRACE: Duration = Duration::from_secs(2);

/// The first wait before sending again after a transient failure; it doubles up to
/// [`TRANSIENT_RETRY_MAX`]. JetStream elects a stream leader within a few seconds (its
/// election timeout is 4–9 s), so a publish checks about twice a second meanwhile.
const TRANSIENT_RETRY_FIRST: Duration = Duration::from_millis(50);
const TRANSIENT_RETRY_MAX: Duration = Duration::from_millis(500);

/// A send's ack is overdue after this share of the call's time (within
/// [`ACK_PATIENCE_MIN`]..=[`ACK_PATIENCE_MAX`]): the message is sent again under the same id,
/// and whichever send is acked first answers (JetStream de-duplicates). A stream leader
/// killed after taking a message never acks it; the resend finds the election (no
/// responders) and keeps trying until the new leader takes it, instead of the caller's
/// attempt waiting out its whole timeout. The patience doubles with every resend, so a
/// leader that is merely slow gets a few extra copies, not a flood.
const ACK_PATIENCE_SHARE: u32 = 5;
const ACK_PATIENCE_MIN: Duration = Duration::from_millis(250);
const ACK_PATIENCE_MAX: Duration = Duration::from_secs(2);

/// A transient state still unresolved this share of the call's time before its deadline
/// (at most [`TRANSIENT_ANSWER_LEAD_MAX`]) is answered then: the broker's UNAVAILABLE
/// (flagged transient) must reach the caller before the caller's own timeout fires, which
/// it would read as a plain timeout of the path.
const TRANSIENT_ANSWER_LEAD_SHARE: u32 = 10;
const TRANSIENT_ANSWER_LEAD_MAX: Duration = Duration::from_millis(500);

/// A sent message awaiting its ack; it holds an in-flight slot until answered.
#[derive(Debug)]
pub(crate) struct InFlight {
    core: Arc<PublishCore>,
    prepared: Prepared,
    attempt: Attempt,
    deadline: Instant,
    _permit: InflightPermit,
}

/// One send's ack, with the stream it was sent to.
struct PendingAck {
    target: StreamTarget,
    ack: <PublishAckFuture as IntoFuture>::IntoFuture,
}

/// What one send's ack said, with the stream it was sent to.
type Answered = (
    StreamTarget,
    Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
);

fn pending_ack(target: StreamTarget, ack: PublishAckFuture) -> PendingAck {
    PendingAck {
        target,
        ack: ack.into_future(),
    }
}

/// The first ack of `pending` to arrive, taken out of it; never ready while `pending` is
/// empty. A plain list, usually of one: `FuturesUnordered` wakes its task again whenever a
/// poll went through every future it holds, which with one send is every poll, and tokio
/// answers such a wake-up by waking a second worker thread.
fn first_answered(pending: &mut Vec<PendingAck>) -> impl Future<Output = Answered> + '_ {
    std::future::poll_fn(move |cx| {
        for i in 0..pending.len() {
            if let Poll::Ready(result) = pending[i].ack.poll_unpin(cx) {
                let answered = pending.swap_remove(i);
                return Poll::Ready((answered.target, result));
            }
        }
        Poll::Pending
    })
}

impl InFlight {
    /// Waits for the ack, sending again (same message id, so JetStream de-duplicates) while
    /// the deadline allows: when the failure is transient (no stream leader during an
    /// election, JetStream's API not answering, the NATS node going away) and when an ack is
    /// overdue (see [`ACK_PATIENCE_SHARE`]); the first send to be acked answers. A publish
    /// that found no stream at all (deleted since the lookup was cached) is resolved afresh
    /// and sent once more. A transient state still unresolved shortly before the deadline is
    /// answered UNAVAILABLE, flagged transient, and "may have been stored" when any send
    /// went unanswered; sends merely unanswered at the deadline are answered
    /// DEADLINE_EXCEEDED, may have been stored.
    pub(crate) async fn wait(self) -> Result<Stored, PublishFailure> {
        let InFlight {
            core,
            prepared,
            attempt,
            deadline,
            _permit,
        } = self;
        let window = deadline.saturating_duration_since(Instant::now());
        let answer_transient_by =
            deadline - (window / TRANSIENT_ANSWER_LEAD_SHARE).min(TRANSIENT_ANSWER_LEAD_MAX);
        let mut patience = (window / ACK_PATIENCE_SHARE).clamp(ACK_PATIENCE_MIN, ACK_PATIENCE_MAX);
        let mut pause = TRANSIENT_RETRY_FIRST;
        let mut pending = Vec::with_capacity(1);
        // The latest transient failure: what the call is answered if nothing is acked.
        let mut transient: Option<PublishFailure> = None;
        let mut maybe_stored = false;
        let mut resolved_again = false;
        let mut next_send = match attempt {
            Attempt::Sent((target, ack)) => {
                pending.push(pending_ack(target, ack));
                Instant::now() + patience
            }
            Attempt::Failed(failure) => {
                transient = Some(failure);
                Instant::now() + pause
            }
        };
        loop {
            // The broker's answer must not lose its race against the caller's timeout.
            let give_up_at = if transient.is_some() {
                answer_transient_by
            } else {
                deadline
            };
            let wake = next_send.min(give_up_at);
            let answered = tokio::select! {
                biased;
                answered = first_answered(&mut pending) => Some(answered),
                () = tokio::time::sleep_until(wake) => None,
            };
            let unanswered = maybe_stored || !pending.is_empty();
            let Some((target, result)) = answered else {
                if Instant::now() >= give_up_at {
                    let failure = match transient {
                        Some(failure) => failure,
                        None => core.timed_out("waiting for the JetStream ack", true),
                    };
                    return Err(failure.maybe_stored_if(unanswered));
                }
                // A send is due: the ack is overdue, or a transient failure has paused.
                if !core.wait_connected(give_up_at).await {
                    // NATS is down rather than electing: answer now, as every call does then.
                    return Err(core.unreachable().maybe_stored_if(unanswered));
                }
                if !pending.is_empty() {
                    core.metrics.jetstream_error("ack_overdue");
                    tracing::debug!(message_id = %prepared.message_id, ?patience, "no ack yet; sending again");
                }
                match core.redispatch(&prepared, give_up_at).await {
                    Ok(Attempt::Sent((target, ack))) => {
                        pending.push(pending_ack(target, ack));
                        next_send = Instant::now() + patience;
                        patience = (patience * 2).min(ACK_PATIENCE_MAX);
                    }
                    Ok(Attempt::Failed(failure)) => {
                        transient = Some(failure);
                        next_send = Instant::now() + pause;
                        pause = (pause * 2).min(TRANSIENT_RETRY_MAX);
                    }
                    Err(failure) => return Err(failure.maybe_stored_if(unanswered)),
                }
                continue;
            };
            let failure = match core.read_ack(&prepared, &target, result) {
                Ok(stored) => return Ok(stored),
                Err(failure) => failure,
            };
            let failure = if failure.code == Code::NotFound && !failure.maybe_stored {
                // Bounded like every other wait: a lookup JetStream does not answer must
                // not keep the call past its deadline.
                let check = within(
                    give_up_at,
                    core.router.no_leader_or_gone(&prepared.subject, &target),
                )
                .await
                .unwrap_or_else(|_| Some(core.lookup_timed_out()));
                match check {
                    Some(no_leader) => no_leader,
                    None if resolved_again => {
                        return Err(failure.maybe_stored_if(maybe_stored || !pending.is_empty()));
                    }
                    None => {
                        // Gone since the lookup was cached: resolve afresh and send now.
                        resolved_again = true;
                        next_send = Instant::now();
                        continue;
                    }
                }
            } else {
                failure
            };
            if failure.code == Code::DeadlineExceeded && failure.maybe_stored {
                // This send's ack timed out in the NATS client: it stays unanswered, and
                // the other sends (or the next) may still be acked.
                maybe_stored = true;
                continue;
            }
            maybe_stored |= failure.maybe_stored;
            if !failure.transient {
                return Err(failure.maybe_stored_if(maybe_stored || !pending.is_empty()));
            }
            core.metrics.jetstream_error("transient_retry");
            tracing::debug!(message_id = %prepared.message_id, %failure, ?pause, "sending again after a transient failure");
            transient = Some(failure);
            next_send = next_send.min(Instant::now() + pause);
            pause = (pause * 2).min(TRANSIENT_RETRY_MAX);
        }
    }
}

impl PublishCore {
    /// Sends again after a failure; a transient failure of the send itself is kept for the
    /// caller's retry loop.
    async fn redispatch(
        &self,
        prepared: &Prepared,
        deadline: Instant,
    ) -> Result<Attempt, PublishFailure> {
        match self.dispatch(prepared, deadline).await {
            Ok(sent) => Ok(Attempt::Sent(sent)),
            Err(failure) if failure.transient => Ok(Attempt::Failed(failure)),
            Err(failure) => Err(failure),
        }
    }

    /// Reads one send's ack.
    fn read_ack(
        &self,
        prepared: &Prepared,
        target: &StreamTarget,
        result: Result<jetstream::publish::PublishAck, jetstream::context::PublishError>,
    ) -> Result<Stored, PublishFailure> {
        match result {
            Ok(ack) => {
                if ack.stream != target.name {
                    self.router.forget_subject(&prepared.subject);
                }
                Ok(Stored {
                    stream: ack.stream,
                    sequence: ack.sequence,
                    duplicate: ack.duplicate,
                    timestamp: SystemTime::now(),
                })
            }
            Err(error) => Err(self.ack_failure(target, &error)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn request(message_id: &str, headers: &[(&str, &str)]) -> pb::PublishRequest {
        pb::PublishRequest {
            message_id: message_id.into(),
            headers: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<HashMap<_, _>>(),
            ..Default::default()
        }
    }

    #[test]
    fn message_id_comes_from_the_field_then_the_headers_then_a_new_one() {
        assert_eq!(message_id_of(&request("a", &[("Nats-Msg-Id", "b")])), "a");
        assert_eq!(
            message_id_of(&request("", &[("Nats-Msg-Id", "b"), ("Message-Id", "c")])),
            "b"
        );
        assert_eq!(message_id_of(&request("", &[("Message-Id", "c")])), "c");
        let generated = message_id_of(&request("", &[("Message-Id", "")]));
        assert_eq!(generated.len(), 22);
    }
}
