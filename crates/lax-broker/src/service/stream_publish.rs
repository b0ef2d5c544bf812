//! StreamPublish: the high-throughput path.
//!
//! The call's response stream serves it: each time tonic polls it for the next ack, it reads
//! requests, sends each to JetStream in arrival order and keeps up to `window` acks in
//! flight, answering each request with a `PublishAck` as soon as its ack arrives (acks may
//! overtake one another). Serving in the poll, rather than in a task of its own feeding a
//! channel, saves a task hand-off and a channel hop per message. While the window is full, or
//! the client is slow to read its acks (HTTP/2 flow control then stops tonic from polling),
//! the stream stops reading requests, so flow control pushes back on the client and memory
//! stays bounded. A bad message gets a failed `PublishAck`; the call goes on. On shutdown the
//! stream stops reading, answers every message already read, and ends the call with
//! UNAVAILABLE so the client reconnects elsewhere. When the client goes away, tonic drops
//! the stream with the publishes still pending; JetStream keeps whatever it stored.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use futures::{
    FutureExt as _, Stream, StreamExt as _, future::BoxFuture, stream::FuturesUnordered,
};
use lax_proto::broker::v1 as pb;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};
use tonic::{Code, Status, Streaming};

use super::{Outcome, start_publish};
use crate::{metrics::OpenStream, publish::PublishCore, security::Grant};

const RPC: &str = "StreamPublish";

/// A message being sent to JetStream; it yields the future of its ack.
type Sending = BoxFuture<'static, BoxFuture<'static, Outcome>>;

/// The acks of one StreamPublish call; polling it serves the call.
pub(crate) struct AckStream {
    core: Arc<PublishCore>,
    grant: Arc<Grant>,
    requests: Streaming<pb::PublishRequest>,
    window: usize,
    call_deadline: Option<Instant>,
    /// Fires when the broker shuts down; `None` once the stream stopped reading.
    shutdown: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    /// The message being sent: one at a time, so JetStream gets them in arrival order.
    sending: Option<Sending>,
    /// Sent messages awaiting their acks; with `sending`, at most `window`.
    pending: PendingAcks,
    /// Why the call ends other than by the client closing its side, once known.
    end_status: Option<Status>,
    /// Set once the call's outcome is counted; dropped before that, the client went away.
    answered: bool,
    /// Counts the call as open while tonic holds the stream.
    _open: OpenStream,
}

impl std::fmt::Debug for AckStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckStream")
            .field("window", &self.window)
            .field("call_deadline", &self.call_deadline)
            .field("reading", &self.shutdown.is_some())
            .field("sending", &self.sending.is_some())
            .field("pending", &self.pending.len())
            .field("end_status", &self.end_status)
            .field("answered", &self.answered)
            .finish_non_exhaustive()
    }
}

impl AckStream {
    /// The response stream of one call, reading `requests`.
    pub(super) fn new(
        core: Arc<PublishCore>,
        grant: Arc<Grant>,
        requests: Streaming<pb::PublishRequest>,
        window: usize,
        call_deadline: Option<Instant>,
        shutdown: CancellationToken,
    ) -> Self {
        let open = core.metrics().grpc_stream_opened(RPC);
        AckStream {
            core,
            grant,
            requests,
            window,
            call_deadline,
            shutdown: Some(Box::pin(shutdown.cancelled_owned())),
            sending: None,
            pending: PendingAcks::new(),
            end_status: None,
            answered: false,
            _open: open,
        }
    }

    fn reading(&self) -> bool {
        self.shutdown.is_some()
    }

    /// Stops reading requests; the call then ends with `status` (`None`: OK) once every
    /// message read is answered.
    fn stop_reading(&mut self, status: Option<Status>) {
        self.shutdown = None;
        self.end_status = status;
    }

    /// Moves the call forward without yielding an ack: notes a shutdown, finishes the send
    /// under way, reads and sends requests while the window has room. Returns when it can do
    /// no more before being woken.
    fn advance(&mut self, cx: &mut Context<'_>) {
        if let Some(shutdown) = &mut self.shutdown
            && shutdown.poll_unpin(cx).is_ready()
        {
            self.stop_reading(Some(Status::unavailable(
                "the broker is shutting down; reconnect and resend unacked messages",
            )));
        }
        loop {
            if let Some(sending) = &mut self.sending {
                let Poll::Ready(ack) = sending.poll_unpin(cx) else {
                    return;
                };
                self.sending = None;
                self.pending.push(ack);
            }
            // A full window is woken again by `pending`, as acks complete.
            if !self.reading() || self.pending.len() >= self.window {
                return;
            }
            match self.requests.poll_next_unpin(cx) {
                Poll::Pending => return,
                Poll::Ready(Some(Ok(request))) => {
                    self.sending = Some(
                        start_publish(
                            &self.core,
                            RPC,
                            request,
                            None,
                            self.call_deadline,
                            &self.grant,
                        )
                        .boxed(),
                    );
                }
                Poll::Ready(Some(Err(status))) => {
                    tracing::debug!(%status, "StreamPublish request stream failed");
                    self.stop_reading(Some(status));
                }
                Poll::Ready(None) => self.stop_reading(None),
            }
        }
    }
}

/// Sent messages awaiting their acks.
///
/// futures-util's `FuturesUnordered` wakes its task again whenever one poll went through
/// every future it holds (so that futures waking themselves cannot starve other tasks); with
/// an ack or two pending, as under a light load, that is nearly every poll, and tokio answers
/// each such wake-up by waking a second worker thread. A future that never completes, polled
/// once and never woken, keeps that count out of reach.
struct PendingAcks(FuturesUnordered<BoxFuture<'static, Outcome>>);

impl PendingAcks {
    fn new() -> Self {
        let acks = FuturesUnordered::new();
        acks.push(futures::future::pending().boxed());
        PendingAcks(acks)
    }

    fn len(&self) -> usize {
        self.0.len() - 1
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn push(&mut self, ack: BoxFuture<'static, Outcome>) {
        self.0.push(ack);
    }

    /// The next outcome; `None` while no ack is pending.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Outcome>> {
        if self.is_empty() {
            return Poll::Ready(None);
        }
        self.0.poll_next_unpin(cx)
    }
}

impl Stream for AckStream {
    type Item = Result<pb::PublishAck, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.answered {
            return Poll::Ready(None);
        }
        // Acks first: each one answered makes room in the window.
        if let Poll::Ready(Some(outcome)) = this.pending.poll_next(cx) {
            return Poll::Ready(Some(Ok(Outcome::into_ack(outcome))));
        }
        this.advance(cx);
        // Also registers the wake-ups of the publishes just sent.
        if let Some(outcome) = ready!(this.pending.poll_next(cx)) {
            return Poll::Ready(Some(Ok(Outcome::into_ack(outcome))));
        }
        if this.reading() || this.sending.is_some() {
            return Poll::Pending;
        }
        this.answered = true;
        let end_status = this.end_status.take();
        let code = end_status.as_ref().map_or(Code::Ok, Status::code);
        this.core.metrics().request(RPC, code);
        Poll::Ready(end_status.map(Err))
    }
}

impl Drop for AckStream {
    fn drop(&mut self) {
        if !self.answered {
            // The client went away: acks still pending are dropped with the stream, and
            // JetStream keeps whatever it stored.
            self.core.metrics().request(RPC, Code::Cancelled);
        }
    }
}
