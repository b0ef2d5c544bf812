//! The in-flight count shared by every clone of a limited service.

use std::{
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
};

use tokio::sync::{Notify, futures::OwnedNotified};

use super::LimitMode;
use crate::error::Error;

/// At most `max` slots taken at once.
///
/// Not a `tokio::sync::Semaphore`: giving a permit back to one takes its waiter-list lock on
/// every release, and on the direct path that lock and the permit's `Arc` were a third of the
/// default stack's cost (`cargo bench -p lax-core --bench stack`). Here taking a slot is one
/// compare-and-swap and giving it back one subtraction plus a [`Notify`] poke; only a caller
/// that finds no free slot touches the waiter list.
#[derive(Debug)]
pub(crate) struct InFlight {
    max: usize,
    mode: LimitMode,
    taken: AtomicUsize,
    freed: Arc<Notify>,
}

/// Where a caller waiting for a slot is registered between polls.
pub(crate) type SlotWaiter = Option<Pin<Box<OwnedNotified>>>;

impl InFlight {
    /// The largest cap: far beyond any real one, and an in-flight count that cannot overflow.
    pub(crate) const MAX: usize = usize::MAX >> 4;

    /// A cap of `max` (1 to [`InFlight::MAX`]), and what to do at it; otherwise a
    /// configuration error.
    pub(crate) fn new(max: usize, mode: LimitMode) -> Result<Self, Error> {
        if max == 0 || max > Self::MAX {
            return Err(Error::config(format!(
                "the in-flight limit must be between 1 and {}, got {max}",
                Self::MAX
            )));
        }
        Ok(InFlight {
            max,
            mode,
            taken: AtomicUsize::new(0),
            freed: Arc::new(Notify::new()),
        })
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }

    pub(crate) fn available(&self) -> usize {
        self.max.saturating_sub(self.taken.load(Ordering::Acquire))
    }

    /// Reserves a slot the way the cap's mode says: `Ready(true)` once one is taken,
    /// `Ready(false)` when fail-fast mode finds none, `Pending` while wait mode waits.
    #[inline]
    pub(crate) fn poll_reserve(&self, waiter: &mut SlotWaiter, cx: &mut Context<'_>) -> Poll<bool> {
        match self.mode {
            LimitMode::Wait => self.poll_take(waiter, cx).map(|()| true),
            LimitMode::FailFast => Poll::Ready(self.try_take()),
        }
    }

    /// Takes a slot if one is free.
    #[inline]
    pub(crate) fn try_take(&self) -> bool {
        self.take().is_some()
    }

    /// Takes a slot if one is free, and says how many are left.
    #[inline]
    fn take(&self) -> Option<usize> {
        let mut taken = self.taken.load(Ordering::Acquire);
        while taken < self.max {
            match self.taken.compare_exchange_weak(
                taken,
                taken + 1,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(self.max - taken - 1),
                Err(now) => taken = now,
            }
        }
        None
    }

    /// Takes a slot, or registers `waiter` to be woken when one is given back.
    pub(crate) fn poll_take(&self, waiter: &mut SlotWaiter, cx: &mut Context<'_>) -> Poll<()> {
        let mut woken = false;
        loop {
            if let Some(left) = self.take() {
                // A give-back wakes one waiter only when the cap was full (see `give_back`):
                // a waiter that finds slots left over passes the wake-up on.
                if (woken || waiter.is_some()) && left > 0 {
                    self.freed.notify_one();
                }
                *waiter = None;
                return Poll::Ready(());
            }
            let notified =
                waiter.get_or_insert_with(|| Box::pin(Arc::clone(&self.freed).notified_owned()));
            // A slot given back after the look above and before this registration left a
            // permit in the `Notify`, so this poll is ready and we look again.
            match notified.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    *waiter = None;
                    woken = true;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// Gives a slot back. Someone can be waiting only if the cap was full, so only then is
    /// a waiter woken: the common release is one atomic subtraction.
    #[inline]
    pub(crate) fn give_back(&self) {
        if self.taken.fetch_sub(1, Ordering::AcqRel) == self.max {
            self.freed.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::Arc, task::Poll};

    use futures::task::noop_waker_ref;

    use super::{InFlight, LimitMode};

    #[test]
    fn slots_are_counted_and_a_waiter_is_woken_by_a_give_back() {
        let slots = InFlight::new(2, LimitMode::Wait).unwrap();
        assert!(slots.try_take() && slots.try_take());
        assert!(!slots.try_take());
        assert_eq!(slots.available(), 0);

        let (waker, woken) = futures_test_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        let mut waiter = None;
        assert_eq!(slots.poll_take(&mut waiter, &mut cx), Poll::Pending);
        assert!(waiter.is_some());
        slots.give_back();
        assert_eq!(woken.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(slots.poll_take(&mut waiter, &mut cx), Poll::Ready(()));
        assert!(waiter.is_none());
        assert_eq!(slots.available(), 0);

        slots.give_back();
        slots.give_back();
        assert_eq!(slots.available(), 2);
        let mut cx = std::task::Context::from_waker(noop_waker_ref());
        assert_eq!(slots.poll_take(&mut None, &mut cx), Poll::Ready(()));
    }

    #[test]
    fn slots_given_back_together_wake_every_waiter_they_can_serve() {
        let slots = InFlight::new(2, LimitMode::Wait).unwrap();
        assert!(slots.try_take() && slots.try_take());
        let (first_waker, first_woken) = futures_test_waker();
        let (second_waker, second_woken) = futures_test_waker();
        let mut first_cx = std::task::Context::from_waker(&first_waker);
        let mut second_cx = std::task::Context::from_waker(&second_waker);
        let (mut first, mut second) = (None, None);
        assert_eq!(slots.poll_take(&mut first, &mut first_cx), Poll::Pending);
        assert_eq!(slots.poll_take(&mut second, &mut second_cx), Poll::Pending);

        // Only the give-back from a full cap wakes someone...
        slots.give_back();
        slots.give_back();
        assert_eq!(first_woken.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(second_woken.load(std::sync::atomic::Ordering::SeqCst), 0);
        // ...and the woken waiter, finding a slot to spare, passes the wake-up on.
        assert_eq!(slots.poll_take(&mut first, &mut first_cx), Poll::Ready(()));
        assert_eq!(second_woken.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(
            slots.poll_take(&mut second, &mut second_cx),
            Poll::Ready(())
        );
        assert_eq!(slots.available(), 0);
    }

    #[test]
    fn a_cap_out_of_range_is_a_config_error() {
        assert!(InFlight::new(0, LimitMode::Wait).is_err());
        assert!(InFlight::new(InFlight::MAX + 1, LimitMode::Wait).is_err());
        assert!(InFlight::new(InFlight::MAX, LimitMode::FailFast).is_ok());
    }

    fn futures_test_waker() -> (std::task::Waker, Arc<std::sync::atomic::AtomicUsize>) {
        struct Count(Arc<std::sync::atomic::AtomicUsize>);
        impl futures::task::ArcWake for Count {
            fn wake_by_ref(this: &Arc<Self>) {
                this.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let woken = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        (
            futures::task::waker(Arc::new(Count(Arc::clone(&woken)))),
            woken,
        )
    }
}
