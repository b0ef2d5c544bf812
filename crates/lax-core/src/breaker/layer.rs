use std::sync::Arc;

use tower::Layer;

use super::{BreakerConfig, BreakerHandle, CircuitBreaker, gauge::OverallState, state::Shared};
use crate::{error::Error, metrics::DEFAULT_PREFIX};

/// Applies [`CircuitBreaker`]. Every service this layer makes shares **one** circuit, so a
/// path served by several clones or pool members trips as one.
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer {
    shared: Arc<Shared>,
}

impl CircuitBreakerLayer {
    /// A breaker for `path` (the `path` metric label and the name in
    /// [`CircuitOpen`](super::error::CircuitOpen)), with metrics under the default prefix
    /// `lax_client`. An invalid `config` is an [`ErrorKind::Config`](crate::ErrorKind::Config)
    /// error.
    pub fn new(path: &'static str, config: BreakerConfig) -> Result<Self, Error> {
        CircuitBreakerLayer::with_metrics_prefix(path, config, DEFAULT_PREFIX)
    }

    /// Like [`new`](Self::new), with metric names under `prefix`.
    pub fn with_metrics_prefix(
        path: &'static str,
        config: BreakerConfig,
        prefix: &str,
    ) -> Result<Self, Error> {
        let overall = Arc::new(OverallState::new(prefix));
        CircuitBreakerLayer::sharing_overall_state(path, config, prefix, overall)
    }

    /// Like [`with_metrics_prefix`](Self::with_metrics_prefix), reporting into the
    /// unlabelled series `overall` that other breakers of the same stack report into too.
    pub(crate) fn sharing_overall_state(
        path: &'static str,
        config: BreakerConfig,
        prefix: &str,
        overall: Arc<OverallState>,
    ) -> Result<Self, Error> {
        config.validate()?;
        Ok(CircuitBreakerLayer {
            shared: Arc::new(Shared::new(path, config, prefix, overall)),
        })
    }

    /// A handle to read the circuit's state.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle::new(Arc::clone(&self.shared))
    }
}

impl<S> Layer<S> for CircuitBreakerLayer {
    type Service = CircuitBreaker<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreaker::with_shared(inner, Arc::clone(&self.shared))
    }
}
