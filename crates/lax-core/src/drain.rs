//! Counting work in flight, so that `flush` and `close` can wait for it.
//!
//! One [`Drain`] serves every publisher that needs it: [`ServicePublisher`](crate::ServicePublisher)
//! and both transports. Each unit of work holds a [`DrainToken`] from [`Drain::enter`] until it
//! is done.
//!
//! - [`Drain::flush`] waits for the work that entered **before** it, not for work that enters
//!   meanwhile, so a flush under steady load still ends: work is counted in two alternating
//!   epochs, a flush switches the epoch and waits for the old one to empty.
//! - [`Drain::close`] refuses new work (`enter` returns `None`) and waits for all of it.
//!
//! Entering costs a few atomic operations and no lock: it is on every publish's path.
//!
//! ```
//! use lax_core::drain::Drain;
//!
//! # tokio_test::block_on(async {
//! let drain = Drain::new();
//! let token = drain.enter().expect("open");
//! assert_eq!(drain.in_flight(), 1);
//! drop(token);
//! drain.close().await;
//! assert!(drain.enter().is_none());
//! # });
//! ```

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use tokio::sync::{Mutex, Notify};

/// Counts work in flight; cheap to clone, clones share the count. See the [module docs](self).
#[derive(Clone, Default)]
pub struct Drain {
    shared: Arc<Shared>,
}

#[derive(Default)]
struct Shared {
    /// Work in flight, per epoch (indexed by the epoch's parity).
    counts: [AtomicUsize; 2],
    /// The current epoch; only its parity picks a count.
    epoch: AtomicUsize,
    closed: AtomicBool,
    /// Flushes and closes waiting for a count to empty. Work that ends with nobody waiting
    /// skips `emptied`, whose `notify_waiters` takes a lock: at one publish in flight every
    /// publish empties a count.
    waiting: AtomicUsize,
    /// Poked when a count drops to zero while someone waits.
    emptied: Notify,
    /// Flushes run one at a time, so an epoch's count is back at zero before it is reused.
    flushing: Mutex<()>,
}

/// Held by one unit of work while it is in flight; dropping it ends the work.
#[must_use = "the work counts as in flight only while the token is held"]
pub struct DrainToken {
    shared: Arc<Shared>,
    slot: usize,
}

impl Drain {
    /// A drain with nothing in flight.
    pub fn new() -> Self {
        Drain::default()
    }

    /// Registers one unit of work, or `None` once [`close`](Self::close) has been called.
    ///
    /// Counted before `closed` is read, so `close` either waits for this work or this work
    /// sees `closed`.
    #[inline]
    pub fn enter(&self) -> Option<DrainToken> {
        let shared = &*self.shared;
        let slot = loop {
            let epoch = shared.epoch.load(Ordering::SeqCst);
            let slot = epoch & 1;
            shared.counts[slot].fetch_add(1, Ordering::SeqCst);
            if shared.epoch.load(Ordering::SeqCst) == epoch {
                break slot;
            }
            // A flush switched epochs meanwhile and may already have seen this count empty:
            // count in the new epoch instead.
            shared.leave(slot);
        };
        let token = DrainToken {
            shared: Arc::clone(&self.shared),
            slot,
        };
        if shared.closed.load(Ordering::SeqCst) {
            return None;
        }
        Some(token)
    }

    /// Units of work in flight now.
    pub fn in_flight(&self) -> usize {
        let counts = &self.shared.counts;
        counts[0].load(Ordering::SeqCst) + counts[1].load(Ordering::SeqCst)
    }

    /// True once [`close`](Self::close) has been called.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::SeqCst)
    }

    /// Waits until all work that entered before this call has finished.
    pub async fn flush(&self) {
        let shared = &*self.shared;
        let _one_at_a_time = shared.flushing.lock().await;
        let old = shared.epoch.fetch_add(1, Ordering::SeqCst) & 1;
        shared.emptied_in(old).await;
    }

    /// Refuses new work from now on and waits for the work in flight.
    pub async fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.flush().await;
        // Work that entered the new epoch before seeing `closed` ends too.
        let _one_at_a_time = self.shared.flushing.lock().await;
        let current = self.shared.epoch.load(Ordering::SeqCst) & 1;
        self.shared.emptied_in(current).await;
    }
}

impl Shared {
    #[inline]
    fn leave(&self, slot: usize) {
        // SeqCst orders this read after the decrement: a waiter that registered later reads
        // the count after it too, and sees it empty.
        if self.counts[slot].fetch_sub(1, Ordering::SeqCst) == 1
            && self.waiting.load(Ordering::SeqCst) > 0
        {
            self.emptied.notify_waiters();
        }
    }

    async fn emptied_in(&self, slot: usize) {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _done = WaitingGuard(&self.waiting);
        loop {
            let emptied = self.emptied.notified();
            let mut emptied = std::pin::pin!(emptied);
            // Registered before the count is read, so a drop to zero in between wakes it.
            emptied.as_mut().enable();
            if self.counts[slot].load(Ordering::SeqCst) == 0 {
                return;
            }
            emptied.await;
        }
    }
}

/// Counts one waiter out again, also when its future is dropped.
struct WaitingGuard<'a>(&'a AtomicUsize);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for DrainToken {
    #[inline]
    fn drop(&mut self) {
        self.shared.leave(self.slot);
    }
}

impl fmt::Debug for Drain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Drain")
            .field("in_flight", &self.in_flight())
            .field("closed", &self.is_closed())
            .finish()
    }
}

impl fmt::Debug for DrainToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DrainToken")
            .field("epoch_parity", &self.slot)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::FutureExt;

    use super::*;

    #[tokio::test]
    async fn flush_waits_for_earlier_work_only() {
        let drain = Drain::new();
        let early = drain.enter().unwrap();
        let mut flush = Box::pin(drain.flush());
        assert!(
            (&mut flush).now_or_never().is_none(),
            "early work is in flight"
        );
        let late = drain.enter().unwrap();
        drop(early);
        tokio::time::timeout(Duration::from_secs(5), flush)
            .await
            .expect("later work does not hold up the flush");
        // The next flush waits for the late work, in the epoch it entered.
        let mut flush = Box::pin(drain.flush());
        assert!((&mut flush).now_or_never().is_none(), "late work in flight");
        drop(late);
        tokio::time::timeout(Duration::from_secs(5), flush)
            .await
            .expect("flush ends once the late work is done");
        assert_eq!(drain.in_flight(), 0);
    }

    #[tokio::test]
    async fn close_refuses_new_work_and_waits_for_all_in_flight() {
        let drain = Drain::new();
        let before_flush = drain.enter().unwrap();
        // A flush running when close starts switched epochs: close waits for both.
        let flush = tokio::spawn({
            let drain = drain.clone();
            async move { drain.flush().await }
        });
        tokio::task::yield_now().await;
        let after_flush = drain.enter().unwrap();
        let mut closing = Box::pin(drain.close());
        assert!((&mut closing).now_or_never().is_none(), "work in flight");
        assert!(drain.enter().is_none());
        assert!(drain.is_closed());
        assert_eq!(drain.in_flight(), 2);
        drop(before_flush);
        assert!(
            (&mut closing).now_or_never().is_none(),
            "work still in flight"
        );
        drop(after_flush);
        tokio::time::timeout(Duration::from_secs(5), closing)
            .await
            .expect("close ends once all work is done");
        flush.await.unwrap();
        drain.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn flushes_under_steady_load_end_and_count_everything() {
        let drain = Drain::new();
        let (started, mut all_started) = tokio::sync::mpsc::channel(4);
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let (drain, started) = (drain.clone(), started.clone());
                tokio::spawn(async move {
                    let mut token = drain.enter();
                    started.send(()).await.unwrap();
                    let mut done = 0u32;
                    while let Some(held) = token.take() {
                        tokio::task::yield_now().await;
                        drop(held);
                        done += 1;
                        token = drain.enter();
                    }
                    done
                })
            })
            .collect();
        for _ in 0..4 {
            all_started.recv().await.unwrap();
        }
        for _ in 0..50 {
            tokio::time::timeout(Duration::from_secs(5), drain.flush())
                .await
                .expect("a flush under load ends");
        }
        tokio::time::timeout(Duration::from_secs(5), drain.close())
            .await
            .expect("close under load ends");
        assert_eq!(drain.in_flight(), 0);
        for worker in workers {
            assert!(worker.await.unwrap() > 0);
        }
    }
}
