//! Tracks publishes in flight so that `flush` and `close` can wait for them.
//!
//! Publishes are grouped in epochs. Each in-flight publish holds a token of the current epoch
//! (a clone of the epoch's channel sender, never used to send); `flush` starts a new epoch and
//! waits until every token of the old one is dropped, which the channel reports as closed.
//! Publishes that start after the flush belong to the new epoch and do not hold it up.

use std::sync::{Mutex, MutexGuard};

use tokio::sync::mpsc;

/// Held by one publish while it is in flight.
#[derive(Debug)]
pub(crate) struct InFlight {
    _epoch: mpsc::Sender<()>,
}

#[derive(Debug)]
struct Epochs {
    closed: bool,
    current: mpsc::Sender<()>,
    /// Reports when every token of `current` is gone.
    drained: mpsc::Receiver<()>,
}

/// The in-flight tracker.
#[derive(Debug)]
pub(crate) struct Drain {
    epochs: Mutex<Epochs>,
    /// Flushes run one after the other, so a flush also waits for the epochs that earlier,
    /// still running flushes are waiting for.
    flushing: tokio::sync::Mutex<()>,
}

impl Default for Drain {
    fn default() -> Self {
        let (current, drained) = mpsc::channel(1);
        Drain {
            epochs: Mutex::new(Epochs {
                closed: false,
                current,
                drained,
            }),
            flushing: tokio::sync::Mutex::new(()),
        }
    }
}

impl Drain {
    fn lock(&self) -> MutexGuard<'_, Epochs> {
        // Every change under this lock is a plain field assignment: poisoning is harmless.
        self.epochs
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a publish, or `None` once closed. The check and the registration happen under
    /// one lock, so `close` either waits for this publish or this publish sees it closed.
    pub(crate) fn enter(&self) -> Option<InFlight> {
        let epochs = self.lock();
        (!epochs.closed).then(|| InFlight {
            _epoch: epochs.current.clone(),
        })
    }

    /// True once [`close`](Drain::close) has been called.
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Waits until every publish registered before this call has finished.
    pub(crate) async fn flush(&self) {
        let _one_at_a_time = self.flushing.lock().await;
        let mut drained = {
            let mut epochs = self.lock();
            let (current, drained) = mpsc::channel(1);
            // Dropping the old sender leaves only the publishes' tokens holding that epoch.
            drop(std::mem::replace(&mut epochs.current, current));
            std::mem::replace(&mut epochs.drained, drained)
        };
        // `None` once the last token of the old epoch is dropped; nothing is ever sent.
        while drained.recv().await.is_some() {}
    }

    /// Refuses new publishes and waits for those in flight.
    pub(crate) async fn close(&self) {
        self.lock().closed = true;
        self.flush().await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::FutureExt;

    use super::*;

    #[tokio::test]
    async fn flush_waits_for_earlier_publishes_only() {
        let drain = Drain::default();
        let early = drain.enter().unwrap();
        let mut flush = Box::pin(drain.flush());
        assert!(
            (&mut flush).now_or_never().is_none(),
            "an early publish is in flight"
        );
        let late = drain.enter().unwrap();
        drop(early);
        tokio::time::timeout(Duration::from_secs(5), flush)
            .await
            .expect("a later publish does not hold up the flush");
        drop(late);
        drain.flush().await;
    }

    #[tokio::test]
    async fn close_refuses_new_and_waits_for_in_flight() {
        let drain = Drain::default();
        let token = drain.enter().unwrap();
        let mut closing = Box::pin(drain.close());
        assert!(
            (&mut closing).now_or_never().is_none(),
            "a publish is in flight"
        );
        assert!(drain.enter().is_none());
        assert!(drain.is_closed());
        drop(token);
        tokio::time::timeout(Duration::from_secs(5), closing)
            .await
            .expect("close finishes once the publish is done");
        drain.close().await;
    }
}
