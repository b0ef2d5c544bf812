//! Test helper: what a `DebuggingRecorder` holds, looked up by name and labels.

use metrics_util::{
    CompositeKey, MetricKind,
    debugging::{DebugValue, Snapshotter},
};

/// One snapshot (taking it resets the recorder's counters).
pub(crate) struct Recorded(pub(crate) Vec<(CompositeKey, DebugValue)>);

impl Recorded {
    pub(crate) fn take(snapshotter: &Snapshotter) -> Self {
        Recorded(
            snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .map(|(key, _, _, value)| (key, value))
                .collect(),
        )
    }

    fn find(&self, kind: MetricKind, name: &str, labels: &[(&str, &str)]) -> &DebugValue {
        self.0
            .iter()
            .find(|(key, _)| {
                key.kind() == kind
                    && key.key().name() == name
                    && key.key().labels().count() == labels.len()
                    && labels.iter().all(|(k, v)| {
                        key.key()
                            .labels()
                            .any(|label| label.key() == *k && label.value() == *v)
                    })
            })
            .map(|(_, value)| value)
            .unwrap_or_else(|| panic!("no {name} {labels:?}"))
    }

    pub(crate) fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        match self.find(MetricKind::Counter, name, labels) {
            DebugValue::Counter(n) => *n,
            other => panic!("{name} is {other:?}"),
        }
    }

    pub(crate) fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        match self.find(MetricKind::Gauge, name, labels) {
            DebugValue::Gauge(v) => v.0,
            other => panic!("{name} is {other:?}"),
        }
    }

    pub(crate) fn samples(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        match self.find(MetricKind::Histogram, name, labels) {
            DebugValue::Histogram(samples) => samples.iter().map(|s| s.0).collect(),
            other => panic!("{name} is {other:?}"),
        }
    }

    /// Every counter and histogram sample, added up.
    pub(crate) fn total(&self) -> u64 {
        self.0
            .iter()
            .map(|(_, value)| match value {
                DebugValue::Counter(n) => *n,
                DebugValue::Histogram(samples) => samples.len() as u64,
                DebugValue::Gauge(_) => 0,
            })
            .sum()
    }
}
