//! The response future of [`Retry`](super::Retry).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use pin_project_lite::pin_project;
use tower::Service;

use super::{ClassifyError, RetryPolicy, RetryRequest};
use crate::error::BoxError;

pin_project! {
    /// tower's retry future, its error boxed.
    pub struct ResponseFuture<S, Req>
    where
        S: Service<Req>,
        S::Error: ClassifyError,
        S::Error: fmt::Display,
        Req: RetryRequest,
    {
        #[pin]
        attempts: tower::retry::future::ResponseFuture<RetryPolicy, S, Req>,
    }
}

impl<S, Req> ResponseFuture<S, Req>
where
    S: Service<Req>,
    S::Error: ClassifyError + fmt::Display,
    Req: RetryRequest,
{
    pub(crate) fn new(attempts: tower::retry::future::ResponseFuture<RetryPolicy, S, Req>) -> Self {
        ResponseFuture { attempts }
    }
}

impl<S, Req> Future for ResponseFuture<S, Req>
where
    S: Service<Req> + Clone,
    S::Error: ClassifyError + fmt::Display + Into<BoxError>,
    Req: RetryRequest,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(ready!(self.project().attempts.poll(cx)).map_err(Into::into))
    }
}

impl<S, Req> fmt::Debug for ResponseFuture<S, Req>
where
    S: Service<Req>,
    S::Error: ClassifyError + fmt::Display,
    Req: RetryRequest,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
