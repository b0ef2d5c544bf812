use tower::Layer;

use super::{Retry, RetryConfig, RetryPolicy};
use crate::error::Error;

/// Applies [`Retry`].
#[derive(Debug, Clone)]
pub struct RetryLayer {
    policy: RetryPolicy,
}

impl RetryLayer {
    /// Retries by `config`; an invalid config is a [`Config`](crate::ErrorKind::Config) error.
    pub fn new(config: RetryConfig) -> Result<Self, Error> {
        Ok(RetryLayer {
            policy: RetryPolicy::new(config)?,
        })
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Retry::with_policy(inner, self.policy.clone())
    }
}
