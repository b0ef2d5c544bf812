use std::time::Duration;

use tower::Layer;

use super::Timeout;

/// Applies [`Timeout`] with a default for requests that carry no timeout of their own.
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    default: Duration,
}

impl TimeoutLayer {
    /// Requests without a timeout of their own get `default`.
    pub fn new(default: Duration) -> Self {
        TimeoutLayer { default }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Timeout::new(inner, self.default)
    }
}
