//! Header validation (`lax_core::validate::validate_header`) and `traceparent` parsing
//! (`lax_core::trace`): the input is split at its first `\0` into a name and a value; the
//! value is also tried as a `traceparent`; see the oracle for the properties.
#![no_main]

use libfuzzer_sys::fuzz_target;

// Each target uses part of the shared oracle.
#[allow(dead_code)]
#[path = "../../crates/lax-core/tests/support/validation_oracle.rs"]
mod oracle;

fuzz_target!(|input: &str| {
    let (name, value) = input.split_once('\0').unwrap_or((input, ""));
    oracle::header(name, value);
    oracle::traceparent(value);
    oracle::traceparent(input);
});
