//! StreamPublish: the high-throughput path.
//!
//! One task per call reads requests, sends each to JetStream in arrival order and keeps up to
//! `window` acks in flight, answering each request with a `PublishAck` as soon as its ack
//! arrives (acks may overtake one another). While the window is full, or the client is slow
//! to read its acks, the task stops reading requests, so HTTP/2 flow control pushes back on
//! the client and memory stays bounded. A bad message gets a failed `PublishAck`; the call
//! goes on. On shutdown the task stops reading, answers every message already sent, and ends
//! the call with UNAVAILABLE so the client reconnects elsewhere.

use std::sync::Arc;

use futures::{StreamExt as _, stream::FuturesUnordered};
use lax_proto::broker::v1 as pb;
use tokio::{sync::mpsc, time::Instant};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status, Streaming};

use super::{Outcome, start_publish};
use crate::{publish::PublishCore, security::Grant};

/// The acks of one StreamPublish call.
pub(crate) type AckStream = ReceiverStream<Result<pb::PublishAck, Status>>;

/// Starts the task serving one call and returns its ack stream.
pub(super) fn spawn(
    core: Arc<PublishCore>,
    grant: Arc<Grant>,
    requests: Streaming<pb::PublishRequest>,
    window: usize,
    call_deadline: Option<Instant>,
    shutdown: CancellationToken,
) -> AckStream {
    let (acks, rx) = mpsc::channel(window);
    tokio::spawn(serve(
        core,
        grant,
        requests,
        window,
        call_deadline,
        shutdown,
        acks,
    ));
    ReceiverStream::new(rx)
}

async fn serve(
    core: Arc<PublishCore>,
    grant: Arc<Grant>,
    mut requests: Streaming<pb::PublishRequest>,
    window: usize,
    call_deadline: Option<Instant>,
    shutdown: CancellationToken,
    acks: mpsc::Sender<Result<pb::PublishAck, Status>>,
) {
    let _open = core.metrics().grpc_stream_opened("StreamPublish");
    let mut pending = FuturesUnordered::new();
    let mut reading = true;
    let mut end_status: Option<Status> = None;
    loop {
        tokio::select! {
            biased;
            Some(outcome) = pending.next(), if !pending.is_empty() => {
                if acks.send(Ok(Outcome::into_ack(outcome))).await.is_err() {
                    // The client went away; acks still pending are dropped with the task,
                    // and JetStream keeps whatever it stored.
                    core.metrics().request("StreamPublish", Code::Cancelled);
                    return;
                }
            }
            () = shutdown.cancelled(), if reading => {
                reading = false;
                end_status = Some(Status::unavailable("the broker is shutting down; reconnect and resend unacked messages"));
            }
            next = requests.next(), if reading && pending.len() < window => match next {
                Some(Ok(request)) => {
                    let publish = start_publish(&core, "StreamPublish", request, None, call_deadline, &grant).await;
                    pending.push(publish);
                }
                Some(Err(status)) => {
                    tracing::debug!(%status, "StreamPublish request stream failed");
                    reading = false;
                    end_status = Some(status);
                }
                None => reading = false,
            },
            else => break,
        }
    }
    let code = end_status.as_ref().map_or(Code::Ok, Status::code);
    core.metrics().request("StreamPublish", code);
    if let Some(status) = end_status {
        // The client may already be gone; nothing is left to answer then.
        let _ = acks.send(Err(status)).await;
    }
}
