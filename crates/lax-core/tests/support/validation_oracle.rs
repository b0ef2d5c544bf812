//! What lax-core's validation must guarantee, checked on any input: shared by the property
//! tests (`tests/validation_properties.rs`) and the fuzz targets (`fuzz/`, through `#[path]`).
//! Each function runs the real check and panics with the input when a property fails.
//!
//! The reference for "NATS accepts it" is async-nats (`Subject::validated`, `HeaderName`,
//! `HeaderValue`), which mirrors nats.go's checks.

use std::str::FromStr as _;

use lax_core::{
    ErrorKind, Limits, PublishRequest,
    trace::TraceParent,
    validate::{
        validate_filter_subject, validate_header, validate_publish_subject, validate_request,
    },
};

/// True when `c` may not appear in a subject: NATS splits the protocol line on whitespace,
/// and LAX also refuses Unicode whitespace and control characters (invisible in logs).
fn forbidden_in_subject(c: char) -> bool {
    c.is_whitespace() || c.is_control()
}

/// A publish subject is accepted exactly when it is non-empty, at most `max_len` bytes, has
/// no empty token (`..`, leading or trailing `.`), no `*` or `>` at all (a whole-token one is
/// a wildcard; inside a token no filter could name it) and no whitespace or control
/// character; what is accepted is a subject NATS accepts and a valid filter.
pub(crate) fn publish_subject(subject: &str, max_len: usize) {
    let verdict = validate_publish_subject(subject, max_len);
    let tokens: Vec<&str> = subject.split('.').collect();
    let well_formed = !subject.is_empty()
        && subject.len() <= max_len
        && !subject.chars().any(forbidden_in_subject)
        && tokens
            .iter()
            .all(|t| !t.is_empty() && !t.contains(['*', '>']));
    match &verdict {
        Ok(()) => {
            assert!(well_formed, "accepted the bad publish subject {subject:?}");
            assert!(
                async_nats::Subject::validated(subject).is_ok(),
                "accepted {subject:?}, which NATS refuses"
            );
            assert!(!subject.contains(".."), "accepted {subject:?} with `..`");
            assert!(
                validate_filter_subject(subject, max_len).is_ok(),
                "publish subject {subject:?} is no filter"
            );
        }
        Err(error) => {
            assert!(
                !well_formed,
                "refused the good publish subject {subject:?}: {error}"
            );
            assert_eq!(error.kind(), ErrorKind::InvalidInput, "{subject:?}");
        }
    }
}

/// A filter subject is accepted exactly when it is well formed with wildcards as whole
/// tokens and `>` only last; what is accepted is a subject NATS accepts.
pub(crate) fn filter_subject(subject: &str, max_len: usize) {
    let verdict = validate_filter_subject(subject, max_len);
    let tokens: Vec<&str> = subject.split('.').collect();
    let well_formed = !subject.is_empty()
        && subject.len() <= max_len
        && !subject.chars().any(forbidden_in_subject)
        && tokens.iter().enumerate().all(|(i, t)| {
            !t.is_empty()
                && (*t != ">" || i + 1 == tokens.len())
                && (t.len() == 1 || !t.contains(['*', '>']))
        });
    match &verdict {
        Ok(()) => {
            assert!(well_formed, "accepted the bad filter {subject:?}");
            assert!(
                async_nats::Subject::validated(subject).is_ok(),
                "accepted the filter {subject:?}, which NATS refuses"
            );
        }
        Err(error) => {
            assert!(!well_formed, "refused the good filter {subject:?}: {error}");
            assert_eq!(error.kind(), ErrorKind::InvalidInput, "{subject:?}");
        }
    }
}

/// A header is accepted exactly when its name is non-empty visible ASCII without `:` and its
/// value has no line break; then async-nats takes both (its `HeaderValue::from(&str)` panics
/// on a line break, so this is what keeps the broker from panicking).
pub(crate) fn header(name: &str, value: &str) {
    let well_formed = !name.is_empty()
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b':')
        && !value.contains(['\r', '\n']);
    match validate_header(name, value) {
        Ok(()) => {
            assert!(well_formed, "accepted the bad header {name:?}: {value:?}");
            assert!(async_nats::HeaderName::from_str(name).is_ok(), "{name:?}");
            assert!(
                async_nats::HeaderValue::from_str(value).is_ok(),
                "{value:?}"
            );
        }
        Err(error) => {
            assert!(
                !well_formed,
                "refused the good header {name:?}: {value:?}: {error}"
            );
            assert_eq!(error.kind(), ErrorKind::InvalidInput);
        }
    }
}

/// A `traceparent` that parses writes back as a canonical version-00 value that parses to
/// the same thing; a request carrying it is accepted exactly when it parses.
pub(crate) fn traceparent(value: &str) {
    let parsed = value.parse::<TraceParent>();
    if let Ok(parent) = &parsed {
        let written = parent.to_string();
        assert_eq!(written.len(), 55, "{value:?} → {written:?}");
        assert!(
            written
                .bytes()
                .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{written:?}"
        );
        assert_eq!(
            written.parse::<TraceParent>().ok(),
            Some(*parent),
            "{value:?}"
        );
        let trimmed = value.trim_matches([' ', '\t']);
        if trimmed.starts_with("00-") {
            assert_eq!(
                written, trimmed,
                "a version-00 value is written back as it came"
            );
        }
    }
    if !value.contains(['\r', '\n']) {
        let request = PublishRequest::new("a.b", "x").with_header("traceparent", value);
        let verdict = validate_request(&request, &Limits::default());
        assert_eq!(
            verdict.is_ok(),
            parsed.is_ok(),
            "traceparent {value:?}: request {verdict:?}, parse {parsed:?}"
        );
    }
}
