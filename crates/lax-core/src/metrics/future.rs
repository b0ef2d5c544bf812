//! The response future of [`Metrics`](super::Metrics).

use std::{
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use pin_project_lite::pin_project;

use super::Handles;
use crate::{
    error::{BoxError, Error},
    message::{Receipt, Route, Tier},
};

pin_project! {
    /// The inner answer, recorded when it arrives.
    #[derive(Debug)]
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        handles: Arc<Handles>,
        tier: Tier,
        default_route: Route,
        started: u64,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(
        inner: F,
        handles: Arc<Handles>,
        tier: Tier,
        default_route: Route,
        started: u64,
    ) -> Self {
        ResponseFuture {
            inner,
            handles,
            tier,
            default_route,
            started,
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
        match &result {
            Ok(receipt) => this
                .handles
                .record(*this.tier, receipt.route, *this.started, None),
            Err(e) => this.handles.record(
                *this.tier,
                *this.default_route,
                *this.started,
                Some(Error::classify(e.as_ref()).0),
            ),
        }
        Poll::Ready(result)
    }
}
