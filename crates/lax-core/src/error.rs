//! One error type for every layer and transport, and the classification they all read.
//!
//! Every failure answers three questions, and retry, breaker and metrics read the same answers:
//! - **what kind** ([`ErrorKind`]): invalid input, circuit open, overloaded, timed out,
//!   unavailable, rejected, closed;
//! - **may the message already be stored?** ([`Error::may_be_stored`]): an ack that timed out
//!   may have been stored; a refused connection was never sent. A retry is safe either way
//!   because every attempt carries the same message id, but callers that do not retry need
//!   to know;
//! - **is it worth retrying / does it count against the breaker?** ([`Error::is_retryable`],
//!   [`Error::trips_breaker`]), derived from the two above.
//!
//! Layers return small error types of their own (such as
//! [`CircuitOpen`](crate::breaker::error::CircuitOpen)), boxed as [`BoxError`] the way tower's
//! middleware does; [`Error::from_boxed`] turns any of them into an [`Error`].

use std::{borrow::Cow, fmt};

/// A type-erased error, as tower middleware returns.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong, in the terms every layer decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request is malformed (subject, headers, payload size, tier, options). Never retried,
    /// never counted against a breaker, never sent.
    InvalidInput,
    /// A circuit breaker is open: the path failed too often and is resting.
    CircuitOpen,
    /// Too many publishes in flight (the client's cap, or the broker's `RESOURCE_EXHAUSTED`).
    Overloaded,
    /// No answer in time. The message may have been stored.
    TimedOut,
    /// The server could not be reached or the connection broke.
    Unavailable,
    /// The broker or server answered with a refusal (e.g. a tier/stream mismatch).
    Rejected,
    /// The publisher was closed.
    Closed,
    /// A configuration value is invalid.
    Config,
    /// An unexpected failure inside LAX or a server.
    Internal,
}

impl ErrorKind {
    /// Worth another attempt with the same message id: timeouts, unreachable servers and a
    /// full broker. Invalid input, refusals, an open circuit and a closed publisher are not.
    pub const fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorKind::TimedOut | ErrorKind::Unavailable | ErrorKind::Overloaded
        )
    }

    /// Counts as a failure of the path for a circuit breaker: the path did not answer.
    /// Invalid input and clear refusals show a healthy path and never trip it.
    pub const fn trips_breaker(self) -> bool {
        matches!(
            self,
            ErrorKind::TimedOut | ErrorKind::Unavailable | ErrorKind::Internal
        )
    }

    /// Every kind, in declaration order ([`ErrorKind::index`] is the position here).
    pub const ALL: [ErrorKind; 9] = [
        ErrorKind::InvalidInput,
        ErrorKind::CircuitOpen,
        ErrorKind::Overloaded,
        ErrorKind::TimedOut,
        ErrorKind::Unavailable,
        ErrorKind::Rejected,
        ErrorKind::Closed,
        ErrorKind::Config,
        ErrorKind::Internal,
    ];

    /// Position in [`ErrorKind::ALL`], for per-kind tables.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// A short snake_case name, used as the `error_type` metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::CircuitOpen => "circuit_open",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::TimedOut => "timeout",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Closed => "closed",
            ErrorKind::Config => "config",
            ErrorKind::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::InvalidInput => "invalid input",
            ErrorKind::CircuitOpen => "circuit open",
            ErrorKind::Overloaded => "overloaded",
            ErrorKind::TimedOut => "timed out",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Rejected => "rejected",
            ErrorKind::Closed => "closed",
            ErrorKind::Config => "invalid configuration",
            ErrorKind::Internal => "internal error",
        })
    }
}

/// Whether a failed publish may nevertheless have been stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Delivery {
    /// The message never left, or the server said it stored nothing.
    NotSent,
    /// The message may have been stored (e.g. sent, but the ack timed out or the stream broke).
    MaybeStored,
}

/// A LAX error: a kind, whether the message may be stored, a message and an optional cause.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    delivery: Delivery,
    /// The server reported a passing state behind it; see [`Error::is_transient`].
    transient: bool,
    message: Cow<'static, str>,
    source: Option<BoxError>,
}

impl Error {
    /// A new error of `kind`; `delivery` defaults by kind (only [`ErrorKind::TimedOut`] starts
    /// as [`Delivery::MaybeStored`]).
    pub fn new(kind: ErrorKind, message: impl Into<Cow<'static, str>>) -> Self {
        let delivery = if kind == ErrorKind::TimedOut {
            Delivery::MaybeStored
        } else {
            Delivery::NotSent
        };
        Error {
            kind,
            delivery,
            transient: false,
            message: message.into(),
            source: None,
        }
    }

    /// [`ErrorKind::InvalidInput`].
    pub fn invalid_input(message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorKind::InvalidInput, message)
    }

    /// [`ErrorKind::Unavailable`], not sent.
    pub fn unavailable(message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorKind::Unavailable, message)
    }

    /// [`ErrorKind::TimedOut`], maybe stored.
    pub fn timed_out(message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorKind::TimedOut, message)
    }

    /// [`ErrorKind::Rejected`], with the server's reason.
    pub fn rejected(message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorKind::Rejected, message)
    }

    /// [`ErrorKind::Closed`].
    pub fn closed() -> Self {
        Error::new(ErrorKind::Closed, "the publisher is closed")
    }

    /// [`ErrorKind::Config`].
    pub fn config(message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorKind::Config, message)
    }

    /// [`ErrorKind::Internal`].
    pub fn internal(message: impl Into<Cow<'static, str>>) -> Self {
        Error::new(ErrorKind::Internal, message)
    }

    /// [`ErrorKind::Internal`]: `service` was called without a successful `poll_ready`, which
    /// breaks tower's contract; answered as an error rather than a panic.
    pub fn called_before_ready(service: &str) -> Self {
        Error::internal(format!(
            "{service} was called without a successful poll_ready"
        ))
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Sets whether the message may be stored.
    pub fn with_delivery(mut self, delivery: Delivery) -> Self {
        self.delivery = delivery;
        self
    }

    /// Marks the message as possibly stored.
    pub fn maybe_stored(self) -> Self {
        self.with_delivery(Delivery::MaybeStored)
    }

    /// Marks the failure as a passing state that the server answering reported about what is
    /// behind it (a JetStream leader election the broker waited on until the deadline); see
    /// [`Error::is_transient`].
    pub fn transient(mut self) -> Self {
        self.transient = true;
        self
    }

    /// True when the server answered that a passing state behind it (a stream-leader
    /// election) kept it from finishing in time: the path itself answered, so a circuit
    /// breaker tolerates such failures for a while (its
    /// [`transient_grace`](crate::breaker::BreakerConfig::transient_grace)) before it counts
    /// them. Retrying is as safe and as useful as the [kind](ErrorKind::is_retryable) says.
    pub fn is_transient(&self) -> bool {
        self.transient
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Whether the message may be stored despite the error.
    pub fn delivery(&self) -> Delivery {
        self.delivery
    }

    /// True when the message may have been stored (an ack that never came back).
    pub fn may_be_stored(&self) -> bool {
        self.delivery == Delivery::MaybeStored
    }

    /// The human-readable reason, without the kind.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Worth another attempt with the same message id; see [`ErrorKind::is_retryable`].
    pub fn is_retryable(&self) -> bool {
        self.kind.is_retryable()
    }

    /// Counts as a failure of the path for a circuit breaker; see
    /// [`ErrorKind::trips_breaker`].
    pub fn trips_breaker(&self) -> bool {
        self.kind.trips_breaker()
    }

    /// Turns any error a layer stack returns into an [`Error`], keeping the classification of
    /// LAX's own layer errors and tower's.
    pub fn from_boxed(error: BoxError) -> Self {
        let error = match error.downcast::<Error>() {
            Ok(error) => return *error,
            Err(other) => other,
        };
        let kind = classify_foreign(error.as_ref());
        let message = error.to_string();
        Error::new(kind, message).with_source(error)
    }

    /// The classification of a boxed error without consuming it: its kind and whether the
    /// message may be stored.
    pub fn classify(error: &(dyn std::error::Error + 'static)) -> (ErrorKind, Delivery) {
        if let Some(lax) = error.downcast_ref::<Error>() {
            return (lax.kind, lax.delivery);
        }
        let kind = classify_foreign(error);
        let delivery = if kind == ErrorKind::TimedOut {
            Delivery::MaybeStored
        } else {
            Delivery::NotSent
        };
        (kind, delivery)
    }
}

/// Kinds for the errors of LAX's layers and of tower's own middleware.
fn classify_foreign(error: &(dyn std::error::Error + 'static)) -> ErrorKind {
    if error.is::<crate::breaker::error::CircuitOpen>() {
        ErrorKind::CircuitOpen
    } else if error.is::<crate::limit::error::Overloaded>()
        || error.is::<tower::load_shed::error::Overloaded>()
    {
        ErrorKind::Overloaded
    } else if error.is::<crate::timeout::error::Elapsed>()
        || error.is::<tower::timeout::error::Elapsed>()
    {
        ErrorKind::TimedOut
    } else if error.is::<tower::buffer::error::Closed>() {
        ErrorKind::Closed
    } else if let Some(inner) = error.downcast_ref::<tower::buffer::error::ServiceError>() {
        // A buffered service failed: its cause decides.
        std::error::Error::source(inner)
            .map_or(ErrorKind::Internal, |cause| Error::classify(cause).0)
    } else {
        ErrorKind::Internal
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)?;
        if self.delivery == Delivery::MaybeStored {
            f.write_str(" (the message may have been stored)")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_by_kind() {
        let timeout = Error::timed_out("no ack in 5s");
        assert!(timeout.may_be_stored());
        assert!(timeout.is_retryable());
        assert!(timeout.trips_breaker());

        let refused = Error::unavailable("connection refused");
        assert!(!refused.may_be_stored());
        assert!(refused.is_retryable());
        assert!(refused.trips_breaker());

        let invalid = Error::invalid_input("empty subject");
        assert!(!invalid.is_retryable());
        assert!(!invalid.trips_breaker());

        let rejected = Error::rejected("stream ORDERS has 1 replica");
        assert!(!rejected.is_retryable());
        assert!(!rejected.trips_breaker());

        let broken = Error::unavailable("stream broke").maybe_stored();
        assert!(broken.may_be_stored());
        assert!(broken.to_string().contains("may have been stored"));
    }

    #[test]
    fn all_kinds_are_listed_at_their_index() {
        for (i, kind) in ErrorKind::ALL.into_iter().enumerate() {
            assert_eq!(kind.index(), i);
        }
    }

    #[test]
    fn from_boxed_round_trips_lax_errors() {
        let boxed: BoxError = Box::new(Error::rejected("nope").maybe_stored());
        let back = Error::from_boxed(boxed);
        assert_eq!(back.kind(), ErrorKind::Rejected);
        assert!(back.may_be_stored());
    }

    #[test]
    fn from_boxed_classifies_tower_errors() {
        let boxed: BoxError = Box::new(tower::timeout::error::Elapsed::new());
        let err = Error::from_boxed(boxed);
        assert_eq!(err.kind(), ErrorKind::TimedOut);
        assert!(err.may_be_stored());
        let boxed: BoxError = "something odd".into();
        assert_eq!(Error::from_boxed(boxed).kind(), ErrorKind::Internal);
    }
}
