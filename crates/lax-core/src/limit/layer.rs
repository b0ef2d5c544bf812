use std::sync::Arc;

use tokio::sync::Semaphore;
use tower::Layer;

use super::{ConcurrencyLimit, LimitConfig, LimitMode, check_max};
use crate::error::Error;

/// Applies [`ConcurrencyLimit`]. Every service this layer makes shares one cap.
#[derive(Debug, Clone)]
pub struct ConcurrencyLimitLayer {
    semaphore: Arc<Semaphore>,
    max: usize,
    mode: LimitMode,
}

impl ConcurrencyLimitLayer {
    /// At most `max` requests in flight; at the cap, `mode` decides. A cap of 0 is a
    /// configuration error.
    pub fn new(max: usize, mode: LimitMode) -> Result<Self, Error> {
        Ok(ConcurrencyLimitLayer {
            semaphore: Arc::new(Semaphore::new(check_max(max)?)),
            max,
            mode,
        })
    }

    /// The cap and mode of `config`.
    pub fn from_config(config: LimitConfig) -> Result<Self, Error> {
        ConcurrencyLimitLayer::new(config.max_in_flight, config.mode)
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimit::with_semaphore(inner, Arc::clone(&self.semaphore), self.max, self.mode)
    }
}
