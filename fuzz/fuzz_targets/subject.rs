//! Subject validation (`lax_core::validate`): any string, as a publish subject and as a
//! filter, at the default limit and at a small one; see the oracle for the properties.
#![no_main]

use libfuzzer_sys::fuzz_target;

// Each target uses part of the shared oracle.
#[allow(dead_code)]
#[path = "../../crates/lax-core/tests/support/validation_oracle.rs"]
mod oracle;

fuzz_target!(|subject: &str| {
    for max_len in [lax_core::Limits::DEFAULT_MAX_SUBJECT_LEN, 8] {
        oracle::publish_subject(subject, max_len);
        oracle::filter_subject(subject, max_len);
    }
});
