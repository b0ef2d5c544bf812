//! lax-core's message model ↔ the `broker.v1` protobuf messages.

use std::time::{Duration, SystemTime};

use lax_core::{
    Ack, Delivery, Error, MESSAGE_ID_HEADER, PublishRequest, Receipt, SmolStr, TRACE_ID_HEADER,
};
use lax_proto::broker::v1 as proto;
use tonic::{Code, Status};

use crate::status::status_to_error;

pub(crate) mod admin;

/// The protobuf request for `request`, to be answered within `timeout`: the one conversion
/// of the request's headers into their wire form (the protobuf map), done per attempt.
///
/// The `message_id` field carries the de-duplication key (the broker sends it as
/// `Nats-Msg-Id`). When a dedup id differs from the message id, the message id travels in the
/// `Message-Id` header, as on the direct path, unless the caller set that header already.
pub(crate) fn to_proto(request: &PublishRequest, timeout: Duration) -> proto::PublishRequest {
    let mut headers: std::collections::HashMap<String, String> = request
        .headers
        .iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    let dedup_key = request.dedup_key();
    if dedup_key != request.message_id {
        headers
            .entry(MESSAGE_ID_HEADER.to_owned())
            .or_insert_with(|| request.message_id.to_string());
    }
    proto::PublishRequest {
        subject: request.subject.to_string(),
        // prost's default `bytes` fields are `Vec<u8>`: this copy is the one the wire needs.
        payload: request.payload.clone(),
        // Header names are case-insensitive (the Python SDK's users write `trace-id`).
        trace_id: request
            .headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(TRACE_ID_HEADER))
            .map(|(_, value)| value.to_owned())
            .unwrap_or_default(),
        headers,
        key: String::new(),
        options: Some(proto::PublishOptions {
            require_ack: true,
            timeout_ms: i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX),
            tier: request.options.tier.as_str().to_owned(),
            compress: false,
        }),
        message_id: dedup_key.to_owned(),
    }
}

/// The caller's receipt for a `StreamPublish` ack, or the error it reports. The broker's
/// `maybe_stored` flag decides whether a failed message may be stored, its `transient` flag
/// whether the failure was a passing cluster state ([`Error::is_transient`]).
pub(crate) fn ack_to_receipt(
    message_id: impl Into<SmolStr>,
    ack: proto::PublishAck,
) -> Result<Receipt, Error> {
    if ack.success {
        return Ok(Receipt::acked(
            message_id,
            Ack {
                stream: ack.stream,
                sequence: ack.sequence,
                duplicate: ack.duplicate,
                timestamp: None,
            },
        ));
    }
    let delivery = if ack.maybe_stored {
        Delivery::MaybeStored
    } else {
        Delivery::NotSent
    };
    Err(transient_if(
        message_error(ack.error_code, ack.error).with_delivery(delivery),
        ack.transient,
    ))
}

/// The caller's receipt for a `Publish`/`BatchPublish` response, or the per-message error
/// it reports.
pub(crate) fn response_to_receipt(
    message_id: impl Into<SmolStr>,
    response: proto::PublishResponse,
) -> Result<Receipt, Error> {
    if response.error_code != Code::Ok as i32 || !response.error.is_empty() {
        return Err(transient_if(
            message_error(response.error_code, response.error),
            response.transient,
        ));
    }
    Ok(Receipt::acked(
        message_id,
        Ack {
            stream: response.stream,
            sequence: response.sequence,
            duplicate: response.duplicate,
            timestamp: response
                .timestamp
                .and_then(|ts| SystemTime::try_from(ts).ok()),
        },
    ))
}

fn transient_if(error: Error, transient: bool) -> Error {
    if transient { error.transient() } else { error }
}

/// A per-message failure (a code number and a reason) as an error, through the status table.
/// A failure without a code (an older broker) counts as `UNKNOWN`.
fn message_error(code: i32, reason: String) -> Error {
    let code = match Code::from(code) {
        Code::Ok => Code::Unknown,
        code => code,
    };
    let reason = if reason.is_empty() {
        "the broker reported a failure without a reason".to_owned()
    } else {
        reason
    };
    status_to_error(&Status::new(code, reason), true)
}

#[cfg(test)]
mod tests {
    use lax_core::{ErrorKind, PublishOptions, Tier};

    use super::*;

    #[test]
    fn fills_every_field() {
        let request = PublishRequest::new("orders.created", "data")
            .with_tier(Tier::Replicated)
            .with_header("Trace-Id", "t-1")
            .with_header("X-App", "1")
            .with_message_id("m-1");
        let proto = to_proto(&request, Duration::from_millis(1500));
        assert_eq!(proto.subject, "orders.created");
        assert_eq!(proto.payload, &b"data"[..]);
        assert_eq!(proto.message_id, "m-1");
        assert_eq!(proto.trace_id, "t-1");
        assert_eq!(proto.headers.get("X-App").map(String::as_str), Some("1"));
        assert!(!proto.headers.contains_key(MESSAGE_ID_HEADER));
        let options = proto.options.unwrap();
        assert!(options.require_ack);
        assert_eq!(options.tier, "replicated");
        assert_eq!(options.timeout_ms, 1500);
    }

    #[test]
    fn the_trace_id_header_is_found_in_any_case() {
        for name in ["trace-id", "TRACE-ID", "Trace-Id"] {
            let request = PublishRequest::new("a.b", "x").with_header(name, "abc123");
            assert_eq!(
                to_proto(&request, Duration::from_secs(1)).trace_id,
                "abc123"
            );
        }
        let request = PublishRequest::new("a.b", "x").with_header("x-trace-id", "no");
        assert_eq!(to_proto(&request, Duration::from_secs(1)).trace_id, "");
    }

    #[test]
    fn a_dedup_id_travels_as_message_id_and_the_id_as_header() {
        let request = PublishRequest::new("a.b", "x")
            .with_message_id("m-1")
            .with_options(PublishOptions::tier(Tier::Persistent).with_dedup_id("order-456"));
        let proto = to_proto(&request, Duration::from_secs(1));
        assert_eq!(proto.message_id, "order-456");
        assert_eq!(
            proto.headers.get(MESSAGE_ID_HEADER).map(String::as_str),
            Some("m-1")
        );
    }

    #[test]
    fn acks_become_receipts_or_errors() {
        let ok = proto::PublishAck {
            message_id: "dedup".into(),
            success: true,
            sequence: 7,
            stream: "ORDERS".into(),
            duplicate: true,
            ..Default::default()
        };
        let receipt = ack_to_receipt("m-1", ok).unwrap();
        assert_eq!(receipt.message_id, "m-1");
        let ack = receipt.ack.unwrap();
        assert_eq!(
            (ack.stream.as_str(), ack.sequence, ack.duplicate),
            ("ORDERS", 7, true)
        );

        let refused = proto::PublishAck {
            error: "no stream captures subject".into(),
            error_code: Code::NotFound as i32,
            ..Default::default()
        };
        let error = ack_to_receipt("m", refused).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Rejected);
        assert!(!error.may_be_stored());

        let lost = proto::PublishAck {
            error: "no ack from JetStream".into(),
            error_code: Code::DeadlineExceeded as i32,
            maybe_stored: true,
            ..Default::default()
        };
        let error = ack_to_receipt("m", lost).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::TimedOut);
        assert!(error.may_be_stored());
        assert!(!error.is_transient());

        let electing = proto::PublishAck {
            error: "stream has no leader".into(),
            error_code: Code::Unavailable as i32,
            maybe_stored: true,
            transient: true,
            ..Default::default()
        };
        let error = ack_to_receipt("m", electing).unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Unavailable);
        assert!(error.may_be_stored() && error.is_transient());
    }

    #[test]
    fn responses_become_receipts_or_errors() {
        let ok = proto::PublishResponse {
            sequence: 3,
            stream: "S".into(),
            timestamp: Some(prost_types::Timestamp {
                seconds: 10,
                nanos: 0,
            }),
            ..Default::default()
        };
        let ack = response_to_receipt("m", ok).unwrap().ack.unwrap();
        assert_eq!(
            ack.timestamp,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(10))
        );

        let full = proto::PublishResponse {
            error: "buffer full".into(),
            error_code: Code::ResourceExhausted as i32,
            ..Default::default()
        };
        assert_eq!(
            response_to_receipt("m", full).unwrap_err().kind(),
            ErrorKind::Overloaded
        );

        let no_code = proto::PublishResponse {
            error: "odd".into(),
            ..Default::default()
        };
        assert_eq!(
            response_to_receipt("m", no_code).unwrap_err().kind(),
            ErrorKind::Internal
        );
    }
}
