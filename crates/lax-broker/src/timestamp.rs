//! Conversions between JetStream's times and protobuf's.

use std::time::Duration;

use time::OffsetDateTime;

/// A JetStream time as a protobuf timestamp.
pub(crate) fn from_datetime(at: OffsetDateTime) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.unix_timestamp(),
        nanos: i32::try_from(at.nanosecond()).unwrap_or(0),
    }
}

/// A protobuf timestamp as a JetStream time; `None` when out of range.
pub(crate) fn to_datetime(at: &prost_types::Timestamp) -> Option<OffsetDateTime> {
    let nanos = i128::from(at.seconds) * 1_000_000_000 + i128::from(at.nanos);
    OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
}

/// A protobuf duration as a std duration; `None` when negative.
pub(crate) fn to_duration(duration: &prost_types::Duration) -> Option<Duration> {
    Duration::try_from(*duration).ok()
}

/// A std duration as a protobuf duration (saturating at its maximum).
pub(crate) fn from_duration(duration: Duration) -> prost_types::Duration {
    prost_types::Duration::try_from(duration).unwrap_or(prost_types::Duration {
        seconds: i64::MAX,
        nanos: 999_999_999,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let at = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        assert_eq!(to_datetime(&from_datetime(at)), Some(at));
        let d = Duration::from_millis(1500);
        assert_eq!(to_duration(&from_duration(d)), Some(d));
        assert_eq!(
            to_duration(&prost_types::Duration {
                seconds: -1,
                nanos: 0
            }),
            None
        );
    }
}
