//! Which direct messages the server has confirmed, so that those a broken connection may have
//! lost are counted.
//!
//! Core NATS does not answer publishes: a message handed to a connection that breaks before
//! the server read it is gone, and async-nats drops its write buffer when it reconnects.
//! [`Confirmations`] counts the messages handed to the connection and, from a round trip made
//! now and then while publishes flow, how many of them the server has certainly processed.
//! When the connection breaks, the difference — handed over, not yet confirmed — is added to
//! `{prefix}_direct_unconfirmed_at_disconnect_total`: at most that many were lost (some of
//! them may have reached the server, or still wait in the client's queue and go out after the
//! reconnect).

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use metrics::Counter;

/// How often a round trip confirms what was handed over since the last one.
pub(crate) const CONFIRM_EVERY: Duration = Duration::from_millis(250);

/// Messages handed over and confirmed; see the [module docs](self).
#[derive(Debug)]
pub(crate) struct Confirmations {
    /// Messages handed to the connection (or its reconnect buffer) so far.
    handed: AtomicU64,
    /// How many of `handed` are confirmed or already counted as unconfirmed at a disconnect.
    settled: AtomicU64,
    /// Disconnects so far: a round trip that spans one confirms nothing of the old connection.
    disconnects: AtomicU64,
    /// Messages unconfirmed at a disconnect, in all.
    unconfirmed_total: AtomicU64,
    metric: Counter,
}

/// A point to confirm: the messages handed over before a round trip started.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Mark {
    handed: u64,
    disconnects: u64,
}

impl Confirmations {
    pub(crate) fn new(metrics_prefix: &str) -> Self {
        Confirmations {
            handed: AtomicU64::new(0),
            settled: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            unconfirmed_total: AtomicU64::new(0),
            metric: metrics::counter!(format!(
                "{metrics_prefix}_direct_unconfirmed_at_disconnect_total"
            )),
        }
    }

    /// One message handed to the connection.
    #[inline]
    pub(crate) fn handed(&self) {
        self.handed.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether messages were handed over since the last confirmation.
    pub(crate) fn pending(&self) -> bool {
        self.handed.load(Ordering::Acquire) > self.settled.load(Ordering::Acquire)
    }

    /// The point a round trip starting now confirms once it comes back.
    pub(crate) fn mark(&self) -> Mark {
        // The disconnect count first: a disconnect between the two loads then voids the mark.
        let disconnects = self.disconnects.load(Ordering::Acquire);
        Mark {
            handed: self.handed.load(Ordering::Acquire),
            disconnects,
        }
    }

    /// A round trip started at `mark` came back: the server processed everything before it,
    /// unless the connection broke meanwhile.
    pub(crate) fn confirm(&self, mark: Mark) {
        if self.disconnects.load(Ordering::Acquire) == mark.disconnects {
            self.settled.fetch_max(mark.handed, Ordering::AcqRel);
        }
    }

    /// The connection broke: what was handed over and not confirmed may be lost.
    pub(crate) fn disconnected(&self) {
        self.disconnects.fetch_add(1, Ordering::AcqRel);
        let handed = self.handed.load(Ordering::Acquire);
        let settled = self.settled.swap(handed, Ordering::AcqRel);
        let unconfirmed = handed.saturating_sub(settled);
        if unconfirmed > 0 {
            tracing::warn!(
                unconfirmed,
                "the NATS connection broke with direct messages the server had not confirmed; \
                 at most that many were lost"
            );
            self.unconfirmed_total
                .fetch_add(unconfirmed, Ordering::Relaxed);
            self.metric.increment(unconfirmed);
        }
    }

    /// Messages unconfirmed at a disconnect, in all.
    pub(crate) fn unconfirmed_at_disconnect(&self) -> u64 {
        self.unconfirmed_total.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_unconfirmed_at_a_disconnect_is_counted_once() {
        let confirmations = Confirmations::new("test");
        for _ in 0..10 {
            confirmations.handed();
        }
        let mark = confirmations.mark();
        confirmations.handed();
        confirmations.confirm(mark);
        assert!(confirmations.pending());
        confirmations.handed();
        confirmations.disconnected();
        // 12 handed over, 10 confirmed.
        assert_eq!(confirmations.unconfirmed_at_disconnect(), 2);
        assert!(!confirmations.pending());
        confirmations.disconnected();
        assert_eq!(confirmations.unconfirmed_at_disconnect(), 2);
    }

    #[test]
    fn a_round_trip_across_a_disconnect_confirms_nothing() {
        let confirmations = Confirmations::new("test");
        for _ in 0..5 {
            confirmations.handed();
        }
        let mark = confirmations.mark();
        confirmations.disconnected();
        assert_eq!(confirmations.unconfirmed_at_disconnect(), 5);
        confirmations.handed();
        confirmations.confirm(mark);
        confirmations.disconnected();
        assert_eq!(confirmations.unconfirmed_at_disconnect(), 6);
    }
}
