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

/// When the time runs out.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Deadline {
    /// Never.
    Never,
    /// At this instant.
    At(Instant),
    /// `after` from the first poll that finds the inner future pending. Reading the clock only
    /// then keeps an answer that is ready at once (a direct publish, typically) off the clock
    /// and the timer; the work done before that first poll is not counted.
    FromFirstWait,
}

pin_project! {
    /// The answer of the inner service, or [`Elapsed`] once the deadline passes.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        deadline: Deadline,
        // Boxed, and only once the inner future has to wait: a timer entry is large, and moving
        // it through every layer's future would cost more than the allocation on the slow path.
        sleep: Option<Pin<Box<Sleep>>>,
        after: Duration,
    }
}

impl<F> ResponseFuture<F> {
    /// `inner`, failing with [`Elapsed`] (reporting `after`) at `deadline`.
    pub(crate) fn new(inner: F, deadline: Deadline, after: Duration) -> Self {
        ResponseFuture {
            inner,
            deadline,
            sleep: None,
            after,
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result.map_err(Into::into));
        }
        if this.sleep.is_none() {
            let wake = match *this.deadline {
                Deadline::Never => return Poll::Pending,
                Deadline::At(at) => at,
                Deadline::FromFirstWait => Instant::now() + *this.after,
            };
            *this.sleep = Some(Box::pin(tokio::time::sleep_until(wake)));
        }
        if let Some(sleep) = this.sleep {
            ready!(sleep.as_mut().poll(cx));
        }
        Poll::Ready(Err(Elapsed::new(*this.after).into()))
    }
}
