//! A circuit breaker: stop calling a path that keeps failing, try it again after a rest.
//!
//! States, shared by every clone of one [`CircuitBreaker`] (and every service made by one
//! [`CircuitBreakerLayer`]):
//!
//! - **closed**: requests pass; `failure_threshold` consecutive failures that
//!   [trip the breaker](crate::Error::trips_breaker) (timeouts, unreachable servers, internal
//!   errors — never invalid input or refusals) open it. A failure the server reports as
//!   [transient](crate::Error::is_transient) (a stream-leader election behind the broker) is
//!   not a dead path: such failures count only once they have gone on, with no success
//!   between, for longer than `transient_grace` (longer than any election should last), so
//!   an election never opens the breaker and a cluster that stays leaderless still does;
//! - **open**: requests fail at once with [`CircuitOpen`](error::CircuitOpen), without calling
//!   or even polling the inner service; after `open_timeout` the next request finds it
//!   half-open;
//! - **half-open**: `half_open_trials` requests pass as trials; when they all succeed the
//!   breaker closes, on the first failure it opens again. Others fail fast meanwhile.
//!
//! A [`BreakerHandle`] reads the state. Every transition is logged with `tracing` and
//! reported as the gauge `{prefix}_circuit_breaker_path_state{path}` (0 closed, 1 open,
//! 2 half-open); each opening counts in `{prefix}_circuit_breaker_path_trips_total{path}`.
//! The unlabelled `{prefix}_circuit_breaker_state` and `{prefix}_circuit_breaker_trips_total`
//! that existing dashboards read cover every breaker of a stack: the most restrictive state
//! (open, else half-open, else closed) and every trip.
//!
//! ```
//! use lax_core::{Error, PublishRequest, PublisherService, Route};
//! use lax_core::breaker::{BreakerConfig, BreakerState, CircuitBreakerLayer, error::CircuitOpen};
//! use lax_core::testing::{Outcome, ScriptedPublisher};
//! use tower::{Layer, ServiceExt};
//!
//! # tokio_test::block_on(async {
//! let config = BreakerConfig::default().failure_threshold(2);
//! let layer = CircuitBreakerLayer::new("broker", config)?;
//! let publisher = ScriptedPublisher::new(Route::Broker);
//! publisher.push_n(2, || Outcome::Fail(Error::unavailable("down")));
//! let service = layer.layer(PublisherService::new(publisher.clone()));
//! for _ in 0..2 {
//!     service.clone().oneshot(PublishRequest::new("a.b", "x")).await.unwrap_err();
//! }
//! assert_eq!(layer.handle().state(), BreakerState::Open);
//! let err = service.oneshot(PublishRequest::new("a.b", "x")).await.unwrap_err();
//! assert!(err.is::<CircuitOpen>());
//! assert_eq!(publisher.calls(), 2); // the third never reached the publisher
//! # Ok::<(), Error>(())
//! # }).unwrap();
//! ```

pub mod error;
pub mod future;
pub(crate) mod gauge;
mod layer;
mod state;

use std::{
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tower::Service;

pub use self::layer::CircuitBreakerLayer;
pub(crate) use self::state::{Admission, Shared};
pub use self::state::{BreakerHandle, BreakerState};
use crate::error::{BoxError, Error};

/// When a [`CircuitBreaker`] opens, how long it rests, and how it tests the path again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BreakerConfig {
    /// Consecutive counted failures that open a closed breaker (≥ 1).
    pub failure_threshold: u32,
    /// How long the breaker stays open before it admits trials.
    pub open_timeout: Duration,
    /// Trial requests admitted while half-open; all must succeed to close (≥ 1).
    pub half_open_trials: u32,
    /// How long [transient](crate::Error::is_transient) failures (with no success between)
    /// are tolerated before they count like any other; they fail a half-open trial at once.
    pub transient_grace: Duration,
}

impl BreakerConfig {
    /// The contract's `circuit_breaker_threshold`: 10 failures.
    pub const DEFAULT_FAILURE_THRESHOLD: u32 = 10;
    /// The contract's `circuit_breaker_timeout`: 30 s.
    pub const DEFAULT_OPEN_TIMEOUT: Duration = Duration::from_secs(30);
    /// The contract's half-open trial requests: 3.
    pub const DEFAULT_HALF_OPEN_TRIALS: u32 = 3;
    /// 15 s: a JetStream election takes 4–9 s after the leader stops answering, and the first
    /// transient answer comes one attempt (5 s) after that at the latest.
    pub const DEFAULT_TRANSIENT_GRACE: Duration = Duration::from_secs(15);

    /// Sets the consecutive counted failures that open a closed breaker.
    pub fn failure_threshold(mut self, failure_threshold: u32) -> Self {
        self.failure_threshold = failure_threshold;
        self
    }

    /// Sets how long the breaker stays open before it admits trials.
    pub fn open_timeout(mut self, open_timeout: Duration) -> Self {
        self.open_timeout = open_timeout;
        self
    }

    /// Sets the trial requests admitted while half-open.
    pub fn half_open_trials(mut self, half_open_trials: u32) -> Self {
        self.half_open_trials = half_open_trials;
        self
    }

    /// Sets how long transient failures are tolerated before they count.
    pub fn transient_grace(mut self, transient_grace: Duration) -> Self {
        self.transient_grace = transient_grace;
        self
    }

    /// Refuses a zero threshold or zero trials.
    pub fn validate(&self) -> Result<(), Error> {
        if self.failure_threshold == 0 {
            return Err(Error::config(
                "the breaker's failure threshold must be at least 1",
            ));
        }
        if self.half_open_trials == 0 {
            return Err(Error::config(
                "the breaker's half-open trials must be at least 1",
            ));
        }
        Ok(())
    }
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            failure_threshold: Self::DEFAULT_FAILURE_THRESHOLD,
            open_timeout: Self::DEFAULT_OPEN_TIMEOUT,
            half_open_trials: Self::DEFAULT_HALF_OPEN_TRIALS,
            transient_grace: Self::DEFAULT_TRANSIENT_GRACE,
        }
    }
}

/// Fails fast while the path is failing; see the [module docs](self). Made by
/// [`CircuitBreakerLayer`].
#[derive(Debug)]
pub struct CircuitBreaker<S> {
    inner: S,
    shared: Arc<Shared>,
    admission: Option<Admission>,
}

impl<S> CircuitBreaker<S> {
    pub(crate) fn with_shared(inner: S, shared: Arc<Shared>) -> Self {
        CircuitBreaker {
            inner,
            shared,
            admission: None,
        }
    }

    /// A handle to read this breaker's state.
    pub fn handle(&self) -> BreakerHandle {
        BreakerHandle::new(Arc::clone(&self.shared))
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

impl<S: Clone> Clone for CircuitBreaker<S> {
    /// A clone shares the circuit but not the admission this one may hold for its next call.
    fn clone(&self) -> Self {
        CircuitBreaker::with_shared(self.inner.clone(), Arc::clone(&self.shared))
    }
}

impl<S, Req> Service<Req> for CircuitBreaker<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = future::ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        let admission = self.admission.get_or_insert_with(|| self.shared.admit());
        if matches!(admission, Admission::Rejected) {
            // Ready to fail fast: the inner service is not asked.
            return Poll::Ready(Ok(()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(Err(e)) => {
                self.admission = None;
                Poll::Ready(Err(e.into()))
            }
            other => other.map_err(Into::into),
        }
    }

    fn call(&mut self, request: Req) -> Self::Future {
        match self.admission.take() {
            Some(Admission::Rejected) => future::ResponseFuture::rejected(self.shared.name()),
            Some(admission) => future::ResponseFuture::called(
                self.inner.call(request),
                Arc::clone(&self.shared),
                admission,
            ),
            None => future::ResponseFuture::not_ready(),
        }
    }
}

#[cfg(test)]
mod tests;
