//! One long-lived `StreamPublish` stream: requests go out through a queue, acks come back
//! on a reader task and are matched to their callers by message id.

use std::{
    collections::{HashMap, VecDeque, hash_map::Entry},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use lax_core::{Delivery, Error, Receipt, SmolStr};
use lax_proto::broker::v1 as proto;
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use crate::{convert::ack_to_receipt, lane::BrokerClient, status::status_to_error};

/// What a waiting publish receives: the ack, or why the stream failed.
type Reply = Result<proto::PublishAck, Error>;

/// Callers waiting for acks, by message id. Several publishes of one id on one stream wait in
/// publish order and are answered first come, first served (JetStream stores such a message
/// once and reports the repeats as duplicates, so any answer for the id fits any of them).
///
/// Registering a caller allocates nothing beyond its reply channel: ids are inline
/// [`SmolStr`]s, one caller per id needs no queue, and the ids (our own, or the application's)
/// are hashed with foldhash rather than SipHash.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    state: Mutex<PendingState>,
}

#[derive(Debug, Default)]
struct PendingState {
    /// Set once the stream has failed or ended: nobody may wait any more.
    closed: bool,
    next_token: u64,
    waiters: HashMap<SmolStr, Waiters, foldhash::fast::RandomState>,
}

/// One caller: its token (to find it again when it gives up) and where its reply goes.
type Waiter = (u64, oneshot::Sender<Reply>);

/// The callers waiting for one id, in publish order.
#[derive(Debug)]
enum Waiters {
    One(Waiter),
    Several(VecDeque<Waiter>),
}

impl Waiters {
    fn push(&mut self, waiter: Waiter) {
        // An empty `VecDeque` does not allocate: it only holds the place while this moves.
        let queue = match std::mem::replace(self, Waiters::Several(VecDeque::new())) {
            Waiters::One(first) => VecDeque::from([first, waiter]),
            Waiters::Several(mut queue) => {
                queue.push_back(waiter);
                queue
            }
        };
        *self = Waiters::Several(queue);
    }

    /// Takes the first caller, and the rest if any are left.
    fn pop_front(self) -> (Option<Waiter>, Option<Waiters>) {
        match self {
            Waiters::One(waiter) => (Some(waiter), None),
            Waiters::Several(mut queue) => {
                let first = queue.pop_front();
                (
                    first,
                    (!queue.is_empty()).then_some(Waiters::Several(queue)),
                )
            }
        }
    }

    /// Removes the caller with `token`; `None` when none is left.
    fn without(self, token: u64) -> Option<Waiters> {
        match self {
            Waiters::One((t, _)) if t == token => None,
            Waiters::Several(mut queue) => {
                queue.retain(|(t, _)| *t != token);
                (!queue.is_empty()).then_some(Waiters::Several(queue))
            }
            one => Some(one),
        }
    }

    fn into_senders(self) -> impl Iterator<Item = oneshot::Sender<Reply>> {
        let (one, several) = match self {
            Waiters::One(waiter) => (Some(waiter), VecDeque::new()),
            Waiters::Several(queue) => (None, queue),
        };
        one.into_iter().chain(several).map(|(_, reply)| reply)
    }
}

impl Pending {
    fn lock(&self) -> MutexGuard<'_, PendingState> {
        // A panic while holding this lock cannot leave the map inconsistent (every change is a
        // single insert or remove), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers a caller for `id`, or `None` when the stream has already failed.
    fn register(self: &Arc<Self>, id: &str) -> Option<(Registration, oneshot::Receiver<Reply>)> {
        let (tx, rx) = oneshot::channel();
        let mut state = self.lock();
        if state.closed {
            return None;
        }
        let token = state.next_token;
        state.next_token += 1;
        let id = SmolStr::from(id);
        match state.waiters.entry(id.clone()) {
            Entry::Occupied(mut waiters) => waiters.get_mut().push((token, tx)),
            Entry::Vacant(place) => {
                place.insert(Waiters::One((token, tx)));
            }
        }
        let registration = Registration {
            pending: Arc::clone(self),
            id,
            token,
        };
        Some((registration, rx))
    }

    /// Hands `ack` to the first caller waiting for its id; an ack nobody waits for (its caller
    /// gave up) is dropped.
    fn complete(&self, ack: proto::PublishAck) {
        let waiter = {
            let mut state = self.lock();
            match state
                .waiters
                .remove(ack.message_id.as_str())
                .map(Waiters::pop_front)
            {
                Some((first, rest)) => {
                    if let Some(rest) = rest {
                        state
                            .waiters
                            .insert(SmolStr::from(ack.message_id.as_str()), rest);
                    }
                    first
                }
                None => None,
            }
        };
        match waiter {
            Some((_, reply)) => {
                // The caller may have given up in the meantime; nothing to do then.
                let _ = reply.send(Ok(ack));
            }
            None => tracing::debug!(message_id = %ack.message_id, "ack for no waiting publish"),
        }
    }

    /// Closes the table and fails every waiting caller with `error()`.
    fn fail_all(&self, error: impl Fn() -> Error) {
        let waiters = {
            let mut state = self.lock();
            state.closed = true;
            std::mem::take(&mut state.waiters)
        };
        for reply in waiters.into_values().flat_map(Waiters::into_senders) {
            let _ = reply.send(Err(error()));
        }
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }

    fn remove(&self, id: &SmolStr, token: u64) {
        let mut state = self.lock();
        if let Some(rest) = state.waiters.remove(id).and_then(|w| w.without(token)) {
            state.waiters.insert(id.clone(), rest);
        }
    }
}

/// A caller's place in [`Pending`]; dropping it (answered, timed out or abandoned) removes
/// the place, so nothing leaks when an ack never comes.
struct Registration {
    pending: Arc<Pending>,
    id: SmolStr,
    token: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.pending.remove(&self.id, self.token);
    }
}

/// The sending half of one `StreamPublish` stream. Dropping it half-closes the stream.
#[derive(Debug)]
pub(crate) struct Session {
    requests: mpsc::Sender<proto::PublishRequest>,
    pending: Arc<Pending>,
}

/// Why a session ended, as the reader task saw it.
#[derive(Debug)]
pub(crate) enum SessionEnd {
    /// The broker closed the response stream cleanly.
    Finished,
    /// The stream failed.
    Failed(Status),
}

/// The receiving half: reads acks until the stream ends.
#[derive(Debug)]
pub(crate) struct AckReader {
    responses: Streaming<proto::PublishAck>,
    pending: Arc<Pending>,
}

impl Session {
    /// Opens a `StreamPublish` call on `client`; `buffer` requests queue before senders wait.
    /// Returns once the broker has answered the call with its response headers.
    pub(crate) async fn open(
        client: &mut BrokerClient,
        buffer: usize,
    ) -> Result<(Session, AckReader), Status> {
        let (requests, outgoing) = mpsc::channel(buffer);
        let responses = client
            .stream_publish(ReceiverStream::new(outgoing))
            .await?
            .into_inner();
        let pending = Arc::new(Pending::default());
        let session = Session {
            requests,
            pending: Arc::clone(&pending),
        };
        Ok((session, AckReader { responses, pending }))
    }

    /// True once the stream has failed or ended.
    pub(crate) fn is_closed(&self) -> bool {
        self.pending.is_closed()
    }

    /// Sends `request` and waits for its ack until `timeout` has passed.
    ///
    /// Fails with `Unavailable` (not sent) when the stream closes before the message is
    /// queued, `TimedOut` when no ack arrives in time (not sent if the message never got into
    /// the queue), and with the stream's failure (may be stored) when the stream breaks while
    /// the ack is awaited.
    pub(crate) async fn publish(
        &self,
        message_id: SmolStr,
        request: proto::PublishRequest,
        timeout: Duration,
    ) -> Result<Receipt, Error> {
        let deadline = Instant::now() + timeout;
        // Acks name the wire request's `message_id`: the dedup key, which may differ from the
        // LAX message id the receipt carries.
        let (_registration, mut reply) = self
            .pending
            .register(&request.message_id)
            .ok_or_else(|| Error::unavailable("the publish stream to the broker is closed"))?;
        // The queue usually has room: no timer then.
        let queued = match self.requests.try_send(request) {
            Ok(()) => Ok(Ok(true)),
            Err(mpsc::error::TrySendError::Closed(_)) => Ok(Ok(false)),
            // While waiting for room in the queue, watch the reply too: a stream that fails
            // now answers through it, and this message never left.
            Err(mpsc::error::TrySendError::Full(request)) => {
                tokio::time::timeout_at(deadline, async {
                    tokio::select! {
                        sent = self.requests.send(request) => Ok(sent.is_ok()),
                        early = &mut reply => Err(early),
                    }
                })
                .await
            }
        };
        match queued {
            Ok(Ok(true)) => {}
            Ok(Err(Ok(Ok(ack)))) => return ack_to_receipt(message_id, ack),
            Ok(Ok(false) | Err(_)) => {
                return Err(Error::unavailable(
                    "the publish stream to the broker closed before the message was sent",
                ));
            }
            Err(_) => {
                return Err(Error::timed_out(format!(
                    "the publish stream stayed full for {timeout:?}"
                ))
                .with_delivery(Delivery::NotSent));
            }
        }
        match tokio::time::timeout_at(deadline, reply).await {
            Ok(Ok(Ok(ack))) => ack_to_receipt(message_id, ack),
            Ok(Ok(Err(error))) => Err(error),
            Ok(Err(_)) => {
                Err(Error::unavailable("the publish stream to the broker ended").maybe_stored())
            }
            Err(_) => Err(Error::timed_out(format!(
                "no ack from the broker within {timeout:?}"
            ))),
        }
    }
}

impl AckReader {
    /// Delivers acks until the stream ends, then fails every publish still waiting (their
    /// messages may be stored: the broker had them) and reports how it ended.
    pub(crate) async fn run(mut self) -> SessionEnd {
        let end = loop {
            match self.responses.message().await {
                Ok(Some(ack)) => self.pending.complete(ack),
                Ok(None) => break SessionEnd::Finished,
                Err(status) => break SessionEnd::Failed(status),
            }
        };
        match &end {
            SessionEnd::Finished => self.pending.fail_all(|| {
                Error::unavailable("the broker ended the publish stream").maybe_stored()
            }),
            SessionEnd::Failed(status) => self.pending.fail_all(|| status_to_error(status, true)),
        }
        end
    }
}

#[cfg(test)]
mod tests {
    use lax_core::ErrorKind;

    use super::*;

    fn ack(id: &str, sequence: u64) -> proto::PublishAck {
        proto::PublishAck {
            message_id: id.into(),
            success: true,
            sequence,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn acks_reach_their_callers_and_repeated_ids_queue() {
        let pending = Arc::new(Pending::default());
        let (_a, rx_a) = pending.register("a").unwrap();
        let (_b1, rx_b1) = pending.register("b").unwrap();
        let (_b2, rx_b2) = pending.register("b").unwrap();
        pending.complete(ack("b", 2));
        pending.complete(ack("a", 1));
        pending.complete(ack("b", 3));
        assert_eq!(rx_a.await.unwrap().unwrap().sequence, 1);
        assert_eq!(rx_b1.await.unwrap().unwrap().sequence, 2);
        assert_eq!(rx_b2.await.unwrap().unwrap().sequence, 3);
    }

    #[tokio::test]
    async fn a_dropped_registration_leaves_nothing_behind() {
        let pending = Arc::new(Pending::default());
        let (first, _rx1) = pending.register("a").unwrap();
        let (_second, rx2) = pending.register("a").unwrap();
        drop(first);
        pending.complete(ack("a", 9));
        assert_eq!(
            rx2.await.unwrap().unwrap().sequence,
            9,
            "the abandoned caller is skipped"
        );
        assert!(pending.lock().waiters.is_empty());
    }

    #[tokio::test]
    async fn a_caller_giving_up_in_the_middle_of_a_queue_keeps_the_order() {
        let pending = Arc::new(Pending::default());
        let (_first, rx1) = pending.register("a").unwrap();
        let (second, _rx2) = pending.register("a").unwrap();
        let (_third, rx3) = pending.register("a").unwrap();
        drop(second);
        pending.complete(ack("a", 1));
        pending.complete(ack("a", 2));
        assert_eq!(rx1.await.unwrap().unwrap().sequence, 1);
        assert_eq!(rx3.await.unwrap().unwrap().sequence, 2);
        assert!(pending.lock().waiters.is_empty());
    }

    #[tokio::test]
    async fn failing_closes_the_table() {
        let pending = Arc::new(Pending::default());
        let (_r, rx) = pending.register("a").unwrap();
        pending.fail_all(|| Error::unavailable("broke").maybe_stored());
        let error = rx.await.unwrap().unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Unavailable);
        assert!(error.may_be_stored());
        assert!(pending.register("b").is_none());
        assert!(pending.is_closed());
    }
}
