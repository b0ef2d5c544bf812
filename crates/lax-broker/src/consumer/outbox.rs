//! The response stream of one Subscribe: messages queued by the subscription task, handed to
//! tonic one by one. A subscription that acks on delivery acks each message here, as tonic
//! takes it, so that messages still queued when the client goes away are nak'd, not lost.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use futures::Stream;
use lax_proto::broker::v1 as pb;
use tokio::sync::{Notify, mpsc};
use tonic::Status;

use super::ledger::{Ledger, Lookup};

/// One queued message.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) message: pb::Message,
    /// The ack id to ack as the message leaves, for subscriptions that ack on delivery.
    pub(crate) ack_on_delivery: Option<String>,
}

/// The Subscribe response stream.
#[derive(Debug)]
pub(crate) struct Outbox {
    queue: mpsc::Receiver<Result<Outgoing, Status>>,
    ledger: Arc<Ledger>,
    /// Signalled whenever the queue runs empty (flow-controlled subscriptions wait for it).
    drained: Arc<Notify>,
}

impl Outbox {
    pub(crate) fn new(
        queue: mpsc::Receiver<Result<Outgoing, Status>>,
        ledger: Arc<Ledger>,
        drained: Arc<Notify>,
    ) -> Self {
        Outbox {
            queue,
            ledger,
            drained,
        }
    }
}

impl Stream for Outbox {
    type Item = Result<pb::Message, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = match self.queue.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(next) => next,
        };
        if self.queue.is_empty() {
            self.drained.notify_one();
        }
        Poll::Ready(next.map(|item| {
            item.map(|outgoing| {
                if let Some(ack_id) = outgoing.ack_on_delivery
                    && let Lookup::Found(message) = self.ledger.take(&ack_id)
                {
                    // A plain ack (no confirmation): the subscription asked for at-most-once
                    // handling from here on.
                    tokio::spawn(async move {
                        if let Err(e) = message.ack().await {
                            tracing::debug!(error = %e, "ack on delivery failed; JetStream redelivers");
                        }
                    });
                }
                outgoing.message
            })
        }))
    }
}
