//! Credit-based delivery: a subscription pulls from JetStream only as many messages (and
//! bytes) as it has room for, and every message it has pulled holds its share of that room
//! until it is settled.
//!
//! Room is counted twice, with semaphores: per subscription (the subscriber's `max_inflight`
//! capped by the broker's per-subscriber limits) and across the broker (its consume limits),
//! each in messages and in bytes. A pull asks JetStream for no more than the room it was
//! granted; each message it brings takes a [`Held`] share of the grant, which gives the room
//! back when dropped (the message was acked, nacked, expired or given back). So what one
//! subscriber holds is bounded by its credit, whatever it asked for, and a subscriber that
//! stops reading stops pulling once its credit is spent.
//!
//! A third, narrower count keeps the broker's NATS connection alive: the bytes asked for but
//! not yet read off the socket. nats-server queues those for the connection and cuts it off
//! as a slow consumer once they pass its `max_pending` (64 MiB by default), so every pull also
//! takes a share of a [`PULL_WINDOW_BYTES`] window and gives each message's bytes back the
//! moment the message has arrived.

use std::sync::Arc;

use metrics::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::metrics::SubscriberFigures;

/// Most bytes the broker's pulls may have asked for and not yet received, together: a quarter
/// of nats-server's default `max_pending` for one connection, so that a broker starved of CPU
/// is not cut off as a slow consumer while the server holds what it asked for.
pub(crate) const PULL_WINDOW_BYTES: usize = 16 * 1024 * 1024;

/// The broker's consume limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConsumeLimits {
    /// Most unsettled messages per subscriber.
    pub(crate) subscriber_messages: usize,
    /// Most unsettled bytes per subscriber.
    pub(crate) subscriber_bytes: usize,
    /// Most unsettled messages across the broker.
    pub(crate) total_messages: usize,
    /// Most unsettled bytes across the broker.
    pub(crate) total_bytes: usize,
}

/// The room shared by every subscription of a broker.
#[derive(Debug)]
pub(crate) struct Budget {
    limits: ConsumeLimits,
    messages: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    /// Bytes in flight from nats-server to the broker (see [`PULL_WINDOW_BYTES`]).
    wire: Arc<Semaphore>,
}

impl Budget {
    /// The broker-wide budget. `max_message_bytes` is the largest message NATS may deliver:
    /// every byte limit is raised to it, so that any single message fits.
    pub(crate) fn new(limits: ConsumeLimits, max_message_bytes: usize) -> Self {
        let subscriber_bytes = limits.subscriber_bytes.max(max_message_bytes);
        let limits = ConsumeLimits {
            subscriber_messages: limits.subscriber_messages.max(1),
            subscriber_bytes,
            total_messages: limits.total_messages.max(limits.subscriber_messages.max(1)),
            total_bytes: limits.total_bytes.max(subscriber_bytes),
        };
        Budget {
            messages: Arc::new(Semaphore::new(limits.total_messages)),
            bytes: Arc::new(Semaphore::new(limits.total_bytes)),
            wire: Arc::new(Semaphore::new(PULL_WINDOW_BYTES.max(max_message_bytes))),
            limits,
        }
    }

    /// The limits in force (after raising them to fit one message).
    pub(crate) fn limits(&self) -> ConsumeLimits {
        self.limits
    }
}

/// Where a subscription's unsettled messages are counted: its consumer's gauges (a group's
/// members add up) and its own figures.
#[derive(Debug, Clone)]
pub(crate) struct InflightGauges {
    pub(crate) messages: Gauge,
    pub(crate) bytes: Gauge,
    pub(crate) subscriber: Arc<SubscriberFigures>,
}

/// One subscription's credit.
#[derive(Debug)]
pub(crate) struct Credit {
    budget: Arc<Budget>,
    messages: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    /// Most messages in one pull.
    max_pull: usize,
    /// The smallest byte grant worth a pull: the largest message.
    min_pull_bytes: usize,
    gauges: InflightGauges,
}

impl Credit {
    /// Credit for a subscriber asking for `max_inflight` (0: the broker's limit) and pulls of
    /// `prefetch` messages.
    pub(crate) fn new(
        budget: Arc<Budget>,
        max_inflight: usize,
        prefetch: usize,
        max_message_bytes: usize,
        gauges: InflightGauges,
    ) -> Self {
        let limits = budget.limits();
        let messages = match max_inflight {
            0 => limits.subscriber_messages,
            n => n.min(limits.subscriber_messages),
        };
        Credit {
            messages: Arc::new(Semaphore::new(messages)),
            bytes: Arc::new(Semaphore::new(limits.subscriber_bytes)),
            max_pull: prefetch.clamp(1, messages),
            min_pull_bytes: max_message_bytes.min(limits.subscriber_bytes),
            budget,
            gauges,
        }
    }

    /// Waits until the subscription has room for at least one message of the largest size,
    /// here and across the broker, and grants all the room there is, up to one pull.
    pub(crate) async fn grant(&self) -> Grant {
        let closed = "the credit semaphores are never closed";
        let mut messages = Arc::clone(&self.messages)
            .acquire_owned()
            .await
            .expect(closed);
        let more = self
            .messages
            .available_permits()
            .min(self.max_pull.saturating_sub(1));
        if more > 0
            && let Ok(extra) = Arc::clone(&self.messages).try_acquire_many_owned(more as u32)
        {
            messages.merge(extra);
        }
        let mut bytes = acquire(&self.bytes, self.min_pull_bytes).await;
        let more = self.bytes.available_permits();
        if more > 0
            && let Ok(extra) = Arc::clone(&self.bytes).try_acquire_many_owned(clamp_u32(more))
        {
            bytes.merge(extra);
        }
        // The broker-wide share: at least one message of the largest size, at most this grant.
        let mut all_messages = Arc::clone(&self.budget.messages)
            .acquire_owned()
            .await
            .expect(closed);
        let more = (messages.num_permits() - 1).min(self.budget.messages.available_permits());
        if more > 0
            && let Ok(extra) =
                Arc::clone(&self.budget.messages).try_acquire_many_owned(clamp_u32(more))
        {
            all_messages.merge(extra);
        }
        let mut all_bytes = acquire(&self.budget.bytes, self.min_pull_bytes).await;
        let more = (bytes.num_permits() - all_bytes.num_permits())
            .min(self.budget.bytes.available_permits());
        if more > 0
            && let Ok(extra) =
                Arc::clone(&self.budget.bytes).try_acquire_many_owned(clamp_u32(more))
        {
            all_bytes.merge(extra);
        }
        // What may be on the wire at once: at least one message of the largest size.
        let mut wire = acquire(&self.budget.wire, self.min_pull_bytes).await;
        let more = (all_bytes.num_permits().min(bytes.num_permits()))
            .saturating_sub(wire.num_permits())
            .min(self.budget.wire.available_permits());
        if more > 0
            && let Ok(extra) = Arc::clone(&self.budget.wire).try_acquire_many_owned(clamp_u32(more))
        {
            wire.merge(extra);
        }
        // Room granted here but not across the broker (or the wire window) goes back at once.
        let size = messages.num_permits().min(all_messages.num_permits());
        let byte_size = bytes
            .num_permits()
            .min(all_bytes.num_permits())
            .min(wire.num_permits());
        drop(messages.split(messages.num_permits() - size));
        drop(bytes.split(bytes.num_permits() - byte_size));
        drop(all_bytes.split(all_bytes.num_permits() - byte_size));
        drop(wire.split(wire.num_permits() - byte_size));
        Grant {
            messages,
            bytes,
            all_messages,
            all_bytes,
            wire,
            gauges: self.gauges.clone(),
        }
    }
}

fn clamp_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

async fn acquire(semaphore: &Arc<Semaphore>, n: usize) -> OwnedSemaphorePermit {
    Arc::clone(semaphore)
        .acquire_many_owned(clamp_u32(n))
        .await
        .expect("the credit semaphores are never closed")
}

/// Room for one pull; each message pulled takes its share with [`Grant::hold`], the rest goes
/// back when the grant is dropped.
#[derive(Debug)]
pub(crate) struct Grant {
    messages: OwnedSemaphorePermit,
    bytes: OwnedSemaphorePermit,
    all_messages: OwnedSemaphorePermit,
    all_bytes: OwnedSemaphorePermit,
    /// This pull's share of the wire window; each message gives its bytes back on arrival.
    wire: OwnedSemaphorePermit,
    gauges: InflightGauges,
}

impl Grant {
    /// Messages this grant has room for.
    pub(crate) fn messages(&self) -> usize {
        self.messages.num_permits()
    }

    /// Bytes this grant has room for.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes.num_permits()
    }

    /// The share of one pulled message of `size` bytes. A message larger than what is left
    /// (JetStream counts sizes slightly differently) takes what is left.
    pub(crate) fn hold(&mut self, size: usize) -> Held {
        let size = size.min(self.bytes.num_permits());
        let take = |permit: &mut OwnedSemaphorePermit, n: usize| {
            if n == 0 { None } else { permit.split(n) }
        };
        // The message has been read off the socket: it no longer counts against the window.
        let arrived = size.min(self.wire.num_permits());
        drop(take(&mut self.wire, arrived));
        self.gauges.messages.increment(1.0);
        self.gauges.bytes.increment(size as f64);
        self.gauges.subscriber.held(size);
        Held {
            _permits: [
                take(&mut self.messages, 1),
                take(&mut self.bytes, size),
                take(&mut self.all_messages, 1),
                take(&mut self.all_bytes, size),
            ],
            size,
            gauges: self.gauges.clone(),
        }
    }
}

/// One unsettled message's share of its subscription's and the broker's room.
#[derive(Debug)]
pub(crate) struct Held {
    _permits: [Option<OwnedSemaphorePermit>; 4],
    size: usize,
    gauges: InflightGauges,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.gauges.messages.decrement(1.0);
        self.gauges.bytes.decrement(self.size as f64);
        self.gauges.subscriber.released(self.size);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Gauges that count nowhere (the subscription's figures are not registered).
    pub(crate) fn gauges() -> InflightGauges {
        let (subscriber, _unregistered) =
            crate::metrics::BrokerMetrics::new().subscriber("S", "c", "1");
        InflightGauges {
            messages: Gauge::noop(),
            bytes: Gauge::noop(),
            subscriber,
        }
    }

    fn limits(subscriber: usize, total: usize) -> ConsumeLimits {
        ConsumeLimits {
            subscriber_messages: subscriber,
            subscriber_bytes: 1_000,
            total_messages: total,
            total_bytes: 10_000,
        }
    }

    #[tokio::test]
    async fn a_pull_never_exceeds_the_subscribers_room() {
        let budget = Arc::new(Budget::new(limits(100, 1_000), 100));
        let credit = Credit::new(Arc::clone(&budget), 10, 4, 100, gauges());
        let mut grant = credit.grant().await;
        assert_eq!(grant.messages(), 4, "one pull is prefetch messages");
        assert_eq!(grant.bytes(), 1_000);
        let held: Vec<Held> = (0..4).map(|_| grant.hold(10)).collect();
        drop(grant);
        let mut grant = credit.grant().await;
        assert_eq!(grant.messages(), 4);
        let more: Vec<Held> = (0..4).map(|_| grant.hold(10)).collect();
        drop(grant);
        let grant = credit.grant().await;
        assert_eq!(grant.messages(), 2, "8 of max_inflight 10 are held");
        assert_eq!(grant.bytes(), 1_000 - 80);
        drop(grant);
        drop(held);
        drop(more);
        assert_eq!(credit.grant().await.messages(), 4);
    }

    #[tokio::test]
    async fn a_subscriber_without_room_waits_until_a_message_is_settled() {
        let budget = Arc::new(Budget::new(limits(2, 1_000), 100));
        let credit = Credit::new(budget, 0, 64, 100, gauges());
        let mut grant = credit.grant().await;
        assert_eq!(
            grant.messages(),
            2,
            "capped by the broker's per-subscriber limit"
        );
        let first = grant.hold(10);
        let _second = grant.hold(10);
        drop(grant);
        let waiting = tokio::spawn(async move {
            let grant = credit.grant().await;
            grant.messages()
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(first);
        assert_eq!(waiting.await.unwrap(), 1);
    }

    #[tokio::test]
    async fn the_broker_wide_budget_caps_every_subscriber_together() {
        let budget = Arc::new(Budget::new(limits(10, 12), 100));
        let one = Credit::new(Arc::clone(&budget), 0, 10, 100, gauges());
        let two = Credit::new(Arc::clone(&budget), 0, 10, 100, gauges());
        let mut grant = one.grant().await;
        let held: Vec<Held> = (0..10).map(|_| grant.hold(10)).collect();
        drop(grant);
        let grant = two.grant().await;
        assert_eq!(
            grant.messages(),
            2,
            "12 across the broker, 10 held elsewhere"
        );
        drop(held);
    }

    #[tokio::test]
    async fn bytes_asked_for_and_not_yet_received_stay_within_the_wire_window() {
        let big = ConsumeLimits {
            subscriber_messages: 100_000,
            subscriber_bytes: 4 * PULL_WINDOW_BYTES,
            total_messages: 100_000,
            total_bytes: 4 * PULL_WINDOW_BYTES,
        };
        let budget = Arc::new(Budget::new(big, 1_024));
        let one = Credit::new(Arc::clone(&budget), 0, 10, 1_024, gauges());
        let two = Credit::new(Arc::clone(&budget), 0, 10, 1_024, gauges());
        let mut first = one.grant().await;
        assert_eq!(
            first.bytes(),
            PULL_WINDOW_BYTES,
            "one pull asks for the window at most"
        );
        let pending = tokio::spawn(async move { two.grant().await.bytes() });
        tokio::task::yield_now().await;
        assert!(
            !pending.is_finished(),
            "the window is spent until bytes arrive"
        );
        // A message arriving gives its bytes back to the window, though it is still held.
        let held = first.hold(64 * 1024);
        assert_eq!(pending.await.unwrap(), 64 * 1024);
        drop(first);
        assert_eq!(
            budget.wire.available_permits(),
            PULL_WINDOW_BYTES,
            "a finished pull gives back what never came"
        );
        drop(held);
    }

    #[test]
    fn byte_limits_fit_the_largest_message() {
        let budget = Budget::new(limits(10, 10), 64 * 1024);
        assert_eq!(budget.limits().subscriber_bytes, 64 * 1024);
        assert_eq!(budget.limits().total_bytes, 64 * 1024);
    }
}
