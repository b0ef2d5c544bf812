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
    /// A passing cluster state (no stream leader during an election, JetStream's API not
    /// answering while connected): worth sending again within the call's deadline.
    pub(crate) transient: bool,
}

impl PublishFailure {
    pub(crate) fn new(code: Code, message: impl Into<String>) -> Self {
        PublishFailure {
            code,
            message: message.into(),
            maybe_stored: false,
            transient: false,
        }
    }

    /// UNAVAILABLE for a passing cluster state, sent again while the deadline allows.
    pub(crate) fn transient(message: impl Into<String>) -> Self {
        PublishFailure {
            transient: true,
            ..Self::unavailable(message)
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

    /// Flags the failure "may have been stored" when an earlier send of the same message
    /// went unanswered.
    pub(crate) fn maybe_stored_if(mut self, earlier_send_unanswered: bool) -> Self {
        self.maybe_stored |= earlier_send_unanswered;
        self
    }

    /// The failure of a lax-core validation.
    pub(crate) fn from_core(error: &lax_core::Error) -> Self {
        Self::invalid(error.message().to_owned())
    }

    /// The status of a unary answer; a transient failure carries the
    /// [`TRANSIENT_METADATA`](lax_proto::TRANSIENT_METADATA) trailer.
    pub(crate) fn to_status(&self) -> Status {
        let message = if self.maybe_stored {
            format!("{} (the message may have been stored)", self.message)
        } else {
            self.message.clone()
        };
        let mut status = Status::new(self.code, message);
        if self.transient {
            status.metadata_mut().insert(
                lax_proto::TRANSIENT_METADATA,
                tonic::metadata::MetadataValue::from_static("true"),
            );
        }
        status
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

/// True for the JetStream answers of a cluster in passing trouble — no meta or stream leader
/// (an election), an offline stream, no answer at all — as opposed to a refusal that stays.
pub(crate) fn is_transient_jetstream(error: &jetstream::Error) -> bool {
    matches!(
        error.error_code(),
        ErrorCode::CLUSTER_NOT_AVAILABLE
            | ErrorCode::CLUSTER_NOT_LEADER
            | ErrorCode::STREAM_OFFLINE
            | ErrorCode::STREAM_OFFLINE_REASON
    ) || error.code() == 503
}

/// The failure of a JetStream API call made for a publish (`what` says which); a transient
/// one ([`is_transient_jetstream`], no answer) is marked so the publish waits it out.
pub(crate) fn publish_failure_for_api(what: &str, error: &ApiError) -> PublishFailure {
    let status = status_for_api(what, error);
    let transient = match error {
        ApiError::JetStream(js) => is_transient_jetstream(js),
        ApiError::Request(kind, _) => {
            matches!(
                kind,
                RequestErrorKind::NoResponders | RequestErrorKind::TimedOut
            )
        }
    };
    if transient {
        PublishFailure::transient(status.message().to_owned())
    } else {
        PublishFailure::new(status.code(), status.message().to_owned())
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
    fn elections_and_offline_streams_are_transient_refusals_are_not() {
        use super::{ApiError, is_transient_jetstream, publish_failure_for_api};
        use async_nats::jetstream::context::RequestErrorKind;
        // (code, err_code, transient): 10008 "JetStream system temporarily unavailable",
        // 10009 "not leader", 10118 stream offline; 10059 stream not found and 10058 name
        // exists stay what they are.
        let cases = [
            (503, 10008, true),
            (500, 10009, true),
            (500, 10118, true),
            (503, 0, true),
            (404, 10059, false),
            (400, 10058, false),
            (400, 10052, false),
        ];
        for (code, err_code, transient) in cases {
            let error = jetstream_error(code, err_code);
            assert_eq!(
                is_transient_jetstream(&error),
                transient,
                "{code}/{err_code}"
            );
            let failure = publish_failure_for_api("looking", &ApiError::JetStream(error));
            assert_eq!(failure.transient, transient, "{code}/{err_code}");
            if transient {
                assert_eq!(failure.code, Code::Unavailable);
            }
        }
        for (kind, transient) in [
            (RequestErrorKind::TimedOut, true),
            (RequestErrorKind::NoResponders, true),
            (RequestErrorKind::InvalidSubject, false),
        ] {
            let failure = publish_failure_for_api("looking", &ApiError::Request(kind, "x".into()));
            assert_eq!(failure.transient, transient, "{kind:?}");
        }
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
