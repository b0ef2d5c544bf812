//! The response future of [`Pool`](super::Pool).

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll, ready},
};

use pin_project_lite::pin_project;

use crate::error::{BoxError, Error, ErrorKind};

pin_project! {
    /// A member's answer; a connection-level failure marks the member for replacement.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Option<F>,
        broken: Option<Arc<AtomicBool>>,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn called(inner: F, broken: Arc<AtomicBool>) -> Self {
        ResponseFuture {
            inner: Some(inner),
            broken: Some(broken),
        }
    }

    pub(super) fn not_ready() -> Self {
        ResponseFuture {
            inner: None,
            broken: None,
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
        let Some(inner) = this.inner.as_pin_mut() else {
            return Poll::Ready(Err(Error::called_before_ready("Pool").into()));
        };
        let result = ready!(inner.poll(cx)).map_err(Into::into);
        if let (Err(e), Some(broken)) = (&result, this.broken.as_ref())
            && Error::classify(e.as_ref()).0 == ErrorKind::Unavailable
        {
            broken.store(true, Ordering::Relaxed);
        }
        Poll::Ready(result)
    }
}
