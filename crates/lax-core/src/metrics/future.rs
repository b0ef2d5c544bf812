//! The response future of [`Metrics`](super::Metrics).

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use pin_project_lite::pin_project;

use super::{Handles, Measurement};
use crate::{error::BoxError, message::Receipt};

pin_project! {
    /// The inner answer, recorded when it arrives.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        handles: Arc<Handles>,
        measurement: Measurement,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(inner: F, handles: Arc<Handles>, measurement: Measurement) -> Self {
        ResponseFuture {
            inner,
            handles,
            measurement,
        }
    }
}

impl<F, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Receipt, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Receipt, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx)).map_err(Into::into);
        this.handles.finish(*this.measurement, &result);
        Poll::Ready(result)
    }
}
