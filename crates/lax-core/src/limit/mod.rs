//! A cap on publishes in flight.
//!
//! [`ConcurrencyLimit`] lets at most `max` requests be in flight through all clones of one
//! service (or all services made by one [`ConcurrencyLimitLayer`]). At the cap it either waits
//! for a slot ([`LimitMode::Wait`], like tower's `ConcurrencyLimit`) or refuses the request at
//! once with [`Overloaded`](error::Overloaded) ([`LimitMode::FailFast`]) without touching the
//! inner service.
//!
//! ```
//! use lax_core::{PublishRequest, PublisherService, Route};
//! use lax_core::limit::{ConcurrencyLimitLayer, LimitMode};
//! use lax_core::testing::ScriptedPublisher;
//! use tower::{Layer, ServiceExt};
//!
//! # tokio_test::block_on(async {
//! let layer = ConcurrencyLimitLayer::new(1000, LimitMode::FailFast)?;
//! let service = layer.layer(PublisherService::new(ScriptedPublisher::new(Route::Direct)));
//! service.oneshot(PublishRequest::new("a.b", "x")).await.unwrap();
//! # Ok::<(), lax_core::Error>(())
//! # }).unwrap();
//! ```

pub mod error;
pub mod future;
mod layer;
mod slots;

use std::{
    sync::Arc,
    task::{Context, Poll, ready},
};

use tower::Service;

pub use self::layer::ConcurrencyLimitLayer;
pub(crate) use self::slots::{InFlight, SlotWaiter};
use crate::error::{BoxError, Error};

/// What [`ConcurrencyLimit`] does when the cap is reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LimitMode {
    /// Wait (in `poll_ready`) until a slot frees: back-pressure.
    #[default]
    Wait,
    /// Refuse the request at once with [`Overloaded`](error::Overloaded).
    FailFast,
}

/// The in-flight cap's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct LimitConfig {
    /// Publishes allowed in flight at once.
    pub max_in_flight: usize,
    /// What happens at the cap.
    pub mode: LimitMode,
}

impl LimitConfig {
    /// The contract's `max_concurrent_requests`: 1000.
    pub const DEFAULT_MAX_IN_FLIGHT: usize = 1000;

    /// A cap of `max_in_flight` that waits when full.
    pub fn new(max_in_flight: usize) -> Self {
        LimitConfig {
            max_in_flight,
            mode: LimitMode::Wait,
        }
    }

    /// Sets the publishes allowed in flight at once.
    pub fn max_in_flight(mut self, max_in_flight: usize) -> Self {
        self.max_in_flight = max_in_flight;
        self
    }

    /// Sets what happens at the cap.
    pub fn mode(mut self, mode: LimitMode) -> Self {
        self.mode = mode;
        self
    }
}

impl Default for LimitConfig {
    fn default() -> Self {
        LimitConfig::new(Self::DEFAULT_MAX_IN_FLIGHT)
    }
}

/// What `poll_ready` secured for the next `call`.
#[derive(Debug)]
enum Reserved {
    Nothing,
    Slot(Slot),
    /// Fail-fast mode found no free slot: the call fails without touching the inner service.
    Refused,
}

/// A taken slot, given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot(Arc<InFlight>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.give_back();
    }
}

/// Caps the requests in flight through it; see the [module docs](self).
#[derive(Debug)]
pub struct ConcurrencyLimit<S> {
    inner: S,
    slots: Arc<InFlight>,
    reserved: Reserved,
    waiter: SlotWaiter,
}

impl<S> ConcurrencyLimit<S> {
    /// At most `max` requests in flight through `inner` and its clones. A cap of 0 is a
    /// configuration error.
    pub fn new(inner: S, max: usize, mode: LimitMode) -> Result<Self, Error> {
        Ok(ConcurrencyLimit::with_slots(
            inner,
            Arc::new(InFlight::new(max, mode)?),
        ))
    }

    fn with_slots(inner: S, slots: Arc<InFlight>) -> Self {
        ConcurrencyLimit {
            inner,
            slots,
            reserved: Reserved::Nothing,
            waiter: None,
        }
    }

    /// The cap.
    pub fn max(&self) -> usize {
        self.slots.max()
    }

    /// Slots free right now, over all clones.
    pub fn available(&self) -> usize {
        self.slots.available()
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone> Clone for ConcurrencyLimit<S> {
    /// A clone shares the cap but not a slot this one holds.
    fn clone(&self) -> Self {
        ConcurrencyLimit::with_slots(self.inner.clone(), Arc::clone(&self.slots))
    }
}

impl<S, Req> Service<Req> for ConcurrencyLimit<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = future::ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if matches!(self.reserved, Reserved::Nothing) {
            self.reserved = if ready!(self.slots.poll_reserve(&mut self.waiter, cx)) {
                Reserved::Slot(Slot(Arc::clone(&self.slots)))
            } else {
                Reserved::Refused
            };
        }
        match self.reserved {
            Reserved::Refused => Poll::Ready(Ok(())),
            _ => self.inner.poll_ready(cx).map_err(Into::into),
        }
    }

    fn call(&mut self, request: Req) -> Self::Future {
        match std::mem::replace(&mut self.reserved, Reserved::Nothing) {
            Reserved::Slot(slot) => future::ResponseFuture::called(self.inner.call(request), slot),
            Reserved::Refused => future::ResponseFuture::refused(self.slots.max()),
            Reserved::Nothing => future::ResponseFuture::not_ready(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        sync::{
            Arc,
            atomic::{AtomicUsize, Ordering},
        },
        time::Duration,
    };

    use tokio_test::{assert_pending, assert_ready_ok};
    use tower::{Layer, Service, ServiceExt};
    use tower_test::mock;

    use super::{ConcurrencyLimitLayer, LimitMode, error::Overloaded};
    use crate::{
        error::{Error, ErrorKind},
        message::{PublishRequest, Receipt},
    };

    #[tokio::test]
    async fn fail_fast_refuses_at_the_cap_without_asking_the_inner_service() {
        let (service, mut handle) = mock::pair::<PublishRequest, Receipt>();
        let layer = ConcurrencyLimitLayer::new(2, LimitMode::FailFast).unwrap();
        let mut service = mock::Spawn::new(layer.layer(service));

        assert_ready_ok!(service.poll_ready());
        let first = service.call(PublishRequest::new("a", "1"));
        assert_ready_ok!(service.poll_ready());
        let second = service.call(PublishRequest::new("a", "2"));

        // Two in flight: the third is refused at once and never reaches the mock.
        handle.allow(0);
        assert_ready_ok!(service.poll_ready());
        let err = service
            .call(PublishRequest::new("a", "3"))
            .await
            .unwrap_err();
        assert_eq!(err.downcast_ref::<Overloaded>().unwrap().max(), 2);
        assert_eq!(Error::from_boxed(err).kind(), ErrorKind::Overloaded);

        handle.allow(10);
        let (_, respond) = handle.next_request().await.unwrap();
        respond.send_response(Receipt::direct("1"));
        let (_, respond) = handle.next_request().await.unwrap();
        respond.send_response(Receipt::direct("2"));
        first.await.unwrap();
        second.await.unwrap();
        assert_eq!(service.get_ref().available(), 2);

        // Slots freed: accepted again.
        assert_ready_ok!(service.poll_ready());
        let third = service.call(PublishRequest::new("a", "4"));
        let (_, respond) = handle.next_request().await.unwrap();
        respond.send_response(Receipt::direct("4"));
        third.await.unwrap();
    }

    #[tokio::test]
    async fn wait_mode_is_not_ready_at_the_cap_until_a_slot_frees() {
        let (service, mut handle) = mock::pair::<PublishRequest, Receipt>();
        let layer = ConcurrencyLimitLayer::new(1, LimitMode::Wait).unwrap();
        let limited = layer.layer(service);
        let mut a = mock::Spawn::new(limited.clone());
        let mut b = mock::Spawn::new(limited);

        assert_ready_ok!(a.poll_ready());
        let first = a.call(PublishRequest::new("a", "1"));
        assert_pending!(b.poll_ready());

        let (_, respond) = handle.next_request().await.unwrap();
        respond.send_response(Receipt::direct("1"));
        first.await.unwrap();
        assert!(b.is_woken());
        assert_ready_ok!(b.poll_ready());
    }

    #[tokio::test]
    async fn dropping_a_ready_clone_gives_its_slot_back() {
        let (service, _handle) = mock::pair::<PublishRequest, Receipt>();
        let layer = ConcurrencyLimitLayer::new(1, LimitMode::Wait).unwrap();
        let limited = layer.layer(service);
        let mut a = mock::Spawn::new(limited.clone());
        assert_ready_ok!(a.poll_ready());
        assert_eq!(limited.available(), 0);
        drop(a);
        assert_eq!(limited.available(), 1);
    }

    #[tokio::test]
    async fn call_without_poll_ready_is_an_error_not_a_panic() {
        let (service, _handle) = mock::pair::<PublishRequest, Receipt>();
        let mut limited = ConcurrencyLimitLayer::new(1, LimitMode::Wait)
            .unwrap()
            .layer(service);
        let err = limited
            .call(PublishRequest::new("a", "1"))
            .await
            .unwrap_err();
        assert_eq!(Error::from_boxed(err).kind(), ErrorKind::Internal);
    }

    #[test]
    fn a_zero_cap_is_a_config_error() {
        let err = ConcurrencyLimitLayer::new(0, LimitMode::Wait).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
    }

    /// A service that counts how many of its calls are running at once.
    #[derive(Clone)]
    struct Gauge {
        now: Arc<AtomicUsize>,
        peak: Arc<AtomicUsize>,
    }

    impl Service<PublishRequest> for Gauge {
        type Response = Receipt;
        type Error = Error;
        type Future = futures::future::BoxFuture<'static, Result<Receipt, Error>>;

        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Error>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: PublishRequest) -> Self::Future {
            let (now, peak) = (Arc::clone(&self.now), Arc::clone(&self.peak));
            Box::pin(async move {
                let running = now.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(running, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1)).await;
                now.fetch_sub(1, Ordering::SeqCst);
                Ok(Receipt::direct(request.message_id))
            })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_cap_holds_under_load() {
        for mode in [LimitMode::Wait, LimitMode::FailFast] {
            let gauge = Gauge {
                now: Arc::default(),
                peak: Arc::default(),
            };
            let limited = ConcurrencyLimitLayer::new(8, mode)
                .unwrap()
                .layer(gauge.clone());
            let tasks: Vec<_> = (0..200)
                .map(|i| {
                    let service = limited.clone();
                    tokio::spawn(async move {
                        service
                            .oneshot(PublishRequest::new("a", format!("{i}")))
                            .await
                    })
                })
                .collect();
            let mut refused = 0;
            for task in tasks {
                match task.await.unwrap() {
                    Ok(_) => {}
                    Err(e) if e.is::<Overloaded>() => refused += 1,
                    Err(e) => panic!("unexpected error {e}"),
                }
            }
            let peak = gauge.peak.load(Ordering::SeqCst);
            assert!(peak <= 8, "{mode:?}: {peak} in flight, cap 8");
            assert!(peak >= 1);
            if mode == LimitMode::Wait {
                assert_eq!(refused, 0);
            }
            assert_eq!(limited.available(), 8);
        }
    }
}
