//! Human-readable figures shared by the commands.

use std::time::Duration;

use lax_client::{Receipt, Route};

/// `1.23 ms`.
pub(crate) fn millis(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1e3)
}

/// Route, message id and, for acked publishes, stream and sequence.
pub(crate) fn describe_receipt(receipt: &Receipt) -> String {
    match (&receipt.route, &receipt.ack) {
        (_, Some(ack)) => format!(
            "route broker, id {}, stream {} sequence {}{}",
            receipt.message_id,
            ack.stream,
            ack.sequence,
            if ack.duplicate {
                " (duplicate: already stored)"
            } else {
                ""
            }
        ),
        (Route::Direct, None) => format!("route direct (core NATS), id {}", receipt.message_id),
        (Route::Broker, None) => format!("route broker (no ack), id {}", receipt.message_id),
    }
}

/// A payload as text: UTF-8 as it is, anything else as escaped bytes.
pub(crate) fn payload_text(payload: &[u8]) -> String {
    match std::str::from_utf8(payload) {
        Ok(text) => text.to_owned(),
        Err(_) => payload.escape_ascii().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use lax_client::Ack;

    use super::*;

    #[test]
    fn receipts_name_route_id_stream_and_sequence() {
        let direct = describe_receipt(&Receipt::direct("m1"));
        assert_eq!(direct, "route direct (core NATS), id m1");
        let acked = describe_receipt(&Receipt::acked(
            "m2",
            Ack {
                stream: "ORDERS".into(),
                sequence: 7,
                duplicate: true,
                timestamp: None,
            },
        ));
        assert!(
            acked.contains("stream ORDERS sequence 7 (duplicate"),
            "{acked}"
        );
        assert_eq!(payload_text(b"hi"), "hi");
        assert_eq!(payload_text(&[0xff, b'a']), "\\xffa");
        assert_eq!(millis(Duration::from_micros(1500)), "1.50 ms");
    }
}
