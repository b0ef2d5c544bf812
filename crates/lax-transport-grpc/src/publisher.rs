//! [`GrpcPublisher`]: the `lax_core::Publisher` over the pool.

use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use lax_core::{
    Delivery, Error, Limits, PublishRequest, Publisher, Receipt, drain::Drain, pool::Lease,
    validate::validate_request,
};
use lax_proto::broker::v1 as proto;
use tonic::{Response, Status};

use crate::{
    admin::BrokerAdmin,
    convert::{response_to_receipt, to_proto},
    lane::{self, BrokerClient, LaneConnector, Lanes},
    options::{GrpcOptions, PublishMode},
    status::{is_transport_failure, status_to_error},
};

/// A [`Publisher`] that sends every message to the LAX broker over gRPC and returns the
/// broker's JetStream ack.
///
/// Holds a pool of `connection_pool_size` HTTP/2 connections. In [`PublishMode::Stream`] (the
/// default) each connection carries one long-lived `StreamPublish` stream on which many
/// publishes are multiplexed; acks are matched back to callers by message id. A broken stream
/// fails only its own in-flight publishes, as "may be stored" (a retry with the same id is
/// safe: the broker de-duplicates on it), and its connection is rebuilt in the background.
///
/// Cloning is cheap and shares the pool. Dropping the last clone without
/// [`close`](Publisher::close) abandons the streams without waiting.
///
/// # Message ids
///
/// The request's `message_id` field carries [`PublishRequest::dedup_key`] (the broker sends it
/// as `Nats-Msg-Id`); when a dedup id differs from the message id, the message id travels in
/// the `Message-Id` header. Receipts always carry the caller's message id.
#[derive(Clone)]
pub struct GrpcPublisher {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Lanes,
    drain: Drain,
    limits: Limits,
}

impl fmt::Debug for GrpcPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcPublisher")
            .field(
                "broker_addrs",
                &self.inner.pool.connector().options().broker_addrs,
            )
            .field("mode", &self.inner.pool.connector().options().mode)
            .field("connections", &self.inner.pool.size())
            .field("healthy_connections", &self.inner.pool.healthy())
            .field("closed", &self.inner.drain.is_closed())
            .finish()
    }
}

/// The future of one [`GrpcPublisher`] publish.
#[must_use = "a publish does nothing unless polled"]
pub struct PublishFuture {
    inner: Pin<Box<dyn Future<Output = Result<Receipt, Error>> + Send>>,
}

impl PublishFuture {
    fn new(future: impl Future<Output = Result<Receipt, Error>> + Send + 'static) -> Self {
        PublishFuture {
            inner: Box::pin(future),
        }
    }

    fn ready(result: Result<Receipt, Error>) -> Self {
        PublishFuture::new(futures::future::ready(result))
    }
}

impl fmt::Debug for PublishFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublishFuture").finish_non_exhaustive()
    }
}

impl Future for PublishFuture {
    type Output = Result<Receipt, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl GrpcPublisher {
    /// Validates `options` and opens the pool.
    ///
    /// Succeeds once at least one connection (and, in stream mode, its stream) is up; the
    /// others keep connecting in the background. Fails with
    /// [`Config`](lax_core::ErrorKind::Config) for bad options and with `Unavailable` when no
    /// broker could be reached.
    pub async fn connect(options: GrpcOptions) -> Result<Self, Error> {
        Self::open(options, true).await
    }

    /// Like [`connect`](Self::connect), but succeeds when no broker is reachable yet: the
    /// connections keep trying in the background, and publishes fail fast with `Unavailable`
    /// (not sent) until one is up. For clients that must start while the broker is down.
    pub async fn connect_lazy(options: GrpcOptions) -> Result<Self, Error> {
        Self::open(options, false).await
    }

    async fn open(options: GrpcOptions, require_one: bool) -> Result<Self, Error> {
        let limits = options.limits();
        let pool = lane::connect(options, require_one).await?;
        Ok(GrpcPublisher {
            inner: Arc::new(Inner {
                pool,
                drain: Drain::new(),
                limits,
            }),
        })
    }

    /// The options this publisher was made with.
    pub fn options(&self) -> &GrpcOptions {
        self.inner.pool.connector().options()
    }

    /// The deadline of calls other than publishes (the options' `call_timeout`).
    pub(crate) fn call_timeout(&self) -> Duration {
        self.inner.pool.connector().options().call_timeout
    }

    /// Number of connections in the pool.
    pub fn pool_size(&self) -> usize {
        self.inner.pool.size()
    }

    /// Number of connections currently in rotation (the `{prefix}_grpc_connections` gauge).
    pub fn healthy_connections(&self) -> usize {
        self.inner.pool.healthy()
    }

    /// An administration client sharing one of the pool's connections.
    pub fn admin(&self) -> Result<BrokerAdmin, Error> {
        let lease = self.inner.pool.lease()?;
        Ok(BrokerAdmin::new(
            lease.member().channel(),
            self.inner.pool.connector().auth().clone(),
            self.inner.pool.connector().options().call_timeout,
        ))
    }

    /// A `BrokerService` client on one of the pool's connections, carrying the bearer token,
    /// for the calls this publisher does not wrap: Subscribe and the Ack, Nack, InProgress
    /// and Term calls that settle what it delivers.
    ///
    /// Fails with `Unavailable` when no connection is up. The client keeps its connection;
    /// a call on it fails once that connection breaks, so take a fresh one to retry.
    pub fn broker_client(&self) -> Result<BrokerClient, Error> {
        Ok(self.inner.pool.lease()?.member().client())
    }

    /// Publishes many messages in one `BatchPublish` call; the results come back in request
    /// order.
    ///
    /// Invalid messages fail with `InvalidInput` and are not sent; the others share one call
    /// whose deadline is the longest of their timeouts. The broker reports each message's
    /// outcome; a failure of the call itself fails every message sent with it.
    pub fn publish_batch(
        &self,
        requests: Vec<PublishRequest>,
    ) -> impl Future<Output = Vec<Result<Receipt, Error>>> + Send + 'static {
        let in_flight = self.inner.drain.enter();
        let inner = Arc::clone(&self.inner);
        async move {
            let Some(_in_flight) = in_flight else {
                return requests.iter().map(|_| Err(Error::closed())).collect();
            };
            inner.publish_batch(requests).await
        }
    }
}

impl Inner {
    /// How long this call may take: the message's timeout (else `publish_timeout`), cut to
    /// the time left before the request's deadline, so the call's deadline (`grpc-timeout`,
    /// the broker's `timeout_ms`) is the publish's own rather than a new one.
    fn timeout_of(&self, request: &PublishRequest) -> Result<Duration, Error> {
        let timeout = request
            .options
            .timeout
            .unwrap_or(self.pool.connector().options().publish_timeout);
        match request.time_left() {
            None => Ok(timeout),
            Some(left) if left.is_zero() => Err(Error::timed_out(
                "the publish deadline passed before the message was sent",
            )
            .with_delivery(Delivery::NotSent)),
            Some(left) => Ok(timeout.min(left)),
        }
    }

    async fn publish(&self, request: PublishRequest) -> Result<Receipt, Error> {
        let timeout = self.timeout_of(&request)?;
        let message = to_proto(&request, timeout);
        match self.pool.connector().options().mode {
            PublishMode::Stream => {
                let lease = self.pool.lease_where(lane::Lane::has_open_session)?;
                match lease.member().session() {
                    Some(session) => {
                        session
                            .publish(request.message_id.clone(), message, timeout)
                            .await
                    }
                    None => Err(Error::internal("a stream lease without a stream")),
                }
            }
            PublishMode::Unary => {
                let lease = self.pool.lease()?;
                let mut call = tonic::Request::new(message);
                call.set_timeout(timeout);
                let mut client = lease.member().client();
                let response = unary(&lease, timeout, client.publish(call)).await?;
                response_to_receipt(request.message_id, response)
            }
        }
    }

    async fn publish_batch(&self, requests: Vec<PublishRequest>) -> Vec<Result<Receipt, Error>> {
        let mut results: Vec<Result<Receipt, Error>> = Vec::with_capacity(requests.len());
        let mut sent = Vec::new();
        let mut messages = Vec::new();
        let mut timeout = Duration::ZERO;
        for (slot, request) in requests.into_iter().enumerate() {
            match validate_request(&request, &self.limits).and_then(|()| self.timeout_of(&request))
            {
                Err(error) => results.push(Err(error)),
                Ok(message_timeout) => {
                    timeout = timeout.max(message_timeout);
                    messages.push(to_proto(&request, message_timeout));
                    sent.push((slot, request.message_id));
                    // Overwritten below with this message's outcome.
                    results.push(Err(Error::internal("no outcome for this message")));
                }
            }
        }
        if messages.is_empty() {
            return results;
        }
        let count = messages.len();
        let outcome = match self.pool.lease() {
            Err(error) => Err(error),
            Ok(lease) => {
                let mut call = tonic::Request::new(proto::BatchPublishRequest {
                    messages,
                    default_options: None,
                });
                call.set_timeout(timeout);
                let mut client = lease.member().client();
                unary(&lease, timeout, client.batch_publish(call)).await
            }
        };
        match outcome {
            Ok(response) => {
                let mut responses = response.responses.into_iter();
                for (slot, message_id) in sent {
                    results[slot] = match responses.next() {
                        Some(response) => response_to_receipt(message_id, response),
                        None => Err(Error::internal(format!(
                            "the broker answered a batch of {count} messages with fewer responses"
                        ))
                        .maybe_stored()),
                    };
                }
            }
            Err(error) => {
                for (slot, _) in sent {
                    results[slot] = Err(Error::new(error.kind(), error.message().to_owned())
                        .with_delivery(error.delivery()));
                }
            }
        }
        results
    }
}

/// Runs one unary call on `lease` with a client-side deadline; a transport failure breaks
/// the lane.
async fn unary<T>(
    lease: &Lease<LaneConnector>,
    timeout: Duration,
    call: impl Future<Output = Result<Response<T>, Status>>,
) -> Result<T, Error> {
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(response)) => Ok(response.into_inner()),
        Ok(Err(status)) => {
            if is_transport_failure(&status) {
                lease.broken(&format!("call failed: {status}"));
            }
            Err(status_to_error(&status, true))
        }
        Err(_) => Err(Error::timed_out(format!(
            "no answer from the broker within {timeout:?}"
        ))),
    }
}

impl Publisher for GrpcPublisher {
    type Future = PublishFuture;

    fn publish(&self, request: PublishRequest) -> PublishFuture {
        let Some(in_flight) = self.inner.drain.enter() else {
            return PublishFuture::ready(Err(Error::closed()));
        };
        if let Err(error) = validate_request(&request, &self.inner.limits) {
            return PublishFuture::ready(Err(error));
        }
        let inner = Arc::clone(&self.inner);
        PublishFuture::new(async move {
            let _in_flight = in_flight;
            inner.publish(request).await
        })
    }

    /// Waits until every publish started before the call has its answer: on this transport a
    /// message is handed over when the broker has acked it.
    async fn flush(&self) -> Result<(), Error> {
        self.inner.drain.flush().await;
        Ok(())
    }

    /// Refuses new publishes, waits for those in flight, then half-closes every stream and
    /// waits (up to `close_timeout`) for the broker to end them.
    async fn close(&self) -> Result<(), Error> {
        self.inner.drain.close().await;
        let close_timeout = self.inner.pool.connector().options().close_timeout;
        self.inner.pool.shutdown(close_timeout).await;
        Ok(())
    }
}
