//! What can be published: bytes and text as they are, any `serde::Serialize` value as JSON.

use bytes::Bytes;
use lax_core::Error;
use serde::Serialize;

/// A value that becomes a message payload.
///
/// Bytes and text are sent as they are, without copying where the type allows it
/// (`Bytes`, `Vec<u8>`, `String`); borrowed slices and strings of any lifetime are copied.
/// A `serde_json::Value` is sent as JSON as it is; wrap any other `serde::Serialize` value in
/// [`Json`] to send it as JSON, as the Python SDK did with dicts.
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

/// Copied: a borrowed slice may not outlive the publish (the message is sent after the call
/// returns, and retried from the copy).
impl Payload for &[u8] {
    fn into_payload(self) -> Result<(Bytes, Option<&'static str>), Error> {
        Ok((Bytes::copy_from_slice(self), None))
    }
}

impl<const N: usize> Payload for &[u8; N] {
    fn into_payload(self) -> Result<(Bytes, Option<&'static str>), Error> {
        self.as_slice().into_payload()
    }
}

/// JSON, like `Json(value)`.
impl Payload for serde_json::Value {
    fn into_payload(self) -> Result<(Bytes, Option<&'static str>), Error> {
        Json(self).into_payload()
    }
}

/// JSON, like `Json(value)`.
impl Payload for &serde_json::Value {
    fn into_payload(self) -> Result<(Bytes, Option<&'static str>), Error> {
        Json(self).into_payload()
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

/// A message id, say, sent on as the payload.
impl Payload for lax_core::SmolStr {
    fn into_payload(self) -> Result<(Bytes, Option<&'static str>), Error> {
        self.as_str().into_payload()
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
    fn borrowed_bytes_of_any_lifetime_and_json_values_are_payloads() {
        fn send(data: impl Payload) -> (Bytes, Option<&'static str>) {
            data.into_payload().unwrap()
        }
        let owned = Bytes::from(vec![1u8, 2, 3]);
        let borrowed: &[u8] = &owned[1..]; // not 'static
        assert_eq!(send(borrowed).0, Bytes::from_static(&[2, 3]));
        let array = [7u8; 4];
        assert_eq!(send(&array).0, Bytes::from_static(&[7; 4]));
        let value = serde_json::json!({"order_id": "456"});
        assert_eq!(
            send(&value),
            (
                Bytes::from_static(br#"{"order_id":"456"}"#),
                Some(JSON_CONTENT_TYPE)
            )
        );
        assert_eq!(
            send(value),
            send(Json(serde_json::json!({"order_id": "456"})))
        );
    }

    #[test]
    fn json_failure_is_invalid_input() {
        let mut map = std::collections::HashMap::new();
        map.insert(vec![1u8], 1); // non-string keys cannot be JSON object keys
        let err = Json(map).into_payload().unwrap_err();
        assert_eq!(err.kind(), lax_core::ErrorKind::InvalidInput);
    }
}
