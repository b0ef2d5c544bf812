//! The response future of [`Route`](super::Route).

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
};

use pin_project_lite::pin_project;
use tower::{Service, util::Oneshot};

use crate::{error::BoxError, ready::WhenReady};

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
        Direct { #[pin] future: WhenReady<D, Req> },
        // Boxed: the broker path's future (retry, timers) is many times the size of the direct
        // one, and a network round trip dwarfs the allocation.
        Broker { oneshot: Pin<Box<Oneshot<B, Req>>> },
    }
}

impl<D, B, Req> ResponseFuture<D, B, Req>
where
    D: Service<Req>,
    B: Service<Req>,
{
    pub(super) fn direct(future: WhenReady<D, Req>) -> Self {
        ResponseFuture {
            path: Path::Direct { future },
        }
    }

    pub(super) fn broker(oneshot: Oneshot<B, Req>) -> Self {
        ResponseFuture {
            path: Path::Broker {
                oneshot: Box::pin(oneshot),
            },
        }
    }
}

impl<D, B, Req> std::fmt::Debug for ResponseFuture<D, B, Req>
where
    D: Service<Req>,
    B: Service<Req>,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = match &self.path {
            Path::Direct { future } if future.is_waiting() => "direct (waiting for readiness)",
            Path::Direct { .. } => "direct",
            Path::Broker { .. } => "broker",
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

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().path.project() {
            PathProj::Direct { future } => future.poll(cx).map_err(Into::into),
            PathProj::Broker { oneshot } => oneshot.as_mut().poll(cx).map_err(Into::into),
        }
    }
}
