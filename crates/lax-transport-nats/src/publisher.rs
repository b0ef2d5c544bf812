//! [`NatsPublisher`]: a [`Publisher`] over core NATS.

use std::{
    fmt,
    pin::Pin,
    sync::{Arc, PoisonError, Weak},
    task::{Context, Poll, Waker},
    time::Duration,
};

use async_nats::{
    Client, HeaderMap, Subject, client::RequestErrorKind, connection::State,
    message::OutboundMessage,
};
use bytes::Bytes;
use futures::{FutureExt, Sink};
use lax_core::{
    Error, Limits, PublishRequest, Publisher, Receipt,
    drain::Drain,
    validate::{validate_filter_subject, validate_request},
};
use tokio::{
    sync::{Mutex, broadcast, watch},
    time::MissedTickBehavior,
};

use crate::{
    confirm::CONFIRM_EVERY,
    error::{
        connect_error, connect_error_type, connection_gone, flush_error, publish_error,
        subscribe_error,
    },
    future::PublishFuture,
    headers,
    options::NatsOptions,
    state::{ConnectionEvent, ConnectionState, Monitor},
    subscription::DirectSubscription,
};

/// A [`Publisher`] that sends every message straight to NATS with a core `PUBLISH`: no ack, at
/// most once, the lowest latency LAX has.
///
/// Cheap to clone; clones share one connection.
///
/// # What a publish does
///
/// 1. The request is validated with [`validate_request`] against the server's advertised
///    `max_payload`, and the payload plus the header block (the `Message-Id` header included)
///    must fit in `max_payload` too: a message the server would refuse makes it close the
///    connection, failing everything else in flight on it. Failing either check is
///    [`ErrorKind::InvalidInput`](lax_core::ErrorKind::InvalidInput) and nothing is sent.
/// 2. The message id travels in a `Message-Id` header (replacing one the caller set); the
///    payload [`Bytes`] are handed over without a copy.
/// 3. **Connected**: the message is queued for the connection; when the queue
///    ([`NatsOptions::reconnect_buffer_messages`]) is full the publish waits for room, and
///    fails with [`ErrorKind::Unavailable`](lax_core::ErrorKind::Unavailable) if the
///    connection breaks meanwhile. The receipt means "handed to the client", not "delivered".
/// 4. **Disconnected** (the client is reconnecting): the message is buffered and the publish
///    succeeds at once, as long as the buffer holds fewer than `reconnect_buffer_messages`
///    messages and the bytes accepted since the connection dropped stay within
///    [`NatsOptions::reconnect_buffer_bytes`]. Beyond either bound the publish fails at once
///    with `Unavailable` (never sent), so a circuit breaker sees the outage. Buffered messages
///    go out after the reconnect.
/// 5. **Closed** (drained, or reconnect attempts exhausted): `Unavailable`, or
///    [`ErrorKind::Closed`](lax_core::ErrorKind::Closed) after [`close`](Publisher::close).
///
/// Core NATS is at-most-once: messages already written to a connection that breaks before the
/// break is noticed are lost. A connection that goes silent without closing is noticed within
/// [`NatsOptions::stall_detection_time`]. While direct publishes flow, a round trip every
/// 250 ms confirms what the server has processed; at a disconnect, the messages handed over
/// and not yet confirmed are counted in [`unconfirmed_at_disconnect`](Self::unconfirmed_at_disconnect)
/// and `{prefix}_direct_unconfirmed_at_disconnect_total`: an upper bound of what was lost.
///
/// # Connection state
///
/// [`state`](Self::state) and [`watch_state`](Self::watch_state) follow the connection, and
/// [`events`](Self::events) broadcasts what happens to it — including what the server reports
/// asynchronously, such as a [`ConnectionEvent::PermissionViolation`] for a publish the
/// account may not make (core NATS does not answer publishes, so that publish itself
/// succeeded). Both feed the metrics `{prefix}_nats_connections`, a gauge that each publisher
/// raises by 1 while connected (so 1/0 for a single publisher), and the counters
/// `{prefix}_connection_errors_total{type="nats"}` (as the Python SDK's dashboards query it)
/// and `{prefix}_nats_connection_errors_total{kind}`, with `kind` one of
/// [`ConnectionEvent::error_type`]'s labels or, for a failed [`connect`](Self::connect),
/// `authorization_violation`, `tls`, `connect_timeout` or `connect`.
#[derive(Clone)]
pub struct NatsPublisher {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    /// A clone of `client` used as a `Sink`: its `poll_ready` with a no-op waker is a
    /// `try_send` that keeps the message when the queue is full. A publish that finds room
    /// (nearly all) thus needs no future of its own, no box and no connection watch.
    sink: std::sync::Mutex<Client>,
    monitor: Arc<Monitor>,
    in_flight: Drain,
    /// Set once `close` has flushed and drained the client.
    released: Mutex<bool>,
    servers: Vec<String>,
    flush_timeout: Duration,
    reconnect_buffer_messages: usize,
    reconnect_buffer_bytes: usize,
}

impl NatsPublisher {
    /// Validates `options` and connects to one of the servers.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::Config`](lax_core::ErrorKind::Config) for invalid options,
    /// [`ErrorKind::Rejected`](lax_core::ErrorKind::Rejected) when the server refuses the
    /// credentials, [`ErrorKind::Unavailable`](lax_core::ErrorKind::Unavailable) when no
    /// server can be reached (TLS failures included).
    pub async fn connect(options: NatsOptions) -> Result<Self, Error> {
        options.validate()?;
        let servers = options.server_addrs()?;
        let monitor = Arc::new(Monitor::new(&options.metrics_prefix));
        let events = Arc::clone(&monitor);
        let connect_options = options
            .connect_options()
            .await?
            .event_callback(move |event| {
                events.on_nats_event(event);
                std::future::ready(())
            });
        let client = match connect_options.connect(servers).await {
            Ok(client) => client,
            Err(error) => {
                monitor.count_error(connect_error_type(&error));
                return Err(connect_error(error, &options.nats_urls));
            }
        };
        // The Connected event travels through async-nats' event task; show it right away.
        if client.connection_state() == State::Connected {
            monitor.connected();
        }
        let inner = Arc::new(Inner {
            sink: std::sync::Mutex::new(client.clone()),
            client,
            monitor,
            in_flight: Drain::new(),
            released: Mutex::new(false),
            servers: options.nats_urls,
            flush_timeout: options.flush_timeout,
            reconnect_buffer_messages: options.reconnect_buffer_messages,
            reconnect_buffer_bytes: options.reconnect_buffer_bytes,
        });
        tokio::spawn(confirm_while_publishing(Arc::downgrade(&inner)));
        Ok(NatsPublisher { inner })
    }

    /// The connection's state now.
    pub fn state(&self) -> ConnectionState {
        self.inner.monitor.state()
    }

    /// A receiver that sees every change of the connection's state.
    pub fn watch_state(&self) -> watch::Receiver<ConnectionState> {
        self.inner.monitor.watch()
    }

    /// A receiver of the connection's events from now on.
    pub fn events(&self) -> broadcast::Receiver<ConnectionEvent> {
        self.inner.monitor.events()
    }

    /// The underlying async-nats client, for what this crate does not cover (requests,
    /// JetStream, statistics). Draining it closes this publisher's connection too.
    pub fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The largest message (payload plus header block) the connected server accepts.
    pub fn max_payload(&self) -> usize {
        self.inner.client.max_payload()
    }

    /// Direct messages handed to a connection that broke before the server confirmed them,
    /// in all: at most this many were lost (see "What a publish does"). Also the counter
    /// `{prefix}_direct_unconfirmed_at_disconnect_total`.
    pub fn unconfirmed_at_disconnect(&self) -> u64 {
        self.inner.monitor.confirmations.unconfirmed_at_disconnect()
    }

    /// True once [`close`](Publisher::close) has been called.
    pub fn is_closed(&self) -> bool {
        self.inner.in_flight.is_closed()
    }

    /// Subscribes to `subject` (wildcards allowed) over core NATS, in `queue_group` when given
    /// (each message then goes to one member of the group).
    ///
    /// Returns once the server has registered the subscription (one round trip), so a message
    /// published afterwards from anywhere reaches it. The round trip is a request to a fresh
    /// inbox, answered by the server's "no responders": an account that may not publish to
    /// `_INBOX.>` cannot subscribe through this method (use [`client`](Self::client)).
    ///
    /// # Errors
    ///
    /// `InvalidInput` for a bad subject or queue group, `Closed` after `close`,
    /// `Unavailable` when the connection is gone, `TimedOut` when the server does not
    /// confirm within `flush_timeout`.
    pub async fn subscribe(
        &self,
        subject: impl Into<String>,
        queue_group: Option<String>,
    ) -> Result<DirectSubscription, Error> {
        let subject = subject.into();
        validate_filter_subject(&subject, Limits::DEFAULT_MAX_SUBJECT_LEN)?;
        if let Some(group) = &queue_group {
            validate_queue_group(group)?;
        }
        if self.is_closed() {
            return Err(Error::closed());
        }
        let client = &self.inner.client;
        let subscriber = match &queue_group {
            Some(group) => client.queue_subscribe(subject.clone(), group.clone()).await,
            None => client.subscribe(subject.clone()).await,
        }
        .map_err(|e| subscribe_error(e, self.is_closed()))?;
        self.inner.round_trip().await?;
        Ok(DirectSubscription::new(subject, queue_group, subscriber))
    }
}

fn validate_queue_group(group: &str) -> Result<(), Error> {
    if group.is_empty() {
        return Err(Error::invalid_input("queue group is empty"));
    }
    if let Some(c) = group.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::invalid_input(format!(
            "queue group {group:?} contains the character {c:?}"
        )));
    }
    Ok(())
}

impl Inner {
    fn closing(&self) -> bool {
        self.in_flight.is_closed()
    }

    fn start_publish(self: &Arc<Self>, request: PublishRequest) -> Result<Started, Error> {
        if self.monitor.publish_denied(&request.subject) {
            // A refusal, not an outage: it must not trip a breaker or be retried.
            return Err(Error::rejected(format!(
                "NATS refused a publish to {:?} moments ago (permissions violation); this \
                 account may not publish there",
                request.subject
            )));
        }
        let max_payload = self.client.max_payload();
        validate_request(&request, &Limits::default().with_max_payload(max_payload))?;
        let header_bytes = headers::block_len(&request.headers, &request.message_id);
        let message_bytes = header_bytes + request.payload.len();
        if message_bytes > max_payload {
            return Err(Error::invalid_input(format!(
                "message is {message_bytes} bytes ({header_bytes} of them headers), more than \
                 the server's max_payload of {max_payload} bytes"
            )));
        }
        let message = Outgoing {
            headers: headers::to_header_map(&request.headers, &request.message_id)?,
            buffered_bytes: request.subject.len() + message_bytes,
            subject: Subject::from(request.subject.as_str()),
            payload: request.payload,
            receipt: Receipt::direct(request.message_id),
        };
        if self.client.connection_state() != State::Connected {
            return self.buffer_offline(message).map(Started::Done);
        }
        match self.try_send(message) {
            TrySend::Sent(receipt) => Ok(Started::Done(receipt)),
            TrySend::Failed(error) => Err(publish_error(error, self.closing())),
            TrySend::Full(message) => {
                let inner = Arc::clone(self);
                Ok(Started::Sending(Box::pin(inner.send_connected(message))))
            }
        }
    }

    /// Hands `message` to the client's queue if it has room now, without waiting.
    #[inline]
    fn try_send(&self, message: Outgoing) -> TrySend {
        let mut sink = self.sink.lock().unwrap_or_else(PoisonError::into_inner);
        let mut sink = Pin::new(&mut *sink);
        // A no-op waker: when there is no room, the publish waits in a future of its own with
        // its caller's waker (and the connection watch), not here.
        match sink
            .as_mut()
            .poll_ready(&mut Context::from_waker(Waker::noop()))
        {
            Poll::Ready(Ok(())) => {}
            Poll::Ready(Err(error)) => return TrySend::Failed(error),
            Poll::Pending => return TrySend::Full(message),
        }
        let sent = sink.start_send(OutboundMessage {
            subject: message.subject,
            reply: None,
            payload: message.payload,
            headers: Some(message.headers),
        });
        match sent {
            Ok(()) => {
                self.monitor.confirmations.handed();
                TrySend::Sent(message.receipt)
            }
            Err(error) => TrySend::Failed(error),
        }
    }

    async fn send_connected(self: Arc<Self>, message: Outgoing) -> Result<Receipt, Error> {
        let Outgoing {
            subject,
            headers,
            payload,
            receipt,
            ..
        } = message;
        let send = self.client.publish_with_headers(subject, headers, payload);
        let connection_lost = async {
            let mut state = self.monitor.watch();
            let _ = state
                .wait_for(|state| *state != ConnectionState::Connected)
                .await;
        };
        // Sending to the client's queue is cancel-safe: when the connection is lost first,
        // nothing was queued.
        tokio::select! {
            biased;
            sent = send => sent
                .map(|()| {
                    self.monitor.confirmations.handed();
                    receipt
                })
                .map_err(|e| publish_error(e, self.closing())),
            () = connection_lost => Err(Error::unavailable(
                "the NATS connection broke while the publish waited for room in the client queue",
            )),
        }
    }

    fn buffer_offline(&self, message: Outgoing) -> Result<Receipt, Error> {
        let bytes = message.buffered_bytes;
        if !self
            .monitor
            .reserve_offline(bytes, self.reconnect_buffer_bytes)
        {
            return Err(Error::unavailable(format!(
                "NATS is disconnected and the reconnect buffer is full ({} bytes)",
                self.reconnect_buffer_bytes
            )));
        }
        let sent = self
            .client
            .publish_with_headers(message.subject, message.headers, message.payload)
            .now_or_never();
        match sent {
            Some(Ok(())) => {
                self.monitor.confirmations.handed();
                Ok(message.receipt)
            }
            Some(Err(e)) => {
                self.monitor.release_offline(bytes);
                Err(publish_error(e, self.closing()))
            }
            None => {
                self.monitor.release_offline(bytes);
                Err(Error::unavailable(format!(
                    "NATS is disconnected and the reconnect buffer is full ({} messages)",
                    self.reconnect_buffer_messages
                )))
            }
        }
    }

    async fn flush(&self) -> Result<(), Error> {
        match tokio::time::timeout(self.flush_timeout, self.client.flush()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(flush_error(e, self.closing())),
            Err(_) => Err(Error::timed_out(format!(
                "flushing to NATS did not finish within {:?} (connection {})",
                self.flush_timeout,
                self.monitor.state()
            ))),
        }
    }

    /// Drains the client (its subscriptions too) and waits until the connection is closed.
    async fn drain(&self) -> Result<(), Error> {
        let mut state = self.monitor.watch();
        if self.client.drain().await.is_err() {
            // The connection had already shut down for good.
            return Ok(());
        }
        let closed = state.wait_for(|state| *state == ConnectionState::Closed);
        match tokio::time::timeout(self.flush_timeout, closed).await {
            Ok(_) => Ok(()),
            Err(_) => Err(Error::timed_out(format!(
                "the NATS connection did not drain within {:?} (connection {})",
                self.flush_timeout,
                self.monitor.state()
            ))),
        }
    }

    /// One request/response with the server, proving it has processed everything this
    /// connection sent before.
    async fn round_trip(&self) -> Result<(), Error> {
        let probe = self.client.request(self.client.new_inbox(), Bytes::new());
        match tokio::time::timeout(self.flush_timeout, probe).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => Ok(()),
            Ok(Err(e)) if e.kind() == RequestErrorKind::TimedOut => Err(Error::timed_out(format!(
                "the NATS server did not confirm the subscription: {e}"
            ))
            .with_source(e)),
            Ok(Err(e)) => Err(connection_gone(self.closing()).with_source(e)),
            Err(_) => Err(Error::timed_out(format!(
                "the NATS server did not confirm the subscription within {:?}",
                self.flush_timeout
            ))),
        }
    }
}

/// Confirms, every [`CONFIRM_EVERY`] while direct publishes flow, what the server has
/// processed (see [`crate::confirm`]); ends with the publisher.
async fn confirm_while_publishing(inner: Weak<Inner>) {
    let mut every = tokio::time::interval(CONFIRM_EVERY);
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(inner) = inner.upgrade() else {
            return;
        };
        if inner.closing() {
            return;
        }
        let confirmations = &inner.monitor.confirmations;
        if inner.monitor.state() != ConnectionState::Connected || !confirmations.pending() {
            continue;
        }
        let mark = confirmations.mark();
        if inner.round_trip().await.is_ok() {
            confirmations.confirm(mark);
        }
    }
}

/// A validated message ready for the client.
struct Outgoing {
    subject: Subject,
    headers: HeaderMap,
    payload: Bytes,
    receipt: Receipt,
    /// What it takes of the reconnect buffer: subject, header block and payload.
    buffered_bytes: usize,
}

/// What [`Inner::try_send`] did with a message.
enum TrySend {
    Sent(Receipt),
    /// The client's queue is full: the message comes back, to wait for room.
    Full(Outgoing),
    Failed(async_nats::PublishError),
}

enum Started {
    Done(Receipt),
    Sending(futures::future::BoxFuture<'static, Result<Receipt, Error>>),
}

impl Publisher for NatsPublisher {
    type Future = PublishFuture;

    fn publish(&self, request: PublishRequest) -> PublishFuture {
        // `close` either waits for this publish or this publish sees `closed`.
        let Some(in_flight) = self.inner.in_flight.enter() else {
            return PublishFuture::ready(Err(Error::closed()));
        };
        match self.inner.start_publish(request) {
            Ok(Started::Sending(send)) => PublishFuture::sending(send, in_flight),
            Ok(Started::Done(receipt)) => PublishFuture::ready(Ok(receipt)),
            Err(error) => PublishFuture::ready(Err(error)),
        }
    }

    /// Waits, at most `flush_timeout`, until everything published so far is written to the
    /// connection: `TimedOut` when that takes longer (e.g. while disconnected).
    async fn flush(&self) -> Result<(), Error> {
        self.inner.flush().await
    }

    /// Refuses new publishes with `Closed`, waits for the in-flight ones, flushes, then drains
    /// the connection (subscriptions made with [`subscribe`](NatsPublisher::subscribe) end)
    /// and waits for it to close; the flush and the drain each take at most `flush_timeout`.
    /// Closing again, or from a clone, returns `Ok` once the first close has finished.
    async fn close(&self) -> Result<(), Error> {
        self.inner.in_flight.close().await;
        let mut released = self.inner.released.lock().await;
        if *released {
            return Ok(());
        }
        *released = true;
        let flushed = self.inner.flush().await;
        let drained = self.inner.drain().await;
        flushed.and(drained)
    }
}

impl fmt::Debug for NatsPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsPublisher")
            .field("servers", &self.inner.servers)
            .field("state", &self.state())
            .field("in_flight", &self.inner.in_flight.in_flight())
            .field("closed", &self.is_closed())
            .field("max_payload", &self.max_payload())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lax_core::ErrorKind;

    #[test]
    fn queue_groups_are_checked() {
        assert!(validate_queue_group("workers").is_ok());
        for bad in ["", "a b", "a\tb", "a\nb"] {
            let err = validate_queue_group(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn connect_refuses_invalid_options_before_dialing() {
        let err = NatsPublisher::connect(NatsOptions::new(["nats://bad host:4222"]))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        assert!(err.message().contains("nats_urls[0]"), "{err}");
    }

    #[tokio::test]
    async fn an_unreadable_credentials_file_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("user.creds");
        std::fs::write(&creds, "not a creds file").unwrap();
        let options = NatsOptions {
            auth: crate::NatsAuth::credentials_file(&creds),
            ..NatsOptions::default()
        };
        let err = NatsPublisher::connect(options).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        assert!(err.message().contains("user.creds"), "{err}");
    }

    #[tokio::test]
    async fn connect_to_nothing_is_unavailable() {
        // A port nobody listens on: bind one, note it, free it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let options = NatsOptions {
            connect_timeout: Duration::from_secs(1),
            ..NatsOptions::new([format!("nats://127.0.0.1:{port}")])
        };
        let err = NatsPublisher::connect(options).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
        assert!(err.message().contains(&port.to_string()), "{err}");
    }
}
