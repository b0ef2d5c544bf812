//! Calling a service as soon as it is ready, without waiting for it in `poll_ready`.
//!
//! [`call_when_ready`] asks a service once whether it is ready (with a no-op waker) and, if it
//! is, calls it in place; if it is not, the service moves into a [`WhenReady`] future that
//! waits for it with the caller's waker, and a fresh clone takes its place. So a request that
//! has to wait never holds back the next one, and the common case (ready at once) costs
//! neither a clone nor an allocation.
//!
//! [`Route`](crate::route::Route) calls each path this way, and so does
//! [`Timeout`](crate::timeout::Timeout), whose deadline then covers the wait as well.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll, Waker},
};

use pin_project_lite::pin_project;
use tower::{Service, ServiceExt, util::Oneshot};

pin_project! {
    /// The answer of a service called by [`call_when_ready`]: its response future, or the
    /// service itself waiting for readiness, then called.
    pub struct WhenReady<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S, Req>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S, Req>
    where
        S: Service<Req>,
    {
        // Ready at once and called: the common case, kept as small as the service's future.
        Called { #[pin] future: S::Future },
        // Not ready: boxed so that the common case above stays small to move around.
        Waiting { oneshot: Pin<Box<Oneshot<S, Req>>> },
        // The readiness check failed.
        Failed { error: Option<S::Error> },
    }
}

/// Calls `service` at once if it is ready; otherwise moves it into the returned future to be
/// waited for there (with the caller's waker), leaving a fresh clone in its place.
#[inline]
pub fn call_when_ready<S, Req>(service: &mut S, request: Req) -> WhenReady<S, Req>
where
    S: Service<Req> + Clone,
{
    let mut probe = Context::from_waker(Waker::noop());
    let state = match service.poll_ready(&mut probe) {
        Poll::Ready(Ok(())) => State::Called {
            future: service.call(request),
        },
        Poll::Ready(Err(error)) => State::Failed { error: Some(error) },
        Poll::Pending => {
            let fresh = service.clone();
            State::Waiting {
                oneshot: Box::pin(std::mem::replace(service, fresh).oneshot(request)),
            }
        }
    };
    WhenReady { state }
}

impl<S, Req> WhenReady<S, Req>
where
    S: Service<Req>,
{
    /// True when the service was not ready and this future waits for it.
    pub fn is_waiting(&self) -> bool {
        matches!(self.state, State::Waiting { .. })
    }

    /// True when the service's readiness check failed (the service that was asked may be
    /// unusable now).
    pub fn is_failed(&self) -> bool {
        matches!(self.state, State::Failed { .. })
    }
}

impl<S, Req> Future for WhenReady<S, Req>
where
    S: Service<Req>,
{
    type Output = Result<S::Response, S::Error>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            StateProj::Called { future } => future.poll(cx),
            StateProj::Waiting { oneshot } => oneshot.as_mut().poll(cx),
            StateProj::Failed { error } => match error.take() {
                Some(error) => Poll::Ready(Err(error)),
                None => panic!("WhenReady polled after it completed"),
            },
        }
    }
}

impl<S: Service<Req>, Req> fmt::Debug for WhenReady<S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            State::Called { .. } => "called",
            State::Waiting { .. } => "waiting for readiness",
            State::Failed { .. } => "failed its readiness check",
        };
        f.debug_struct("WhenReady").field("state", &state).finish()
    }
}
