//! LAX's administration types ([`StreamConfig`], [`Stream`], [`ConsumerGroupConfig`]…) ↔ the
//! `broker.v1` messages. Going out, every value is checked and one the wire cannot carry is
//! refused as `InvalidInput` before anything is sent; coming in, the contract's "0 means
//! unlimited / unset" becomes `None`, and a value this client does not know (a newer broker's)
//! is read as unset rather than failing the call.

use std::time::{Duration, SystemTime};

use lax_core::{
    Error, Limits,
    validate::{validate_filter_subject, validate_name},
};
use lax_proto::broker::v1 as proto;

use crate::{
    group::{ConsumerGroupConfig, DeliverPolicy},
    stream::{
        ConsumerGroup, ConsumerInfo, DiscardPolicy, ListStreamsOptions, RetentionPolicy,
        StorageType, Stream, StreamConfig, StreamInfo, StreamPage, StreamState, StreamStats,
    },
};

/// JetStream keeps 1 to this many replicas of a stream.
const MAX_REPLICAS: u32 = 5;

/// A subject filter (of a stream or a consumer group), checked like the broker checks it.
fn check_filter(subject: &str) -> Result<(), Error> {
    validate_filter_subject(subject, Limits::DEFAULT_MAX_SUBJECT_LEN)
}

/// A limit: `None` is 0 ("no limit") on the wire; a set limit must be at least 1 and fit.
fn limit<T: TryFrom<u64> + Default>(value: Option<u64>, name: &str) -> Result<T, Error> {
    match value {
        None => Ok(T::default()),
        Some(0) => Err(Error::invalid_input(format!(
            "{name} is 0; leave it unset for no limit"
        ))),
        Some(value) => T::try_from(value)
            .map_err(|_| Error::invalid_input(format!("{name} is {value}, too large"))),
    }
}

fn duration_to_proto(
    value: Option<Duration>,
    name: &str,
) -> Result<Option<prost_types::Duration>, Error> {
    value
        .map(|value| {
            prost_types::Duration::try_from(value)
                .map_err(|_| Error::invalid_input(format!("{name} is too long")))
        })
        .transpose()
}

/// The wire configuration for `config`, or `InvalidInput` naming the first bad value.
pub(crate) fn stream_config_to_proto(config: &StreamConfig) -> Result<proto::StreamConfig, Error> {
    for subject in &config.subjects {
        check_filter(subject)?;
    }
    let num_replicas = match config.replicas {
        None => 0,
        Some(replicas @ 1..=MAX_REPLICAS) => replicas as i32,
        Some(replicas) => {
            return Err(Error::invalid_input(format!(
                "replicas is {replicas}; JetStream keeps 1 to {MAX_REPLICAS} replicas"
            )));
        }
    };
    Ok(proto::StreamConfig {
        description: config.description.clone().unwrap_or_default(),
        subjects: config.subjects.clone(),
        retention: Some(proto::RetentionPolicy {
            policy: config.retention.as_str().to_owned(),
            max_msgs_per_subject: limit(
                config.max_messages_per_subject,
                "max_messages_per_subject",
            )?,
            discard_new_per_subject: config.discard_new_per_subject,
        }),
        storage_type: config.storage.map_or("", StorageType::as_str).to_owned(),
        num_replicas,
        max_msgs: limit(config.max_messages, "max_messages")?,
        max_bytes: limit(config.max_bytes, "max_bytes")?,
        max_age: duration_to_proto(config.max_age, "max_age")?,
        max_msg_size: limit(config.max_message_size.map(u64::from), "max_message_size")?,
        max_consumers: limit(config.max_consumers.map(u64::from), "max_consumers")?,
        tier: config.tier.map_or("", |tier| tier.as_str()).to_owned(),
        no_ack: config.no_ack,
        discard_policy: config.discard.as_str().to_owned(),
        allow_rollup: config.allow_rollup,
        deny_delete: config.deny_delete,
        deny_purge: config.deny_purge,
        metadata: config.metadata.clone(),
        duplicate_window: duration_to_proto(config.duplicate_window, "duplicate_window")?,
    })
}

/// A wire limit (0 or negative: none) as an optional one.
fn limit_from_proto<T: TryFrom<i64>>(value: i64) -> Option<T> {
    (value > 0).then(|| T::try_from(value).ok()).flatten()
}

fn duration_from_proto(value: Option<prost_types::Duration>) -> Option<Duration> {
    value
        .and_then(|value| Duration::try_from(value).ok())
        .filter(|value| !value.is_zero())
}

fn time_from_proto(value: Option<prost_types::Timestamp>) -> Option<SystemTime> {
    value.and_then(|value| SystemTime::try_from(value).ok())
}

fn count_from_proto(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

/// A configuration as the broker describes it.
pub(crate) fn stream_config_from_proto(config: proto::StreamConfig) -> StreamConfig {
    let retention = config.retention.unwrap_or_default();
    let mut out = StreamConfig::new(config.subjects);
    out.description = (!config.description.is_empty()).then_some(config.description);
    out.tier = config.tier.parse().ok();
    out.storage = match config.storage_type.as_str() {
        "file" => Some(StorageType::File),
        "memory" => Some(StorageType::Memory),
        _ => None,
    };
    out.replicas = limit_from_proto(config.num_replicas.into());
    out.retention = match retention.policy.as_str() {
        "interest" => RetentionPolicy::Interest,
        "workqueue" => RetentionPolicy::WorkQueue,
        _ => RetentionPolicy::Limits,
    };
    out.max_messages_per_subject = limit_from_proto(retention.max_msgs_per_subject);
    out.discard_new_per_subject = retention.discard_new_per_subject;
    out.max_messages = limit_from_proto(config.max_msgs);
    out.max_bytes = limit_from_proto(config.max_bytes);
    out.max_age = duration_from_proto(config.max_age);
    out.max_message_size = limit_from_proto(config.max_msg_size.into());
    out.max_consumers = limit_from_proto(config.max_consumers.into());
    out.no_ack = config.no_ack;
    out.discard = match config.discard_policy.as_str() {
        "new" => DiscardPolicy::New,
        _ => DiscardPolicy::Old,
    };
    out.allow_rollup = config.allow_rollup;
    out.deny_delete = config.deny_delete;
    out.deny_purge = config.deny_purge;
    out.metadata = config.metadata;
    out.duplicate_window = duration_from_proto(config.duplicate_window);
    out
}

fn state_from_proto(state: proto::StreamState) -> StreamState {
    StreamState {
        messages: state.messages,
        bytes: state.bytes,
        first_sequence: state.first_seq,
        last_sequence: state.last_seq,
        consumer_count: count_from_proto(state.consumer_count),
        first_timestamp: time_from_proto(state.first_ts),
        last_timestamp: time_from_proto(state.last_ts),
    }
}

/// A stream as the broker describes it.
pub(crate) fn stream_from_proto(stream: proto::Stream) -> Stream {
    Stream {
        name: stream.name,
        config: stream_config_from_proto(stream.config.unwrap_or_default()),
        state: state_from_proto(stream.state.unwrap_or_default()),
        created: time_from_proto(stream.created),
    }
}

fn consumer_from_proto(consumer: proto::ConsumerInfo) -> ConsumerInfo {
    ConsumerInfo {
        name: consumer.name,
        stream: consumer.stream,
        created: time_from_proto(consumer.created),
        delivered: consumer.delivered,
        ack_pending: consumer.ack_pending,
        redelivered: consumer.redelivered,
        active: consumer.active,
    }
}

/// Stream `name` as `GetStreamInfo` describes it; the answer's own state wins over the one
/// inside its stream (the contract carries both).
pub(crate) fn stream_info_from_proto(name: &str, info: proto::StreamInfo) -> StreamInfo {
    let mut stream = stream_from_proto(info.config.unwrap_or_else(|| proto::Stream {
        name: name.to_owned(),
        ..Default::default()
    }));
    if let Some(state) = info.state {
        stream.state = state_from_proto(state);
    }
    StreamInfo {
        stream,
        consumers: info
            .consumers
            .into_iter()
            .map(consumer_from_proto)
            .collect(),
        stats: info.stats.map(|stats| StreamStats {
            message_rate: stats.msg_rate,
            byte_rate: stats.byte_rate,
            ack_rate: stats.ack_rate,
            average_message_size: stats.avg_msg_size,
            messages_per_subject: stats.subject_stats,
        }),
    }
}

/// The wire request for `options`.
pub(crate) fn list_request_to_proto(
    options: &ListStreamsOptions,
) -> Result<proto::ListStreamsRequest, Error> {
    let subject_filter = options.subject_filter.clone().unwrap_or_default();
    if !subject_filter.is_empty() {
        check_filter(&subject_filter)?;
    }
    let page_value = |value: u32, name: &str| {
        i32::try_from(value)
            .map_err(|_| Error::invalid_input(format!("{name} is {value}, too large")))
    };
    Ok(proto::ListStreamsRequest {
        subject_filter,
        offset: page_value(options.offset, "offset")?,
        limit: match options.limit {
            None => 0,
            Some(0) => {
                return Err(Error::invalid_input(
                    "limit is 0; leave it unset for the broker's page size",
                ));
            }
            Some(limit) => page_value(limit, "limit")?,
        },
    })
}

/// A page of streams as the broker lists it.
pub(crate) fn stream_page_from_proto(page: proto::ListStreamsResponse) -> StreamPage {
    StreamPage {
        streams: page.streams.into_iter().map(stream_from_proto).collect(),
        total: count_from_proto(page.total),
        offset: count_from_proto(page.offset),
        limit: count_from_proto(page.limit),
    }
}

/// The wire request creating group `name` on `stream` for `subject_filter` (empty: the whole
/// stream).
pub(crate) fn group_request_to_proto(
    name: &str,
    stream: &str,
    subject_filter: &str,
    config: &ConsumerGroupConfig,
) -> Result<proto::ConsumerGroupRequest, Error> {
    validate_name("consumer group", name)?;
    validate_name("stream", stream)?;
    if !subject_filter.is_empty() {
        check_filter(subject_filter)?;
    }
    Ok(proto::ConsumerGroupRequest {
        name: name.to_owned(),
        stream: stream.to_owned(),
        subject_filter: subject_filter.to_owned(),
        config: Some(group_config_to_proto(config)?),
    })
}

/// The wire configuration of a consumer group; `InvalidInput` for a value the wire cannot
/// carry.
pub(crate) fn group_config_to_proto(
    config: &ConsumerGroupConfig,
) -> Result<proto::ConsumerGroupConfig, Error> {
    let whole_seconds = |value: Duration, name: &str| {
        let seconds = value.as_secs() + u64::from(value.subsec_nanos() > 0);
        i32::try_from(seconds).map_err(|_| Error::invalid_input(format!("{name} is too long")))
    };
    let count = |value: u32, name: &str| {
        i32::try_from(value).map_err(|_| Error::invalid_input(format!("{name} is too large")))
    };
    let (deliver_policy, start_sequence, start_time) = match config.deliver_policy {
        DeliverPolicy::All => ("all", 0, None),
        DeliverPolicy::Last => ("last", 0, None),
        DeliverPolicy::New => ("new", 0, None),
        DeliverPolicy::ByStartSequence(sequence) => ("by_start_sequence", sequence, None),
        DeliverPolicy::ByStartTime(at) => {
            if at < SystemTime::UNIX_EPOCH {
                return Err(Error::invalid_input(
                    "deliver_policy start time is before 1970",
                ));
            }
            ("by_start_time", 0, Some(prost_types::Timestamp::from(at)))
        }
    };
    if let Some(subject) = &config.dead_letter_subject {
        lax_core::validate::validate_publish_subject(subject, Limits::DEFAULT_MAX_SUBJECT_LEN)?;
    }
    Ok(proto::ConsumerGroupConfig {
        deliver_policy: deliver_policy.to_owned(),
        max_deliver: count(config.max_deliver.unwrap_or(0), "max_deliver")?,
        ack_wait_seconds: whole_seconds(config.ack_wait, "ack_wait")?,
        max_ack_pending: count(config.max_ack_pending, "max_ack_pending")?,
        flow_control: config.flow_control,
        idle_heartbeat_seconds: whole_seconds(config.idle_heartbeat, "idle_heartbeat")?,
        start_sequence,
        start_time,
        dead_letter_subject: config.dead_letter_subject.clone().unwrap_or_default(),
    })
}

/// A consumer group as the broker describes it.
pub(crate) fn group_from_proto(group: proto::ConsumerGroup) -> ConsumerGroup {
    ConsumerGroup {
        name: group.name,
        stream: group.stream,
        members: count_from_proto(group.num_members),
        delivered: group.delivered,
        ack_pending: group.ack_pending,
        created: time_from_proto(group.created),
    }
}

#[cfg(test)]
mod tests {
    use std::time::UNIX_EPOCH;

    use lax_core::{ErrorKind, Tier};

    use super::*;

    #[test]
    fn a_stream_config_round_trips_through_the_wire() {
        let config = StreamConfig::new(["orders.>", "refunds.*"])
            .description("orders")
            .tier(Tier::Replicated)
            .storage(StorageType::File)
            .replicas(3)
            .retention(RetentionPolicy::WorkQueue)
            .max_messages_per_subject(10)
            .discard_new_per_subject(true)
            .max_messages(1_000)
            .max_bytes(1 << 30)
            .max_age(Duration::from_secs(3600))
            .max_message_size(1 << 20)
            .max_consumers(8)
            .no_ack(true)
            .discard(DiscardPolicy::New)
            .allow_rollup(true)
            .deny_delete(true)
            .deny_purge(true)
            .metadata("team", "payments")
            .duplicate_window(Duration::from_secs(30));
        let wire = stream_config_to_proto(&config).unwrap();
        assert_eq!(wire.tier, "replicated");
        assert_eq!(wire.storage_type, "file");
        assert_eq!(wire.num_replicas, 3);
        assert_eq!(wire.retention.as_ref().unwrap().policy, "workqueue");
        assert_eq!(wire.max_age.unwrap().seconds, 3600);
        assert_eq!(wire.discard_policy, "new");
        assert_eq!(stream_config_from_proto(wire), config);
    }

    #[test]
    fn unset_values_are_the_contracts_zeros_and_back() {
        let wire = stream_config_to_proto(&StreamConfig::new(["a.>"])).unwrap();
        assert_eq!(
            (wire.max_msgs, wire.max_bytes, wire.num_replicas),
            (0, 0, 0)
        );
        assert_eq!((wire.tier.as_str(), wire.storage_type.as_str()), ("", ""));
        assert_eq!(wire.max_age, None);
        // JetStream's -1 ("unlimited") reads as unset too.
        let read = stream_config_from_proto(proto::StreamConfig {
            max_msgs: -1,
            tier: "some-future-tier".into(),
            storage_type: "tape".into(),
            ..wire
        });
        assert_eq!(read, StreamConfig::new(["a.>"]));
    }

    #[test]
    fn values_the_wire_cannot_carry_are_invalid_input() {
        let refused = |config: StreamConfig| {
            let err = stream_config_to_proto(&config).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidInput, "{config:?}");
            err.message().to_owned()
        };
        assert!(refused(StreamConfig::new(["a..b"])).contains("empty token"));
        assert!(refused(StreamConfig::new(["a.>"]).replicas(0)).contains("replicas"));
        assert!(refused(StreamConfig::new(["a.>"]).replicas(6)).contains("replicas"));
        assert!(refused(StreamConfig::new(["a.>"]).max_messages(0)).contains("unset"));
        assert!(refused(StreamConfig::new(["a.>"]).max_bytes(u64::MAX)).contains("too large"));
        assert!(
            refused(StreamConfig::new(["a.>"]).max_message_size(u32::MAX)).contains("too large")
        );
        assert!(refused(StreamConfig::new(["a.>"]).max_age(Duration::MAX)).contains("max_age"));
    }

    #[test]
    fn stream_info_prefers_the_answers_own_state() {
        let info = stream_info_from_proto(
            "ORDERS",
            proto::StreamInfo {
                config: Some(proto::Stream {
                    name: "ORDERS".into(),
                    state: Some(proto::StreamState {
                        messages: 1,
                        ..Default::default()
                    }),
                    ..Default::default()
                }),
                state: Some(proto::StreamState {
                    messages: 2,
                    consumer_count: 1,
                    first_ts: Some(prost_types::Timestamp {
                        seconds: 10,
                        nanos: 0,
                    }),
                    ..Default::default()
                }),
                consumers: vec![proto::ConsumerInfo {
                    name: "workers".into(),
                    ack_pending: 3,
                    active: true,
                    ..Default::default()
                }],
                stats: None,
            },
        );
        assert_eq!(info.stream.name, "ORDERS");
        assert_eq!(info.stream.state.messages, 2);
        assert_eq!(info.stream.state.consumer_count, 1);
        assert_eq!(
            info.stream.state.first_timestamp,
            Some(UNIX_EPOCH + Duration::from_secs(10))
        );
        assert_eq!(info.consumers[0].name, "workers");
        assert_eq!(info.consumers[0].ack_pending, 3);
        assert!(info.stats.is_none());
        // An answer without its stream still names it.
        let bare = stream_info_from_proto("X", proto::StreamInfo::default());
        assert_eq!(bare.stream.name, "X");
    }

    #[test]
    fn list_requests_are_checked() {
        let wire = list_request_to_proto(
            &ListStreamsOptions::default()
                .subject_filter("orders.*")
                .offset(5)
                .limit(10),
        )
        .unwrap();
        assert_eq!(
            (wire.subject_filter.as_str(), wire.offset, wire.limit),
            ("orders.*", 5, 10)
        );
        assert_eq!(
            list_request_to_proto(&ListStreamsOptions::default())
                .unwrap()
                .limit,
            0
        );
        for bad in [
            ListStreamsOptions::default().limit(0),
            ListStreamsOptions::default().offset(u32::MAX),
            ListStreamsOptions::default().subject_filter("a b"),
        ] {
            assert_eq!(
                list_request_to_proto(&bad).unwrap_err().kind(),
                ErrorKind::InvalidInput
            );
        }
    }

    #[test]
    fn group_requests_check_names_and_subjects() {
        let config = ConsumerGroupConfig::default();
        let wire = group_request_to_proto("workers", "JOBS", "jobs.>", &config).unwrap();
        assert_eq!(wire.name, "workers");
        assert!(wire.config.is_some());
        for (name, stream, filter) in [
            ("", "JOBS", ""),
            ("a.b", "JOBS", ""),
            ("workers", "JO BS", ""),
            ("workers", "JOBS", "jobs..x"),
        ] {
            let err = group_request_to_proto(name, stream, filter, &config).unwrap_err();
            assert_eq!(
                err.kind(),
                ErrorKind::InvalidInput,
                "{name:?} {stream:?} {filter:?}"
            );
        }
    }

    #[test]
    fn group_defaults_are_the_python_sdks_on_the_wire() {
        let wire = group_config_to_proto(&ConsumerGroupConfig::default()).unwrap();
        assert_eq!(wire.deliver_policy, "new");
        assert_eq!(wire.max_deliver, 5);
        assert_eq!(wire.ack_wait_seconds, 30);
        assert_eq!(wire.max_ack_pending, 1000);
        assert!(wire.flow_control);
        assert_eq!(wire.idle_heartbeat_seconds, 30);
        assert_eq!(wire.dead_letter_subject, "");
    }

    #[test]
    fn every_group_setting_reaches_the_wire() {
        let at = UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        let wire = group_config_to_proto(
            &ConsumerGroupConfig::default()
                .deliver_policy(DeliverPolicy::ByStartTime(at))
                .max_deliver(None)
                .ack_wait(Duration::from_millis(1500))
                .max_ack_pending(7)
                .flow_control(false)
                .dead_letter_subject("dead.jobs"),
        )
        .unwrap();
        assert_eq!(wire.deliver_policy, "by_start_time");
        let start = wire.start_time.unwrap();
        assert_eq!((start.seconds, start.nanos), (1_700_000_000, 5));
        assert_eq!(wire.max_deliver, 0, "0 is unlimited on the wire");
        assert_eq!(wire.ack_wait_seconds, 2, "rounded up");
        assert_eq!(wire.max_ack_pending, 7);
        assert!(!wire.flow_control);
        assert_eq!(wire.dead_letter_subject, "dead.jobs");
        let wire = group_config_to_proto(
            &ConsumerGroupConfig::default().deliver_policy(DeliverPolicy::ByStartSequence(42)),
        )
        .unwrap();
        assert_eq!(
            (wire.deliver_policy.as_str(), wire.start_sequence),
            ("by_start_sequence", 42)
        );
        for bad in [
            ConsumerGroupConfig::default().max_ack_pending(u32::MAX),
            ConsumerGroupConfig::default().dead_letter_subject("dead.*"),
            ConsumerGroupConfig::default().deliver_policy(DeliverPolicy::ByStartTime(
                UNIX_EPOCH - Duration::from_secs(1),
            )),
        ] {
            assert_eq!(
                group_config_to_proto(&bad).unwrap_err().kind(),
                ErrorKind::InvalidInput
            );
        }
    }
}
