//! The ack table: every message a subscription has handed out and not yet settled, by the
//! ack id the broker gave it (`<subscription id>.<stream sequence>.<delivery count>`).
//!
//! An entry leaves the table when it is acked, nacked or terminated, when its ack wait
//! elapses (JetStream redelivers it then, under a new ack id), or when its subscription ends
//! (the broker naks it then, so the group gets it back at once).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    time::Duration,
};

use async_nats::jetstream;
use tokio::time::Instant;

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

/// A handed-out message.
#[derive(Debug)]
struct Pending {
    message: jetstream::Message,
    deadline: Instant,
}

/// What the table knows of an ack id.
#[derive(Debug)]
pub(crate) enum Lookup {
    /// Still pending: here is the message.
    Found(Box<jetstream::Message>),
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
}

impl Ledger {
    /// The subscription's id (the first token of its ack ids).
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// How long a handed-out message stays settleable.
    pub(crate) fn ack_wait(&self) -> Duration {
        self.ack_wait
    }

    /// The ack id of one delivery.
    pub(crate) fn ack_id(&self, stream_sequence: u64, delivery: u64) -> String {
        format!("{}.{stream_sequence}.{delivery}", self.id)
    }

    /// Records a message handed out now.
    pub(crate) fn record(&self, ack_id: String, message: jetstream::Message) {
        let deadline = Instant::now() + self.ack_wait;
        lock(&self.pending).insert(ack_id, Pending { message, deadline });
    }

    /// Takes a pending message out of the table (to settle it).
    pub(crate) fn take(&self, ack_id: &str) -> Lookup {
        match lock(&self.pending).remove(ack_id) {
            Some(pending) if pending.deadline > Instant::now() => {
                Lookup::Found(Box::new(pending.message))
            }
            Some(_) => Lookup::Expired,
            None => Lookup::Unknown,
        }
    }

    /// Puts back a message whose settlement could not be sent, so the caller may retry.
    pub(crate) fn restore(&self, ack_id: String, message: jetstream::Message) {
        self.record(ack_id, message);
    }

    /// Restarts a pending message's ack wait (it is being worked on) and returns it.
    pub(crate) fn extend(&self, ack_id: &str) -> Lookup {
        let now = Instant::now();
        let mut pending = lock(&self.pending);
        match pending.get_mut(ack_id) {
            Some(entry) if entry.deadline > now => {
                entry.deadline = now + self.ack_wait;
                Lookup::Found(Box::new(entry.message.clone()))
            }
            Some(_) => {
                pending.remove(ack_id);
                Lookup::Expired
            }
            None => Lookup::Unknown,
        }
    }

    /// Drops the entries whose ack wait elapsed; returns how many.
    pub(crate) fn sweep(&self) -> usize {
        let now = Instant::now();
        let mut pending = lock(&self.pending);
        let before = pending.len();
        pending.retain(|_, entry| entry.deadline > now);
        before - pending.len()
    }

    /// Takes every pending message still within its ack wait (the subscription is ending).
    pub(crate) fn drain(&self) -> Vec<jetstream::Message> {
        let now = Instant::now();
        lock(&self.pending)
            .drain()
            .filter(|(_, entry)| entry.deadline > now)
            .map(|(_, entry)| entry.message)
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

    /// A message as a pull delivers it, on a client that never connects (nothing is sent).
    async fn message(seq: u64) -> jetstream::Message {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect("nats://127.0.0.1:1")
            .await
            .expect("a lazy client needs no server");
        jetstream::Message {
            message: async_nats::Message {
                subject: "orders.created".into(),
                reply: Some(format!("$JS.ACK.ORDERS.c.1.{seq}.{seq}.0.0").into()),
                payload: "x".into(),
                headers: None,
                status: None,
                description: None,
                length: 1,
            },
            context: jetstream::new(client),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn ack_ids_are_found_until_settled_or_expired() {
        let registry = Registry::default();
        let ledger = registry.open(Duration::from_secs(30));
        let (one, two) = (ledger.ack_id(1, 1), ledger.ack_id(2, 1));
        assert!(one.starts_with(ledger.id()));
        ledger.record(one.clone(), message(1).await);
        ledger.record(two.clone(), message(2).await);
        assert_eq!(ledger.len(), 2);
        assert!(Arc::ptr_eq(&registry.find(&one).unwrap(), &ledger));
        assert!(registry.find("nobody.1.1").is_none());

        assert!(matches!(ledger.take(&one), Lookup::Found(_)));
        assert!(matches!(ledger.take(&one), Lookup::Unknown), "settled once");

        tokio::time::advance(Duration::from_secs(20)).await;
        assert!(matches!(ledger.extend(&two), Lookup::Found(_)));
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(ledger.sweep(), 0, "in progress restarted the ack wait");
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(matches!(ledger.take(&two), Lookup::Expired));

        registry.close(&ledger);
        assert!(registry.find(&one).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn sweeping_and_draining_skip_expired_entries() {
        let ledger = Registry::default().open(Duration::from_secs(5));
        ledger.record(ledger.ack_id(1, 1), message(1).await);
        tokio::time::advance(Duration::from_secs(6)).await;
        ledger.record(ledger.ack_id(2, 1), message(2).await);
        assert_eq!(ledger.sweep(), 1);
        assert_eq!(ledger.len(), 1);
        let drained = ledger.drain();
        assert_eq!(drained.len(), 1);
        assert_eq!(ledger.len(), 0);
    }
}
