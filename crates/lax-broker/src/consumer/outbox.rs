//! The response stream of one Subscribe: messages queued by the subscription task, handed to
//! tonic one by one. A subscription that acks on delivery acks each message here, as tonic
//! takes it, so that messages still queued when the client goes away are nak'd, not lost:
//! what such a subscriber can lose when it dies is what is in transit to it (bounded by its
//! HTTP/2 receive window), never the backlog, which the broker pulls only as tonic takes
//! messages.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use async_nats::jetstream::AckKind;
use bytes::Bytes;
use futures::Stream;
use lax_proto::broker::v1 as pb;
use tokio::sync::{Notify, mpsc};
use tonic::Status;

use super::ledger::Ledger;
use crate::metrics::{OpenStream, SubscriberFigures};

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
    /// Signalled whenever the queue is at most half full (the next pull waits for it).
    drained: Arc<Notify>,
    /// Where acks on delivery go out.
    client: async_nats::Client,
    /// Counts the Subscribe stream as open while tonic holds it.
    _open: OpenStream,
    /// Counts what tonic takes.
    figures: Arc<SubscriberFigures>,
}

impl Outbox {
    pub(crate) fn new(
        queue: mpsc::Receiver<Result<Outgoing, Status>>,
        ledger: Arc<Ledger>,
        drained: Arc<Notify>,
        client: async_nats::Client,
        open: OpenStream,
        figures: Arc<SubscriberFigures>,
    ) -> Self {
        Outbox {
            queue,
            ledger,
            drained,
            client,
            _open: open,
            figures,
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
        if self.queue.len() <= self.queue.max_capacity() / 2 {
            self.drained.notify_one();
        }
        Poll::Ready(next.map(|item| {
            item.map(|outgoing| {
                self.figures.delivered_one();
                if let Some(ack_id) = outgoing.ack_on_delivery
                    && let Ok(pending) = self.ledger.take(&ack_id)
                {
                    // A plain ack (no confirmation): the subscription asked for at-most-once
                    // handling from here on. Its credit share goes back with `pending`.
                    let client = self.client.clone();
                    tokio::spawn(async move {
                        if let Err(e) = client
                            .publish(pending.reply, Bytes::from(AckKind::Ack))
                            .await
                        {
                            tracing::debug!(error = %e, "ack on delivery failed; JetStream redelivers");
                        }
                    });
                }
                outgoing.message
            })
        }))
    }
}
