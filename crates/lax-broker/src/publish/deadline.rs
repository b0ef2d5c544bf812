//! The gRPC deadline of a call, read from its `grpc-timeout` header.
//!
//! tonic's server also enforces that header, but answers CANCELLED when it fires; the broker
//! answers DEADLINE_EXCEEDED (what clients treat as a publish timeout) by ending its own
//! wait a little earlier.

use std::{pin::pin, time::Duration};

use futures::FutureExt as _;
use tokio::time::{Instant, error::Elapsed, timeout_at};
use tonic::metadata::MetadataMap;

/// The broker's own deadline ends this much before the client's, so its DEADLINE_EXCEEDED
/// answer wins the race against tonic's CANCELLED. 10 ms lost that race in 2 of 3 runs of
/// `deadlines_and_the_inflight_cap` once the broker ran beside a loaded test suite.
pub(crate) const DEADLINE_MARGIN: Duration = Duration::from_millis(50);

/// The instant the call's `grpc-timeout` runs out (less [`DEADLINE_MARGIN`]), or `None`
/// without a (valid) header.
pub(crate) fn call_deadline(metadata: &MetadataMap) -> Option<Instant> {
    let timeout = parse_grpc_timeout(metadata.get("grpc-timeout")?.to_str().ok()?)?;
    Some(Instant::now() + timeout.saturating_sub(DEADLINE_MARGIN))
}

/// `future`'s output, or [`Elapsed`] once `deadline` has passed, like `timeout_at`; but a future
/// that is ready at once (a cached stream lookup, a send with room in the NATS queue) never
/// arms a timer, which costs two locks of the timer wheel on every message.
pub(crate) async fn within<F: Future>(deadline: Instant, future: F) -> Result<F::Output, Elapsed> {
    let mut future = pin!(future);
    match future.as_mut().now_or_never() {
        Some(output) => Ok(output),
        None => timeout_at(deadline, future).await,
    }
}

/// Parses a `grpc-timeout` value: at most 8 digits and a unit (`H`, `M`, `S`, `m`, `u`, `n`).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn within_answers_a_ready_future_at_once_and_times_out_a_pending_one() {
        let past = Instant::now();
        tokio::time::advance(Duration::from_millis(5)).await;
        assert_eq!(within(past, async { 7 }).await.ok(), Some(7));
        let deadline = Instant::now() + Duration::from_millis(100);
        let pending = within(deadline, std::future::pending::<()>()).await;
        assert!(pending.is_err());
        assert_eq!(Instant::now(), deadline);
        let later = within(Instant::now() + Duration::from_secs(1), async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            8
        });
        assert_eq!(later.await.ok(), Some(8));
    }

    #[test]
    fn grpc_timeouts_parse_by_unit() {
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(parse_grpc_timeout("3M"), Some(Duration::from_secs(180)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("9n"), Some(Duration::from_nanos(9)));
        for bad in ["", "S", "5", "5s", "-5S", "123456789S", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn the_deadline_ends_before_the_clients() {
        let mut metadata = MetadataMap::new();
        assert!(call_deadline(&metadata).is_none());
        metadata.insert("grpc-timeout", "1000m".parse().unwrap());
        let deadline = call_deadline(&metadata).unwrap();
        let left = deadline - Instant::now();
        assert!(
            left <= Duration::from_millis(990) && left > Duration::from_millis(900),
            "{left:?}"
        );
    }
}
