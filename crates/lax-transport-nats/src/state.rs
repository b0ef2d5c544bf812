//! Connection state and events, fed by async-nats' event callback and published three ways:
//! a [`watch`] of [`ConnectionState`], a [`broadcast`] of [`ConnectionEvent`]s, and metrics
//! (`{prefix}_nats_connections`, `{prefix}_connection_errors_total{type="nats"}` as existing
//! dashboards query it, and `{prefix}_nats_connection_errors_total{kind}` saying which error).

use std::{
    collections::VecDeque,
    fmt,
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use async_nats::{ClientError, Event, ServerError};
use metrics::{Counter, Gauge};
use tokio::sync::{broadcast, watch};

use crate::confirm::Confirmations;

/// Events kept for a slow [`events`](crate::NatsPublisher::events) receiver before it lags.
const EVENT_CAPACITY: usize = 256;

/// Whether the publisher has a working connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionState {
    /// Connected to a server; publishes go out.
    Connected,
    /// The connection broke and the client is reconnecting; publishes are buffered up to the
    /// reconnect buffer's bounds.
    Disconnected,
    /// For good: the publisher was closed, or the client ran out of reconnect attempts.
    Closed,
}

impl ConnectionState {
    /// `connected`, `disconnected` or `closed`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ConnectionState::Connected => "connected",
            ConnectionState::Disconnected => "disconnected",
            ConnectionState::Closed => "closed",
        }
    }
}

impl fmt::Display for ConnectionState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something that happened to the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectionEvent {
    /// The first connection is up.
    Connected,
    /// The connection is up again after a disconnection.
    Reconnected,
    /// The connection broke (closed by the server, an I/O error, or unanswered pings).
    Disconnected,
    /// The server is shutting down gracefully and asks clients to move elsewhere.
    LameDuckMode,
    /// A subscription's buffer was full and messages for it were dropped.
    SlowConsumer {
        /// The subscription id.
        sid: u64,
    },
    /// The server refused a publish or subscribe on a subject the user may not use.
    PermissionViolation(String),
    /// The server refused the credentials.
    AuthorizationViolation,
    /// Any other `-ERR` from the server.
    ServerError(String),
    /// A client-side failure, such as one failed reconnect attempt.
    ClientError(String),
    /// The client made its last allowed reconnect attempt and gave up; the publisher is now
    /// [`ConnectionState::Closed`].
    ReconnectAttemptsExhausted,
    /// The connection is draining, on its way to closing.
    Draining,
    /// The connection is closed.
    Closed,
}

impl ConnectionEvent {
    /// The `kind` label this event counts under in `{prefix}_nats_connection_errors_total`,
    /// if it is an error.
    pub const fn error_type(&self) -> Option<&'static str> {
        match self {
            ConnectionEvent::Disconnected => Some("disconnected"),
            ConnectionEvent::SlowConsumer { .. } => Some("slow_consumer"),
            ConnectionEvent::PermissionViolation(_) => Some("permission_violation"),
            ConnectionEvent::AuthorizationViolation => Some("authorization_violation"),
            ConnectionEvent::ServerError(_) => Some("server_error"),
            ConnectionEvent::ClientError(_) => Some("client_error"),
            ConnectionEvent::ReconnectAttemptsExhausted => Some("reconnect_attempts_exhausted"),
            ConnectionEvent::Connected
            | ConnectionEvent::Reconnected
            | ConnectionEvent::LameDuckMode
            | ConnectionEvent::Draining
            | ConnectionEvent::Closed => None,
        }
    }

    fn from_nats(event: Event) -> ConnectionEvent {
        match event {
            Event::Connected => ConnectionEvent::Connected,
            Event::Disconnected => ConnectionEvent::Disconnected,
            Event::LameDuckMode => ConnectionEvent::LameDuckMode,
            Event::Draining => ConnectionEvent::Draining,
            Event::Closed => ConnectionEvent::Closed,
            Event::SlowConsumer(sid) | Event::ServerError(ServerError::SlowConsumer(sid)) => {
                ConnectionEvent::SlowConsumer { sid }
            }
            Event::ServerError(ServerError::AuthorizationViolation) => {
                ConnectionEvent::AuthorizationViolation
            }
            Event::ServerError(ServerError::Other(message)) => {
                if message
                    .to_ascii_lowercase()
                    .starts_with("permissions violation")
                {
                    ConnectionEvent::PermissionViolation(message)
                } else {
                    ConnectionEvent::ServerError(message)
                }
            }
            Event::ClientError(ClientError::MaxReconnects) => {
                ConnectionEvent::ReconnectAttemptsExhausted
            }
            Event::ClientError(other) => ConnectionEvent::ClientError(other.to_string()),
        }
    }
}

impl fmt::Display for ConnectionEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectionEvent::Connected => f.write_str("connected"),
            ConnectionEvent::Reconnected => f.write_str("reconnected"),
            ConnectionEvent::Disconnected => f.write_str("disconnected"),
            ConnectionEvent::LameDuckMode => f.write_str("server entered lame duck mode"),
            ConnectionEvent::SlowConsumer { sid } => {
                write!(f, "slow consumer: subscription {sid} dropped messages")
            }
            ConnectionEvent::PermissionViolation(message) => {
                write!(f, "permission violation: {message}")
            }
            ConnectionEvent::AuthorizationViolation => f.write_str("authorization violation"),
            ConnectionEvent::ServerError(message) => write!(f, "server error: {message}"),
            ConnectionEvent::ClientError(message) => write!(f, "client error: {message}"),
            ConnectionEvent::ReconnectAttemptsExhausted => {
                f.write_str("gave up reconnecting: reconnect attempts exhausted")
            }
            ConnectionEvent::Draining => f.write_str("draining"),
            ConnectionEvent::Closed => f.write_str("closed"),
        }
    }
}

/// Every `kind` of `{prefix}_nats_connection_errors_total`: [`ConnectionEvent::error_type`]'s
/// and a failed connect's (`crate::error::connect_error_type`).
const ERROR_KINDS: [&str; 10] = [
    "disconnected",
    "slow_consumer",
    "permission_violation",
    "authorization_violation",
    "server_error",
    "client_error",
    "reconnect_attempts_exhausted",
    "tls",
    "connect_timeout",
    "connect",
];

/// Metric handles, registered at connect time with the recorder installed then.
#[derive(Debug)]
struct MetricHandles {
    connections: Gauge,
    /// `{prefix}_connection_errors_total{type="nats"}`.
    connection_errors: Counter,
    /// `{prefix}_nats_connection_errors_total{kind}`, in [`ERROR_KINDS`] order.
    by_kind: [Counter; ERROR_KINDS.len()],
}

/// The shared record of the connection's state, updated from async-nats' event callback.
#[derive(Debug)]
pub(crate) struct Monitor {
    state: watch::Sender<ConnectionState>,
    events: broadcast::Sender<ConnectionEvent>,
    has_connected: AtomicBool,
    /// Bytes accepted since the connection was last up; bounded by the reconnect buffer.
    offline_bytes: AtomicUsize,
    /// Subjects the server recently refused a publish to, so that the next publish there
    /// fails as a refusal instead of vanishing.
    denied: Mutex<VecDeque<(String, Instant)>>,
    /// Whether `denied` may hold a subject: every publish reads this, and only publishes
    /// after a refusal take the lock.
    any_denied: AtomicBool,
    /// Direct messages handed over and confirmed, to count what a disconnect may lose.
    pub(crate) confirmations: Confirmations,
    metrics: MetricHandles,
}

/// How many refused subjects are remembered, and for how long (the server's permissions can
/// be reloaded).
const DENIED_SUBJECTS: usize = 256;
const DENIED_FOR: Duration = Duration::from_secs(60);

/// The subject of a server's `Permissions Violation for Publish to "<subject>"`.
fn denied_publish_subject(message: &str) -> Option<&str> {
    const PREFIX: &str = "permissions violation for publish to ";
    let head = message.get(..PREFIX.len())?;
    if !head.eq_ignore_ascii_case(PREFIX) {
        return None;
    }
    let rest = message[PREFIX.len()..].trim();
    let quoted = rest.strip_prefix('"')?;
    quoted.split('"').next()
}

impl Monitor {
    pub(crate) fn new(metrics_prefix: &str) -> Self {
        let (state, _) = watch::channel(ConnectionState::Disconnected);
        let (events, _) = broadcast::channel(EVENT_CAPACITY);
        Monitor {
            state,
            events,
            has_connected: AtomicBool::new(false),
            offline_bytes: AtomicUsize::new(0),
            denied: Mutex::new(VecDeque::new()),
            any_denied: AtomicBool::new(false),
            confirmations: Confirmations::new(metrics_prefix),
            metrics: MetricHandles {
                connections: metrics::gauge!(format!("{metrics_prefix}_nats_connections")),
                connection_errors: metrics::counter!(
                    format!("{metrics_prefix}_connection_errors_total"),
                    "type" => "nats"
                ),
                by_kind: ERROR_KINDS.map(|kind| {
                    metrics::counter!(
                        format!("{metrics_prefix}_nats_connection_errors_total"),
                        "kind" => kind
                    )
                }),
            },
        }
    }

    pub(crate) fn state(&self) -> ConnectionState {
        *self.state.borrow()
    }

    pub(crate) fn watch(&self) -> watch::Receiver<ConnectionState> {
        self.state.subscribe()
    }

    pub(crate) fn events(&self) -> broadcast::Receiver<ConnectionEvent> {
        self.events.subscribe()
    }

    /// Handles one event from async-nats.
    pub(crate) fn on_nats_event(&self, event: Event) {
        match ConnectionEvent::from_nats(event) {
            ConnectionEvent::Connected => self.connected(),
            ConnectionEvent::Disconnected => {
                if self.transition(ConnectionState::Disconnected, ConnectionEvent::Disconnected) {
                    self.confirmations.disconnected();
                }
            }
            ConnectionEvent::Closed => self.closed(),
            ConnectionEvent::ReconnectAttemptsExhausted => {
                self.emit(ConnectionEvent::ReconnectAttemptsExhausted);
                self.closed();
            }
            ConnectionEvent::PermissionViolation(message) => {
                if let Some(subject) = denied_publish_subject(&message) {
                    self.remember_denied(subject);
                }
                self.emit(ConnectionEvent::PermissionViolation(message));
            }
            other => self.emit(other),
        }
    }

    fn denied(&self) -> std::sync::MutexGuard<'_, VecDeque<(String, Instant)>> {
        // A list of recent refusals: a panicking holder leaves nothing inconsistent.
        self.denied
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn remember_denied(&self, subject: &str) {
        let mut denied = self.denied();
        denied.retain(|(s, _)| s != subject);
        if denied.len() >= DENIED_SUBJECTS {
            denied.pop_front();
        }
        denied.push_back((subject.to_owned(), Instant::now()));
        self.any_denied.store(true, Ordering::Release);
    }

    /// Whether the server refused a publish to `subject` within the last minute.
    pub(crate) fn publish_denied(&self, subject: &str) -> bool {
        if !self.any_denied.load(Ordering::Acquire) {
            return false;
        }
        let mut denied = self.denied();
        denied.retain(|(_, at)| at.elapsed() < DENIED_FOR);
        if denied.is_empty() {
            // Under the lock, so a refusal being remembered now sets it again after this.
            self.any_denied.store(false, Ordering::Release);
            return false;
        }
        denied.iter().any(|(s, _)| s == subject)
    }

    /// The connection is up (first time or again); idempotent.
    pub(crate) fn connected(&self) {
        let event = if self.has_connected.swap(true, Ordering::SeqCst) {
            ConnectionEvent::Reconnected
        } else {
            ConnectionEvent::Connected
        };
        if self.transition(ConnectionState::Connected, event) {
            self.offline_bytes.store(0, Ordering::SeqCst);
        }
    }

    pub(crate) fn closed(&self) {
        self.transition(ConnectionState::Closed, ConnectionEvent::Closed);
    }

    /// Counts an error that happened outside the event stream (a failed initial connect).
    pub(crate) fn count_error(&self, kind: &'static str) {
        self.metrics.connection_errors.increment(1);
        if let Some(position) = ERROR_KINDS.iter().position(|known| *known == kind) {
            self.metrics.by_kind[position].increment(1);
        }
    }

    /// Moves to `to` and emits `event`, unless already there or closed for good. Returns
    /// whether the state changed.
    fn transition(&self, to: ConnectionState, event: ConnectionEvent) -> bool {
        let mut from = to;
        let changed = self.state.send_if_modified(|state| {
            if *state == to || *state == ConnectionState::Closed {
                return false;
            }
            from = *state;
            *state = to;
            true
        });
        if !changed {
            return false;
        }
        let gauge = &self.metrics.connections;
        if to == ConnectionState::Connected {
            gauge.increment(1.0);
        } else if from == ConnectionState::Connected {
            gauge.decrement(1.0);
        }
        self.emit(event);
        true
    }

    fn emit(&self, event: ConnectionEvent) {
        if let Some(error_type) = event.error_type() {
            tracing::warn!(event = %event, "NATS connection");
            self.count_error(error_type);
        } else {
            tracing::info!(event = %event, "NATS connection");
        }
        // No receivers is fine: nobody is listening.
        let _ = self.events.send(event);
    }

    /// Reserves `bytes` of the reconnect buffer for a publish made while disconnected, or
    /// refuses when that would pass `budget`.
    pub(crate) fn reserve_offline(&self, bytes: usize, budget: usize) -> bool {
        self.offline_bytes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                used.checked_add(bytes).filter(|&total| total <= budget)
            })
            .is_ok()
    }

    /// Gives back a reservation whose publish was not buffered after all.
    pub(crate) fn release_offline(&self, bytes: usize) {
        // A reconnect may have reset the count meanwhile; never wrap below zero.
        let _ = self
            .offline_bytes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                Some(used.saturating_sub(bytes))
            });
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    #[test]
    fn refused_publish_subjects_are_read_from_the_server_error() {
        assert_eq!(
            denied_publish_subject("Permissions Violation for Publish to \"secret.plans\""),
            Some("secret.plans")
        );
        assert_eq!(
            denied_publish_subject("permissions violation for publish to \"a\" "),
            Some("a")
        );
        assert_eq!(
            denied_publish_subject("Permissions Violation for Subscription to \"x\""),
            None
        );
        assert_eq!(denied_publish_subject("Permissions"), None);
        let monitor = Monitor::new("t");
        monitor.on_nats_event(Event::ServerError(ServerError::Other(
            "Permissions Violation for Publish to \"secret.plans\"".into(),
        )));
        assert!(monitor.publish_denied("secret.plans"));
        assert!(!monitor.publish_denied("secret.other"));
    }

    use super::*;

    /// Metric values so far. The debugging recorder hands out each change once (a snapshot
    /// resets what it read), so changes are summed here.
    #[derive(Default)]
    struct Totals(HashMap<(String, String), f64>);

    impl Totals {
        fn update(&mut self, recorder: &DebuggingRecorder) -> &Self {
            for (key, _, _, value) in recorder.snapshotter().snapshot().into_vec() {
                let error_type = key
                    .key()
                    .labels()
                    .find(|label| label.key() == "type" || label.key() == "kind")
                    .map(|label| label.value().to_owned())
                    .unwrap_or_default();
                let change = match value {
                    DebugValue::Counter(n) => n as f64,
                    DebugValue::Gauge(v) => v.into_inner(),
                    DebugValue::Histogram(_) => continue,
                };
                *self
                    .0
                    .entry((key.key().name().to_owned(), error_type))
                    .or_default() += change;
            }
            self
        }

        fn get(&self, name: &str, error_type: &str) -> f64 {
            self.0
                .get(&(name.to_owned(), error_type.to_owned()))
                .copied()
                .unwrap_or(0.0)
        }
    }

    #[test]
    fn state_events_and_metrics_follow_the_connection() {
        let recorder = DebuggingRecorder::new();
        let mut totals = Totals::default();
        metrics::with_local_recorder(&recorder, || {
            let monitor = Monitor::new("test");
            let mut watch = monitor.watch();
            let mut events = monitor.events();

            monitor.on_nats_event(Event::Connected);
            monitor.connected(); // the explicit sync after connect is a no-op
            assert_eq!(monitor.state(), ConnectionState::Connected);
            assert!(watch.has_changed().unwrap());
            watch.mark_unchanged();
            assert_eq!(events.try_recv().unwrap(), ConnectionEvent::Connected);
            assert!(events.try_recv().is_err(), "no duplicate Connected");
            let values = totals.update(&recorder);
            assert_eq!(values.get("test_nats_connections", ""), 1.0);

            monitor.on_nats_event(Event::Disconnected);
            assert_eq!(*watch.borrow_and_update(), ConnectionState::Disconnected);
            assert_eq!(events.try_recv().unwrap(), ConnectionEvent::Disconnected);
            let values = totals.update(&recorder);
            assert_eq!(values.get("test_nats_connections", ""), 0.0);
            assert_eq!(values.get("test_connection_errors_total", "nats"), 1.0);
            assert_eq!(
                values.get("test_nats_connection_errors_total", "disconnected"),
                1.0
            );

            monitor.on_nats_event(Event::ServerError(ServerError::Other(
                "Permissions Violation for Publish to \"secret\"".into(),
            )));
            assert!(matches!(
                events.try_recv().unwrap(),
                ConnectionEvent::PermissionViolation(_)
            ));
            monitor.on_nats_event(Event::SlowConsumer(7));
            assert_eq!(
                events.try_recv().unwrap(),
                ConnectionEvent::SlowConsumer { sid: 7 }
            );

            monitor.on_nats_event(Event::Connected);
            assert_eq!(events.try_recv().unwrap(), ConnectionEvent::Reconnected);
            assert_eq!(*watch.borrow_and_update(), ConnectionState::Connected);

            monitor.on_nats_event(Event::ClientError(ClientError::MaxReconnects));
            assert_eq!(
                events.try_recv().unwrap(),
                ConnectionEvent::ReconnectAttemptsExhausted
            );
            assert_eq!(events.try_recv().unwrap(), ConnectionEvent::Closed);
            assert_eq!(monitor.state(), ConnectionState::Closed);
            // Closed is final.
            monitor.on_nats_event(Event::Connected);
            assert_eq!(monitor.state(), ConnectionState::Closed);

            let values = totals.update(&recorder);
            assert_eq!(values.get("test_nats_connections", ""), 0.0);
            assert_eq!(values.get("test_connection_errors_total", "nats"), 4.0);
            assert_eq!(
                values.get("test_nats_connection_errors_total", "disconnected"),
                1.0
            );
            for error_type in [
                "permission_violation",
                "slow_consumer",
                "reconnect_attempts_exhausted",
            ] {
                assert_eq!(
                    values.get("test_nats_connection_errors_total", error_type),
                    1.0,
                    "{error_type}"
                );
            }
        });
    }

    #[test]
    fn offline_budget_is_bounded_and_reset_on_connect() {
        let monitor = Monitor::new("budget");
        assert!(monitor.reserve_offline(60, 100));
        assert!(!monitor.reserve_offline(41, 100));
        assert!(monitor.reserve_offline(40, 100));
        monitor.release_offline(40);
        assert!(monitor.reserve_offline(40, 100));
        assert!(!monitor.reserve_offline(1, 100));
        monitor.connected();
        assert!(monitor.reserve_offline(100, 100));
        monitor.release_offline(1000);
        assert!(monitor.reserve_offline(100, 100));
    }
}
