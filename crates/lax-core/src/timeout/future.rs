//! The response future of [`Timeout`](super::Timeout).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use super::error::Elapsed;
use crate::error::BoxError;

pin_project! {
    /// The answer of the inner service, or [`Elapsed`] once the time runs out.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        // Boxed, and only once the inner future has to wait: a timer entry is large, and moving
        // it through every layer's future would cost more than the allocation on the slow path.
        sleep: Option<Pin<Box<Sleep>>>,
        // How long the answer may take from the first wait.
        after: Duration,
        // The request's deadline: the answer ends there at the latest.
        deadline: Option<Instant>,
        // How long the time that ran out was, once the timer is armed.
        waited: Duration,
    }
}

impl<F> ResponseFuture<F> {
    /// `inner`, failing with [`Elapsed`] `after` from the first poll that finds it pending, or
    /// at `deadline` if that comes first. Reading the clock only then keeps an answer that is
    /// ready at once (a direct publish, typically) off the clock and the timer; the work done
    /// before that first poll is not counted.
    pub(crate) fn after_first_wait(inner: F, after: Duration, deadline: Option<Instant>) -> Self {
        ResponseFuture {
            inner,
            sleep: None,
            after,
            deadline,
            waited: after,
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result.map_err(Into::into));
        }
        let sleep = this.sleep.get_or_insert_with(|| {
            let now = Instant::now();
            let at = match *this.deadline {
                Some(deadline) => deadline.min(now + *this.after),
                None => now + *this.after,
            };
            *this.waited = at.saturating_duration_since(now);
            Box::pin(tokio::time::sleep_until(at))
        });
        ready!(sleep.as_mut().poll(cx));
        Poll::Ready(Err(Elapsed::new(*this.waited).into()))
    }
}
