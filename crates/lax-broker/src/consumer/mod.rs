//! Consuming: consumer groups as durable JetStream pull consumers.
//!
//! CreateConsumerGroup is served here. Subscribe and the Ack/Nack/InProgress/Term RPCs that
//! go with it answer UNIMPLEMENTED until consumer support lands; they live in this module so
//! that work slots in beside the group code.

use std::{collections::HashMap, pin::Pin, time::Duration};

use async_nats::jetstream::{
    ErrorCode,
    consumer::{self, AckPolicy, DeliverPolicy},
};
use futures::Stream;
use lax_core::{Limits, validate::validate_filter_subject};
use lax_proto::broker::v1 as pb;
use tonic::Status;

use crate::{
    error::{ApiError, status_for_api},
    jsapi::JsApi,
    names::validate_name,
    timestamp,
};

/// Consumer metadata key recording the group's `flow_control` wish; a pull consumer has no
/// JetStream flow control of its own, so the broker's Subscribe reads it from here.
pub const FLOW_CONTROL_METADATA: &str = "lax.flow_control";
/// Consumer metadata key recording the group's `idle_heartbeat_seconds` (used per pull).
pub const IDLE_HEARTBEAT_METADATA: &str = "lax.idle_heartbeat_seconds";

/// The messages of one Subscribe call.
pub(crate) type MessageStream = Pin<Box<dyn Stream<Item = Result<pb::Message, Status>> + Send>>;

/// Consumer groups of one broker.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerGroups {
    api: JsApi,
}

fn not_yet(rpc: &str) -> Status {
    Status::unimplemented(format!("{rpc} arrives with consumer support"))
}

impl ConsumerGroups {
    pub(crate) fn new(api: JsApi) -> Self {
        ConsumerGroups { api }
    }

    pub(crate) async fn subscribe(
        &self,
        _request: pb::SubscribeRequest,
    ) -> Result<MessageStream, Status> {
        Err(not_yet("Subscribe"))
    }

    pub(crate) async fn ack(&self, _request: pb::AckRequest) -> Result<pb::AckResponse, Status> {
        Err(not_yet("Ack"))
    }

    pub(crate) async fn nack(&self, _request: pb::NackRequest) -> Result<pb::AckResponse, Status> {
        Err(not_yet("Nack"))
    }

    pub(crate) async fn in_progress(
        &self,
        _request: pb::AckRequest,
    ) -> Result<pb::AckResponse, Status> {
        Err(not_yet("InProgress"))
    }

    pub(crate) async fn term(&self, _request: pb::AckRequest) -> Result<pb::AckResponse, Status> {
        Err(not_yet("Term"))
    }

    /// Creates the group's durable pull consumer. A group that exists with the same
    /// configuration answers ALREADY_EXISTS ("exists, join it"); one with another
    /// configuration answers FAILED_PRECONDITION naming the difference.
    pub(crate) async fn create_group(
        &self,
        request: pb::ConsumerGroupRequest,
    ) -> Result<pb::ConsumerGroup, Status> {
        validate_name("consumer group", &request.name)?;
        validate_name("stream", &request.stream)?;
        let wanted = consumer_config(&request)?;
        let what = format!(
            "consumer group {} on stream {}",
            request.name, request.stream
        );
        match self.api.consumer_info(&request.stream, &request.name).await {
            Ok(existing) => return Err(existing_group(&what, &existing.config, &wanted)),
            Err(ApiError::JetStream(e)) if e.error_code() == ErrorCode::CONSUMER_NOT_FOUND => {}
            Err(e) => return Err(status_for_api(&format!("looking up {what}"), &e)),
        }
        match self.api.create_consumer(&request.stream, &wanted).await {
            Ok(info) => {
                tracing::info!(group = %request.name, stream = %request.stream, "created consumer group");
                Ok(group_of(&info))
            }
            // Created meanwhile by another member: same answer as if it had been there.
            Err(ApiError::JetStream(e))
                if e.error_code() == ErrorCode::CONSUMER_NAME_EXIST
                    || e.error_code().0 == CONSUMER_ALREADY_EXISTS =>
            {
                match self.api.consumer_info(&request.stream, &request.name).await {
                    Ok(existing) => Err(existing_group(&what, &existing.config, &wanted)),
                    Err(e) => Err(status_for_api(&format!("looking up {what}"), &e)),
                }
            }
            Err(e) => Err(status_for_api(&format!("creating {what}"), &e)),
        }
    }
}

/// JetStream's "consumer already exists" (a create with another configuration).
const CONSUMER_ALREADY_EXISTS: u64 = 10148;

fn existing_group(what: &str, existing: &consumer::Config, wanted: &consumer::Config) -> Status {
    match config_difference(existing, wanted) {
        None => Status::already_exists(format!(
            "{what} already exists with this configuration; join it"
        )),
        Some(difference) => Status::failed_precondition(format!(
            "{what} already exists with another configuration: {difference}"
        )),
    }
}

/// The first setting in which an existing consumer differs from the one asked for. Settings
/// left at zero in the request take the server's defaults and are not compared.
fn config_difference(existing: &consumer::Config, wanted: &consumer::Config) -> Option<String> {
    let differ = |name: &str, has: String, asked: String| {
        Some(format!("{name} is {has}, asked for {asked}"))
    };
    if existing.filter_subject != wanted.filter_subject {
        return differ(
            "subject_filter",
            format!("{:?}", existing.filter_subject),
            format!("{:?}", wanted.filter_subject),
        );
    }
    if existing.deliver_policy != wanted.deliver_policy {
        return differ(
            "deliver_policy",
            format!("{:?}", existing.deliver_policy),
            format!("{:?}", wanted.deliver_policy),
        );
    }
    if wanted.ack_wait != Duration::ZERO && existing.ack_wait != wanted.ack_wait {
        return differ(
            "ack_wait",
            format!("{:?}", existing.ack_wait),
            format!("{:?}", wanted.ack_wait),
        );
    }
    if wanted.max_deliver != 0 && existing.max_deliver != wanted.max_deliver {
        return differ(
            "max_deliver",
            existing.max_deliver.to_string(),
            wanted.max_deliver.to_string(),
        );
    }
    if wanted.max_ack_pending != 0 && existing.max_ack_pending != wanted.max_ack_pending {
        return differ(
            "max_ack_pending",
            existing.max_ack_pending.to_string(),
            wanted.max_ack_pending.to_string(),
        );
    }
    for key in [FLOW_CONTROL_METADATA, IDLE_HEARTBEAT_METADATA] {
        let (has, asked) = (existing.metadata.get(key), wanted.metadata.get(key));
        if has != asked {
            return differ(key, format!("{has:?}"), format!("{asked:?}"));
        }
    }
    None
}

/// The pull consumer a group request asks for.
fn consumer_config(request: &pb::ConsumerGroupRequest) -> Result<consumer::Config, Status> {
    if !request.subject_filter.is_empty() {
        validate_filter_subject(&request.subject_filter, Limits::DEFAULT_MAX_SUBJECT_LEN)
            .map_err(|e| Status::invalid_argument(e.message().to_owned()))?;
    }
    let group = request.config.clone().unwrap_or_default();
    let deliver_policy = match group.deliver_policy.as_str() {
        "" | "all" => DeliverPolicy::All,
        "last" => DeliverPolicy::Last,
        "new" => DeliverPolicy::New,
        "by_start_sequence" if group.start_sequence > 0 => DeliverPolicy::ByStartSequence {
            start_sequence: group.start_sequence,
        },
        "by_start_sequence" => {
            return Err(Status::invalid_argument(
                "deliver_policy by_start_sequence needs start_sequence > 0",
            ));
        }
        "by_start_time" => {
            let start = group.start_time.ok_or_else(|| {
                Status::invalid_argument("deliver_policy by_start_time needs start_time")
            })?;
            DeliverPolicy::ByStartTime {
                start_time: timestamp::to_datetime(&start)
                    .ok_or_else(|| Status::invalid_argument("start_time is out of range"))?,
            }
        }
        other => {
            return Err(Status::invalid_argument(format!(
                "unknown deliver_policy {other:?}: expected \"all\", \"last\", \"new\", \"by_start_sequence\" or \"by_start_time\""
            )));
        }
    };
    for (value, name) in [
        (group.max_deliver, "max_deliver"),
        (group.ack_wait_seconds, "ack_wait_seconds"),
        (group.max_ack_pending, "max_ack_pending"),
        (group.idle_heartbeat_seconds, "idle_heartbeat_seconds"),
    ] {
        if value < 0 {
            return Err(Status::invalid_argument(format!(
                "{name} is {value}; it must not be negative"
            )));
        }
    }
    let mut metadata = HashMap::new();
    if group.flow_control {
        metadata.insert(FLOW_CONTROL_METADATA.to_owned(), "true".to_owned());
    }
    if group.idle_heartbeat_seconds > 0 {
        metadata.insert(
            IDLE_HEARTBEAT_METADATA.to_owned(),
            group.idle_heartbeat_seconds.to_string(),
        );
    }
    Ok(consumer::Config {
        durable_name: Some(request.name.clone()),
        deliver_policy,
        ack_policy: AckPolicy::Explicit,
        ack_wait: Duration::from_secs(u64::from(group.ack_wait_seconds.unsigned_abs())),
        max_deliver: i64::from(group.max_deliver),
        max_ack_pending: i64::from(group.max_ack_pending),
        filter_subject: request.subject_filter.clone(),
        metadata,
        ..Default::default()
    })
}

fn group_of(info: &consumer::Info) -> pb::ConsumerGroup {
    pb::ConsumerGroup {
        name: info.name.clone(),
        stream: info.stream_name.clone(),
        num_members: i32::try_from(info.num_waiting).unwrap_or(i32::MAX),
        delivered: info.delivered.consumer_sequence,
        ack_pending: info.num_ack_pending as u64,
        created: Some(timestamp::from_datetime(info.created)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(config: pb::ConsumerGroupConfig) -> pb::ConsumerGroupRequest {
        pb::ConsumerGroupRequest {
            name: "workers".into(),
            stream: "ORDERS".into(),
            subject_filter: "orders.>".into(),
            config: Some(config),
        }
    }

    #[test]
    fn group_configs_map_onto_pull_consumers() {
        let config = consumer_config(&request(pb::ConsumerGroupConfig {
            deliver_policy: "new".into(),
            max_deliver: 5,
            ack_wait_seconds: 10,
            flow_control: true,
            ..Default::default()
        }))
        .unwrap();
        assert_eq!(config.durable_name.as_deref(), Some("workers"));
        assert_eq!(config.deliver_policy, DeliverPolicy::New);
        assert_eq!(config.ack_policy, AckPolicy::Explicit);
        assert_eq!(config.ack_wait, Duration::from_secs(10));
        assert_eq!(config.max_deliver, 5);
        assert_eq!(config.metadata[FLOW_CONTROL_METADATA], "true");
    }

    #[test]
    fn bad_group_configs_are_invalid_arguments() {
        for config in [
            pb::ConsumerGroupConfig {
                deliver_policy: "sometimes".into(),
                ..Default::default()
            },
            pb::ConsumerGroupConfig {
                deliver_policy: "by_start_sequence".into(),
                ..Default::default()
            },
            pb::ConsumerGroupConfig {
                deliver_policy: "by_start_time".into(),
                ..Default::default()
            },
            pb::ConsumerGroupConfig {
                max_deliver: -2,
                ..Default::default()
            },
        ] {
            let err = consumer_config(&request(config)).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument);
        }
        let mut bad_filter = request(Default::default());
        bad_filter.subject_filter = "orders.>.x".into();
        assert!(consumer_config(&bad_filter).is_err());
    }

    #[test]
    fn only_asked_settings_are_compared() {
        let wanted = consumer_config(&request(Default::default())).unwrap();
        let mut existing = wanted.clone();
        existing.ack_wait = Duration::from_secs(30);
        existing.max_deliver = -1;
        assert_eq!(config_difference(&existing, &wanted), None);
        existing.filter_subject = "orders.created".into();
        assert!(
            config_difference(&existing, &wanted)
                .unwrap()
                .contains("subject_filter")
        );
    }
}
