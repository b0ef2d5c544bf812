//! [`DirectSubscription`]: a core NATS subscription as a [`Stream`] of [`DirectMessage`]s.

use std::{
    fmt,
    pin::Pin,
    task::{Context, Poll},
};

use async_nats::{Message, Subscriber};
use bytes::Bytes;
use futures::{Stream, StreamExt};
use lax_core::{Error, Headers, MESSAGE_ID_HEADER, SmolStr};

use crate::{error::connection_gone, headers::from_header_map};

/// A message received over core NATS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectMessage {
    /// The subject it was published to.
    pub subject: String,
    /// The payload, as received (no copy).
    pub payload: Bytes,
    /// Every header, `Message-Id` included; of a repeated header, the last value.
    pub headers: Headers,
    /// The LAX message id, from the `Message-Id` header.
    pub message_id: Option<SmolStr>,
    /// Where the publisher wants an answer, for request/reply.
    pub reply: Option<String>,
}

impl From<Message> for DirectMessage {
    fn from(message: Message) -> Self {
        let headers = message
            .headers
            .as_ref()
            .map(from_header_map)
            .unwrap_or_default();
        DirectMessage {
            subject: message.subject.to_string(),
            payload: message.payload,
            message_id: headers.get(MESSAGE_ID_HEADER).map(SmolStr::from),
            headers,
            reply: message.reply.map(|reply| reply.to_string()),
        }
    }
}

/// A subscription made with [`NatsPublisher::subscribe`](crate::NatsPublisher::subscribe).
///
/// Yields messages until it is unsubscribed, the publisher is closed, or the connection is
/// closed for good. Dropping it unsubscribes.
pub struct DirectSubscription {
    subject: String,
    queue_group: Option<String>,
    subscriber: Subscriber,
}

impl DirectSubscription {
    pub(crate) fn new(
        subject: String,
        queue_group: Option<String>,
        subscriber: Subscriber,
    ) -> Self {
        DirectSubscription {
            subject,
            queue_group,
            subscriber,
        }
    }

    /// The subject (or wildcard filter) subscribed to.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// The queue group, if any.
    pub fn queue_group(&self) -> Option<&str> {
        self.queue_group.as_deref()
    }

    /// Stops the subscription; messages already received can still be read, then the stream
    /// ends.
    ///
    /// # Errors
    ///
    /// `Unavailable` when the connection is already closed.
    pub async fn unsubscribe(&mut self) -> Result<(), Error> {
        self.subscriber
            .unsubscribe()
            .await
            .map_err(|e| connection_gone(false).with_source(e))
    }
}

impl Stream for DirectSubscription {
    type Item = DirectMessage;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.subscriber
            .poll_next_unpin(cx)
            .map(|message| message.map(DirectMessage::from))
    }
}

impl fmt::Debug for DirectSubscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DirectSubscription")
            .field("subject", &self.subject)
            .field("queue_group", &self.queue_group)
            .finish_non_exhaustive()
    }
}
