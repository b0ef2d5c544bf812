//! The response future of [`PoolService`](super::PoolService).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll, ready},
};

use pin_project_lite::pin_project;

use super::{Connect, Lease};
use crate::error::{BoxError, Error, ErrorKind};

pin_project! {
    /// A member's answer; it counts as in flight on the member until it is done, and a
    /// connection-level failure reports the member broken.
    #[derive(Debug)]
    pub struct ResponseFuture<F, C>
    where
        C: Connect,
    {
        #[pin]
        inner: Option<F>,
        lease: Option<Lease<C>>,
    }
}

impl<F, C: Connect> ResponseFuture<F, C> {
    pub(super) fn called(inner: F, lease: Lease<C>) -> Self {
        ResponseFuture {
            inner: Some(inner),
            lease: Some(lease),
        }
    }

    pub(super) fn not_ready() -> Self {
        ResponseFuture {
            inner: None,
            lease: None,
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: Connect,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(Err(Error::called_before_ready("PoolService").into()));
        };
        let result = ready!(inner.poll(cx)).map_err(Into::into);
        // Done: the request no longer counts as in flight on the member.
        let lease = this.lease.take();
        if let (Err(error), Some(lease)) = (&result, &lease)
            && Error::classify(error.as_ref()).0 == ErrorKind::Unavailable
        {
            lease.broken(&format!("call failed: {error}"));
        }
        Poll::Ready(result)
    }
}
