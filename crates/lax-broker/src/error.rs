//! Errors starting and running the broker, and how JetStream errors become gRPC statuses.

use std::{fmt, io};

use async_nats::jetstream::{self, ErrorCode, context::RequestErrorKind};
use tonic::{Code, Status};

/// Why the broker could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// A configuration value is invalid.
    #[error("invalid broker configuration: {0}")]
    Config(String),
    /// A listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// The operating system's answer.
        source: io::Error,
    },
    /// The NATS connection could not be set up.
    #[error("cannot connect to NATS at {urls}: {message}")]
    Nats {
        /// The URLs tried.
        urls: String,
        /// What went wrong.
        message: String,
    },
    /// The gRPC server failed.
    #[error("gRPC server failed: {0}")]
    Serve(String),
}

/// A failed publish: the gRPC code, the reason, and whether it may have been stored anyway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PublishFailure {
    pub(crate) code: Code,
    pub(crate) message: String,
    /// Sent but unanswered: the message may be in the stream (a retry with the same id is
    /// de-duplicated).
    pub(crate) maybe_stored: bool,
}

impl PublishFailure {
    pub(crate) fn new(code: Code, message: impl Into<String>) -> Self {
        PublishFailure {
            code,
            message: message.into(),
            maybe_stored: false,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidArgument, message)
    }

    pub(crate) fn precondition(message: impl Into<String>) -> Self {
        Self::new(Code::FailedPrecondition, message)
    }

    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::new(Code::Unavailable, message)
    }

    pub(crate) fn maybe_stored(mut self) -> Self {
        self.maybe_stored = true;
        self
    }

    /// The failure of a lax-core validation.
    pub(crate) fn from_core(error: &lax_core::Error) -> Self {
        Self::invalid(error.message().to_owned())
    }

    pub(crate) fn to_status(&self) -> Status {
        let message = if self.maybe_stored {
            format!("{} (the message may have been stored)", self.message)
        } else {
            self.message.clone()
        };
        Status::new(self.code, message)
    }

    /// The `error_code` field of a response: the gRPC code number.
    pub(crate) fn code_number(&self) -> i32 {
        self.code as i32
    }
}

impl fmt::Display for PublishFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl From<PublishFailure> for Status {
    fn from(failure: PublishFailure) -> Self {
        failure.to_status()
    }
}

/// The gRPC code for a JetStream API error.
///
/// JetStream errors carry an HTTP-like status (400 bad request, 404 not found, 503
/// unavailable) and a specific `err_code`; a few specific codes decide on their own.
pub(crate) fn code_for_jetstream(error: &jetstream::Error) -> Code {
    match error.error_code() {
        ErrorCode::STREAM_NOT_FOUND | ErrorCode::CONSUMER_NOT_FOUND => Code::NotFound,
        ErrorCode::STREAM_NAME_EXIST | ErrorCode::CONSUMER_NAME_EXIST => Code::AlreadyExists,
        ErrorCode::CLUSTER_NO_PEERS
        | ErrorCode::INSUFFICIENT_RESOURCES
        | ErrorCode::STREAM_REPLICAS_NOT_SUPPORTED
        | ErrorCode::STREAM_SUBJECT_OVERLAP
        | ErrorCode::STORAGE_RESOURCES_EXCEEDED
        | ErrorCode::MEMORY_RESOURCES_EXCEEDED
        | ErrorCode::MAXIMUM_STREAMS_LIMIT
        | ErrorCode::MAXIMUM_CONSUMERS_LIMIT
        | ErrorCode::ACCOUNT_RESOURCES_EXCEEDED
        | ErrorCode::STREAM_REPLICAS_NOT_UPDATABLE
        | ErrorCode::STREAM_MISMATCH
        | ErrorCode::STREAM_SEALED
        | ErrorCode::STREAM_WRONG_LAST_SEQUENCE
        | ErrorCode::STREAM_WRONG_LAST_MESSAGE_ID
        | ErrorCode::STREAM_STORE_FAILED => Code::FailedPrecondition,
        ErrorCode::STREAM_INVALID_CONFIG
        | ErrorCode::STREAM_INVALID
        | ErrorCode::BAD_REQUEST
        | ErrorCode::INVALID_JSON
        | ErrorCode::NOT_EMPTY_REQUEST
        | ErrorCode::NAME_NOT_MATCH_SUBJECT
        | ErrorCode::STREAM_MAX_BYTES_REQUIRED
        | ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM
        | ErrorCode::STREAM_HEADER_EXCEEDS_MAXIMUM
        | ErrorCode::STREAM_LIMITS => Code::InvalidArgument,
        ErrorCode::CLUSTER_NOT_AVAILABLE
        | ErrorCode::JETSTREAM_NOT_ENABLED
        | ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT
        | ErrorCode::STREAM_OFFLINE
        | ErrorCode::CONSUMER_OFFLINE => Code::Unavailable,
        // JetStream sheds load: nothing was stored, and the contract's clients read
        // RESOURCE_EXHAUSTED as "broker buffer full", to retry after a pause.
        ErrorCode::STREAM_TOO_MANY_REQUESTS
        | ErrorCode::ATOMIC_PUBLISH_TOO_MANY_INFLIGHT
        | ErrorCode::BATCH_PUBLISH_TOO_MANY_INFLIGHT => Code::ResourceExhausted,
        _ => match error.code() {
            400 => Code::InvalidArgument,
            404 => Code::NotFound,
            429 => Code::ResourceExhausted,
            503 => Code::Unavailable,
            _ => Code::Internal,
        },
    }
}

/// The status for a failed JetStream API call (`what` says which, e.g. "creating stream X").
pub(crate) fn status_for_api(what: &str, error: &ApiError) -> Status {
    match error {
        ApiError::JetStream(js) => {
            let code = code_for_jetstream(js);
            let mut message = format!("{what}: {js}");
            if matches!(
                js.error_code(),
                ErrorCode::CLUSTER_NO_PEERS
                    | ErrorCode::INSUFFICIENT_RESOURCES
                    | ErrorCode::STREAM_REPLICAS_NOT_SUPPORTED
            ) {
                message.push_str(" (too few JetStream servers for the replicas asked)");
            }
            Status::new(code, message)
        }
        ApiError::Request(kind, detail) => {
            let message = format!("{what}: JetStream did not answer ({detail})");
            match kind {
                RequestErrorKind::NoResponders
                | RequestErrorKind::TimedOut
                | RequestErrorKind::Other => Status::unavailable(message),
                RequestErrorKind::InvalidSubject => Status::invalid_argument(message),
            }
        }
    }
}

/// A failed JetStream API request: no answer, or JetStream's refusal.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// The request got no (usable) answer.
    Request(RequestErrorKind, String),
    /// JetStream answered with an error.
    JetStream(jetstream::Error),
}

impl ApiError {
    pub(crate) fn error_code(&self) -> Option<ErrorCode> {
        match self {
            ApiError::JetStream(e) => Some(e.error_code()),
            ApiError::Request(..) => None,
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::JetStream(e) => write!(f, "{e}"),
            ApiError::Request(_, detail) => write!(f, "{detail}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use async_nats::jetstream;
    use tonic::Code;

    use super::code_for_jetstream;

    fn jetstream_error(code: usize, err_code: u64) -> jetstream::Error {
        serde_json::from_value(serde_json::json!({
            "code": code,
            "err_code": err_code,
            "description": "refused",
        }))
        .expect("a JetStream API error")
    }

    #[test]
    fn jetstream_shedding_load_is_resource_exhausted() {
        let cases = [
            // What nats-server answers a publish when a stream's ingest queue is full.
            (429, 10167, Code::ResourceExhausted),
            (429, 0, Code::ResourceExhausted),
            (503, 10008, Code::Unavailable),
            (500, 99999, Code::Internal),
        ];
        for (code, err_code, status) in cases {
            let error = jetstream_error(code, err_code);
            assert_eq!(code_for_jetstream(&error), status, "{code}/{err_code}");
        }
    }
}
