//! [`RetryPolicy`]: tower's retry [`Policy`] for LAX publishes.
//!
//! tower's `ExponentialBackoffMaker` doubles each wait and adds jitter *on top*; the contract
//! asks for a configurable multiplier, and jitter that never makes a wait longer than its
//! schedule, so the schedule is computed here.

use std::time::Duration;

use tokio::time::{Instant, Sleep};
use tower::retry::Policy;

use super::RetryConfig;
use crate::{
    error::{BoxError, Error},
    message::PublishRequest,
    timeout::RequestTimeout,
};

/// A request [`Retry`](super::Retry) can resend: cloneable (cheaply: a copy is kept for the
/// next attempt before each one), maybe with its own timeout, deadline and number of
/// attempts.
pub trait RetryRequest: Clone + RequestTimeout {
    /// The attempts this request asks for (1 = no retry), if any.
    fn retry_attempts(&self) -> Option<u32>;
}

impl RetryRequest for PublishRequest {
    fn retry_attempts(&self) -> Option<u32> {
        self.options.retry_attempts
    }
}

/// An error whose classification the retry policy reads.
pub trait ClassifyError {
    /// Worth another attempt with the same message id ([`Error::is_retryable`]).
    fn is_retryable(&self) -> bool;
}

impl ClassifyError for Error {
    fn is_retryable(&self) -> bool {
        Error::is_retryable(self)
    }
}

impl ClassifyError for BoxError {
    fn is_retryable(&self) -> bool {
        Error::classify(self.as_ref()).0.is_retryable()
    }
}

/// The retry decisions for one request: how many attempts it has made, may make, and until
/// when. [`Retry`](super::Retry) makes one per request from its template with
/// [`for_request`](Self::for_request).
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    config: RetryConfig,
    attempts: u32,
    max_attempts: u32,
    deadline: Option<Instant>,
}

impl RetryPolicy {
    /// A template policy; an invalid config is a [`Config`](crate::ErrorKind::Config) error.
    pub fn new(config: RetryConfig) -> Result<Self, Error> {
        config.validate()?;
        Ok(RetryPolicy {
            config,
            attempts: 0,
            max_attempts: config.max_attempts,
            deadline: None,
        })
    }

    /// The policy of one request starting now: its own attempts, else the configured ones,
    /// and its deadline. A request without a deadline gets one here, from its own timeout
    /// else the configured `deadline`, so that every attempt carries it down to the timeout
    /// layer and the transport.
    pub fn for_request<Req: RetryRequest>(&self, request: &mut Req) -> Self {
        let max_attempts = request
            .retry_attempts()
            .unwrap_or(self.config.max_attempts)
            .max(1);
        let deadline = request.deadline().or_else(|| {
            let deadline = Instant::now() + request.timeout().or(self.config.deadline)?;
            request.set_deadline(deadline);
            Some(deadline)
        });
        RetryPolicy {
            config: self.config,
            attempts: 0,
            max_attempts,
            deadline,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &RetryConfig {
        &self.config
    }

    /// Attempts that have failed so far.
    pub fn failed_attempts(&self) -> u32 {
        self.attempts
    }

    /// Attempts allowed in all.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// When the publish must be over, if bounded.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// The wait before retry number `retry` (1 for the first), before jitter.
    pub fn scheduled_delay(&self, retry: u32) -> Duration {
        let RetryConfig {
            first_delay,
            multiplier,
            max_delay,
            ..
        } = self.config;
        let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
        let secs = first_delay.as_secs_f64() * multiplier.powi(exponent);
        // An overflowing product is simply "longer than max_delay".
        Duration::try_from_secs_f64(secs).map_or(max_delay, |delay| delay.min(max_delay))
    }

    fn jittered(&self, delay: Duration) -> Duration {
        if self.config.jitter == 0.0 {
            return delay;
        }
        // rand::random is in [0, 1): the wait stays within [delay × (1 − jitter), delay].
        let cut = self.config.jitter * rand::random::<f64>();
        delay.mul_f64(1.0 - cut)
    }
}

impl<Req, Res, E> Policy<Req, Res, E> for RetryPolicy
where
    Req: RetryRequest,
    E: ClassifyError + std::fmt::Display,
{
    type Future = Sleep;

    /// Called after every attempt: each one is a `lax.publish.attempt` event (inside the
    /// `lax.publish` span when the publish runs in one, which also records `attempts`).
    fn retry(&mut self, _request: &mut Req, result: &mut Result<Res, E>) -> Option<Sleep> {
        let attempt = self.attempts + 1;
        tracing::Span::current().record("attempts", attempt);
        let Err(error) = result else {
            tracing::debug!(name: "lax.publish.attempt", attempt, outcome = "ok");
            return None;
        };
        self.attempts = attempt;
        let retryable = error.is_retryable();
        if attempt >= self.max_attempts || !retryable {
            tracing::debug!(name: "lax.publish.attempt", attempt, outcome = "error", %error, retryable, "giving up");
            return None;
        }
        let delay = self.jittered(self.scheduled_delay(attempt));
        let wake = Instant::now() + delay;
        if self.deadline.is_some_and(|deadline| wake >= deadline) {
            tracing::debug!(
                name: "lax.publish.attempt",
                attempt,
                outcome = "error",
                %error,
                retryable,
                "giving up: the backoff would end past the publish deadline"
            );
            return None;
        }
        tracing::debug!(name: "lax.publish.attempt", attempt, outcome = "error", %error, retryable, ?delay, "retrying");
        Some(tokio::time::sleep_until(wake))
    }

    fn clone_request(&mut self, request: &Req) -> Option<Req> {
        // Only worth a copy when another attempt may follow this one.
        (self.attempts + 1 < self.max_attempts).then(|| request.clone())
    }
}
