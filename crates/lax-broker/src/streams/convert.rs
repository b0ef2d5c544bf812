//! Mapping `broker.v1.StreamConfig` onto JetStream's stream configuration and back.

use std::time::Duration;

use async_nats::jetstream::{
    consumer,
    stream::{self, Config, DiscardPolicy, RetentionPolicy, StorageType},
};
use lax_core::{Limits, Tier, validate::validate_filter_subject};
use lax_proto::broker::v1 as pb;
use tonic::Status;

use crate::{
    names::validate_name,
    routing::{storage_name, tier_of, tier_storage},
    timestamp::{from_datetime, from_duration, to_duration},
};

/// JetStream keeps at most this many replicas of a stream.
pub(crate) const MAX_REPLICAS: i32 = 5;

fn invalid(message: String) -> Status {
    Status::invalid_argument(message)
}

/// A limit where 0 means "none": negative is refused, 0 becomes JetStream's -1 (unlimited).
fn limit<T>(value: T, name: &str) -> Result<T, Status>
where
    T: Copy + PartialOrd + Default + std::fmt::Display + From<i8>,
{
    if value < T::default() {
        return Err(invalid(format!(
            "{name} is {value}; it must not be negative (0 means no limit)"
        )));
    }
    Ok(if value == T::default() {
        T::from(-1)
    } else {
        value
    })
}

/// The JetStream configuration for stream `name` described by `config`.
///
/// The tier sets storage and replicas unless they are given; given ones must not contradict
/// it (a `persistent` stream in memory, or a `replicated` one with fewer replicas than
/// `replicated_replicas`).
pub(crate) fn to_jetstream(
    name: &str,
    config: &pb::StreamConfig,
    replicated_replicas: usize,
) -> Result<Config, Status> {
    validate_name("stream", name)?;
    for subject in &config.subjects {
        validate_filter_subject(subject, Limits::DEFAULT_MAX_SUBJECT_LEN)
            .map_err(|e| invalid(e.message().to_owned()))?;
    }
    let tier: Option<Tier> = match config.tier.as_str() {
        "" => None,
        tier => Some(
            tier.parse()
                .map_err(|e: lax_core::Error| invalid(e.message().to_owned()))?,
        ),
    };
    let storage = match config.storage_type.as_str() {
        "" => None,
        "file" => Some(StorageType::File),
        "memory" => Some(StorageType::Memory),
        other => {
            return Err(invalid(format!(
                "unknown storage_type {other:?}: expected \"file\" or \"memory\""
            )));
        }
    };
    let replicas = match config.num_replicas {
        0 => None,
        n if (1..=MAX_REPLICAS).contains(&n) => Some(n as usize),
        n => {
            return Err(invalid(format!(
                "num_replicas is {n}; JetStream keeps 1 to {MAX_REPLICAS} replicas"
            )));
        }
    };
    let (storage, num_replicas) = match tier {
        Some(tier) => {
            let (tier_storage, tier_replicas) = tier_storage(tier, replicated_replicas);
            if storage.is_some_and(|s| s != tier_storage) {
                return Err(invalid(format!(
                    "tier {tier} keeps messages in {} storage, but storage_type is {:?}",
                    storage_name(tier_storage),
                    config.storage_type
                )));
            }
            if replicas.is_some_and(|r| r < tier_replicas) {
                return Err(invalid(format!(
                    "tier {tier} needs at least {tier_replicas} replicas, but num_replicas is {}",
                    config.num_replicas
                )));
            }
            (tier_storage, replicas.unwrap_or(tier_replicas))
        }
        None => (storage.unwrap_or(StorageType::File), replicas.unwrap_or(1)),
    };
    let retention = config.retention.clone().unwrap_or_default();
    let retention_policy = match retention.policy.as_str() {
        "" | "limits" => RetentionPolicy::Limits,
        "interest" => RetentionPolicy::Interest,
        "workqueue" => RetentionPolicy::WorkQueue,
        other => {
            return Err(invalid(format!(
                "unknown retention policy {other:?}: expected \"limits\", \"interest\" or \"workqueue\""
            )));
        }
    };
    let discard = match config.discard_policy.as_str() {
        "" | "old" => DiscardPolicy::Old,
        "new" => DiscardPolicy::New,
        other => {
            return Err(invalid(format!(
                "unknown discard_policy {other:?}: expected \"old\" or \"new\""
            )));
        }
    };
    let duration =
        |value: &Option<prost_types::Duration>, name: &str| -> Result<Duration, Status> {
            value.as_ref().map_or(Ok(Duration::ZERO), |d| {
                to_duration(d).ok_or_else(|| invalid(format!("{name} must not be negative")))
            })
        };
    Ok(Config {
        name: name.to_owned(),
        description: (!config.description.is_empty()).then(|| config.description.clone()),
        subjects: config.subjects.clone(),
        retention: retention_policy,
        max_messages_per_subject: limit(
            retention.max_msgs_per_subject,
            "retention.max_msgs_per_subject",
        )?,
        discard_new_per_subject: retention.discard_new_per_subject,
        storage,
        num_replicas,
        max_messages: limit(config.max_msgs, "max_msgs")?,
        max_bytes: limit(config.max_bytes, "max_bytes")?,
        max_age: duration(&config.max_age, "max_age")?,
        max_message_size: limit(config.max_msg_size, "max_msg_size")?,
        max_consumers: limit(config.max_consumers, "max_consumers")?,
        no_ack: config.no_ack,
        discard,
        allow_rollup: config.allow_rollup,
        deny_delete: config.deny_delete,
        deny_purge: config.deny_purge,
        metadata: config.metadata.clone(),
        duplicate_window: duration(&config.duplicate_window, "duplicate_window")?,
        ..Default::default()
    })
}

/// JetStream's -1 ("unlimited") as the contract's 0.
fn unlimited_as_zero<T: Copy + PartialOrd + Default>(value: T) -> T {
    if value < T::default() {
        T::default()
    } else {
        value
    }
}

/// A JetStream configuration as `broker.v1.StreamConfig`.
pub(crate) fn from_jetstream(config: &Config, replicated_replicas: usize) -> pb::StreamConfig {
    let nonzero = |d: Duration| (!d.is_zero()).then(|| from_duration(d));
    pb::StreamConfig {
        description: config.description.clone().unwrap_or_default(),
        subjects: config.subjects.clone(),
        retention: Some(pb::RetentionPolicy {
            policy: match config.retention {
                RetentionPolicy::Limits => "limits",
                RetentionPolicy::Interest => "interest",
                RetentionPolicy::WorkQueue => "workqueue",
            }
            .to_owned(),
            max_msgs_per_subject: unlimited_as_zero(config.max_messages_per_subject),
            discard_new_per_subject: config.discard_new_per_subject,
        }),
        storage_type: storage_name(config.storage).to_owned(),
        num_replicas: i32::try_from(config.num_replicas).unwrap_or(MAX_REPLICAS),
        max_msgs: unlimited_as_zero(config.max_messages),
        max_bytes: unlimited_as_zero(config.max_bytes),
        max_age: nonzero(config.max_age),
        max_msg_size: unlimited_as_zero(config.max_message_size),
        max_consumers: unlimited_as_zero(config.max_consumers),
        tier: tier_of(config.storage, config.num_replicas, replicated_replicas)
            .as_str()
            .to_owned(),
        no_ack: config.no_ack,
        discard_policy: match config.discard {
            DiscardPolicy::Old => "old",
            DiscardPolicy::New => "new",
        }
        .to_owned(),
        allow_rollup: config.allow_rollup,
        deny_delete: config.deny_delete,
        deny_purge: config.deny_purge,
        metadata: config.metadata.clone(),
        duplicate_window: nonzero(config.duplicate_window),
    }
}

/// A stream's state as `broker.v1.StreamState`.
pub(crate) fn state_of(state: &stream::State) -> pb::StreamState {
    pb::StreamState {
        messages: state.messages,
        bytes: state.bytes,
        first_seq: state.first_sequence,
        last_seq: state.last_sequence,
        consumer_count: i32::try_from(state.consumer_count).unwrap_or(i32::MAX),
        first_ts: Some(from_datetime(state.first_timestamp)),
        last_ts: Some(from_datetime(state.last_timestamp)),
    }
}

/// A stream as `broker.v1.Stream`.
pub(crate) fn stream_of(info: &stream::Info, replicated_replicas: usize) -> pb::Stream {
    pb::Stream {
        name: info.config.name.clone(),
        config: Some(from_jetstream(&info.config, replicated_replicas)),
        state: Some(state_of(&info.state)),
        created: Some(from_datetime(info.created)),
    }
}

/// A consumer as `broker.v1.ConsumerInfo`; a pull consumer is active while pulls wait on it.
pub(crate) fn consumer_of(info: &consumer::Info) -> pb::ConsumerInfo {
    pb::ConsumerInfo {
        name: info.name.clone(),
        stream: info.stream_name.clone(),
        created: Some(from_datetime(info.created)),
        delivered: info.delivered.consumer_sequence,
        ack_pending: info.num_ack_pending as u64,
        redelivered: info.num_redelivered as u64,
        active: info.push_bound || info.num_waiting > 0,
    }
}

/// Figures derived from a stream's state: rates over the span its retained messages cover,
/// the average message size, and messages per subject.
pub(crate) fn stats_of(
    state: &stream::State,
    subjects: std::collections::HashMap<String, u64>,
) -> pb::StreamStats {
    let span = (state.last_timestamp - state.first_timestamp).as_seconds_f64();
    let per_second = |count: u64| {
        if span > 0.0 {
            (count as f64 / span) as u64
        } else {
            0
        }
    };
    pb::StreamStats {
        msg_rate: per_second(state.messages),
        byte_rate: per_second(state.bytes),
        ack_rate: 0,
        avg_msg_size: if state.messages == 0 {
            0.0
        } else {
            state.bytes as f64 / state.messages as f64
        },
        subject_stats: subjects,
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;

    fn config(tier: &str, storage: &str, replicas: i32) -> pb::StreamConfig {
        pb::StreamConfig {
            subjects: vec!["orders.>".into()],
            tier: tier.into(),
            storage_type: storage.into(),
            num_replicas: replicas,
            ..Default::default()
        }
    }

    #[test]
    fn tiers_set_storage_and_replicas() {
        let js = to_jetstream("ORDERS", &config("replicated", "", 0), 3).unwrap();
        assert_eq!((js.storage, js.num_replicas), (StorageType::File, 3));
        let js = to_jetstream("ORDERS", &config("memory", "", 0), 3).unwrap();
        assert_eq!((js.storage, js.num_replicas), (StorageType::Memory, 1));
        let js = to_jetstream("ORDERS", &config("persistent", "file", 3), 3).unwrap();
        assert_eq!(
            js.num_replicas, 3,
            "a stronger stream than the tier is fine"
        );
        let js = to_jetstream("ORDERS", &config("", "", 0), 3).unwrap();
        assert_eq!((js.storage, js.num_replicas), (StorageType::File, 1));
        assert_eq!(
            (js.max_messages, js.max_bytes, js.max_message_size),
            (-1, -1, -1)
        );
    }

    #[test]
    fn contradictions_and_bad_values_are_invalid_arguments() {
        let bad = [
            ("a.b", config("", "", 0)),
            ("S", config("persistent", "memory", 0)),
            ("S", config("replicated", "", 1)),
            ("S", config("gold", "", 0)),
            ("S", config("", "disk", 0)),
            ("S", config("", "", 7)),
            ("S", config("", "", -1)),
            (
                "S",
                pb::StreamConfig {
                    max_msgs: -5,
                    ..Default::default()
                },
            ),
            (
                "S",
                pb::StreamConfig {
                    discard_policy: "newest".into(),
                    ..Default::default()
                },
            ),
            (
                "S",
                pb::StreamConfig {
                    retention: Some(pb::RetentionPolicy {
                        policy: "forever".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ),
            (
                "S",
                pb::StreamConfig {
                    max_age: Some(prost_types::Duration {
                        seconds: -1,
                        nanos: 0,
                    }),
                    ..Default::default()
                },
            ),
            (
                "S",
                pb::StreamConfig {
                    subjects: vec!["a..b".into()],
                    ..Default::default()
                },
            ),
        ];
        for (name, config) in bad {
            let err = to_jetstream(name, &config, 3).unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{name} {config:?}");
        }
    }

    #[test]
    fn configs_round_trip() {
        let mut wanted = config("replicated", "file", 3);
        wanted.max_msgs = 10;
        wanted.discard_policy = "new".into();
        wanted.duplicate_window = Some(from_duration(Duration::from_secs(30)));
        wanted.metadata.insert("team".into(), "payments".into());
        let js = to_jetstream("ORDERS", &wanted, 3).unwrap();
        let back = from_jetstream(&js, 3);
        assert_eq!(back.tier, "replicated");
        assert_eq!(back.max_msgs, 10);
        assert_eq!(back.max_bytes, 0);
        assert_eq!(back.discard_policy, "new");
        assert_eq!(back.duplicate_window, wanted.duplicate_window);
        assert_eq!(back.metadata["team"], "payments");
    }
}
