//! gRPC status → [`lax_core::Error`]: one table that every call of this crate goes through.

use std::error::Error as StdError;

use lax_core::{Delivery, Error, ErrorKind};
use tonic::{Code, ConnectError, Status, TimeoutExpired};

/// Maps a gRPC status to a LAX error.
///
/// `sent` says whether the request may have reached the broker (it was handed to an open
/// connection). It decides [`Delivery`] for the failures after which the broker may or may
/// not have stored the message:
///
/// | status | kind | may be stored |
/// |---|---|---|
/// | `INVALID_ARGUMENT`, `OUT_OF_RANGE` | `InvalidInput` | no |
/// | `UNAVAILABLE`, `CANCELLED`, `ABORTED` | `Unavailable` | when `sent` |
/// | `DEADLINE_EXCEEDED`, and `CANCELLED` "Timeout expired" (a tonic server's deadline) | `TimedOut` | when `sent` |
/// | `RESOURCE_EXHAUSTED` | `Overloaded` | no (the broker refused it) |
/// | `FAILED_PRECONDITION`, `NOT_FOUND`, `ALREADY_EXISTS`, `PERMISSION_DENIED`, `UNAUTHENTICATED`, `UNIMPLEMENTED` | `Rejected` | no |
/// | `INTERNAL`, `UNKNOWN`, `DATA_LOSS`, `OK` | `Internal` | when `sent` |
///
/// A status carrying the [`TRANSIENT_METADATA`](lax_proto::TRANSIENT_METADATA) trailer is
/// [transient](Error::is_transient): the broker waited on a leader election.
///
/// A status the client's own transport produced (it carries a source error: a refused
/// connection, a reset stream, a keep-alive timeout) is a connection failure whatever its
/// code: `Unavailable`, never stored when the connection could not even be made
/// ([`tonic::ConnectError`]), and `TimedOut` for a client-side deadline
/// ([`tonic::TimeoutExpired`]).
pub fn status_to_error(status: &Status, sent: bool) -> Error {
    let maybe = if sent {
        Delivery::MaybeStored
    } else {
        Delivery::NotSent
    };
    if let Some(source) = status.source() {
        let (kind, delivery, what) = if chain_has::<ConnectError>(source) {
            (
                ErrorKind::Unavailable,
                Delivery::NotSent,
                "cannot connect to the broker",
            )
        } else if chain_has::<TimeoutExpired>(source) {
            (
                ErrorKind::TimedOut,
                maybe,
                "no answer from the broker within the call's deadline",
            )
        } else {
            (
                ErrorKind::Unavailable,
                maybe,
                "connection to the broker failed",
            )
        };
        return Error::new(kind, format!("{what}: {}", status.message()))
            .with_delivery(delivery)
            .with_source(status.clone());
    }
    let (kind, delivery) = match status.code() {
        Code::InvalidArgument | Code::OutOfRange => (ErrorKind::InvalidInput, Delivery::NotSent),
        Code::Cancelled if is_server_deadline(status) => (ErrorKind::TimedOut, maybe),
        Code::Unavailable | Code::Cancelled | Code::Aborted => (ErrorKind::Unavailable, maybe),
        Code::DeadlineExceeded => (ErrorKind::TimedOut, maybe),
        Code::ResourceExhausted => (ErrorKind::Overloaded, Delivery::NotSent),
        Code::FailedPrecondition
        | Code::NotFound
        | Code::AlreadyExists
        | Code::PermissionDenied
        | Code::Unauthenticated
        | Code::Unimplemented => (ErrorKind::Rejected, Delivery::NotSent),
        Code::Internal | Code::Unknown | Code::DataLoss | Code::Ok => (ErrorKind::Internal, maybe),
    };
    let error = Error::new(
        kind,
        format!("broker answered {:?}: {}", status.code(), status.message()),
    )
    .with_delivery(delivery)
    .with_source(status.clone());
    if status
        .metadata()
        .contains_key(lax_proto::TRANSIENT_METADATA)
    {
        error.transient()
    } else {
        error
    }
}

/// True when `T` is `error` or one of its causes.
fn chain_has<T: StdError + 'static>(error: &(dyn StdError + 'static)) -> bool {
    let mut next = Some(error);
    while let Some(error) = next {
        if error.is::<T>() {
            return true;
        }
        next = error.source();
    }
    false
}

/// True for a status produced by the client's transport (the connection or the HTTP/2 stream
/// failed) rather than sent by the broker; such a failure means the connection needs
/// rebuilding.
pub(crate) fn is_transport_failure(status: &Status) -> bool {
    status.source().is_some()
}

/// Whether `status` is a tonic server's answer to a call whose `grpc-timeout` ran out before
/// its handler answered: `CANCELLED` with its `TimeoutExpired` error's text. That is the
/// call's deadline, racing the client's own timer for the same deadline, not a cancellation.
fn is_server_deadline(status: &Status) -> bool {
    status.message() == TimeoutExpired(()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_maps_as_the_table_says() {
        use Delivery::{MaybeStored as Maybe, NotSent as No};
        use ErrorKind::*;
        // (code, kind, delivery when sent, retryable)
        let table = [
            (Code::InvalidArgument, InvalidInput, No, false),
            (Code::OutOfRange, InvalidInput, No, false),
            (Code::Unavailable, Unavailable, Maybe, true),
            (Code::Cancelled, Unavailable, Maybe, true),
            (Code::Aborted, Unavailable, Maybe, true),
            (Code::DeadlineExceeded, TimedOut, Maybe, true),
            (Code::ResourceExhausted, Overloaded, No, true),
            (Code::FailedPrecondition, Rejected, No, false),
            (Code::NotFound, Rejected, No, false),
            (Code::AlreadyExists, Rejected, No, false),
            (Code::PermissionDenied, Rejected, No, false),
            (Code::Unauthenticated, Rejected, No, false),
            (Code::Unimplemented, Rejected, No, false),
            (Code::Internal, Internal, Maybe, false),
            (Code::Unknown, Internal, Maybe, false),
            (Code::DataLoss, Internal, Maybe, false),
        ];
        for (code, kind, delivery, retryable) in table {
            let status = Status::new(code, "why");
            let sent = status_to_error(&status, true);
            assert_eq!(sent.kind(), kind, "{code:?}");
            assert_eq!(sent.delivery(), delivery, "{code:?} sent");
            assert_eq!(sent.is_retryable(), retryable, "{code:?}");
            assert!(
                sent.message().contains("why"),
                "{code:?} keeps the broker's message"
            );
            let unsent = status_to_error(&status, false);
            assert_eq!(unsent.kind(), kind, "{code:?}");
            assert_eq!(unsent.delivery(), Delivery::NotSent, "{code:?} not sent");
        }
    }

    #[test]
    fn a_servers_deadline_is_a_timeout() {
        let status = Status::cancelled(TimeoutExpired(()).to_string());
        let error = status_to_error(&status, true);
        assert_eq!(error.kind(), ErrorKind::TimedOut, "{error}");
        assert_eq!(error.delivery(), Delivery::MaybeStored);
        let other = status_to_error(&Status::cancelled("client went away"), true);
        assert_eq!(other.kind(), ErrorKind::Unavailable);
    }

    #[test]
    fn rejections_keep_the_brokers_message() {
        let status = Status::failed_precondition("stream ORDERS has 1 replica, tier wants 3");
        let error = status_to_error(&status, true);
        assert_eq!(error.kind(), ErrorKind::Rejected);
        assert!(error.message().contains("stream ORDERS has 1 replica"));
        assert!(!error.trips_breaker());
    }

    #[test]
    fn a_refused_connection_was_never_sent() {
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let status = Status::from_error(Box::new(ConnectError(Box::new(refused))));
        assert_eq!(status.code(), Code::Unavailable);
        let error = status_to_error(&status, true);
        assert_eq!(error.kind(), ErrorKind::Unavailable);
        assert!(!error.may_be_stored());
        assert!(is_transport_failure(&status));
    }

    #[test]
    fn transport_failures_are_unavailable_whatever_their_code() {
        // hyper/h2 failures the transport could not classify come out as UNKNOWN with a source.
        let status = Status::from_error("connection reset by peer".into());
        assert_eq!(status.code(), Code::Unknown);
        let error = status_to_error(&status, true);
        assert_eq!(error.kind(), ErrorKind::Unavailable);
        assert!(error.may_be_stored());
        assert!(error.is_retryable());
        assert!(is_transport_failure(&status));
        assert!(!is_transport_failure(&Status::unavailable(
            "from the broker"
        )));
    }

    #[test]
    fn a_client_side_deadline_is_a_timeout() {
        let status = Status::from_error(Box::new(TimeoutExpired(())));
        let error = status_to_error(&status, true);
        assert_eq!(error.kind(), ErrorKind::TimedOut);
        assert!(error.may_be_stored());
    }
}
