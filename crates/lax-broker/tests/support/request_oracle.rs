//! What the broker's request checks ([`lax_broker::input`]) must guarantee on any request:
//! shared by the property tests (`tests/input_properties.rs`) and the fuzz target
//! `broker_request` (`fuzz/`, through `#[path]`). Each function runs the real check and
//! panics with the request when a property fails. A refusal is always INVALID_ARGUMENT, or
//! PERMISSION_DENIED for a system subject (`$JS.API.…`, `$SYS.…`), which a broker without a
//! permissions file gives nobody.

use lax_broker::input;
use lax_broker::publish::KEY_HEADER;
use lax_core::{NATS_MSG_ID_HEADER, TRACE_ID_HEADER, validate::validate_name};
use lax_proto::broker::v1 as pb;
use tonic::Code;

#[path = "../../../lax-core/tests/support/validation_oracle.rs"]
mod core_oracle;

/// The longest subject the broker takes.
const MAX_SUBJECT_LEN: usize = lax_core::Limits::DEFAULT_MAX_SUBJECT_LEN;

fn is_system(subject: &str) -> bool {
    subject.starts_with('$')
}

/// `system`: the request names a system subject, which only PERMISSION_DENIED may answer.
fn assert_refusal(what: &str, system: bool, status: &tonic::Status) {
    match status.code() {
        Code::InvalidArgument => {}
        Code::PermissionDenied => assert!(
            system,
            "{what}: PERMISSION_DENIED without a system subject: {status:?}"
        ),
        _ => panic!("{what}: refused with {status:?}; expected INVALID_ARGUMENT"),
    }
}

/// Publish: an accepted message has a publishable, non-system subject (the one asked for),
/// sane headers including `Nats-Msg-Id` = its message id, a payload within `max_payload`.
pub(crate) fn publish(
    request: pb::PublishRequest,
    defaults: Option<&pb::PublishOptions>,
    max_payload: usize,
) {
    let shown = format!("{request:?}");
    let asked_subject = request.subject.clone();
    let asked_headers = request.headers.clone();
    let asked_timeout = request.options.as_ref().or(defaults).map(|o| o.timeout_ms);
    match input::publish(request, defaults, max_payload) {
        Ok(accepted) => {
            assert_eq!(accepted.subject, asked_subject, "{shown}");
            core_oracle::publish_subject(&accepted.subject, MAX_SUBJECT_LEN);
            assert!(
                lax_core::validate::validate_publish_subject(&accepted.subject, MAX_SUBJECT_LEN)
                    .is_ok()
            );
            assert!(
                !is_system(&accepted.subject),
                "published to a system subject: {shown}"
            );
            assert!(!accepted.message_id.is_empty(), "{shown}");
            assert_eq!(
                accepted.headers.get(NATS_MSG_ID_HEADER).map(|v| v.as_str()),
                Some(accepted.message_id.as_str()),
                "{shown}"
            );
            // The request's fields override its headers of the same name; every other
            // header is sent as asked, and only well-formed headers are sent.
            core_oracle::header(NATS_MSG_ID_HEADER, &accepted.message_id);
            for (name, value) in &asked_headers {
                let overridden =
                    [NATS_MSG_ID_HEADER, TRACE_ID_HEADER, KEY_HEADER].contains(&name.as_str());
                if overridden {
                    continue;
                }
                core_oracle::header(name, value);
                assert!(
                    lax_core::validate::validate_header(name, value).is_ok(),
                    "{shown}"
                );
                assert_eq!(
                    accepted.headers.get(name.as_str()).map(|v| v.as_str()),
                    Some(value.as_str()),
                    "{shown}"
                );
                if name.eq_ignore_ascii_case("traceparent") {
                    core_oracle::traceparent(value);
                }
            }
            assert!(accepted.payload.len() <= max_payload, "{shown}");
            assert!(asked_timeout.is_none_or(|ms| ms >= 0), "{shown}");
            assert_eq!(
                accepted.ack_timeout.map(|t| t.as_millis()),
                asked_timeout.filter(|ms| *ms > 0).map(|ms| ms as u128),
                "{shown}"
            );
        }
        Err(status) => assert_refusal("publish", is_system(&asked_subject), &status),
    }
}

/// Subscribe: an accepted subscription reads a well-formed, non-system filter and
/// dead-letters to a publishable subject.
pub(crate) fn subscribe(request: pb::SubscribeRequest) {
    let shown = format!("{request:?}");
    let subject = request.subject.clone();
    let dead_letter = request
        .options
        .as_ref()
        .map(|o| o.dead_letter_subject.clone())
        .unwrap_or_default();
    match input::subscribe(request) {
        Ok(()) => {
            core_oracle::filter_subject(&subject, MAX_SUBJECT_LEN);
            assert!(lax_core::validate::validate_filter_subject(&subject, MAX_SUBJECT_LEN).is_ok());
            assert!(!is_system(&subject), "reads a system subject: {shown}");
            if !dead_letter.is_empty() {
                assert!(
                    lax_core::validate::validate_publish_subject(&dead_letter, MAX_SUBJECT_LEN)
                        .is_ok()
                        && !is_system(&dead_letter),
                    "{shown}"
                );
            }
        }
        Err(status) => {
            let system = is_system(&subject) || is_system(&dead_letter);
            assert_refusal("subscribe", system, &status);
        }
    }
}

/// CreateConsumerGroup: accepted only with valid names and a well-formed filter.
pub(crate) fn consumer_group(request: pb::ConsumerGroupRequest) {
    let shown = format!("{request:?}");
    match input::consumer_group(&request) {
        Ok(()) => {
            assert!(
                validate_name("consumer group", &request.name).is_ok(),
                "{shown}"
            );
            assert!(validate_name("stream", &request.stream).is_ok(), "{shown}");
            if !request.subject_filter.is_empty() {
                core_oracle::filter_subject(&request.subject_filter, MAX_SUBJECT_LEN);
                assert!(!is_system(&request.subject_filter), "{shown}");
            }
        }
        Err(status) => {
            let dead_letter = request
                .config
                .map(|c| c.dead_letter_subject)
                .unwrap_or_default();
            let system = is_system(&request.subject_filter) || is_system(&dead_letter);
            assert_refusal("consumer group", system, &status);
        }
    }
}

/// CreateStream / UpdateStream: an accepted config names a valid stream, captures
/// well-formed subjects, keeps 1 to 5 replicas and no negative limit.
pub(crate) fn stream_config(name: &str, config: &pb::StreamConfig, replicated_replicas: usize) {
    match input::stream_config(name, config, replicated_replicas) {
        Ok(mapped) => {
            assert_eq!(mapped.name, name);
            assert!(validate_name("stream", name).is_ok(), "{name:?}");
            for subject in &mapped.subjects {
                core_oracle::filter_subject(subject, MAX_SUBJECT_LEN);
            }
            assert!((1..=5).contains(&mapped.num_replicas), "{config:?}");
            for limit in [
                mapped.max_messages,
                mapped.max_bytes,
                mapped.max_messages_per_subject,
            ] {
                assert!(limit == -1 || limit > 0, "{config:?} → {limit}");
            }
            assert!(
                mapped.max_message_size == -1 || mapped.max_message_size > 0,
                "{config:?}"
            );
            assert!(
                mapped.max_consumers == -1 || mapped.max_consumers > 0,
                "{config:?}"
            );
        }
        Err(status) => assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{name:?} {config:?}: {status:?}"
        ),
    }
}
