//! What can be published: bytes and text as they are, any `serde::Serialize` value as JSON.

use bytes::Bytes;
use lax_core::Error;
use serde::Serialize;

/// A value that becomes a message payload.
///
/// Bytes and text are sent as they are, without copying where the type allows it
/// (`Bytes`, `Vec<u8>`, `String`); wrap any `serde::Serialize` value in [`Json`] to send it as
/// JSON, as the Python SDK did with dicts.
pub trait Payload {
    /// The payload bytes, plus the `Content-Type` they carry, if any.
    fn into_payload(self) -> Result<(Bytes, Option<&'static str>), Error>;
}

impl Payload for Bytes {
    fn into_payload(self) -> Result<(Bytes, Option<&'static str>), Error> {
        Ok((self, None))
    }
}

impl Payload for Vec<u8> {
    fn into_payload(self) -> Result<(Bytes, Option<&'static str>), Error> {
        Ok((Bytes::from(self), None))
    }
}

impl Payload for &'static [u8] {
    fn into_payload(self) -> Result<(Bytes, Option<&'static str>), Error> {
        Ok((Bytes::from_static(self), None))
    }
}

impl<const N: usize> Payload for &'static [u8; N] {
    fn into_payload(self) -> Result<(Bytes, Option<&'static str>), Error> {
        Ok((Bytes::from_static(self), None))
    }
}

impl Payload for String {
    fn into_payload(self) -> Result<(Bytes, Option<&'static str>), Error> {
        Ok((Bytes::from(self), None))
    }
}

impl Payload for &str {
    fn into_payload(self) -> Result<(Bytes, Option<&'static str>), Error> {
        Ok((Bytes::copy_from_slice(self.as_bytes()), None))
    }
}

/// Sends a `serde::Serialize` value as JSON (with `Content-Type: application/json`).
///
/// ```
/// use lax_client::{Json, Payload};
///
/// let (bytes, content_type) = Json(serde_json::json!({"user_id": "123"})).into_payload().unwrap();
/// assert_eq!(&bytes[..], br#"{"user_id":"123"}"#);
/// assert_eq!(content_type, Some("application/json"));
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Json<T>(pub T);

/// The content type [`Json`] payloads carry.
pub const JSON_CONTENT_TYPE: &str = "application/json";

impl<T: Serialize> Payload for Json<T> {
    fn into_payload(self) -> Result<(Bytes, Option<&'static str>), Error> {
        let bytes = serde_json::to_vec(&self.0).map_err(|e| {
            Error::invalid_input(format!("payload cannot be serialised as JSON: {e}"))
        })?;
        Ok((Bytes::from(bytes), Some(JSON_CONTENT_TYPE)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_pass_through_without_copy() {
        let original = Bytes::from_static(b"abc");
        let (sent, ct) = original.clone().into_payload().unwrap();
        assert_eq!(sent.as_ptr(), original.as_ptr());
        assert_eq!(ct, None);
        let v = vec![1u8, 2, 3];
        let ptr = v.as_ptr();
        assert_eq!(v.into_payload().unwrap().0.as_ptr(), ptr);
    }

    #[test]
    fn json_failure_is_invalid_input() {
        let mut map = std::collections::HashMap::new();
        map.insert(vec![1u8], 1); // non-string keys cannot be JSON object keys
        let err = Json(map).into_payload().unwrap_err();
        assert_eq!(err.kind(), lax_core::ErrorKind::InvalidInput);
    }
}
