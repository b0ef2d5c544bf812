//! JetStream helpers that retry the transient failures of a young or changing cluster.

use std::time::{Duration, Instant};

use async_nats::jetstream::{
    self, ErrorCode,
    context::{CreateStreamError, CreateStreamErrorKind, PublishError, PublishErrorKind},
    message::PublishMessage,
    publish::PublishAck,
    stream,
};
use bytes::Bytes;

use crate::TestkitError;

/// The longest a single attempt may take; a stuck request is retried rather than waited on.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(3);
const FIRST_BACKOFF: Duration = Duration::from_millis(10);
const MAX_BACKOFF: Duration = Duration::from_millis(250);

/// JetStream error codes that mean "not now" rather than "no": the cluster has no meta
/// leader yet, its peers are not known yet, or leadership is moving.
const TRANSIENT_CODES: [ErrorCode; 7] = [
    ErrorCode::CLUSTER_NO_PEERS, // 10005 "insufficient resources" / no suitable peers
    ErrorCode::CLUSTER_NOT_AVAILABLE, // 10008 JetStream system temporarily unavailable
    ErrorCode::CLUSTER_NOT_LEADER, // 10009
    ErrorCode::CLUSTER_NOT_ACTIVE, // 10006
    ErrorCode::CLUSTER_INCOMPLETE, // 10004
    ErrorCode::CLUSTER_NOT_ASSIGNED, // 10007
    ErrorCode::INSUFFICIENT_RESOURCES, // 10023
];

/// True for stream-create failures worth retrying: a request timeout, no JetStream responder
/// yet, or one of the transient cluster error codes (among them 10005, "no suitable peers").
pub fn is_transient_create_error(error: &CreateStreamError) -> bool {
    match error.kind() {
        CreateStreamErrorKind::TimedOut | CreateStreamErrorKind::JetStreamUnavailable => true,
        CreateStreamErrorKind::JetStream(e) => TRANSIENT_CODES.contains(&e.error_code()),
        _ => false,
    }
}

/// Creates a stream, retrying transient failures (see [`is_transient_create_error`]) with a
/// short backoff until `timeout` has passed.
///
/// A freshly started cluster is ready in a fraction of a second, but a replicated stream
/// created right then may time out or fail with "no suitable peers" (10005) until the meta
/// leader has heard from every peer. Each attempt is bounded by at most 3 s (less when the
/// deadline is nearer). Creating a stream whose identical config already exists succeeds, so
/// an attempt that timed out on the client but went through on the server does no harm.
///
/// ```no_run
/// # async fn demo() -> Result<(), lax_testkit::TestkitError> {
/// use std::time::Duration;
/// use async_nats::jetstream::stream::{Config, StorageType};
///
/// let cluster = lax_testkit::NatsCluster::start(3).await?;
/// let js = async_nats::jetstream::new(cluster.client().await?);
/// let stream = lax_testkit::create_stream_with_retry(
///     &js,
///     Config {
///         name: "ORDERS".into(),
///         subjects: vec!["orders.>".into()],
///         num_replicas: 3,
///         storage: StorageType::File,
///         ..Default::default()
///     },
///     Duration::from_secs(20),
/// )
/// .await?;
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// [`TestkitError::Nats`] with the last failure, at once for a permanent one, or when the
/// deadline passes.
pub async fn create_stream_with_retry(
    js: &jetstream::Context,
    config: stream::Config,
    timeout: Duration,
) -> Result<stream::Stream, TestkitError> {
    let what = format!("creating stream {}", config.name);
    retry_until(js, timeout, &what, is_transient_create_error, |context| {
        let config = config.clone();
        async move { context.create_stream(config).await }
    })
    .await
}

/// Runs `attempt` — given a copy of `js` whose request timeout fits the time left — until it
/// succeeds, fails with an error `transient` calls permanent, or `timeout` passes, backing off
/// between attempts.
async fn retry_until<T, E, F, Fut>(
    js: &jetstream::Context,
    timeout: Duration,
    what: &str,
    transient: fn(&E) -> bool,
    mut attempt: F,
) -> Result<T, TestkitError>
where
    E: std::error::Error + Send + Sync + 'static,
    F: FnMut(jetstream::Context) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let started = Instant::now();
    let deadline = started + timeout;
    let mut backoff = FIRST_BACKOFF;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let remaining = deadline.saturating_duration_since(Instant::now());
        let mut context = js.clone();
        context.set_timeout(remaining.clamp(Duration::from_millis(1), ATTEMPT_TIMEOUT));
        let error = match attempt(context).await {
            Ok(done) => {
                tracing::debug!(what, attempts, elapsed = ?started.elapsed(), "done");
                return Ok(done);
            }
            Err(e) => e,
        };
        let is_transient = transient(&error);
        let now = Instant::now();
        if !is_transient || now >= deadline {
            let why = if is_transient {
                "gave up at the deadline"
            } else {
                "permanent error"
            };
            return Err(TestkitError::nats(
                format!(
                    "{what} ({why}; {attempts} attempts in {:?})",
                    started.elapsed()
                ),
                error,
            ));
        }
        tracing::debug!(what, attempts, %error, "transient failure, retrying");
        tokio::time::sleep(backoff.min(deadline - now)).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// True for publish failures worth retrying with the same message id: timeouts, a broken
/// connection, no responders while a stream leader is elected, and JetStream's temporary
/// errors. Expectation failures (wrong last sequence / message id) and oversize messages
/// are permanent.
pub fn is_transient_publish_error(error: &PublishError) -> bool {
    !matches!(
        error.kind(),
        PublishErrorKind::WrongLastMessageId
            | PublishErrorKind::WrongLastSequence
            | PublishErrorKind::MaxPayloadExceeded
    )
}

/// Publishes `payload` to `subject` with the `Nats-Msg-Id` `message_id` and waits for its
/// JetStream ack, retrying transient failures (see [`is_transient_publish_error`]) with the
/// same id until `timeout` has passed. The stream's duplicate window makes the retries safe:
/// a message stored by an attempt whose ack was lost is acked as a duplicate, not stored twice.
///
/// # Errors
///
/// [`TestkitError::Nats`] with the last failure, at once for a permanent one, or when the
/// deadline passes.
pub async fn publish_with_retry(
    js: &jetstream::Context,
    subject: &str,
    message_id: &str,
    payload: Bytes,
    timeout: Duration,
) -> Result<PublishAck, TestkitError> {
    let what = format!("publishing {message_id} to {subject}");
    retry_until(js, timeout, &what, is_transient_publish_error, |context| {
        let publish = PublishMessage::build()
            .payload(payload.clone())
            .message_id(message_id);
        async move {
            context
                .send_publish(subject.to_owned(), publish)
                .await?
                .await
        }
    })
    .await
}
