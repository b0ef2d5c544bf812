use std::sync::Arc;

use tower::Layer;

use super::{ConcurrencyLimit, InFlight, LimitConfig, LimitMode};
use crate::error::Error;

/// Applies [`ConcurrencyLimit`]. Every service this layer makes shares one cap.
#[derive(Debug, Clone)]
pub struct ConcurrencyLimitLayer {
    slots: Arc<InFlight>,
}

impl ConcurrencyLimitLayer {
    /// At most `max` requests in flight; at the cap, `mode` decides. A cap of 0 is a
    /// configuration error.
    pub fn new(max: usize, mode: LimitMode) -> Result<Self, Error> {
        Ok(ConcurrencyLimitLayer {
            slots: Arc::new(InFlight::new(max, mode)?),
        })
    }

    /// The cap and mode of `config`.
    pub fn from_config(config: LimitConfig) -> Result<Self, Error> {
        ConcurrencyLimitLayer::new(config.max_in_flight, config.mode)
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.slots.max()
    }

    /// Slots free right now, over every service this layer made.
    pub fn available(&self) -> usize {
        self.slots.available()
    }
}

impl<S> Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimit::with_slots(inner, Arc::clone(&self.slots))
    }
}
