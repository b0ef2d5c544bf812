//! The `Publisher` trait every transport implements, and adapters both ways between a
//! `Publisher` and a [`tower::Service`], so any layer stack over a publisher is itself a
//! publisher.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use futures::future::BoxFuture;
use pin_project_lite::pin_project;
use tower::Service;

use crate::{
    drain::{Drain, DrainToken},
    error::{BoxError, Error},
    message::{PublishRequest, Receipt},
    ready::{WhenReady, call_when_ready},
};

/// Something that publishes messages: a transport, or a whole layer stack.
///
/// `publish` takes `&self`, so one publisher serves many tasks at once (share it in an `Arc`
/// or clone it when it is cheap to clone). A publish is **in flight** from the moment
/// `publish` returns its future until that future completes; [`close`](Publisher::close) waits
/// for every in-flight publish, so futures obtained before `close` must still be driven to
/// completion by their owners.
pub trait Publisher: Send + Sync + 'static {
    /// The future of one publish.
    type Future: Future<Output = Result<Receipt, Error>> + Send + 'static;

    /// Publishes one message. Invalid input fails with
    /// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput) before anything is sent.
    fn publish(&self, request: PublishRequest) -> Self::Future;

    /// Waits until everything published so far has been handed to the server.
    fn flush(&self) -> impl Future<Output = Result<(), Error>> + Send;

    /// Refuses new publishes with [`ErrorKind::Closed`](crate::ErrorKind::Closed), waits for
    /// the ones in flight, flushes and releases the connection. Closing twice is harmless.
    fn close(&self) -> impl Future<Output = Result<(), Error>> + Send;
}

impl<P: Publisher> Publisher for Arc<P> {
    type Future = P::Future;

    fn publish(&self, request: PublishRequest) -> Self::Future {
        (**self).publish(request)
    }

    fn flush(&self) -> impl Future<Output = Result<(), Error>> + Send {
        (**self).flush()
    }

    fn close(&self) -> impl Future<Output = Result<(), Error>> + Send {
        (**self).close()
    }
}

/// The object-safe part of [`Publisher`]: flush and close, for whoever owns a stack built over
/// several publishers.
pub trait Lifecycle: Send + Sync + fmt::Debug {
    /// See [`Publisher::flush`].
    fn flush(&self) -> BoxFuture<'_, Result<(), Error>>;
    /// See [`Publisher::close`].
    fn close(&self) -> BoxFuture<'_, Result<(), Error>>;
}

impl<P: Publisher + fmt::Debug> Lifecycle for P {
    fn flush(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(Publisher::flush(self))
    }

    fn close(&self) -> BoxFuture<'_, Result<(), Error>> {
        Box::pin(Publisher::close(self))
    }
}

/// A [`Publisher`] as a [`tower::Service`], the bottom of a layer stack.
///
/// Always ready: a publisher applies its own back-pressure inside `publish`.
pub struct PublisherService<P> {
    inner: Arc<P>,
}

impl<P> PublisherService<P> {
    /// Wraps `publisher`.
    pub fn new(publisher: P) -> Self {
        PublisherService {
            inner: Arc::new(publisher),
        }
    }

    /// Wraps a shared publisher.
    pub fn from_arc(publisher: Arc<P>) -> Self {
        PublisherService { inner: publisher }
    }

    /// The publisher.
    pub fn get_ref(&self) -> &P {
        &self.inner
    }

    /// The shared publisher.
    pub fn into_inner(self) -> Arc<P> {
        self.inner
    }
}

impl<P> Clone for PublisherService<P> {
    fn clone(&self) -> Self {
        PublisherService {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<P: fmt::Debug> fmt::Debug for PublisherService<P> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PublisherService")
            .field(&self.inner)
            .finish()
    }
}

impl<P: Publisher> Service<PublishRequest> for PublisherService<P> {
    type Response = Receipt;
    type Error = Error;
    type Future = P::Future;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: PublishRequest) -> Self::Future {
        self.inner.publish(request)
    }
}

pin_project! {
    /// The future of one [`ServicePublisher`] publish: the service's answer, counted in
    /// flight until it arrives. Not boxed: a publish through a stack allocates only what the
    /// stack itself does.
    pub struct ServicePublishFuture<S>
    where
        S: Service<PublishRequest>,
    {
        #[pin]
        state: PublishState<S>,
    }
}

pin_project! {
    #[project = PublishStateProj]
    enum PublishState<S>
    where
        S: Service<PublishRequest>,
    {
        Running {
            #[pin]
            answer: WhenReady<S, PublishRequest>,
            in_flight: DrainToken,
        },
        Closed,
    }
}

impl<S> Future for ServicePublishFuture<S>
where
    S: Service<PublishRequest, Response = Receipt>,
    S::Error: Into<BoxError>,
{
    type Output = Result<Receipt, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().state.project() {
            PublishStateProj::Running { answer, .. } => {
                answer.poll(cx).map_err(|e| Error::from_boxed(e.into()))
            }
            PublishStateProj::Closed => Poll::Ready(Err(Error::closed())),
        }
    }
}

impl<S: Service<PublishRequest>> fmt::Debug for ServicePublishFuture<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            PublishState::Running { .. } => "running",
            PublishState::Closed => "closed",
        };
        f.debug_struct("ServicePublishFuture")
            .field("state", &state)
            .finish()
    }
}

/// A [`tower::Service`] (typically a layer stack) as a [`Publisher`].
///
/// The service must be cheap to clone (wrap it in [`tower::buffer::Buffer`] if it is not).
/// `close` refuses new publishes, waits for the in-flight ones, then flushes and closes every
/// [`Lifecycle`] registered with [`with_lifecycle`](ServicePublisher::with_lifecycle) — the
/// transports at the bottom of the stack.
///
/// Each publish calls a clone of the service (`publish` takes `&self`, `call` needs
/// `&mut`) as soon as it is ready ([`call_when_ready`]). A clone that has been called goes back
/// to a small list of spares for the next publish, so a publish through a stack of layers
/// costs no clone and no drop of the whole stack, and its future holds only the answer.
pub struct ServicePublisher<S> {
    service: S,
    /// This publisher's own: a clone of it, or a changed service, starts with none.
    spares: Spares<S>,
    drain: Drain,
    lifecycles: Arc<[Arc<dyn Lifecycle>]>,
}

/// Called clones of a [`ServicePublisher`]'s service, for reuse.
struct Spares<S> {
    list: std::sync::Mutex<Vec<S>>,
}

impl<S> Spares<S> {
    /// How many spares are kept: about the publishes that start at the same moment.
    const KEPT: usize = 16;

    fn new() -> Self {
        Spares {
            list: std::sync::Mutex::new(Vec::with_capacity(Self::KEPT)),
        }
    }

    /// A spare, if one is free and no other publish is taking or returning one right now: a
    /// publish never waits for another here, it clones instead.
    fn take(&self) -> Option<S> {
        self.list.try_lock().ok()?.pop()
    }

    fn clear(&mut self) {
        self.list
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clear();
    }

    fn put_back(&self, service: S) {
        if let Ok(mut list) = self.list.try_lock()
            && list.len() < Self::KEPT
        {
            list.push(service);
        }
    }
}

impl<S> ServicePublisher<S> {
    /// Wraps `service`.
    pub fn new(service: S) -> Self {
        ServicePublisher {
            service,
            spares: Spares::new(),
            drain: Drain::new(),
            lifecycles: Arc::new([]),
        }
    }

    /// Adds a transport (or anything else) to flush and close after the stack drains.
    pub fn with_lifecycle(mut self, lifecycle: Arc<dyn Lifecycle>) -> Self {
        let mut all: Vec<_> = self.lifecycles.iter().cloned().collect();
        all.push(lifecycle);
        self.lifecycles = all.into();
        self
    }

    /// Number of publishes in flight.
    pub fn in_flight(&self) -> usize {
        self.drain.in_flight()
    }

    /// True once `close` has been called.
    pub fn is_closed(&self) -> bool {
        self.drain.is_closed()
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.service
    }

    /// The wrapped service, mutably. The spare clones are dropped, so later publishes clone
    /// the service as it is after the change.
    pub fn get_mut(&mut self) -> &mut S {
        self.spares.clear();
        &mut self.service
    }

    /// The wrapped service.
    pub fn into_inner(self) -> S {
        self.service
    }
}

impl<S: Clone> Clone for ServicePublisher<S> {
    fn clone(&self) -> Self {
        ServicePublisher {
            service: self.service.clone(),
            spares: Spares::new(),
            drain: self.drain.clone(),
            lifecycles: Arc::clone(&self.lifecycles),
        }
    }
}

impl<S> fmt::Debug for ServicePublisher<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServicePublisher")
            .field("service", &std::any::type_name::<S>())
            .field("in_flight", &self.in_flight())
            .field("closed", &self.is_closed())
            .field("lifecycles", &self.lifecycles)
            .finish()
    }
}

impl<S> Publisher for ServicePublisher<S>
where
    S: Service<PublishRequest, Response = Receipt> + Clone + Send + Sync + 'static,
    S::Error: Into<BoxError> + Send,
    S::Future: Send,
{
    type Future = ServicePublishFuture<S>;

    fn publish(&self, request: PublishRequest) -> Self::Future {
        let state = match self.drain.enter() {
            Some(in_flight) => {
                let mut service = self.spares.take().unwrap_or_else(|| self.service.clone());
                let answer = call_when_ready(&mut service, request);
                // Called, or replaced by a fresh clone while the future waits for it: either
                // way ready for the next publish. One whose readiness check failed is not.
                if !answer.is_failed() {
                    self.spares.put_back(service);
                }
                PublishState::Running { answer, in_flight }
            }
            None => PublishState::Closed,
        };
        ServicePublishFuture { state }
    }

    /// Waits for the publishes made before it, then flushes every registered lifecycle.
    async fn flush(&self) -> Result<(), Error> {
        self.drain.flush().await;
        for lifecycle in self.lifecycles.iter() {
            lifecycle.flush().await?;
        }
        Ok(())
    }

    async fn close(&self) -> Result<(), Error> {
        self.drain.close().await;
        let mut first_error = None;
        for lifecycle in self.lifecycles.iter() {
            if let Err(e) = lifecycle.close().await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    use super::*;
    use crate::message::Route;

    /// A service that counts its clones and whose readiness check fails while `refusing`.
    #[derive(Default)]
    struct Counted {
        clones: Arc<AtomicUsize>,
        refusing: Arc<AtomicBool>,
    }

    impl Clone for Counted {
        fn clone(&self) -> Self {
            self.clones.fetch_add(1, Ordering::SeqCst);
            Counted {
                clones: Arc::clone(&self.clones),
                refusing: Arc::clone(&self.refusing),
            }
        }
    }

    impl Service<PublishRequest> for Counted {
        type Response = Receipt;
        type Error = Error;
        type Future = std::future::Ready<Result<Receipt, Error>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Error>> {
            if self.refusing.load(Ordering::SeqCst) {
                Poll::Ready(Err(Error::unavailable("refusing")))
            } else {
                Poll::Ready(Ok(()))
            }
        }

        fn call(&mut self, request: PublishRequest) -> Self::Future {
            std::future::ready(Ok(Receipt::direct(request.message_id)))
        }
    }

    #[tokio::test]
    async fn called_clones_are_reused_and_failed_ones_are_not() {
        let service = Counted::default();
        let (clones, refusing) = (Arc::clone(&service.clones), Arc::clone(&service.refusing));
        let publisher = ServicePublisher::new(service);
        for _ in 0..100 {
            let receipt = publisher.publish(PublishRequest::new("a.b", "x")).await;
            assert_eq!(receipt.unwrap().route, Route::Direct);
        }
        assert_eq!(
            clones.load(Ordering::SeqCst),
            1,
            "one clone serves them all"
        );

        refusing.store(true, Ordering::SeqCst);
        let refused = publisher.publish(PublishRequest::new("a.b", "x")).await;
        assert!(refused.is_err());
        refusing.store(false, Ordering::SeqCst);
        // The clone that failed its readiness check was dropped: the next publish clones anew.
        publisher
            .publish(PublishRequest::new("a.b", "x"))
            .await
            .unwrap();
        assert_eq!(clones.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_changed_service_is_not_served_by_old_spares() {
        let mut publisher = ServicePublisher::new(Counted::default());
        publisher
            .publish(PublishRequest::new("a.b", "x"))
            .await
            .unwrap();
        // A spare of the service as it was (accepting) now waits; changing the service (to a
        // refusing one that shares nothing with the spare) drops it.
        publisher.get_mut().refusing = Arc::new(AtomicBool::new(true));
        let refused = publisher.publish(PublishRequest::new("a.b", "x")).await;
        assert!(refused.is_err(), "the publish ran on the changed service");
    }
}
