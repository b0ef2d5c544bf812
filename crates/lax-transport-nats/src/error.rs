//! How async-nats' errors map onto [`lax_core::Error`] kinds.
//!
//! | async-nats | kind |
//! |---|---|
//! | connect: authorization violation, authentication | `Rejected` (wrong credentials are not retried) |
//! | connect: bad server address | `Config` |
//! | connect: I/O, DNS, TLS (reported as I/O by async-nats), timeout, reconnects exhausted | `Unavailable` |
//! | publish: invalid subject, payload too large | `InvalidInput` |
//! | publish/flush/subscribe: the connection is gone | `Unavailable` (or `Closed` after `close`) |
//! | flush: no completion within `flush_timeout` | `TimedOut` |

use async_nats::{
    ConnectError, ConnectErrorKind, PublishError, SubscribeError, client::FlushError,
    client::PublishErrorKind, client::SubscribeErrorKind,
};
use lax_core::Error;

/// A failed connection attempt to `servers`.
pub(crate) fn connect_error(error: ConnectError, servers: &[String]) -> Error {
    let servers = servers.join(", ");
    let mapped = match error.kind() {
        _ if is_tls_failure(&error) => Error::unavailable(format!(
            "TLS with the NATS server at {servers} failed: {error}"
        )),
        ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
            Error::rejected(format!(
                "NATS server at {servers} refused the credentials: {error}"
            ))
        }
        ConnectErrorKind::ServerParse => {
            Error::config(format!("NATS server address {servers} is invalid: {error}"))
        }
        ConnectErrorKind::TimedOut => Error::unavailable(format!(
            "connecting to the NATS server at {servers} timed out"
        )),
        ConnectErrorKind::Tls
        | ConnectErrorKind::Dns
        | ConnectErrorKind::Io
        | ConnectErrorKind::MaxReconnects => Error::unavailable(format!(
            "cannot connect to the NATS server at {servers}: {error}"
        )),
    };
    mapped.with_source(error)
}

/// True when the handshake failed in TLS: async-nats reports a refused certificate as
/// [`ConnectErrorKind::Io`] with the rustls error inside an `io::Error`.
fn is_tls_failure(error: &ConnectError) -> bool {
    if error.kind() == ConnectErrorKind::Tls {
        return true;
    }
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        let rustls_inside_io = current
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .is_some_and(|inner| inner.is::<async_nats::rustls::Error>());
        if rustls_inside_io || current.is::<async_nats::rustls::Error>() {
            return true;
        }
        cause = current.source();
    }
    false
}

/// The `kind` label a failed connect counts under in `{prefix}_nats_connection_errors_total`.
pub(crate) fn connect_error_type(error: &ConnectError) -> &'static str {
    match error.kind() {
        _ if is_tls_failure(error) => "tls",
        ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
            "authorization_violation"
        }
        ConnectErrorKind::TimedOut => "connect_timeout",
        ConnectErrorKind::ServerParse
        | ConnectErrorKind::Tls
        | ConnectErrorKind::Dns
        | ConnectErrorKind::Io
        | ConnectErrorKind::MaxReconnects => "connect",
    }
}

/// The error for a command that found the client's connection closed for good.
pub(crate) fn connection_gone(closing: bool) -> Error {
    if closing {
        Error::closed()
    } else {
        Error::unavailable(
            "the NATS connection is closed (reconnect attempts exhausted or drained)",
        )
    }
}

pub(crate) fn publish_error(error: PublishError, closing: bool) -> Error {
    match error.kind() {
        PublishErrorKind::InvalidSubject | PublishErrorKind::MaxPayloadExceeded => {
            Error::invalid_input(error.to_string()).with_source(error)
        }
        PublishErrorKind::Send => connection_gone(closing).with_source(error),
    }
}

pub(crate) fn flush_error(error: FlushError, closing: bool) -> Error {
    connection_gone(closing).with_source(error)
}

pub(crate) fn subscribe_error(error: SubscribeError, closing: bool) -> Error {
    match error.kind() {
        SubscribeErrorKind::InvalidSubject | SubscribeErrorKind::InvalidQueueName => {
            Error::invalid_input(error.to_string()).with_source(error)
        }
        SubscribeErrorKind::Other => connection_gone(closing).with_source(error),
    }
}
