//! Names JetStream accepts for streams and consumers, checked by lax-core's rule and refused
//! as `INVALID_ARGUMENT`.

use tonic::Status;

/// Checks a stream or consumer name with [`lax_core::validate::validate_name`].
pub(crate) fn validate_name(kind: &str, name: &str) -> Result<(), Status> {
    lax_core::validate::validate_name(kind, name)
        .map_err(|e| Status::invalid_argument(e.message().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_name_is_invalid_argument() {
        assert!(validate_name("stream", "ORDERS_v2-x").is_ok());
        let err = validate_name("stream", "a.b").unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }
}
