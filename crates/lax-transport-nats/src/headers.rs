//! Converting between LAX [`Headers`] and async-nats' [`HeaderMap`], with the message id in a
//! `Message-Id` header.

use std::str::FromStr;

use async_nats::{HeaderMap, HeaderName, HeaderValue};
use lax_core::{Error, Headers, MESSAGE_ID_HEADER};

/// The `Message-Id` header name, made once: a name parsed per publish would be an allocation
/// per publish (it is not one of async-nats' standard headers).
const MESSAGE_ID: HeaderName = HeaderName::from_static(MESSAGE_ID_HEADER);

/// `NATS/1.0\r\n` opening and `\r\n` closing a header block.
const BLOCK_FRAMING: usize = "NATS/1.0\r\n".len() + "\r\n".len();

/// Bytes of one `name: value\r\n` line.
fn line_len(name: &str, value: &str) -> usize {
    name.len() + ": ".len() + value.len() + "\r\n".len()
}

/// The header block `headers` make on the wire once `Message-Id: message_id` is set (it
/// replaces a `Message-Id` the caller set).
pub(crate) fn block_len(headers: &Headers, message_id: &str) -> usize {
    let id_line = line_len(MESSAGE_ID_HEADER, message_id);
    match headers.get(MESSAGE_ID_HEADER) {
        _ if headers.is_empty() => BLOCK_FRAMING + id_line,
        Some(replaced) => headers.wire_len() - line_len(MESSAGE_ID_HEADER, replaced) + id_line,
        None => headers.wire_len() + id_line,
    }
}

/// The async-nats header map for a publish: the application headers plus `Message-Id`.
pub(crate) fn to_header_map(headers: &Headers, message_id: &str) -> Result<HeaderMap, Error> {
    let mut map = HeaderMap::new();
    for (name, value) in headers.iter() {
        if name != MESSAGE_ID_HEADER {
            map.insert(header_name(name)?, header_value(name, value)?);
        }
    }
    map.insert(MESSAGE_ID, header_value(MESSAGE_ID_HEADER, message_id)?);
    Ok(map)
}

/// LAX headers from a received header map; of a repeated header, the last value wins.
pub(crate) fn from_header_map(map: &HeaderMap) -> Headers {
    map.iter()
        .filter_map(|(name, values)| {
            values
                .last()
                .map(|value| (name.to_string(), value.as_str().to_owned()))
        })
        .collect()
}

// `validate_request` has already checked names and values; these only keep async-nats'
// panicking conversions out of reach.
fn header_name(name: &str) -> Result<HeaderName, Error> {
    HeaderName::from_str(name)
        .map_err(|_| Error::invalid_input(format!("header name {name:?} is not valid for NATS")))
}

fn header_value(name: &str, value: &str) -> Result<HeaderValue, Error> {
    HeaderValue::from_str(value)
        .map_err(|_| Error::invalid_input(format!("header {name:?} has a value NATS cannot carry")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The block as NATS frames it, the way the server counts it against `max_payload`.
    fn framed(map: &HeaderMap) -> usize {
        BLOCK_FRAMING
            + map
                .iter()
                .flat_map(|(name, values)| {
                    values
                        .iter()
                        .map(move |v| line_len(name.as_ref(), v.as_str()))
                })
                .sum::<usize>()
    }

    #[test]
    fn block_len_matches_the_built_map() {
        let cases = [
            Headers::new(),
            Headers::from([("Trace-Id", "abc")]),
            Headers::from([("Trace-Id", "abc"), ("X-Other", "value with spaces")]),
            Headers::from([(MESSAGE_ID_HEADER, "caller-set-a-long-id"), ("A", "b")]),
            Headers::from([(MESSAGE_ID_HEADER, "x")]),
        ];
        for headers in cases {
            let map = to_header_map(&headers, "the-message-id").unwrap();
            assert_eq!(
                block_len(&headers, "the-message-id"),
                framed(&map),
                "{headers:?}"
            );
            assert_eq!(
                map.get(MESSAGE_ID_HEADER).map(HeaderValue::as_str),
                Some("the-message-id")
            );
        }
    }

    #[test]
    fn round_trip() {
        let headers = Headers::from([("Trace-Id", "abc"), ("X-Lax", "1")]);
        let back = from_header_map(&to_header_map(&headers, "id-1").unwrap());
        assert_eq!(back.get("Trace-Id"), Some("abc"));
        assert_eq!(back.get("X-Lax"), Some("1"));
        assert_eq!(back.get(MESSAGE_ID_HEADER), Some("id-1"));

        let mut repeated = HeaderMap::new();
        repeated.append("K", "first");
        repeated.append("K", "last");
        assert_eq!(from_header_map(&repeated).get("K"), Some("last"));
    }

    #[test]
    fn bad_headers_are_errors_not_panics() {
        let bad_name = Headers::from([("bad name", "v")]);
        assert!(to_header_map(&bad_name, "id").is_err());
        let bad_value = Headers::from([("X", "a\r\nb")]);
        assert!(to_header_map(&bad_value, "id").is_err());
        assert!(to_header_map(&Headers::new(), "multi\nline").is_err());
    }
}
