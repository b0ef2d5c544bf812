//! Names JetStream accepts for streams and consumers.

use tonic::Status;

/// Longest stream or consumer name the broker accepts (JetStream stores names as file names).
pub(crate) const MAX_NAME_LEN: usize = 255;

/// Checks a stream or consumer name: non-empty, at most [`MAX_NAME_LEN`] bytes, printable, and
/// free of whitespace, `.`, `*`, `>`, `/` and `\` (JetStream refuses those).
pub(crate) fn validate_name(kind: &str, name: &str) -> Result<(), Status> {
    if name.is_empty() {
        return Err(Status::invalid_argument(format!("{kind} name is empty")));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(Status::invalid_argument(format!(
            "{kind} name is {} bytes, longer than {MAX_NAME_LEN}",
            name.len()
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
    {
        return Err(Status::invalid_argument(format!(
            "{kind} name {name:?} contains {c:?}; names may not contain whitespace, '.', '*', '>', '/' or '\\'"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(validate_name("stream", "ORDERS_v2-x").is_ok());
        for bad in ["", "a.b", "a b", "a*", "a>", "a/b", "a\\b", "a\nb"] {
            let err = validate_name("stream", bad).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad:?}");
        }
        assert!(validate_name("stream", &"x".repeat(256)).is_err());
    }
}
