//! The response future of [`LaxStack`](super::LaxStack).

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use futures::future::BoxFuture;
use pin_project_lite::pin_project;
use tower::{Service, util::Oneshot};

use super::Shared;
use crate::{
    breaker::{Admission, Verdict},
    error::BoxError,
    message::{PublishRequest, Receipt},
    metrics::Measurement,
    timeout::future::ResponseFuture as TimeoutFuture,
};

pin_project! {
    /// The answer of one publish. When it arrives it is recorded in the metrics, the direct
    /// breaker's admission is settled and the in-flight slot is given back; a future dropped
    /// before that gives its slot back too.
    pub struct ResponseFuture<D>
    where
        D: Service<PublishRequest>,
    {
        #[pin]
        path: Path<D>,
        shared: Arc<Shared>,
        measurement: Measurement,
        // Taken when settled; a trial admission dropped unsettled goes back to the breaker.
        admission: Option<Admission>,
        holds_slot: bool,
    }

    impl<D> PinnedDrop for ResponseFuture<D>
    where
        D: Service<PublishRequest>,
    {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if std::mem::take(this.holds_slot) {
                this.shared.give_back_slot();
            }
        }
    }
}

impl<D> ResponseFuture<D>
where
    D: Service<PublishRequest>,
{
    pub(super) fn new(
        path: Path<D>,
        shared: Arc<Shared>,
        measurement: Measurement,
        admission: Option<Admission>,
        holds_slot: bool,
    ) -> Self {
        ResponseFuture {
            path,
            shared,
            measurement,
            admission,
            holds_slot,
        }
    }
}

impl<D> fmt::Debug for ResponseFuture<D>
where
    D: Service<PublishRequest>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = match self.path {
            Path::Direct { .. } => "direct",
            Path::DirectWaiting { .. } => "direct (waiting for readiness)",
            Path::Broker { .. } => "broker",
            Path::Failed { .. } => "failed before reaching a transport",
        };
        f.debug_struct("ResponseFuture")
            .field("path", &path)
            .field("holds_slot", &self.holds_slot)
            .finish()
    }
}

impl<D> Future for ResponseFuture<D>
where
    D: Service<PublishRequest, Response = Receipt>,
    D::Error: Into<BoxError>,
{
    type Output = Result<Receipt, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.path.poll(cx));
        if let (Some(admission), Some(breaker)) =
            (this.admission.take(), &this.shared.direct_breaker)
        {
            breaker
                .shared()
                .settle(admission, Verdict::of_result(&result));
        }
        if std::mem::take(this.holds_slot) {
            this.shared.give_back_slot();
        }
        this.shared.metrics.finish(*this.measurement, &result);
        Poll::Ready(result)
    }
}

pin_project! {
    /// Where a publish went.
    #[project = PathProj]
    pub(super) enum Path<D>
    where
        D: Service<PublishRequest>,
    {
        // The direct transport was ready at once and has been called: the common case, kept
        // small because it is moved on every publish.
        Direct { #[pin] future: TimeoutFuture<D::Future> },
        // The direct transport was not ready: this instance of it waits, then is called.
        DirectWaiting { future: Pin<Box<TimeoutFuture<Oneshot<D, PublishRequest>>>> },
        // Boxed: the broker path's future (retry, timers) is many times the size of the direct
        // one, and a network round trip dwarfs the allocation. Type-erased, so that the
        // stack's future names no layer of the broker path: an async fn holding it across an
        // await stays provably `Send`.
        Broker { future: BoxFuture<'static, Result<Receipt, BoxError>> },
        // Refused before any transport: cap reached, circuit open, transport failed.
        Failed { error: Option<BoxError> },
    }
}

impl<D> Path<D>
where
    D: Service<PublishRequest>,
{
    /// The timeout starts at the first poll that has to wait, as the timeout layer's does.
    pub(super) fn direct(future: D::Future, after: Duration) -> Self {
        Path::Direct {
            future: TimeoutFuture::after_first_wait(future, after),
        }
    }

    /// The timeout covers the wait for readiness as well.
    pub(super) fn direct_waiting(oneshot: Oneshot<D, PublishRequest>, after: Duration) -> Self {
        Path::DirectWaiting {
            future: Box::pin(TimeoutFuture::after_first_wait(oneshot, after)),
        }
    }

    pub(super) fn broker<P>(oneshot: Oneshot<P, PublishRequest>) -> Self
    where
        P: Service<PublishRequest, Response = Receipt> + Send + 'static,
        P::Error: Into<BoxError>,
        P::Future: Send,
    {
        Path::Broker {
            future: Box::pin(async move { oneshot.await.map_err(Into::into) }),
        }
    }

    pub(super) fn failed(error: BoxError) -> Self {
        Path::Failed { error: Some(error) }
    }

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<Receipt, BoxError>>
    where
        D: Service<PublishRequest, Response = Receipt>,
        D::Error: Into<BoxError>,
    {
        match self.project() {
            PathProj::Direct { future } => future.poll(cx),
            PathProj::DirectWaiting { future } => future.as_mut().poll(cx),
            PathProj::Broker { future } => future.as_mut().poll(cx),
            PathProj::Failed { error } => Poll::Ready(Err(error
                .take()
                .unwrap_or_else(|| "a publish future was polled after it completed".into()))),
        }
    }
}
