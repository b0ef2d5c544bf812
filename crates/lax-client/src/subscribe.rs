//! Consuming through the broker: [`LaxClient::subscribe`] opens a [`Subscription`], an async
//! [`Stream`] of [`ReceivedMessage`]s, each settled with [`ack`](ReceivedMessage::ack),
//! [`nack`](ReceivedMessage::nack), [`in_progress`](ReceivedMessage::in_progress) or
//! [`term`](ReceivedMessage::term); [`Subscription::process`] runs a handler per message and
//! settles for you.
//!
//! The broker reads from a JetStream consumer on the stream capturing the subject: one of
//! the subscription's own, or, with [`SubscribeOptions::group`], the group's durable consumer,
//! whose members split the messages. Unsettled messages come back after the ack wait; after
//! [`max_deliver`](SubscribeOptions::max_deliver) deliveries a message goes to the
//! dead-letter subject (`lax.dlq.<stream>.<subject>` unless set). Dropping a subscription
//! gives the messages it held back to its group at once.
//!
//! ```no_run
//! use std::time::Duration;
//! use lax_client::{ClientOptions, LaxClient, SubscribeOptions, StartPosition};
//!
//! #[derive(serde::Deserialize)]
//! struct Order { order_id: String }
//!
//! # async fn demo() -> Result<(), lax_client::Error> {
//! let client = LaxClient::connect(ClientOptions::default()).await?;
//! let orders = client
//!     .subscribe(
//!         "orders.created",
//!         SubscribeOptions::group("billing")
//!             .start(StartPosition::First)
//!             .max_deliver(5)
//!             .ack_wait(Duration::from_secs(30)),
//!     )
//!     .await?;
//! // Acked when the handler returns Ok, nacked (redelivered after a second) on Err.
//! orders
//!     .process_with(lax_client::ProcessOptions::concurrency(8), |message| async move {
//!         let order: Order = message.json()?;
//!         println!("billing {}", order.order_id);
//!         Ok::<_, lax_client::Error>(())
//!     })
//!     .await?;
//! # Ok(()) }
//! ```

use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use futures::{Stream, StreamExt as _, stream::FuturesUnordered};
use lax_core::{
    Error, Headers, Limits,
    trace::{self, TraceContext},
    validate::validate_filter_subject,
};
pub use lax_transport_grpc::BrokerMessage;
use lax_transport_grpc::{
    ConsumerGroupConfig, GroupJoin, GrpcSubscription, Settle, Settler, SubscribeSpec,
};
use lax_transport_nats::{DirectMessage, DirectSubscription};
use serde::de::DeserializeOwned;
use tracing::{Instrument as _, Span, field::Empty};

use crate::LaxClient;

/// Where a subscription without an existing group position starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StartPosition {
    /// Only messages published from now on (the default).
    #[default]
    New,
    /// The last message already stored, then new ones.
    Last,
    /// Every message the stream holds.
    First,
    /// From this stream sequence on (1 is the first).
    Sequence(u64),
}

impl StartPosition {
    /// The wire form: `new`, `last`, `first` or `sequence:N`.
    pub fn as_wire(&self) -> String {
        match self {
            StartPosition::New => "new".to_owned(),
            StartPosition::Last => "last".to_owned(),
            StartPosition::First => "first".to_owned(),
            StartPosition::Sequence(n) => format!("sequence:{n}"),
        }
    }
}

/// How a subscription consumes, with the Python SDK's defaults: at most 100 messages in
/// flight, 5 deliveries, a 30 s ack wait, pulls of 10, flow control on, manual ack, starting
/// at new messages. In a group, a member's own flow control (`max_inflight`, `prefetch`,
/// `flow_control`) never conflicts with the group's settings.
///
/// ```
/// use std::time::Duration;
/// use lax_client::{SubscribeOptions, StartPosition};
///
/// let options = SubscribeOptions::group("workers")
///     .start(StartPosition::Sequence(42))
///     .ack_wait(Duration::from_secs(10))
///     .max_deliver(3)
///     .prefetch(20);
/// assert_eq!(options.consumer_group.as_deref(), Some("workers"));
/// assert!(options.manual_ack, "messages are acked explicitly unless asked otherwise");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SubscribeOptions {
    /// The consumer group whose members share the messages; none for a subscription of
    /// one's own.
    pub consumer_group: Option<String>,
    /// Where a new consumer starts.
    pub start: StartPosition,
    /// Most messages delivered and not yet settled (JetStream's max ack pending). Default 100;
    /// `None` leaves it to the broker.
    pub max_inflight: Option<u32>,
    /// Settle each message explicitly (the default); `false` acks each message as the
    /// subscription hands it to the application (at most once: a subscriber that dies loses
    /// only what it had received, never the backlog).
    pub manual_ack: bool,
    /// How long a delivered message may stay unsettled before it is redelivered. Default
    /// 30 s.
    pub ack_wait: Option<Duration>,
    /// Deliveries before a message is dead-lettered. Default 5; `None` is unlimited.
    pub max_deliver: Option<u32>,
    /// Messages the broker pulls at a time. Default 10.
    pub prefetch: Option<u32>,
    /// Kept for the wire (default on, as the Python SDK's): the broker always pulls only
    /// what this subscriber has room for (`max_inflight`) and reads.
    pub flow_control: bool,
    /// Where dead letters go; `lax.dlq.<stream>.<subject>` when unset.
    pub dead_letter_subject: Option<String>,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        SubscribeOptions {
            consumer_group: None,
            start: StartPosition::New,
            max_inflight: Some(100),
            manual_ack: true,
            ack_wait: Some(Duration::from_secs(30)),
            max_deliver: Some(5),
            prefetch: Some(10),
            flow_control: true,
            dead_letter_subject: None,
        }
    }
}

impl SubscribeOptions {
    /// Options for a member of consumer group `name`: the subscriber defaults, except that
    /// the settings the group's consumer holds (ack wait, max deliver, and the in-flight cap,
    /// which the group's `max_ack_pending` sets for all members) are left unset, so the
    /// member joins the group whatever they are. Set them only to insist on them.
    pub fn group(name: impl Into<String>) -> Self {
        SubscribeOptions {
            consumer_group: Some(name.into()),
            ack_wait: None,
            max_deliver: None,
            max_inflight: None,
            ..Default::default()
        }
    }

    /// Sets the consumer group (see [`group`](Self::group) for a member's defaults).
    pub fn consumer_group(mut self, name: impl Into<String>) -> Self {
        self.consumer_group = Some(name.into());
        self
    }

    /// Sets the start position.
    pub fn start(mut self, start: StartPosition) -> Self {
        self.start = start;
        self
    }

    /// Sets the most unsettled messages.
    pub fn max_inflight(mut self, max_inflight: u32) -> Self {
        self.max_inflight = Some(max_inflight);
        self
    }

    /// Sets whether messages are settled explicitly.
    pub fn manual_ack(mut self, manual_ack: bool) -> Self {
        self.manual_ack = manual_ack;
        self
    }

    /// Sets the ack wait (whole seconds; rounded up).
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = Some(ack_wait);
        self
    }

    /// Sets the deliveries before dead-lettering.
    pub fn max_deliver(mut self, max_deliver: u32) -> Self {
        self.max_deliver = Some(max_deliver);
        self
    }

    /// Sets the pull size.
    pub fn prefetch(mut self, prefetch: u32) -> Self {
        self.prefetch = Some(prefetch);
        self
    }

    /// Sets flow control.
    pub fn flow_control(mut self, flow_control: bool) -> Self {
        self.flow_control = flow_control;
        self
    }

    /// Sets the dead-letter subject.
    pub fn dead_letter_subject(mut self, subject: impl Into<String>) -> Self {
        self.dead_letter_subject = Some(subject.into());
        self
    }

    fn into_spec(self, subject: String) -> SubscribeSpec {
        let mut spec = SubscribeSpec::new(subject)
            .start_position(self.start.as_wire())
            .max_inflight(self.max_inflight.unwrap_or(0))
            .max_deliver(self.max_deliver.unwrap_or(0))
            .prefetch(self.prefetch.unwrap_or(0))
            .flow_control(self.flow_control);
        spec.consumer_group = self.consumer_group;
        spec.ack_wait = self.ack_wait;
        spec.dead_letter_subject = self.dead_letter_subject;
        spec
    }
}

/// A message delivered by a [`Subscription`].
///
/// Settle it once: [`ack`](Self::ack) when handled, [`nack`](Self::nack) to have it
/// redelivered, [`in_progress`](Self::in_progress) to keep it while working on it,
/// [`term`](Self::term) to drop it for good. A settle after the ack wait elapsed fails with
/// [`Rejected`](lax_core::ErrorKind::Rejected): the message is being redelivered.
///
/// It reads as the transport's [`BrokerMessage`] (id, subject, payload, headers, stream,
/// sequence, delivery count, …) through `Deref`, as async-nats' JetStream message reads as
/// its core message.
#[derive(Clone)]
pub struct ReceivedMessage {
    /// Its `ack_id` is empty when the subscription acked it on delivery.
    message: BrokerMessage,
    settler: Settler,
}

impl std::ops::Deref for ReceivedMessage {
    type Target = BrokerMessage;

    fn deref(&self) -> &BrokerMessage {
        &self.message
    }
}

impl fmt::Debug for ReceivedMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReceivedMessage")
            .field("id", &self.id)
            .field("subject", &self.subject)
            .field("stream", &self.stream)
            .field("sequence", &self.sequence)
            .field("delivery_count", &self.delivery_count)
            .field("payload_len", &self.payload.len())
            .field("ack_id", &self.ack_id)
            .finish_non_exhaustive()
    }
}

impl ReceivedMessage {
    fn new(mut message: BrokerMessage, settler: Settler, acked_on_delivery: bool) -> Self {
        if acked_on_delivery {
            message.ack_id.clear();
        }
        ReceivedMessage { message, settler }
    }

    /// The message itself, without the means to settle it.
    pub fn into_inner(self) -> BrokerMessage {
        self.message
    }

    /// The payload as JSON.
    ///
    /// # Errors
    ///
    /// [`InvalidInput`](lax_core::ErrorKind::InvalidInput) when it is not a `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.payload).map_err(|e| {
            Error::invalid_input(format!(
                "message {} on {} is not the JSON expected: {e}",
                self.sequence, self.subject
            ))
        })
    }

    /// The payload as UTF-8 text.
    ///
    /// # Errors
    ///
    /// [`InvalidInput`](lax_core::ErrorKind::InvalidInput) when it is not UTF-8.
    pub fn text(&self) -> Result<&str, Error> {
        std::str::from_utf8(&self.payload)
            .map_err(|e| Error::invalid_input(format!("payload is not UTF-8: {e}")))
    }

    /// The id the broker settles this delivery by; `None` when the subscription acks on
    /// delivery.
    pub fn ack_id(&self) -> Option<&str> {
        (!self.ack_id.is_empty()).then_some(self.ack_id.as_str())
    }

    /// Acknowledges the message: it is done. A no-op when the subscription acks on delivery.
    ///
    /// # Errors
    ///
    /// `Rejected` when the broker no longer knows the delivery (settled already, ack wait
    /// elapsed, subscription ended); `Unavailable`/`TimedOut` when it could not confirm.
    pub async fn ack(&self) -> Result<(), Error> {
        if self.ack_id.is_empty() {
            return Ok(());
        }
        self.settler.settle(&self.ack_id, Settle::Ack).await
    }

    /// Negatively acknowledges the message: it is redelivered after `delay` (at once for
    /// zero).
    ///
    /// # Errors
    ///
    /// As [`ack`](Self::ack); `InvalidInput` when the subscription acks on delivery.
    pub async fn nack(&self, delay: Duration) -> Result<(), Error> {
        self.settle_explicitly("nack", Settle::Nack(delay)).await
    }

    /// Tells the broker the message is still being worked on: its ack wait starts again.
    ///
    /// # Errors
    ///
    /// As [`nack`](Self::nack).
    pub async fn in_progress(&self) -> Result<(), Error> {
        self.settle_explicitly("mark in progress", Settle::InProgress)
            .await
    }

    /// Stops redelivery of the message for good (it is not dead-lettered).
    ///
    /// # Errors
    ///
    /// As [`nack`](Self::nack).
    pub async fn term(&self) -> Result<(), Error> {
        self.settle_explicitly("terminate", Settle::Term).await
    }

    async fn settle_explicitly(&self, what: &str, how: Settle) -> Result<(), Error> {
        if self.ack_id.is_empty() {
            return Err(Error::invalid_input(format!(
                "cannot {what} message {}: its subscription acks on delivery (manual_ack = false)",
                self.sequence
            )));
        }
        self.settler.settle(&self.ack_id, how).await
    }
}

/// How [`Subscription::process_with`] runs the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProcessOptions {
    /// Messages handled at once.
    pub concurrency: usize,
    /// How long a message whose handler failed waits before it is redelivered.
    pub nack_delay: Duration,
}

impl Default for ProcessOptions {
    fn default() -> Self {
        ProcessOptions {
            concurrency: 1,
            nack_delay: Duration::from_secs(1),
        }
    }
}

impl ProcessOptions {
    /// Default options with `concurrency` handlers at once (at least one).
    pub fn concurrency(concurrency: usize) -> Self {
        ProcessOptions {
            concurrency: concurrency.max(1),
            ..Default::default()
        }
    }

    /// Sets the redelivery delay of failed messages.
    pub fn nack_delay(mut self, delay: Duration) -> Self {
        self.nack_delay = delay;
        self
    }
}

/// A subscription made with [`LaxClient::subscribe`]: a [`Stream`] of messages until the
/// broker ends it (with an error: it shut down, the group's consumer was deleted, the
/// connection broke) or it is dropped. Dropping it gives every message it holds unsettled
/// back to its group at once.
pub struct Subscription {
    subject: String,
    group: Option<String>,
    messages: GrpcSubscription,
    /// Ack each message as it is handed to the application.
    ack_on_delivery: bool,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("subject", &self.subject)
            .field("group", &self.group)
            .finish_non_exhaustive()
    }
}

impl Subscription {
    /// The subject (or filter) subscribed to.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The consumer group, if any.
    pub fn group(&self) -> Option<&str> {
        self.group.as_deref()
    }

    /// Runs `handler` on each message, one at a time, acking it when the handler returns
    /// `Ok` and nacking it (redelivery after a second) on `Err`. Returns when the
    /// subscription ends; see [`process_with`](Self::process_with).
    ///
    /// # Errors
    ///
    /// The error the subscription ended with.
    pub async fn process<F, Fut, E>(self, handler: F) -> Result<(), Error>
    where
        F: FnMut(ReceivedMessage) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: fmt::Display,
    {
        self.process_with(ProcessOptions::default(), handler).await
    }

    /// Runs `handler` on each message, up to `options.concurrency` at once, acking each
    /// message whose handler returned `Ok` and nacking (redelivery after
    /// `options.nack_delay`) each one whose handler failed: at least once. Settles are
    /// pipelined (the next message does not wait for the broker to confirm the last one's
    /// ack); one that fails is logged, and the message comes back after its ack wait.
    /// Returns once the subscription has ended, every running handler has finished and every
    /// settle has been answered.
    ///
    /// # Errors
    ///
    /// The error the subscription ended with.
    pub async fn process_with<F, Fut, E>(
        mut self,
        options: ProcessOptions,
        mut handler: F,
    ) -> Result<(), Error>
    where
        F: FnMut(ReceivedMessage) -> Fut,
        Fut: Future<Output = Result<(), E>>,
        E: fmt::Display,
    {
        let group = self.group.clone();
        let ended = for_each_concurrent(&mut self, options.concurrency, |message| {
            let (span, context) = process_span(&message.subject, &message.id, &message.headers);
            span.record("stream", message.stream.as_str());
            span.record("sequence", message.sequence);
            span.record("delivery", message.delivery_count);
            if let Some(group) = &group {
                span.record("group", group.as_str());
            }
            let handled = span.in_scope(|| handler(message.clone()));
            let handled = traced(span, context, handled);
            async move {
                let outcome = handled.await;
                settle(message, outcome, options.nack_delay).await;
            }
        })
        .await;
        self.messages.settler().flush().await;
        ended
    }
}

/// The `lax.process` span of one message and its trace context: the publisher's (or the
/// broker's) span is the parent, from the message's `traceparent`.
fn process_span(
    subject: &str,
    message_id: &str,
    headers: &Headers,
) -> (Span, Option<TraceContext>) {
    let span = tracing::info_span!(
        parent: None,
        "lax.process",
        subject = %subject,
        message_id = %message_id,
        stream = Empty,
        sequence = Empty,
        delivery = Empty,
        group = Empty,
        outcome = Empty,
        error = Empty,
        trace_id = Empty,
        span_id = Empty,
        parent_span_id = Empty,
        invalid_traceparent = Empty,
    );
    let context = trace::identify(&span, trace::received(&span, headers));
    (span, context)
}

/// Runs a handler's future inside its `lax.process` `span`, with the span's trace context
/// as the task's current one (so what the handler publishes continues the trace), and
/// records its outcome on the span.
async fn traced<E: fmt::Display>(
    span: Span,
    context: Option<TraceContext>,
    handled: impl Future<Output = Result<(), E>>,
) -> Result<(), E> {
    let outcome = match context {
        Some(context) => context.scope(handled).instrument(span.clone()).await,
        None => handled.instrument(span.clone()).await,
    };
    match &outcome {
        Ok(()) => span.record("outcome", "ok"),
        Err(error) => span
            .record("outcome", "error")
            .record("error", tracing::field::display(error)),
    };
    outcome
}

/// Runs `handle` on each message of `messages`, up to `concurrency` (at least one) at once,
/// until the stream ends (`Ok`) or fails (that error), then waits for the handlers running.
async fn for_each_concurrent<M, Fut>(
    messages: &mut (impl Stream<Item = Result<M, Error>> + Unpin),
    concurrency: usize,
    mut handle: impl FnMut(M) -> Fut,
) -> Result<(), Error>
where
    Fut: Future<Output = ()>,
{
    let concurrency = concurrency.max(1);
    let mut running = FuturesUnordered::new();
    let ended = loop {
        if running.len() >= concurrency {
            running.next().await;
            continue;
        }
        tokio::select! {
            Some(()) = running.next(), if !running.is_empty() => {}
            next = messages.next() => match next {
                None => break Ok(()),
                Some(Err(error)) => break Err(error),
                Some(Ok(message)) => running.push(handle(message)),
            },
        }
    };
    while running.next().await.is_some() {}
    ended
}

/// Handler-driven processing of a [`DirectSubscription`] (core NATS, memory tier): each
/// message runs in a `lax.process` span that continues the publisher's trace, as
/// [`Subscription::process_with`] does for broker deliveries. Nothing is settled: core NATS
/// has no acks, so a failed handler is only logged (and recorded on its span).
///
/// ```no_run
/// use lax_client::{ClientOptions, LaxClient, ProcessOptions, subscribe::DirectProcess};
///
/// # async fn demo() -> Result<(), lax_client::Error> {
/// let client = LaxClient::connect(ClientOptions::default()).await?;
/// let clicks = client.subscribe_direct("events.click", None).await?;
/// clicks
///     .process_with(ProcessOptions::concurrency(4), |message| async move {
///         println!("{} bytes on {}", message.payload.len(), message.subject);
///         Ok::<_, lax_client::Error>(())
///     })
///     .await?;
/// # Ok(()) }
/// ```
pub trait DirectProcess {
    /// Runs `handler` on each message, one at a time, until the subscription ends.
    ///
    /// # Errors
    ///
    /// None today: a direct subscription ends without an error; kept for symmetry with
    /// [`Subscription::process`].
    fn process<F, Fut, E>(self, handler: F) -> impl Future<Output = Result<(), Error>> + Send
    where
        Self: Sized,
        F: FnMut(DirectMessage) -> Fut + Send,
        Fut: Future<Output = Result<(), E>> + Send,
        E: fmt::Display + Send,
    {
        self.process_with(ProcessOptions::default(), handler)
    }

    /// Runs `handler` on each message, up to `options.concurrency` at once, until the
    /// subscription ends; `options.nack_delay` does not apply.
    ///
    /// # Errors
    ///
    /// As [`process`](Self::process).
    fn process_with<F, Fut, E>(
        self,
        options: ProcessOptions,
        handler: F,
    ) -> impl Future<Output = Result<(), Error>> + Send
    where
        F: FnMut(DirectMessage) -> Fut + Send,
        Fut: Future<Output = Result<(), E>> + Send,
        E: fmt::Display + Send;
}

impl DirectProcess for DirectSubscription {
    async fn process_with<F, Fut, E>(
        self,
        options: ProcessOptions,
        mut handler: F,
    ) -> Result<(), Error>
    where
        F: FnMut(DirectMessage) -> Fut + Send,
        Fut: Future<Output = Result<(), E>> + Send,
        E: fmt::Display + Send,
    {
        let mut messages = self.map(Ok::<_, Error>);
        for_each_concurrent(&mut messages, options.concurrency, |message| {
            let id = message.message_id.clone().unwrap_or_default();
            let (span, context) = process_span(&message.subject, &id, &message.headers);
            let handled = span.in_scope(|| handler(message));
            let handled = traced(span, context, handled);
            async move {
                if let Err(error) = handled.await {
                    tracing::debug!(%error, "handler of a direct message failed");
                }
            }
        })
        .await
    }
}

/// Settles a handled message in the background: acked on `Ok`, nacked on `Err`.
async fn settle<E: fmt::Display>(
    message: ReceivedMessage,
    outcome: Result<(), E>,
    delay: Duration,
) {
    if message.ack_id.is_empty() {
        return;
    }
    let how = match outcome {
        Ok(()) => Settle::Ack,
        Err(error) => {
            tracing::debug!(subject = %message.subject, sequence = message.sequence, delivery = message.delivery_count, %error, "handler failed; nacking");
            Settle::Nack(delay)
        }
    };
    let ReceivedMessage { message, settler } = message;
    settler.settle_in_background(message.ack_id, how).await;
}

impl Stream for Subscription {
    type Item = Result<ReceivedMessage, Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        this.messages.poll_next_unpin(cx).map(|next| {
            next.map(|item| {
                item.map(|message| {
                    let settler = this.messages.settler().clone();
                    if this.ack_on_delivery {
                        let (settler, ack_id) = (settler.clone(), message.ack_id.clone());
                        tokio::spawn(async move { settler.ack_in_background(ack_id).await });
                    }
                    ReceivedMessage::new(message, settler, this.ack_on_delivery)
                })
            })
        })
    }
}

impl LaxClient {
    /// Subscribes to `subject` through the broker; see the [`subscribe`](crate::subscribe)
    /// module. Returns once the broker has set up the consumer, so messages published after
    /// this returns are seen by a [`StartPosition::New`] subscription.
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a bad subject or options; `Rejected` when no stream captures the
    /// subject, or a group exists with other settings, or the dead-letter subject has no
    /// stream; `Unavailable`/`TimedOut` when the broker cannot be reached.
    pub async fn subscribe(
        &self,
        subject: impl Into<String>,
        options: SubscribeOptions,
    ) -> Result<Subscription, Error> {
        let subject = subject.into();
        validate_filter_subject(&subject, Limits::DEFAULT_MAX_SUBJECT_LEN)?;
        let group = options.consumer_group.clone();
        let ack_on_delivery = !options.manual_ack;
        let messages = self
            .broker()
            .subscribe(options.into_spec(subject.clone()))
            .await?;
        Ok(Subscription {
            subject,
            group,
            messages,
            ack_on_delivery,
        })
    }

    /// Creates consumer group `name` on `stream` for `subject_filter` (empty: the whole
    /// stream), or joins it when it exists with this configuration
    /// ([`GroupJoin::AlreadyExisted`]).
    ///
    /// # Errors
    ///
    /// `Rejected` when it exists with another configuration or the stream does not exist;
    /// `InvalidInput` for bad names, subjects or settings, before anything is sent.
    pub async fn create_consumer_group(
        &self,
        name: impl Into<String>,
        stream: impl Into<String>,
        subject_filter: impl Into<String>,
        config: ConsumerGroupConfig,
    ) -> Result<GroupJoin, Error> {
        self.admin()?
            .create_consumer_group(
                &name.into(),
                &stream.into(),
                &subject_filter.into(),
                &config,
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_python_sdks() {
        let spec = SubscribeOptions::default().into_spec("x".into());
        assert_eq!(
            (
                spec.max_inflight,
                spec.max_deliver,
                spec.prefetch,
                spec.ack_wait
            ),
            (100, 5, 10, Some(Duration::from_secs(30)))
        );
        assert!(spec.flow_control);
        // A group member takes the group's ack wait and max deliver.
        let member = SubscribeOptions::group("crew").into_spec("x".into());
        assert_eq!(
            (member.ack_wait, member.max_deliver, member.max_inflight),
            (None, 0, 0)
        );
        assert_eq!(member.prefetch, 10);
    }

    #[test]
    fn options_become_the_transports_spec() {
        let spec = SubscribeOptions::group("workers")
            .start(StartPosition::Sequence(7))
            .ack_wait(Duration::from_millis(1_500))
            .max_deliver(3)
            .prefetch(10)
            .max_inflight(100)
            .flow_control(true)
            .dead_letter_subject("dead.orders")
            .into_spec("orders.>".into());
        assert_eq!(spec.start_position, "sequence:7");
        assert_eq!(spec.consumer_group.as_deref(), Some("workers"));
        assert_eq!(spec.ack_wait, Some(Duration::from_millis(1_500)));
        assert_eq!(
            (spec.max_deliver, spec.prefetch, spec.max_inflight),
            (3, 10, 100)
        );
        assert!(spec.flow_control);
        assert_eq!(spec.dead_letter_subject.as_deref(), Some("dead.orders"));

        let plain = SubscribeOptions::default().into_spec("x".into());
        assert_eq!(plain.start_position, "new");
    }

    #[test]
    fn start_positions_have_wire_names() {
        assert_eq!(StartPosition::default().as_wire(), "new");
        assert_eq!(StartPosition::Last.as_wire(), "last");
        assert_eq!(StartPosition::First.as_wire(), "first");
    }
}
