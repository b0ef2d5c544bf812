use std::sync::Arc;

use tower::Layer;

use super::{DEFAULT_PREFIX, Handles, Metrics};

/// Applies [`Metrics`]. The handles are registered once, when the layer is made, and shared
/// by every service it makes.
#[derive(Debug, Clone)]
pub struct MetricsLayer {
    handles: Arc<Handles>,
}

impl MetricsLayer {
    /// Metrics named `{prefix}_…`, registered with the recorder installed now.
    pub fn new(prefix: &str) -> Self {
        MetricsLayer::with_clock(prefix, quanta::Clock::new())
    }

    /// Like [`new`](Self::new), measuring latency with `clock` (a mock one in tests).
    pub(crate) fn with_clock(prefix: &str, clock: quanta::Clock) -> Self {
        MetricsLayer {
            handles: Arc::new(Handles::register(prefix, clock)),
        }
    }
}

impl Default for MetricsLayer {
    /// Metrics under the default prefix `lax_client`.
    fn default() -> Self {
        MetricsLayer::new(DEFAULT_PREFIX)
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = Metrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Metrics::with_handles(inner, Arc::clone(&self.handles))
    }
}
