//! The response future of [`Route`](super::Route).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use pin_project_lite::pin_project;
use tower::{Service, util::Oneshot};

use crate::error::BoxError;

pin_project! {
    /// The chosen path's answer, after its readiness when it was not ready at once.
    pub struct ResponseFuture<D, B, Req>
    where
        D: Service<Req>,
        B: Service<Req>,
    {
        #[pin]
        path: Path<D, B, Req>,
    }
}

pin_project! {
    #[project = PathProj]
    enum Path<D, B, Req>
    where
        D: Service<Req>,
        B: Service<Req>,
    {
        // The direct path was ready at once and has been called.
        Direct { #[pin] future: D::Future },
        // The direct path was not ready: this instance of it waits, then is called. Boxed
        // (like the broker path) so the common case above stays small to move around.
        DirectWaiting { oneshot: Pin<Box<Oneshot<D, Req>>> },
        // Boxed: the broker path's future (retry, timers) is many times the size of the direct
        // one, and a network round trip dwarfs the allocation.
        Broker { oneshot: Pin<Box<Oneshot<B, Req>>> },
        // The direct path failed its readiness check.
        Failed { error: Option<BoxError> },
    }
}

impl<D, B, Req> ResponseFuture<D, B, Req>
where
    D: Service<Req>,
    B: Service<Req>,
{
    pub(super) fn direct(future: D::Future) -> Self {
        ResponseFuture {
            path: Path::Direct { future },
        }
    }

    pub(super) fn direct_waiting(oneshot: Oneshot<D, Req>) -> Self {
        ResponseFuture {
            path: Path::DirectWaiting {
                oneshot: Box::pin(oneshot),
            },
        }
    }

    pub(super) fn broker(oneshot: Oneshot<B, Req>) -> Self {
        ResponseFuture {
            path: Path::Broker {
                oneshot: Box::pin(oneshot),
            },
        }
    }

    pub(super) fn failed(error: BoxError) -> Self {
        ResponseFuture {
            path: Path::Failed { error: Some(error) },
        }
    }
}

impl<D, B, Req> std::fmt::Debug for ResponseFuture<D, B, Req>
where
    D: Service<Req>,
    B: Service<Req>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = match self.path {
            Path::Direct { .. } => "direct",
            Path::DirectWaiting { .. } => "direct (waiting for readiness)",
            Path::Broker { .. } => "broker",
            Path::Failed { .. } => "direct (failed)",
        };
        f.debug_struct("ResponseFuture")
            .field("path", &path)
            .finish()
    }
}

impl<D, B, Req> Future for ResponseFuture<D, B, Req>
where
    D: Service<Req>,
    D::Error: Into<BoxError>,
    B: Service<Req, Response = D::Response>,
    B::Error: Into<BoxError>,
{
    type Output = Result<D::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().path.project() {
            PathProj::Direct { future } => future.poll(cx).map_err(Into::into),
            PathProj::DirectWaiting { oneshot } => oneshot.as_mut().poll(cx).map_err(Into::into),
            PathProj::Broker { oneshot } => oneshot.as_mut().poll(cx).map_err(Into::into),
            PathProj::Failed { error } => Poll::Ready(Err(error.take().unwrap_or_else(|| {
                "the route's response future was polled after it completed".into()
            }))),
        }
    }
}
