//! The broker's checks of incoming requests, callable without a running broker.
//!
//! Each function here is the code a gRPC call runs on its request before anything touches
//! NATS — the permission check of a broker without a permissions file, then the mapping
//! onto what is sent to JetStream — not a copy of it. They exist so that fuzz targets
//! (`fuzz/` in the repository) and property tests can feed arbitrary requests through the
//! real checks; a bad request is always an `Err` with a gRPC status (INVALID_ARGUMENT, or
//! PERMISSION_DENIED for system subjects such as `$JS.API.…`), never a panic.
//!
//! ```
//! use lax_broker::input;
//! use lax_proto::broker::v1 as pb;
//!
//! let request = pb::PublishRequest {
//!     subject: "orders..created".into(),
//!     ..Default::default()
//! };
//! let refused = input::publish(request, None, input::DEFAULT_MAX_PAYLOAD).unwrap_err();
//! assert_eq!(refused.code(), tonic::Code::InvalidArgument);
//! ```

use std::time::Duration;

use async_nats::{HeaderMap, jetstream::stream};
use bytes::Bytes;
use lax_core::{Limits, Tier};
use lax_proto::broker::v1 as pb;
use tonic::Status;

use crate::{
    consumer::{group::group_consumer_config, spec::SubscribeSpec},
    names::validate_name,
    publish::{self, Checked},
    security::Grant,
    service::{create_group_allowed, subscribe_allowed},
    streams::convert,
};

/// The payload limit the broker applies when NATS advertises 1 MiB (its default).
pub const DEFAULT_MAX_PAYLOAD: usize = Limits::DEFAULT_MAX_PAYLOAD;

/// A publish request the broker accepted: what it sends to JetStream (before it adds the
/// `traceparent` of its own span, when tracing).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AcceptedPublish {
    /// The id sent as `Nats-Msg-Id` (the request's, else from its headers, else a new one).
    pub message_id: String,
    /// The tier, which picks the stream.
    pub tier: Tier,
    /// The subject published to.
    pub subject: String,
    /// The headers sent, as async-nats holds them.
    pub headers: HeaderMap,
    /// The payload sent.
    pub payload: Bytes,
    /// How long the broker waits for the ack; `None`: its `--publish-timeout`.
    pub ack_timeout: Option<Duration>,
}

/// Checks a Publish (or one BatchPublish / StreamPublish message; `defaults` are the batch's
/// options) as a broker without a permissions file does, against NATS' `max_payload`.
///
/// # Errors
///
/// The status the call would be answered with.
pub fn publish(
    request: pb::PublishRequest,
    defaults: Option<&pb::PublishOptions>,
    max_payload: usize,
) -> Result<AcceptedPublish, Status> {
    let limits = Limits::default().with_max_payload(max_payload);
    let Checked {
        message_id,
        tier,
        request,
    } = publish::check(request, defaults, &Grant::everything(), &limits)
        .map_err(|refused| Status::new(refused.failure.code, refused.failure.message))?;
    Ok(AcceptedPublish {
        message_id,
        tier,
        headers: publish::nats_headers(&request.headers),
        ack_timeout: request.options.timeout,
        subject: request.subject.into(),
        payload: request.payload,
    })
}

/// Checks a Subscribe request: the subject may be read, the dead-letter subject published
/// to, and the options map onto a pull consumer.
///
/// # Errors
///
/// The status the call would be answered with.
pub fn subscribe(request: pb::SubscribeRequest) -> Result<(), Status> {
    subscribe_allowed(&Grant::everything(), &request)?;
    SubscribeSpec::parse(request).map(drop)
}

/// Checks a CreateConsumerGroup request and maps it onto the durable pull consumer.
///
/// # Errors
///
/// The status the call would be answered with.
pub fn consumer_group(request: &pb::ConsumerGroupRequest) -> Result<(), Status> {
    create_group_allowed(&Grant::everything(), request)?;
    validate_name("consumer group", &request.name)?;
    validate_name("stream", &request.stream)?;
    group_consumer_config(request).map(drop)
}

/// Maps a CreateStream / UpdateStream request's name and config onto JetStream's stream
/// configuration, as a broker whose `replicated` tier keeps `replicated_replicas` copies.
///
/// # Errors
///
/// INVALID_ARGUMENT saying what is wrong.
pub fn stream_config(
    name: &str,
    config: &pb::StreamConfig,
    replicated_replicas: usize,
) -> Result<stream::Config, Status> {
    convert::to_jetstream(name, config, replicated_replicas)
}
