//! The breaker series existing dashboards read: one unlabelled state gauge and trips counter
//! for all the breakers of a stack, beside each breaker's own `path`-labelled pair.

use std::sync::Mutex;

use metrics::{Counter, Gauge};

use super::BreakerState;

/// `{prefix}_circuit_breaker_state` and `{prefix}_circuit_breaker_trips_total`, without
/// labels, as the Python SDK (one breaker) reported them. Shared by the breakers of one stack:
/// the gauge shows the most restrictive of their states (open, else half-open, else closed)
/// and the counter every trip of any of them.
#[derive(Debug)]
pub(crate) struct OverallState {
    gauge: Gauge,
    trips: Counter,
    /// The state of each breaker that joined, by the slot [`join`](Self::join) gave it.
    states: Mutex<Vec<BreakerState>>,
}

impl OverallState {
    /// Registers the two series under `prefix` with the recorder installed now.
    pub(crate) fn new(prefix: &str) -> Self {
        let gauge = metrics::gauge!(format!("{prefix}_circuit_breaker_state"));
        gauge.set(BreakerState::Closed.as_gauge());
        OverallState {
            gauge,
            trips: metrics::counter!(format!("{prefix}_circuit_breaker_trips_total")),
            states: Mutex::new(Vec::new()),
        }
    }

    /// Adds a closed breaker; returns its slot.
    pub(crate) fn join(&self) -> usize {
        let mut states = self.states();
        states.push(BreakerState::Closed);
        states.len() - 1
    }

    /// Records that the breaker in `slot` moved to `to`.
    pub(crate) fn set(&self, slot: usize, to: BreakerState) {
        let mut states = self.states();
        if let Some(state) = states.get_mut(slot) {
            *state = to;
        }
        if to == BreakerState::Open {
            self.trips.increment(1);
        }
        let overall = states
            .iter()
            .copied()
            .max_by_key(|state| match state {
                BreakerState::Closed => 0,
                BreakerState::HalfOpen => 1,
                BreakerState::Open => 2,
            })
            .unwrap_or(BreakerState::Closed);
        self.gauge.set(overall.as_gauge());
    }

    fn states(&self) -> std::sync::MutexGuard<'_, Vec<BreakerState>> {
        // Plain values behind the lock: still usable after a panic elsewhere.
        self.states
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use metrics_util::debugging::DebuggingRecorder;

    use super::*;
    use crate::metrics::recorded::Recorded;

    #[test]
    fn the_gauge_shows_the_most_restrictive_state_and_counts_every_trip() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let overall = metrics::with_local_recorder(&recorder, || OverallState::new("t"));
        let (direct, broker) = (overall.join(), overall.join());
        let read = || {
            let recorded = Recorded::take(&snapshotter);
            (
                recorded.gauge("t_circuit_breaker_state", &[]),
                recorded.counter("t_circuit_breaker_trips_total", &[]),
            )
        };
        assert_eq!(read(), (0.0, 0));
        overall.set(broker, BreakerState::Open);
        assert_eq!(read(), (1.0, 1));
        overall.set(direct, BreakerState::Open);
        overall.set(broker, BreakerState::HalfOpen);
        assert_eq!(read(), (1.0, 1), "direct is still open");
        overall.set(direct, BreakerState::Closed);
        assert_eq!(read(), (2.0, 0));
        overall.set(broker, BreakerState::Closed);
        assert_eq!(read(), (0.0, 0));
    }
}
