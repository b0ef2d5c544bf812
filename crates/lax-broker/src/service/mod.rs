//! `broker.v1.BrokerService`: Publish, BatchPublish and StreamPublish here; consuming
//! (Subscribe, CreateConsumerGroup, Ack, Nack, InProgress, Term) in [`crate::consumer`].

mod stream_publish;

use std::{sync::Arc, time::Instant as StdInstant};

use futures::{FutureExt as _, StreamExt as _, future::BoxFuture, stream::FuturesOrdered};
use lax_proto::broker::v1::{self as pb, broker_service_server::BrokerService};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status, Streaming};
use tracing::{Instrument as _, field::Empty};

use crate::{
    consumer::ConsumerGroups,
    error::PublishFailure,
    publish::{Prepared, PublishCore, Refused, Stored, deadline::call_deadline},
    security::{Grant, grant_of},
};

/// The BrokerService implementation.
#[derive(Debug, Clone)]
pub(crate) struct BrokerServiceImpl {
    core: Arc<PublishCore>,
    consumers: ConsumerGroups,
    shutdown: CancellationToken,
    stream_window: usize,
    batch_window: usize,
}

impl BrokerServiceImpl {
    pub(crate) fn new(
        core: Arc<PublishCore>,
        consumers: ConsumerGroups,
        shutdown: CancellationToken,
        stream_window: usize,
        batch_window: usize,
    ) -> Self {
        BrokerServiceImpl {
            core,
            consumers,
            shutdown,
            stream_window,
            batch_window,
        }
    }
}

/// The outcome of one publish, whichever RPC carried it.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) message_id: String,
    pub(crate) result: Result<Stored, PublishFailure>,
}

impl Outcome {
    fn refused(refused: Refused) -> Self {
        Outcome {
            message_id: refused.message_id,
            result: Err(refused.failure),
        }
    }

    fn into_response(self) -> pb::PublishResponse {
        match self.result {
            Ok(stored) => pb::PublishResponse {
                message_id: self.message_id,
                sequence: stored.sequence,
                timestamp: Some(stored.timestamp.into()),
                duplicate: stored.duplicate,
                stream: stored.stream,
                error: String::new(),
                error_code: 0,
                transient: false,
            },
            Err(failure) => pb::PublishResponse {
                message_id: self.message_id,
                error: failure.to_status().message().to_owned(),
                error_code: failure.code_number(),
                transient: failure.transient,
                ..Default::default()
            },
        }
    }

    fn into_ack(self) -> pb::PublishAck {
        match self.result {
            Ok(stored) => pb::PublishAck {
                message_id: self.message_id,
                success: true,
                sequence: stored.sequence,
                duplicate: stored.duplicate,
                stream: stored.stream,
                ..Default::default()
            },
            Err(failure) => pb::PublishAck {
                message_id: self.message_id,
                success: false,
                error: failure.message.clone(),
                error_code: failure.code_number(),
                maybe_stored: failure.maybe_stored,
                transient: failure.transient,
                ..Default::default()
            },
        }
    }
}

/// Publishes one request end to end: prepare, send, await the ack; records the figures.
/// The request is checked now; the returned future sends it and yields the future of its
/// ack, so callers can pipeline (send in order, await acks in any order). Both borrow
/// nothing, so a response stream can keep them between polls.
///
/// Each message has a `lax.broker.publish` span, a child of the request's `traceparent`
/// (else the root of a new trace), whose context the stored message carries on.
pub(crate) fn start_publish(
    core: &Arc<PublishCore>,
    rpc: &'static str,
    request: pb::PublishRequest,
    defaults: Option<&pb::PublishOptions>,
    call_deadline: Option<Instant>,
    grant: &Grant,
) -> impl Future<Output = BoxFuture<'static, Outcome>> + Send + use<> {
    let started = StdInstant::now();
    let span = tracing::info_span!(
        parent: None,
        "lax.broker.publish",
        rpc,
        subject = %request.subject,
        message_id = Empty,
        tier = Empty,
        stream = Empty,
        sequence = Empty,
        duplicate = Empty,
        outcome = Empty,
        code = Empty,
        trace_id = Empty,
        span_id = Empty,
        parent_span_id = Empty,
    );
    let prepared = core
        .prepare(request, defaults, grant, &span)
        .map_err(|refused| {
            let tier = refused.tier.map_or("unknown", |t| t.as_str());
            record(core, rpc, tier, &refused.failure.code, started);
            core.metrics()
                .stream_publish(None, &crate::metrics::code_label(refused.failure.code));
            span.record("message_id", refused.message_id.as_str());
            record_failure(&span, "refused", &refused.failure);
            Outcome::refused(refused)
        });
    send_prepared(
        Arc::clone(core),
        rpc,
        prepared,
        call_deadline,
        span,
        started,
    )
}

/// The sending half of [`start_publish`]: sends a checked message, and yields the future
/// of its answer (at once for a refused one).
async fn send_prepared(
    core: Arc<PublishCore>,
    rpc: &'static str,
    prepared: Result<Prepared, Outcome>,
    call_deadline: Option<Instant>,
    span: tracing::Span,
    started: StdInstant,
) -> BoxFuture<'static, Outcome> {
    let prepared = match prepared {
        Ok(prepared) => prepared,
        Err(outcome) => return futures::future::ready(outcome).boxed(),
    };
    let message_id = prepared.message_id.clone();
    let tier = prepared.tier;
    // For the stream label of a failure, which names no stream.
    let subject = prepared.subject.clone();
    span.record("message_id", message_id.as_str());
    span.record("tier", tier.as_str());
    let sent = core
        .send(prepared, call_deadline)
        .instrument(span.clone())
        .await;
    let waiting = span.clone();
    async move {
        let result = match sent {
            Ok(in_flight) => in_flight.wait().await,
            Err(failure) => Err(failure),
        };
        match &result {
            Ok(stored) => {
                let result = if stored.duplicate {
                    "duplicate"
                } else {
                    "stored"
                };
                core.metrics()
                    .publish(rpc, tier.as_str(), result, started.elapsed());
                core.metrics().stream_publish(Some(&stored.stream), result);
                span.record("stream", stored.stream.as_str());
                span.record("sequence", stored.sequence);
                span.record("duplicate", stored.duplicate);
                span.record("outcome", result);
            }
            Err(failure) => {
                record(&core, rpc, tier.as_str(), &failure.code, started);
                core.metrics().stream_publish(
                    core.known_stream(&subject).as_deref(),
                    &crate::metrics::code_label(failure.code),
                );
                record_failure(&span, "error", failure);
                tracing::debug!(%message_id, rpc, %failure, "publish failed");
            }
        }
        Outcome { message_id, result }
    }
    .instrument(waiting)
    .boxed()
}

/// Records a failed publish on its `lax.broker.publish` span.
fn record_failure(span: &tracing::Span, outcome: &'static str, failure: &PublishFailure) {
    span.record("outcome", outcome);
    span.record("code", crate::metrics::code_label(failure.code));
}

fn record(core: &PublishCore, rpc: &'static str, tier: &str, code: &Code, started: StdInstant) {
    core.metrics().publish(
        rpc,
        tier,
        &crate::metrics::code_label(*code),
        started.elapsed(),
    );
}

fn check_subscribe(request: &Request<pb::SubscribeRequest>) -> Result<(), Status> {
    subscribe_allowed(&*grant_of(request)?, request.get_ref())
}

/// A subscription reads its subject and publishes its dead letters.
pub(crate) fn subscribe_allowed(
    grant: &Grant,
    request: &pb::SubscribeRequest,
) -> Result<(), Status> {
    grant.check_subscribe(&request.subject)?;
    match request.options.as_ref() {
        Some(options) if !options.dead_letter_subject.is_empty() => {
            grant.check_publish(&options.dead_letter_subject)
        }
        _ => Ok(()),
    }
}

fn check_create_group(request: &Request<pb::ConsumerGroupRequest>) -> Result<(), Status> {
    create_group_allowed(&*grant_of(request)?, request.get_ref())
}

/// A consumer group reads its filter subject (a whole stream needs an admin token) and
/// publishes its dead letters.
pub(crate) fn create_group_allowed(
    grant: &Grant,
    request: &pb::ConsumerGroupRequest,
) -> Result<(), Status> {
    if request.subject_filter.is_empty() {
        grant.check_admin(&format!(
            "create a consumer group over all of stream {:?}",
            request.stream
        ))?;
    } else {
        grant.check_subscribe(&request.subject_filter)?;
    }
    match request.config.as_ref() {
        Some(config) if !config.dead_letter_subject.is_empty() => {
            grant.check_publish(&config.dead_letter_subject)
        }
        _ => Ok(()),
    }
}

#[tonic::async_trait]
impl BrokerService for BrokerServiceImpl {
    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        let deadline = call_deadline(request.metadata());
        let grant = match grant_of(&request) {
            Ok(grant) => grant,
            Err(status) => return self.core.metrics().answered("Publish", Err(status)),
        };
        let outcome = start_publish(
            &self.core,
            "Publish",
            request.into_inner(),
            None,
            deadline,
            &grant,
        )
        .await
        .await;
        let result = match outcome.result {
            Ok(_) => Ok(Outcome::into_response(outcome)),
            Err(failure) => Err(failure.to_status()),
        };
        self.core.metrics().answered("Publish", result)
    }

    async fn batch_publish(
        &self,
        request: Request<pb::BatchPublishRequest>,
    ) -> Result<Response<pb::BatchPublishResponse>, Status> {
        let deadline = call_deadline(request.metadata());
        let grant = match grant_of(&request) {
            Ok(grant) => grant,
            Err(status) => return self.core.metrics().answered("BatchPublish", Err(status)),
        };
        let pb::BatchPublishRequest {
            messages,
            default_options,
        } = request.into_inner();
        let mut responses = Vec::with_capacity(messages.len());
        let mut pending = FuturesOrdered::new();
        for message in messages {
            if pending.len() >= self.batch_window
                && let Some(outcome) = pending.next().await
            {
                responses.push(Outcome::into_response(outcome));
            }
            let publish = start_publish(
                &self.core,
                "BatchPublish",
                message,
                default_options.as_ref(),
                deadline,
                &grant,
            )
            .await;
            pending.push_back(publish);
        }
        while let Some(outcome) = pending.next().await {
            responses.push(Outcome::into_response(outcome));
        }
        let failure_count = responses.iter().filter(|r| r.error_code != 0).count();
        let success_count = responses.len() - failure_count;
        let response = pb::BatchPublishResponse {
            responses,
            success_count: i32::try_from(success_count).unwrap_or(i32::MAX),
            failure_count: i32::try_from(failure_count).unwrap_or(i32::MAX),
        };
        self.core.metrics().answered("BatchPublish", Ok(response))
    }

    type StreamPublishStream = stream_publish::AckStream;

    async fn stream_publish(
        &self,
        request: Request<Streaming<pb::PublishRequest>>,
    ) -> Result<Response<Self::StreamPublishStream>, Status> {
        let deadline = call_deadline(request.metadata());
        let grant = grant_of(&request)?;
        let acks = stream_publish::AckStream::new(
            Arc::clone(&self.core),
            grant,
            request.into_inner(),
            self.stream_window,
            deadline,
            self.shutdown.clone(),
        );
        Ok(Response::new(acks))
    }

    type SubscribeStream = crate::consumer::MessageStream;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let result = match check_subscribe(&request) {
            Ok(()) => self.consumers.subscribe(request.into_inner()).await,
            Err(denied) => Err(denied),
        };
        self.core.metrics().answered("Subscribe", result)
    }

    async fn create_consumer_group(
        &self,
        request: Request<pb::ConsumerGroupRequest>,
    ) -> Result<Response<pb::ConsumerGroup>, Status> {
        let result = match check_create_group(&request) {
            Ok(()) => self.consumers.create_group(request.into_inner()).await,
            Err(denied) => Err(denied),
        };
        self.core.metrics().answered("CreateConsumerGroup", result)
    }

    async fn ack(
        &self,
        request: Request<pb::AckRequest>,
    ) -> Result<Response<pb::AckResponse>, Status> {
        self.core
            .metrics()
            .answered("Ack", self.consumers.ack(request.into_inner()).await)
    }

    async fn nack(
        &self,
        request: Request<pb::NackRequest>,
    ) -> Result<Response<pb::AckResponse>, Status> {
        self.core
            .metrics()
            .answered("Nack", self.consumers.nack(request.into_inner()).await)
    }

    async fn in_progress(
        &self,
        request: Request<pb::AckRequest>,
    ) -> Result<Response<pb::AckResponse>, Status> {
        self.core.metrics().answered(
            "InProgress",
            self.consumers.in_progress(request.into_inner()).await,
        )
    }

    async fn term(
        &self,
        request: Request<pb::AckRequest>,
    ) -> Result<Response<pb::AckResponse>, Status> {
        self.core
            .metrics()
            .answered("Term", self.consumers.term(request.into_inner()).await)
    }

    async fn settle(
        &self,
        request: Request<pb::SettleRequest>,
    ) -> Result<Response<pb::SettleResponse>, Status> {
        self.core.metrics().answered(
            "Settle",
            self.consumers.settle_many(request.into_inner()).await,
        )
    }
}
