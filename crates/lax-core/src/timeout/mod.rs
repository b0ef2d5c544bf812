//! A timeout that honours each request's own timeout and deadline.
//!
//! [`Timeout`] gives every request (every attempt, under [`Retry`](crate::retry::Retry)) the
//! timeout it carries ([`RequestTimeout`]; for a [`PublishRequest`] that is
//! `options.timeout`), else the layer's default, and ends it at the request's
//! [deadline](PublishRequest::deadline) at the latest: the one deadline of the whole publish,
//! read here rather than measured again. It fails with [`Elapsed`](error::Elapsed) when the
//! time runs out. A publish that timed out may still have been stored.
//!
//! The timeout covers the wait for the inner service to become ready as well: [`Timeout`] is
//! always ready and calls the inner service with
//! [`call_when_ready`], so a transport that is not ready waits
//! inside the request's own future, under its deadline (tower's `Timeout` waits in
//! `poll_ready`, outside any deadline). The inner service must therefore be cheap to clone.
//!
//! The clock starts when the request first has to wait (the first poll of its response
//! future that finds it pending), so an answer that is ready at once never reads the clock or
//! touches the timer.
//!
//! ```
//! use std::time::Duration;
//! use lax_core::{PublishRequest, PublisherService, Route};
//! use lax_core::testing::{Outcome, ScriptedPublisher};
//! use lax_core::timeout::{TimeoutLayer, error::Elapsed};
//! use tower::{Layer, ServiceExt};
//!
//! # tokio_test::block_on(async {
//! let publisher = ScriptedPublisher::new(Route::Direct);
//! publisher.push(Outcome::Delay(Duration::from_secs(60)));
//! let service = TimeoutLayer::new(Duration::from_secs(5)).layer(PublisherService::new(publisher));
//! let request = PublishRequest::new("a.b", "x").with_timeout(Duration::from_millis(10));
//! let err = service.oneshot(request).await.unwrap_err();
//! assert!(err.is::<Elapsed>());
//! # });
//! ```

pub mod error;
pub mod future;
mod layer;

use std::{
    task::{Context, Poll},
    time::Duration,
};

use tokio::time::Instant;
use tower::Service;

pub use self::layer::TimeoutLayer;
use crate::{
    error::BoxError,
    message::PublishRequest,
    ready::{WhenReady, call_when_ready},
};

/// A request that may carry its own timeout and the deadline of the whole operation it is
/// part of.
pub trait RequestTimeout {
    /// The timeout this request asks for, if any.
    fn timeout(&self) -> Option<Duration>;

    /// The instant the whole operation (retries included) must be over by, if fixed.
    fn deadline(&self) -> Option<Instant>;

    /// Fixes the deadline at `deadline` (the first layer that needs one does it once; the
    /// layers below and the transport read it).
    fn set_deadline(&mut self, deadline: Instant);
}

impl RequestTimeout for PublishRequest {
    fn timeout(&self) -> Option<Duration> {
        self.options.timeout
    }

    fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    fn set_deadline(&mut self, deadline: Instant) {
        self.deadline = Some(deadline);
    }
}

/// Fails a request with [`Elapsed`](error::Elapsed) when it takes longer than its own timeout
/// (the default one when it carries none), or runs past its deadline.
#[derive(Debug, Clone)]
pub struct Timeout<S> {
    inner: S,
    default: Duration,
}

impl<S> Timeout<S> {
    /// Wraps `inner`; requests without a timeout of their own get `default`.
    pub fn new(inner: S, default: Duration) -> Self {
        Timeout { inner, default }
    }

    /// The timeout of requests that carry none.
    pub fn default_timeout(&self) -> Duration {
        self.default
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

impl<S, Req> Service<Req> for Timeout<S>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    Req: RequestTimeout,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = future::ResponseFuture<WhenReady<S, Req>>;

    /// Always ready: the inner service's readiness is waited for under the deadline.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    #[inline]
    fn call(&mut self, request: Req) -> Self::Future {
        let after = request.timeout().unwrap_or(self.default);
        let deadline = request.deadline();
        future::ResponseFuture::after_first_wait(
            call_when_ready(&mut self.inner, request),
            after,
            deadline,
        )
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio_test::{assert_pending, assert_ready_err, assert_ready_ok};
    use tower::Layer;
    use tower_test::mock;

    use super::{TimeoutLayer, error::Elapsed};
    use crate::{
        error::{Error, ErrorKind},
        message::{PublishRequest, Receipt},
    };

    type Spawned = mock::Spawn<super::Timeout<mock::Mock<PublishRequest, Receipt>>>;

    fn harness(default: Duration) -> (Spawned, mock::Handle<PublishRequest, Receipt>) {
        let (service, handle) = mock::pair::<PublishRequest, Receipt>();
        (
            mock::Spawn::new(TimeoutLayer::new(default).layer(service)),
            handle,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn per_message_timeout_wins_over_the_default() {
        let (mut service, mut handle) = harness(Duration::from_secs(5));
        assert_ready_ok!(service.poll_ready());
        let request = PublishRequest::new("a.b", "x").with_timeout(Duration::from_millis(100));
        let mut response = tokio_test::task::spawn(service.call(request));
        let (_request, _respond) = handle.next_request().await.unwrap();
        assert_pending!(response.poll());
        tokio::time::advance(Duration::from_millis(99)).await;
        assert_pending!(response.poll());
        tokio::time::advance(Duration::from_millis(1)).await;
        let err = assert_ready_err!(response.poll());
        let elapsed = err.downcast_ref::<Elapsed>().expect("an Elapsed error");
        assert_eq!(elapsed.after(), Duration::from_millis(100));
        assert_eq!(Error::from_boxed(err).kind(), ErrorKind::TimedOut);
    }

    #[tokio::test(start_paused = true)]
    async fn default_applies_without_a_per_message_timeout() {
        let (mut service, mut handle) = harness(Duration::from_secs(5));
        assert_ready_ok!(service.poll_ready());
        let mut response = tokio_test::task::spawn(service.call(PublishRequest::new("a.b", "x")));
        let (_request, _respond) = handle.next_request().await.unwrap();
        // The clock starts at the first poll that has to wait.
        assert_pending!(response.poll());
        tokio::time::advance(Duration::from_millis(4_999)).await;
        assert_pending!(response.poll());
        tokio::time::advance(Duration::from_millis(1)).await;
        let err = assert_ready_err!(response.poll());
        assert_eq!(
            err.downcast_ref::<Elapsed>().unwrap().after(),
            Duration::from_secs(5)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_request_deadline_ends_the_attempt_before_its_timeout() {
        let (mut service, mut handle) = harness(Duration::from_secs(5));
        assert_ready_ok!(service.poll_ready());
        let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
        let request = PublishRequest::new("a.b", "x").with_deadline(deadline);
        let mut response = tokio_test::task::spawn(service.call(request));
        let (seen, _respond) = handle.next_request().await.unwrap();
        // The transport below reads the same deadline.
        assert_eq!(seen.deadline, Some(deadline));
        assert_pending!(response.poll());
        tokio::time::advance(Duration::from_millis(299)).await;
        assert_pending!(response.poll());
        tokio::time::advance(Duration::from_millis(1)).await;
        let err = assert_ready_err!(response.poll());
        assert_eq!(
            err.downcast_ref::<Elapsed>().unwrap().after(),
            Duration::from_millis(300)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_in_time_passes_through() {
        let (mut service, mut handle) = harness(Duration::from_secs(5));
        assert_ready_ok!(service.poll_ready());
        let request = PublishRequest::new("a.b", "x");
        let id = request.message_id.clone();
        let mut response = tokio_test::task::spawn(service.call(request));
        let (_request, respond) = handle.next_request().await.unwrap();
        tokio::time::advance(Duration::from_secs(4)).await;
        assert_pending!(response.poll());
        respond.send_response(Receipt::direct(id.clone()));
        assert_eq!(assert_ready_ok!(response.poll()).message_id, id);
    }

    #[tokio::test(start_paused = true)]
    async fn inner_errors_pass_through_unchanged() {
        let (mut service, mut handle) = harness(Duration::from_secs(5));
        assert_ready_ok!(service.poll_ready());
        let mut response = tokio_test::task::spawn(service.call(PublishRequest::new("a.b", "x")));
        let (_request, respond) = handle.next_request().await.unwrap();
        respond.send_error(Error::rejected("no stream"));
        let err = assert_ready_err!(response.poll());
        assert_eq!(Error::from_boxed(err).kind(), ErrorKind::Rejected);
    }
}
