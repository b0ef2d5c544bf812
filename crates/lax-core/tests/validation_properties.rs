//! Property tests of subject, header and `traceparent` validation: adversarial inputs
//! (wildcards, `..`, Unicode and ASCII whitespace, control characters, `$JS.API`, very long
//! subjects) against the properties in `support/validation_oracle.rs`, which the fuzz
//! targets in `fuzz/` check for much longer (`cargo xtask fuzz`).

use proptest::prelude::*;

mod support {
    pub(crate) mod validation_oracle;
}
use support::validation_oracle as oracle;

/// Tokens that are valid, wildcards, empty, or carry something a subject must not.
fn token() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-zA-Z0-9_-]{1,8}",
        Just("*".to_owned()),
        Just(">".to_owned()),
        Just(String::new()),
        Just("$JS".to_owned()),
        Just("API".to_owned()),
        Just("a*b".to_owned()),
        Just("x>".to_owned()),
        Just("ünï".to_owned()),
        // Space, tab, CR, LF, NUL, no-break space, line separator, ideographic space.
        "[a-z]{0,2}[ \t\r\n\u{0}\u{a0}\u{2028}\u{3000}][a-z]{0,2}",
        any::<String>(),
    ]
}

/// Subjects made of such tokens, arbitrary strings, and long ones around the limits.
fn subject() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::collection::vec(token(), 1..6).prop_map(|tokens| tokens.join(".")),
        1 => any::<String>(),
        1 => "[a-z]{1,10}(\\.[a-z]{1,10}){90,110}",
    ]
}

/// Header values: ordinary text, line breaks, `traceparent`-shaped values with a mutation.
fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[ -~]{0,20}[\r\n][ -~]{0,20}",
        traceparent_like(),
    ]
}

/// Values shaped like `traceparent` (version, ids, flags), with a chance of being wrong.
fn traceparent_like() -> impl Strategy<Value = String> {
    (
        "[0-9a-fA-F]{2}|ff|00",
        "[0-9a-f]{32}|0{32}|[0-9a-fA-Z]{31,33}",
        "[0-9a-f]{16}|0{16}",
        "[0-9a-f]{2}|[0-9a-fg]{1,3}",
        "|-[a-z0-9]{1,5}",
        "[ \t]{0,2}",
    )
        .prop_map(|(version, trace, parent, flags, tail, pad)| {
            format!("{pad}{version}-{trace}-{parent}-{flags}{tail}{pad}")
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn subjects_accepted_are_subjects_nats_accepts(subject in subject()) {
        for max_len in [lax_core::Limits::DEFAULT_MAX_SUBJECT_LEN, 16] {
            oracle::publish_subject(&subject, max_len);
            oracle::filter_subject(&subject, max_len);
        }
    }

    #[test]
    fn headers_accepted_are_headers_nats_takes(
        name in prop_oneof!["[!-~]{1,12}", any::<String>(), Just("traceparent".to_owned())],
        value in header_value(),
    ) {
        oracle::header(&name, &value);
        oracle::traceparent(&value);
    }
}
