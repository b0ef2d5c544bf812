//! The ack table: every message a subscription has handed out and not yet settled, by the
//! ack id the broker gave it (`<subscription id>.<stream sequence>.<delivery count>`).
//!
//! An entry keeps the message's ack subject (not its payload, which went to the client) and
//! its share of the subscription's credit. It leaves the table when it is acked, nacked or
//! terminated, when its ack wait elapses (JetStream redelivers it then, under a new ack id),
//! or when its subscription ends (the broker naks it then, so the group gets it back at once).
//!
//! **Leases.** While a subscription keeps settling messages, the broker renews the ack wait
//! of everything it holds (see [`Ledger::renew`]), up to a maximum lease: ack wait counts
//! from when the subscriber could have the message, not from when the broker pulled it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use async_nats::Subject;
use tokio::time::Instant;

use super::credit::Held;

/// The open subscriptions of one broker, by subscription id.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    ledgers: Mutex<HashMap<String, Arc<Ledger>>>,
}

/// Locks a map that holds no invariant a panicking holder could break.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Registry {
    /// Opens the ledger of a new subscription with a fresh id.
    pub(crate) fn open(&self, ack_wait: Duration) -> Arc<Ledger> {
        let ledger = Arc::new(Ledger {
            id: nuid::next().to_string(),
            ack_wait,
            pending: Mutex::new(HashMap::new()),
            expired: Mutex::new(HashMap::new()),
            last_settled: Mutex::new(Instant::now()),
        });
        lock(&self.ledgers).insert(ledger.id.clone(), Arc::clone(&ledger));
        ledger
    }

    /// Forgets a subscription: its ack ids are unknown from now on.
    pub(crate) fn close(&self, ledger: &Ledger) {
        lock(&self.ledgers).remove(&ledger.id);
    }

    /// The ledger of the subscription that issued `ack_id`.
    pub(crate) fn find(&self, ack_id: &str) -> Option<Arc<Ledger>> {
        let subscription = ack_id.split('.').next()?;
        lock(&self.ledgers).get(subscription).cloned()
    }
}

/// How long a swept ack id is remembered as expired, at least.
const EXPIRED_KEPT: Duration = Duration::from_secs(30);

/// A handed-out message.
#[derive(Debug)]
pub(crate) struct Pending {
    /// Where its ack goes.
    pub(crate) reply: Subject,
    /// Its share of the subscription's credit, given back when the entry goes.
    _held: Held,
    /// When JetStream's ack wait for it elapses (renewed by leases).
    deadline: Instant,
    /// When the broker pulled it: leases stop renewing after the maximum lease.
    since: Instant,
}

impl Pending {
    /// A message pulled now, with its ack subject and credit share.
    pub(crate) fn new(reply: Subject, held: Held, ack_wait: Duration) -> Self {
        let now = Instant::now();
        Pending {
            reply,
            _held: held,
            deadline: now + ack_wait,
            since: now,
        }
    }
}

/// Why an ack id is not pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Missing {
    /// Its ack wait elapsed; JetStream redelivers it.
    Expired,
    /// Never issued, already settled, or its subscription ended.
    Unknown,
}

/// The pending messages of one subscription.
#[derive(Debug)]
pub(crate) struct Ledger {
    id: String,
    ack_wait: Duration,
    pending: Mutex<HashMap<String, Pending>>,
    /// Ack ids swept out after their ack wait, by when they expired: a late settle is told
    /// "expired", not "unknown", for another ack wait (at least [`EXPIRED_KEPT`]).
    expired: Mutex<HashMap<String, Instant>>,
    /// When the subscriber last settled a message (or subscribed).
    last_settled: Mutex<Instant>,
}

impl Ledger {
    /// The subscription's id (the first token of its ack ids).
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// How long a handed-out message stays settleable without a lease.
    pub(crate) fn ack_wait(&self) -> Duration {
        self.ack_wait
    }

    /// The ack id of one delivery.
    pub(crate) fn ack_id(&self, stream_sequence: u64, delivery: u64) -> String {
        format!("{}.{stream_sequence}.{delivery}", self.id)
    }

    /// Records a message pulled for the subscriber.
    pub(crate) fn record(&self, ack_id: String, pending: Pending) {
        lock(&self.pending).insert(ack_id, pending);
    }

    /// Takes a pending message out of the table (to settle it).
    pub(crate) fn take(&self, ack_id: &str) -> Result<Pending, Missing> {
        let now = Instant::now();
        let taken = lock(&self.pending).remove(ack_id);
        match taken {
            Some(pending) if pending.deadline > now => {
                *lock(&self.last_settled) = now;
                Ok(pending)
            }
            Some(_) => Err(Missing::Expired),
            None => Err(self.missing(ack_id)),
        }
    }

    /// Why an ack id not in the table is missing.
    fn missing(&self, ack_id: &str) -> Missing {
        if lock(&self.expired).contains_key(ack_id) {
            Missing::Expired
        } else {
            Missing::Unknown
        }
    }

    /// Puts back a message whose settlement could not be sent, so the caller may retry.
    pub(crate) fn restore(&self, ack_id: String, pending: Pending) {
        self.record(ack_id, pending);
    }

    /// Restarts a pending message's ack wait (it is being worked on) and returns its ack
    /// subject.
    pub(crate) fn extend(&self, ack_id: &str) -> Result<Subject, Missing> {
        let now = Instant::now();
        let mut pending = lock(&self.pending);
        match pending.get_mut(ack_id) {
            Some(entry) if entry.deadline > now => {
                entry.deadline = now + self.ack_wait;
                *lock(&self.last_settled) = now;
                Ok(entry.reply.clone())
            }
            Some(_) => {
                pending.remove(ack_id);
                Err(Missing::Expired)
            }
            None => Err(self.missing(ack_id)),
        }
    }

    /// The lease round: when the subscriber settled something within the last ack wait (it
    /// is alive and working through what it holds), renews the ack wait of every message
    /// whose deadline is less than half an ack wait away and that has been held for less
    /// than `max_lease`; returns their ack subjects, for the broker to tell JetStream
    /// (in progress). A subscriber that settles nothing for a whole ack wait gets no
    /// renewal: its messages go to the group's other members.
    pub(crate) fn renew(&self, max_lease: Duration) -> Vec<Subject> {
        let now = Instant::now();
        if now.duration_since(*lock(&self.last_settled)) >= self.ack_wait {
            return Vec::new();
        }
        let soon = now + self.ack_wait / 2;
        lock(&self.pending)
            .values_mut()
            .filter(|entry| {
                entry.deadline > now
                    && entry.deadline <= soon
                    && now.duration_since(entry.since) < max_lease
            })
            .map(|entry| {
                entry.deadline = now + self.ack_wait;
                entry.reply.clone()
            })
            .collect()
    }

    /// Drops the entries whose ack wait elapsed (giving back their credit, remembering
    /// their ack ids as expired for a while); returns how many.
    pub(crate) fn sweep(&self) -> usize {
        let now = Instant::now();
        let swept: Vec<String> = {
            let mut pending = lock(&self.pending);
            let expired: Vec<String> = pending
                .iter()
                .filter(|(_, entry)| entry.deadline <= now)
                .map(|(ack_id, _)| ack_id.clone())
                .collect();
            for ack_id in &expired {
                pending.remove(ack_id);
            }
            expired
        };
        let kept = self.ack_wait.max(EXPIRED_KEPT);
        let mut expired = lock(&self.expired);
        expired.retain(|_, at| now.duration_since(*at) < kept);
        let count = swept.len();
        expired.extend(swept.into_iter().map(|ack_id| (ack_id, now)));
        count
    }

    /// Takes the ack subject of every pending message still within its ack wait (the
    /// subscription is ending).
    pub(crate) fn drain(&self) -> Vec<Subject> {
        let now = Instant::now();
        lock(&self.pending)
            .drain()
            .filter(|(_, entry)| entry.deadline > now)
            .map(|(_, entry)| entry.reply)
            .collect()
    }

    /// Messages pending.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        lock(&self.pending).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::credit::{Budget, ConsumeLimits, Credit, tests::gauges};

    /// A pending entry with a credit share of its own.
    async fn pending(seq: u64, ack_wait: Duration) -> Pending {
        let budget = Arc::new(Budget::new(
            ConsumeLimits {
                subscriber_messages: 10,
                subscriber_bytes: 100,
                total_messages: 10,
                total_bytes: 100,
            },
            1,
        ));
        let credit = Credit::new(budget, 1, 1, 1, gauges());
        let held = credit.grant().await.hold(1);
        Pending::new(
            format!("$JS.ACK.ORDERS.c.1.{seq}.{seq}.0.0").into(),
            held,
            ack_wait,
        )
    }

    #[tokio::test(start_paused = true)]
    async fn ack_ids_are_found_until_settled_or_expired() {
        let wait = Duration::from_secs(30);
        let registry = Registry::default();
        let ledger = registry.open(wait);
        let (one, two) = (ledger.ack_id(1, 1), ledger.ack_id(2, 1));
        assert!(one.starts_with(ledger.id()));
        ledger.record(one.clone(), pending(1, wait).await);
        ledger.record(two.clone(), pending(2, wait).await);
        assert_eq!(ledger.len(), 2);
        assert!(Arc::ptr_eq(&registry.find(&one).unwrap(), &ledger));
        assert!(registry.find("nobody.1.1").is_none());

        assert!(ledger.take(&one).is_ok());
        assert!(
            matches!(ledger.take(&one), Err(Missing::Unknown)),
            "settled once"
        );

        tokio::time::advance(Duration::from_secs(20)).await;
        assert!(ledger.extend(&two).is_ok());
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(ledger.sweep(), 0, "in progress restarted the ack wait");
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(matches!(ledger.take(&two), Err(Missing::Expired)));

        registry.close(&ledger);
        assert!(registry.find(&one).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn sweeping_and_draining_skip_expired_entries() {
        let wait = Duration::from_secs(5);
        let ledger = Registry::default().open(wait);
        ledger.record(ledger.ack_id(1, 1), pending(1, wait).await);
        tokio::time::advance(Duration::from_secs(6)).await;
        ledger.record(ledger.ack_id(2, 1), pending(2, wait).await);
        assert_eq!(ledger.sweep(), 1);
        assert_eq!(ledger.len(), 1);
        assert!(
            matches!(ledger.take(&ledger.ack_id(1, 1)), Err(Missing::Expired)),
            "a swept ack id is still known as expired"
        );
        let drained = ledger.drain();
        assert_eq!(drained.len(), 1);
        assert_eq!(ledger.len(), 0);
        tokio::time::advance(EXPIRED_KEPT).await;
        ledger.sweep();
        assert!(matches!(
            ledger.take(&ledger.ack_id(1, 1)),
            Err(Missing::Unknown)
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn leases_last_while_the_subscriber_settles_and_stop_when_it_does_not() {
        let wait = Duration::from_secs(10);
        let max_lease = Duration::from_secs(60);
        let ledger = Registry::default().open(wait);
        let held = ledger.ack_id(1, 1);
        ledger.record(held.clone(), pending(1, wait).await);
        for seq in 2..=10 {
            ledger.record(ledger.ack_id(seq, 1), pending(seq, wait).await);
        }
        assert!(ledger.renew(max_lease).is_empty(), "nothing is due yet");
        // The subscriber works through the others, one every 2 s; message 1 stays held.
        for seq in 2..=10 {
            tokio::time::advance(Duration::from_secs(2)).await;
            assert!(ledger.take(&ledger.ack_id(seq, 1)).is_ok());
            ledger.renew(max_lease);
        }
        assert_eq!(ledger.sweep(), 0, "renewed past its first ack wait");
        assert!(ledger.extend(&held).is_ok());
        // It settles nothing more: no renewal after one ack wait.
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(ledger.renew(max_lease).len(), 1, "still settling recently");
        tokio::time::advance(Duration::from_secs(6)).await;
        assert!(ledger.renew(max_lease).is_empty());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(matches!(ledger.take(&held), Err(Missing::Expired)));
    }

    #[tokio::test(start_paused = true)]
    async fn leases_end_at_the_maximum_lease() {
        let wait = Duration::from_secs(10);
        let ledger = Registry::default().open(wait);
        ledger.record(ledger.ack_id(1, 1), pending(1, wait).await);
        let mut renewed = 0;
        for _ in 0..20 {
            tokio::time::advance(Duration::from_secs(3)).await;
            // Another message settled meanwhile keeps the subscriber "working".
            *lock(&ledger.last_settled) = Instant::now();
            renewed += ledger.renew(Duration::from_secs(30)).len();
        }
        assert!(
            (2..=5).contains(&renewed),
            "{renewed} renewals in 30 s of lease"
        );
        assert_eq!(ledger.sweep(), 1, "expired once the lease ran out");
    }
}
