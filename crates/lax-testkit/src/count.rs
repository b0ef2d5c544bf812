//! Counting a fault test's messages by id: what was acked, what the stream stored, what was
//! lost (acked but not stored) and what was duplicated (stored more than once).

use std::{
    collections::HashMap,
    fmt,
    time::{Duration, Instant},
};

use async_nats::jetstream;

use crate::{TestkitError, wait_for};

/// The figures every fault test prints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Messages the publisher saw acked (or, for fire-and-forget, accepted).
    pub acked: usize,
    /// Messages the stream holds, duplicates included.
    pub stored: usize,
    /// Acked ids the stream does not hold.
    pub lost: usize,
    /// Stored copies beyond the first of each id.
    pub duplicated: usize,
}

impl Counts {
    /// Compares the acked ids with the stored ones (id → copies, from [`stored_ids`]).
    pub fn of<'a>(
        acked: impl IntoIterator<Item = &'a str>,
        stored: &HashMap<String, usize>,
    ) -> Counts {
        let (mut acked_count, mut lost) = (0, 0);
        for id in acked {
            acked_count += 1;
            if !stored.contains_key(id) {
                lost += 1;
            }
        }
        Counts {
            acked: acked_count,
            stored: stored.values().sum(),
            lost,
            duplicated: stored.values().map(|copies| copies - 1).sum(),
        }
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "acked {} stored {} lost {} duplicated {}",
            self.acked, self.stored, self.lost, self.duplicated
        )
    }
}

/// Every message id in `stream` (the value of header `id_header`) with how often it is
/// stored, read message by message from the stream's leader. Each read is asked again
/// through an election until `timeout` has passed for the whole stream.
///
/// # Errors
///
/// [`TestkitError::Timeout`] when the stream or one of its messages cannot be read in time;
/// [`TestkitError::Nats`] for a message without the id header.
pub async fn stored_ids(
    js: &jetstream::Context,
    stream: &str,
    id_header: &str,
    timeout: Duration,
) -> Result<HashMap<String, usize>, TestkitError> {
    let deadline = Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
    let timed_out = |what: String| TestkitError::Timeout {
        what,
        after: timeout,
        last_observation: None,
    };
    let handle = wait_for(left(), || async { js.get_stream(stream).await.ok() })
        .await
        .map_err(|_| timed_out(format!("stream {stream} to answer its info")))?;
    let state = &handle.cached_info().state;
    let mut ids = HashMap::new();
    if state.messages == 0 {
        return Ok(ids);
    }
    for sequence in state.first_sequence..=state.last_sequence {
        let message = wait_for(left(), || async {
            handle.get_raw_message(sequence).await.ok()
        })
        .await
        .map_err(|_| timed_out(format!("message {sequence} of stream {stream}")))?;
        let id = message
            .headers
            .get(id_header)
            .map(|value| value.as_str().to_owned())
            .ok_or_else(|| {
                TestkitError::nats(
                    format!("reading stream {stream}"),
                    format!("message {sequence} has no {id_header} header"),
                )
            })?;
        *ids.entry(id).or_insert(0) += 1;
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_lost_and_duplicated_ids() {
        let stored = HashMap::from([
            ("a".to_owned(), 1),
            ("b".to_owned(), 3),
            ("x".to_owned(), 1),
        ]);
        let counts = Counts::of(["a", "b", "c"], &stored);
        assert_eq!(
            counts,
            Counts {
                acked: 3,
                stored: 5,
                lost: 1,
                duplicated: 2
            }
        );
        assert_eq!(counts.to_string(), "acked 3 stored 5 lost 1 duplicated 2");
    }
}
