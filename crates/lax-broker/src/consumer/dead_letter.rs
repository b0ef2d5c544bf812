//! Dead letters: a message whose deliveries ran out is published, with headers saying where
//! it came from, to a dead-letter subject that a stream captures, then terminated.
//!
//! The default subject is `lax.dlq.<stream>.<original subject>`, captured by the `LAX_DLQ`
//! stream (file storage) that the broker creates when a subscription first needs it. A
//! subscription whose dead letters no stream would keep, or would land in the very stream
//! being consumed (a loop), is refused up front: dead letters are never published where
//! nothing stores them.

use std::sync::atomic::{AtomicBool, Ordering};

use async_nats::{
    HeaderMap,
    jetstream::{self, ErrorCode, message::Info, stream},
};
use tonic::Status;

use crate::{error::status_for_api, jsapi::JsApi};

/// The stream the broker creates for default dead-letter subjects.
pub const DEAD_LETTER_STREAM: &str = "LAX_DLQ";
/// The prefix of default dead-letter subjects: `lax.dlq.<stream>.<original subject>`.
pub const DEAD_LETTER_PREFIX: &str = "lax.dlq";
/// Header of a dead letter: the subject the message was published to.
pub const ORIGINAL_SUBJECT_HEADER: &str = "Lax-Dlq-Subject";
/// Header of a dead letter: the stream it was consumed from.
pub const ORIGINAL_STREAM_HEADER: &str = "Lax-Dlq-Stream";
/// Header of a dead letter: its sequence in that stream.
pub const ORIGINAL_SEQUENCE_HEADER: &str = "Lax-Dlq-Sequence";
/// Header of a dead letter: the consumer (group) whose deliveries ran out.
pub const CONSUMER_HEADER: &str = "Lax-Dlq-Consumer";
/// Header of a dead letter: how many deliveries applications got.
pub const DELIVERIES_HEADER: &str = "Lax-Dlq-Deliveries";

/// Headers of the original message that must not be copied: JetStream would de-duplicate
/// or refuse the dead letter on them.
const NOT_COPIED: [&str; 4] = [
    "Nats-Msg-Id",
    "Nats-Expected-Stream",
    "Nats-Expected-Last-Sequence",
    "Nats-Expected-Last-Msg-Id",
];

/// The default dead-letter subject of a message on `subject` in `stream`.
pub(crate) fn default_subject(stream: &str, subject: &str) -> String {
    format!("{DEAD_LETTER_PREFIX}.{stream}.{subject}")
}

/// Publishes dead letters and makes sure something keeps them.
#[derive(Debug)]
pub(crate) struct DeadLetters {
    api: JsApi,
    js: jetstream::Context,
    replicas: usize,
    /// `LAX_DLQ` is known to exist.
    stream_ready: AtomicBool,
}

impl DeadLetters {
    pub(crate) fn new(api: JsApi, js: jetstream::Context, replicas: usize) -> Self {
        DeadLetters {
            api,
            js,
            replicas,
            stream_ready: AtomicBool::new(false),
        }
    }

    /// Checks, before a subscription starts, that its dead letters for messages on
    /// `subject` in `source` will be stored and will not loop back into `source`.
    pub(crate) async fn prepare(
        &self,
        source: &str,
        subject: &str,
        custom: Option<&str>,
    ) -> Result<(), Status> {
        let target = match custom {
            Some(custom) => custom.to_owned(),
            None => {
                self.ensure_stream().await?;
                default_subject(source, subject)
            }
        };
        let page =
            self.api.stream_page(0, Some(&target)).await.map_err(|e| {
                status_for_api(&format!("looking up the stream for {target:?}"), &e)
            })?;
        let streams: Vec<String> = page
            .streams
            .unwrap_or_default()
            .into_iter()
            .map(|info| info.config.name)
            .collect();
        if streams.is_empty() {
            return Err(Status::failed_precondition(format!(
                "no stream captures the dead-letter subject {target:?}; create one, or leave \
                 dead_letter_subject empty for the default ({DEAD_LETTER_PREFIX}.<stream>.<subject> \
                 in stream {DEAD_LETTER_STREAM})"
            )));
        }
        if streams.iter().any(|name| name == source) {
            return Err(Status::invalid_argument(format!(
                "the dead-letter subject {target:?} is captured by stream {source}, the stream \
                 being consumed: dead letters would be delivered again"
            )));
        }
        Ok(())
    }

    /// Creates `LAX_DLQ` on `lax.dlq.>` unless it exists.
    async fn ensure_stream(&self) -> Result<(), Status> {
        if self.stream_ready.load(Ordering::Relaxed) {
            return Ok(());
        }
        let config = stream::Config {
            name: DEAD_LETTER_STREAM.to_owned(),
            subjects: vec![format!("{DEAD_LETTER_PREFIX}.>")],
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            description: Some("dead letters of the LAX broker".to_owned()),
            ..Default::default()
        };
        match self.api.create_stream(&config).await {
            Ok(_) => tracing::info!(
                stream = DEAD_LETTER_STREAM,
                "created the dead-letter stream"
            ),
            // Someone else's stream captures the prefix: `prepare` checks it stores the subject.
            Err(e)
                if matches!(
                    e.error_code(),
                    Some(ErrorCode::STREAM_NAME_EXIST | ErrorCode::STREAM_SUBJECT_OVERLAP)
                ) => {}
            Err(e) => {
                return Err(status_for_api(
                    &format!("creating the dead-letter stream {DEAD_LETTER_STREAM}"),
                    &e,
                ));
            }
        }
        self.stream_ready.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Publishes `message` (delivered for the `info.delivered`-th time, one past the
    /// deliveries applications get) as a dead letter and waits for JetStream's ack.
    pub(crate) async fn publish(
        &self,
        message: &jetstream::Message,
        info: &Info<'_>,
        custom: Option<&str>,
    ) -> Result<String, String> {
        let target = match custom {
            Some(custom) => custom.to_owned(),
            None => {
                self.ensure_stream()
                    .await
                    .map_err(|status| status.message().to_owned())?;
                default_subject(info.stream, &message.subject)
            }
        };
        let mut headers = HeaderMap::new();
        if let Some(original) = &message.headers {
            for (name, values) in original.iter() {
                if NOT_COPIED.contains(&name.as_ref()) {
                    continue;
                }
                for value in values {
                    headers.append(name.clone(), value.clone());
                }
            }
        }
        let deliveries = info.delivered.saturating_sub(1);
        headers.insert(ORIGINAL_SUBJECT_HEADER, message.subject.as_str());
        headers.insert(ORIGINAL_STREAM_HEADER, info.stream);
        headers.insert(
            ORIGINAL_SEQUENCE_HEADER,
            info.stream_sequence.to_string().as_str(),
        );
        headers.insert(CONSUMER_HEADER, info.consumer);
        headers.insert(DELIVERIES_HEADER, deliveries.to_string().as_str());
        // One dead letter per (stream, consumer, sequence), however often this is retried.
        headers.insert(
            "Nats-Msg-Id",
            format!(
                "lax-dlq:{}:{}:{}",
                info.stream, info.consumer, info.stream_sequence
            )
            .as_str(),
        );
        let stored = async {
            self.js
                .publish_with_headers(target.clone(), headers, message.payload.clone())
                .await?
                .await
                .map_err(async_nats::Error::from)
        }
        .await;
        match stored {
            Ok(_) => Ok(target),
            Err(e) => {
                // LAX_DLQ may have been deleted: make the next subscription re-create it.
                self.stream_ready.store(false, Ordering::Relaxed);
                Err(format!("publishing the dead letter to {target:?}: {e}"))
            }
        }
    }
}
