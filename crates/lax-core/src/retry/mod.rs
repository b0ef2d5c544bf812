//! Retries with exponential backoff and jitter, safe because every attempt is the same
//! message.
//!
//! [`Retry`] is tower's [`tower::retry::Retry`] driven by [`RetryPolicy`]:
//!
//! - **what** is retried: only errors the classification calls
//!   [retryable](crate::Error::is_retryable) — timeouts, unreachable servers, a full broker.
//!   Invalid input, refusals, an open circuit and a closed publisher fail at once;
//! - **how often**: `max_attempts` attempts in all, the first included (the contract's
//!   `retry_attempts 3` means three attempts: the first and up to two retries, as in the
//!   existing SDK where `retry_attempts=1` means no retry). A message may ask for its own
//!   number with `options.retry_attempts` (0 is taken as 1);
//! - **when**: the *n*-th retry waits `first_delay × multiplierⁿ⁻¹`, capped at `max_delay`,
//!   shortened by up to `jitter` of itself at random so that clients do not retry in step
//!   (defaults 0.1 s, ×2, 5 s, jitter ½: 0.1 s then 0.2 s before jitter);
//! - **until when**: the request's [deadline](crate::PublishRequest::deadline) bounds the
//!   whole publish, retries included. A request without one gets it when the publish starts,
//!   from its own timeout, else the configured `deadline`. No retry starts whose backoff would
//!   end past it. Retry runs no timer of its own for it: every attempt carries the deadline
//!   down to what ends it, the [`Timeout`](crate::timeout::Timeout) layer (as in the default
//!   stack, where an attempt still running at the deadline fails with
//!   [`Elapsed`](crate::timeout::error::Elapsed)) and the transport (the gRPC call's deadline).
//!   Over a service that reads neither, put a [`TimeoutLayer`](crate::timeout::TimeoutLayer)
//!   under the retry.
//!
//! Every attempt sends a clone of the original request, so the message id (the JetStream
//! de-duplication key) is the same on every attempt. The clone is kept before each attempt
//! (tower's retry protocol); a [`PublishRequest`](crate::PublishRequest) clone copies no
//! bytes, only reference counts.
//!
//! ```
//! use lax_core::{Error, PublishRequest, PublisherService, Route, Tier};
//! use lax_core::retry::{RetryConfig, RetryLayer};
//! use lax_core::testing::{Outcome, ScriptedPublisher};
//! use tower::{Layer, ServiceExt};
//!
//! # tokio_test::block_on(async {
//! let publisher = ScriptedPublisher::new(Route::Broker);
//! publisher.push(Outcome::Fail(Error::unavailable("connection reset")));
//! let layer = RetryLayer::new(RetryConfig::default())?;
//! let service = layer.layer(PublisherService::new(publisher.clone()));
//! let request = PublishRequest::new("orders.created", "{}").with_tier(Tier::Persistent);
//! let id = request.message_id.clone();
//! assert_eq!(service.oneshot(request).await.unwrap().message_id, id);
//! assert_eq!(publisher.calls(), 2);
//! assert!(publisher.received().iter().all(|r| r.message_id == id));
//! # Ok::<(), Error>(())
//! # }).unwrap();
//! ```

pub mod future;
mod layer;
mod policy;

use std::{
    task::{Context, Poll},
    time::Duration,
};

use tower::Service;

pub use self::layer::RetryLayer;
pub use self::policy::{ClassifyError, RetryPolicy, RetryRequest};
use crate::error::{BoxError, Error};

/// The backoff schedule and limits of [`Retry`].
///
/// Start from the contract's defaults and change what you need:
///
/// ```
/// use std::time::Duration;
/// use lax_core::retry::RetryConfig;
///
/// let config = RetryConfig::default()
///     .max_attempts(5)
///     .first_delay(Duration::from_millis(50))
///     .deadline(Duration::from_secs(10));
/// assert_eq!(config.max_attempts, 5);
/// assert_eq!(config.deadline, Some(Duration::from_secs(10)));
/// assert!(config.validate().is_ok());
/// assert!(config.max_attempts(0).validate().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct RetryConfig {
    /// Attempts in all, the first included (≥ 1; 1 = no retry).
    pub max_attempts: u32,
    /// The wait before the first retry.
    pub first_delay: Duration,
    /// Each wait is this many times the previous one (≥ 1).
    pub multiplier: f64,
    /// No wait is longer.
    pub max_delay: Duration,
    /// Each wait is shortened by a random fraction of itself up to this (0 to 1; 0 = exact
    /// schedule).
    pub jitter: f64,
    /// Bounds a whole publish, retries included, when the message carries no timeout of its
    /// own; `None` leaves it bounded by the attempts alone.
    pub deadline: Option<Duration>,
}

impl RetryConfig {
    /// The contract's `retry_attempts`: 3 attempts.
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
    /// The contract's first delay: 0.1 s.
    pub const DEFAULT_FIRST_DELAY: Duration = Duration::from_millis(100);
    /// The contract's multiplier: 2.
    pub const DEFAULT_MULTIPLIER: f64 = 2.0;
    /// The contract's maximum delay: 5 s.
    pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(5);
    /// Half of each wait may be cut at random.
    pub const DEFAULT_JITTER: f64 = 0.5;

    /// Sets the attempts in all, the first included (1 = no retry).
    pub fn max_attempts(mut self, max_attempts: u32) -> Self {
        self.max_attempts = max_attempts;
        self
    }

    /// Sets the wait before the first retry.
    pub fn first_delay(mut self, first_delay: Duration) -> Self {
        self.first_delay = first_delay;
        self
    }

    /// Sets how many times longer each wait is than the previous one.
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// Sets the longest wait.
    pub fn max_delay(mut self, max_delay: Duration) -> Self {
        self.max_delay = max_delay;
        self
    }

    /// Sets the random fraction (0 to 1) each wait may be shortened by.
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// Sets the bound on a whole publish, retries included (`None`: the attempts alone).
    pub fn deadline(mut self, deadline: impl Into<Option<Duration>>) -> Self {
        self.deadline = deadline.into();
        self
    }

    /// Refuses zero attempts, a multiplier below 1, jitter outside 0..=1 and a first delay
    /// longer than the maximum.
    pub fn validate(&self) -> Result<(), Error> {
        if self.max_attempts == 0 {
            return Err(Error::config("retry max_attempts must be at least 1"));
        }
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(Error::config(format!(
                "retry multiplier must be a number ≥ 1, got {}",
                self.multiplier
            )));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(Error::config(format!(
                "retry jitter must be between 0 and 1, got {}",
                self.jitter
            )));
        }
        if self.first_delay > self.max_delay {
            return Err(Error::config(format!(
                "retry first_delay {:?} is longer than max_delay {:?}",
                self.first_delay, self.max_delay
            )));
        }
        Ok(())
    }
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            first_delay: Self::DEFAULT_FIRST_DELAY,
            multiplier: Self::DEFAULT_MULTIPLIER,
            max_delay: Self::DEFAULT_MAX_DELAY,
            jitter: Self::DEFAULT_JITTER,
            deadline: None,
        }
    }
}

/// Retries failed requests; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Retry<S> {
    inner: S,
    policy: RetryPolicy,
}

impl<S> Retry<S> {
    /// Retries `inner` by `config`; an invalid config is a
    /// [`Config`](crate::ErrorKind::Config) error.
    pub fn new(inner: S, config: RetryConfig) -> Result<Self, Error> {
        Ok(Retry::with_policy(inner, RetryPolicy::new(config)?))
    }

    pub(crate) fn with_policy(inner: S, policy: RetryPolicy) -> Self {
        Retry { inner, policy }
    }

    /// The policy every request starts from.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, Req> Service<Req> for Retry<S>
where
    S: Service<Req> + Clone,
    S::Error: ClassifyError + std::fmt::Display + Into<BoxError>,
    Req: RetryRequest,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = future::ResponseFuture<S, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut request: Req) -> Self::Future {
        // Each request gets a policy of its own: its attempt count, limit and deadline.
        let policy = self.policy.for_request(&mut request);
        // The instance polled ready makes the first attempt; this service keeps a clone.
        let clone = self.inner.clone();
        let ready = std::mem::replace(&mut self.inner, clone);
        future::ResponseFuture::new(tower::retry::Retry::new(policy, ready).call(request))
    }
}

#[cfg(test)]
mod tests;
