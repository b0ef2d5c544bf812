//! Consumer configurations: what a CreateConsumerGroup or a Subscribe asks for, how an
//! existing consumer is compared with it, and the LAX settings kept in consumer metadata.

use std::{collections::HashMap, time::Duration};

use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy};
use lax_core::{Limits, validate::validate_filter_subject};
use lax_proto::broker::v1 as pb;
use tonic::Status;

use crate::timestamp;

/// Consumer metadata key recording the group's `flow_control` wish; a pull consumer has no
/// JetStream flow control of its own, so the broker's Subscribe reads it from here.
pub const FLOW_CONTROL_METADATA: &str = "lax.flow_control";
/// Consumer metadata key recording the group's `idle_heartbeat_seconds`.
pub const IDLE_HEARTBEAT_METADATA: &str = "lax.idle_heartbeat_seconds";
/// Consumer metadata key recording `max_deliver`: how many deliveries the applications get
/// before the broker dead-letters the message. JetStream's own `max_deliver` stays unlimited
/// so that the delivery after the last one reaches the broker, which dead-letters it (see
/// [`crate::consumer`]).
pub const MAX_DELIVER_METADATA: &str = "lax.max_deliver";
/// Consumer metadata key recording a dead-letter subject other than the default.
pub const DEAD_LETTER_METADATA: &str = "lax.dead_letter_subject";

/// The LAX settings of a consumer, read back from its configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LaxSettings {
    /// Deliveries an application gets; `None` is unlimited (no dead-lettering).
    pub(crate) max_deliver: Option<u64>,
    /// The dead-letter subject; `None` is the default one per message.
    pub(crate) dead_letter_subject: Option<String>,
    pub(crate) flow_control: bool,
    pub(crate) ack_wait: Duration,
}

/// JetStream's ack wait when a consumer sets none.
const SERVER_DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);

impl LaxSettings {
    pub(crate) fn of(config: &consumer::Config) -> Self {
        let metadata = &config.metadata;
        LaxSettings {
            max_deliver: metadata
                .get(MAX_DELIVER_METADATA)
                .and_then(|n| n.parse().ok())
                .filter(|n| *n > 0),
            dead_letter_subject: metadata.get(DEAD_LETTER_METADATA).cloned(),
            flow_control: metadata
                .get(FLOW_CONTROL_METADATA)
                .is_some_and(|v| v == "true"),
            ack_wait: if config.ack_wait.is_zero() {
                SERVER_DEFAULT_ACK_WAIT
            } else {
                config.ack_wait
            },
        }
    }
}

/// The LAX part of a consumer's metadata.
fn lax_metadata(
    max_deliver: u32,
    dead_letter_subject: &str,
    flow_control: bool,
    idle_heartbeat_seconds: u32,
) -> HashMap<String, String> {
    let mut metadata = HashMap::new();
    if max_deliver > 0 {
        metadata.insert(MAX_DELIVER_METADATA.to_owned(), max_deliver.to_string());
    }
    if !dead_letter_subject.is_empty() {
        metadata.insert(
            DEAD_LETTER_METADATA.to_owned(),
            dead_letter_subject.to_owned(),
        );
    }
    if flow_control {
        metadata.insert(FLOW_CONTROL_METADATA.to_owned(), "true".to_owned());
    }
    if idle_heartbeat_seconds > 0 {
        metadata.insert(
            IDLE_HEARTBEAT_METADATA.to_owned(),
            idle_heartbeat_seconds.to_string(),
        );
    }
    metadata
}

/// A count that must not be negative (0 means "the default").
pub(crate) fn non_negative(value: i32, name: &str) -> Result<u32, Status> {
    u32::try_from(value).map_err(|_| {
        Status::invalid_argument(format!("{name} is {value}; it must not be negative"))
    })
}

/// Checks a dead-letter subject: a plain subject, no wildcards.
pub(crate) fn validate_dead_letter_subject(subject: &str) -> Result<(), Status> {
    if subject.is_empty() {
        return Ok(());
    }
    lax_core::validate::validate_publish_subject(subject, Limits::DEFAULT_MAX_SUBJECT_LEN)
        .map_err(|e| Status::invalid_argument(format!("dead_letter_subject: {}", e.message())))
}

/// What a consumer shares between the group request and Subscribe.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerShape {
    pub(crate) deliver_policy: DeliverPolicy,
    pub(crate) ack_wait_seconds: u32,
    pub(crate) max_deliver: u32,
    pub(crate) max_ack_pending: u32,
    pub(crate) flow_control: bool,
    pub(crate) idle_heartbeat_seconds: u32,
    pub(crate) dead_letter_subject: String,
    pub(crate) filter_subject: String,
}

impl ConsumerShape {
    /// The explicit-ack pull consumer of this shape, durable when `durable` is given.
    pub(crate) fn config(&self, durable: Option<&str>) -> consumer::Config {
        consumer::Config {
            durable_name: durable.map(str::to_owned),
            deliver_policy: self.deliver_policy,
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(u64::from(self.ack_wait_seconds)),
            // The broker counts deliveries itself (see MAX_DELIVER_METADATA).
            max_deliver: if self.max_deliver > 0 { -1 } else { 0 },
            max_ack_pending: i64::from(self.max_ack_pending),
            filter_subject: self.filter_subject.clone(),
            metadata: lax_metadata(
                self.max_deliver,
                &self.dead_letter_subject,
                self.flow_control,
                self.idle_heartbeat_seconds,
            ),
            ..Default::default()
        }
    }
}

/// The pull consumer a group request asks for.
pub(crate) fn group_consumer_config(
    request: &pb::ConsumerGroupRequest,
) -> Result<consumer::Config, Status> {
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
    validate_dead_letter_subject(&group.dead_letter_subject)?;
    let shape = ConsumerShape {
        deliver_policy,
        max_deliver: non_negative(group.max_deliver, "max_deliver")?,
        ack_wait_seconds: non_negative(group.ack_wait_seconds, "ack_wait_seconds")?,
        max_ack_pending: non_negative(group.max_ack_pending, "max_ack_pending")?,
        idle_heartbeat_seconds: non_negative(
            group.idle_heartbeat_seconds,
            "idle_heartbeat_seconds",
        )?,
        flow_control: group.flow_control,
        dead_letter_subject: group.dead_letter_subject,
        filter_subject: request.subject_filter.clone(),
    };
    Ok(shape.config(Some(&request.name)))
}

/// How strictly an existing consumer is compared with the one asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Comparison {
    /// CreateConsumerGroup: every setting, the start position and flow control included.
    Create,
    /// A Subscribe joining a group: only what the subscriber set; the group's position is
    /// shared, so its start position is not compared.
    Join,
}

/// The first setting in which an existing consumer differs from the one asked for. Settings
/// left at zero (or unset) in the request take the existing ones and are not compared.
pub(crate) fn config_difference(
    existing: &consumer::Config,
    wanted: &consumer::Config,
    comparison: Comparison,
) -> Option<String> {
    let differ = |name: &str, has: String, asked: String| {
        Some(format!("{name} is {has}, asked for {asked}"))
    };
    let filter_conflicts = match comparison {
        Comparison::Create => existing.filter_subject != wanted.filter_subject,
        // A member receives what the group's filter selects; only a subject the filter can
        // never match is refused.
        Comparison::Join => !filters_overlap(&existing.filter_subject, &wanted.filter_subject),
    };
    if filter_conflicts {
        return differ(
            "subject_filter",
            format!("{:?}", existing.filter_subject),
            format!("{:?}", wanted.filter_subject),
        );
    }
    if comparison == Comparison::Create && existing.deliver_policy != wanted.deliver_policy {
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
    if wanted.max_ack_pending != 0 && existing.max_ack_pending != wanted.max_ack_pending {
        return differ(
            "max_ack_pending",
            existing.max_ack_pending.to_string(),
            wanted.max_ack_pending.to_string(),
        );
    }
    let (has, asked) = (LaxSettings::of(existing), LaxSettings::of(wanted));
    if asked.max_deliver.is_some() && has.max_deliver != asked.max_deliver {
        return differ(
            "max_deliver",
            has.max_deliver
                .map_or("unlimited".into(), |n| n.to_string()),
            asked
                .max_deliver
                .map_or("unlimited".into(), |n| n.to_string()),
        );
    }
    if asked.dead_letter_subject.is_some() && has.dead_letter_subject != asked.dead_letter_subject {
        return differ(
            "dead_letter_subject",
            format!("{:?}", has.dead_letter_subject),
            format!("{:?}", asked.dead_letter_subject),
        );
    }
    let exact: &[&str] = match comparison {
        Comparison::Create => &[FLOW_CONTROL_METADATA, IDLE_HEARTBEAT_METADATA],
        Comparison::Join => &[],
    };
    for key in exact {
        let (has, asked) = (existing.metadata.get(*key), wanted.metadata.get(*key));
        if has != asked {
            return differ(key, format!("{has:?}"), format!("{asked:?}"));
        }
    }
    None
}

/// Whether some subject matches both filters (an empty filter is `>`).
pub(crate) fn filters_overlap(a: &str, b: &str) -> bool {
    let tokens = |filter: &str| -> Vec<String> {
        match filter {
            "" => vec![">".to_owned()],
            f => f.split('.').map(str::to_owned).collect(),
        }
    };
    let (a, b) = (tokens(a), tokens(b));
    for (x, y) in a.iter().zip(&b) {
        if x == ">" || y == ">" {
            return true;
        }
        if x != y && x != "*" && y != "*" {
            return false;
        }
    }
    a.len() == b.len()
}

pub(crate) fn group_of(info: &consumer::Info) -> pb::ConsumerGroup {
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
        let config = group_consumer_config(&request(pb::ConsumerGroupConfig {
            deliver_policy: "new".into(),
            max_deliver: 5,
            ack_wait_seconds: 10,
            flow_control: true,
            dead_letter_subject: "dead.orders".into(),
            ..Default::default()
        }))
        .unwrap();
        assert_eq!(config.durable_name.as_deref(), Some("workers"));
        assert_eq!(config.deliver_policy, DeliverPolicy::New);
        assert_eq!(config.ack_policy, AckPolicy::Explicit);
        assert_eq!(config.ack_wait, Duration::from_secs(10));
        assert_eq!(config.max_deliver, -1, "the broker counts deliveries");
        assert_eq!(config.metadata[MAX_DELIVER_METADATA], "5");
        assert_eq!(config.metadata[FLOW_CONTROL_METADATA], "true");
        let settings = LaxSettings::of(&config);
        assert_eq!(settings.max_deliver, Some(5));
        assert_eq!(settings.dead_letter_subject.as_deref(), Some("dead.orders"));
        assert!(settings.flow_control);
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
            pb::ConsumerGroupConfig {
                dead_letter_subject: "dead.*".into(),
                ..Default::default()
            },
        ] {
            let err = group_consumer_config(&request(config)).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument);
        }
        let mut bad_filter = request(Default::default());
        bad_filter.subject_filter = "orders.>.x".into();
        assert!(group_consumer_config(&bad_filter).is_err());
    }

    #[test]
    fn only_asked_settings_are_compared() {
        let wanted = group_consumer_config(&request(Default::default())).unwrap();
        let mut existing = wanted.clone();
        existing.ack_wait = Duration::from_secs(30);
        existing.max_deliver = -1;
        assert_eq!(
            config_difference(&existing, &wanted, Comparison::Create),
            None
        );
        existing.filter_subject = "orders.created".into();
        assert!(
            config_difference(&existing, &wanted, Comparison::Create)
                .unwrap()
                .contains("subject_filter")
        );
    }

    #[test]
    fn filters_overlap_when_some_subject_matches_both() {
        for (a, b) in [
            (">", "e5d.jobs"),
            ("", "e5d.jobs"),
            ("orders.*", "orders.*"),
            ("orders.*", "orders.created"),
            ("orders.>", "*.created.eu"),
            ("orders.created", "orders.>"),
        ] {
            assert!(filters_overlap(a, b), "{a} and {b}");
            assert!(filters_overlap(b, a), "{b} and {a}");
        }
        for (a, b) in [
            ("orders.*", "payments.x"),
            ("orders.*", "orders.created.eu"),
            ("orders.created", "orders"),
        ] {
            assert!(!filters_overlap(a, b), "{a} and {b}");
            assert!(!filters_overlap(b, a), "{b} and {a}");
        }
    }

    #[test]
    fn members_join_with_their_own_flow_control_and_a_narrower_subject() {
        let existing = group_consumer_config(&pb::ConsumerGroupRequest {
            subject_filter: ">".into(),
            config: Some(pb::ConsumerGroupConfig {
                max_ack_pending: 1000,
                ..Default::default()
            }),
            ..request(Default::default())
        })
        .unwrap();
        let member = ConsumerShape {
            deliver_policy: DeliverPolicy::New,
            ack_wait_seconds: 0,
            max_deliver: 0,
            max_ack_pending: 0,
            flow_control: true,
            idle_heartbeat_seconds: 0,
            dead_letter_subject: String::new(),
            filter_subject: "e5d.jobs".into(),
        };
        assert_eq!(
            config_difference(&existing, &member.config(Some("workers")), Comparison::Join),
            None
        );
        let stranger = ConsumerShape {
            ack_wait_seconds: 7,
            ..member
        };
        let why = config_difference(
            &existing,
            &stranger.config(Some("workers")),
            Comparison::Join,
        )
        .unwrap();
        assert!(why.contains("ack_wait is 0ns, asked for 7s"), "{why}");
    }

    #[test]
    fn joining_ignores_the_start_position_but_not_max_deliver() {
        let existing = group_consumer_config(&request(pb::ConsumerGroupConfig {
            deliver_policy: "all".into(),
            max_deliver: 3,
            ..Default::default()
        }))
        .unwrap();
        let mut wanted = group_consumer_config(&request(pb::ConsumerGroupConfig {
            deliver_policy: "new".into(),
            ..Default::default()
        }))
        .unwrap();
        assert_eq!(
            config_difference(&existing, &wanted, Comparison::Join),
            None
        );
        assert!(config_difference(&existing, &wanted, Comparison::Create).is_some());
        wanted
            .metadata
            .insert(MAX_DELIVER_METADATA.into(), "4".into());
        let why = config_difference(&existing, &wanted, Comparison::Join).unwrap();
        assert!(why.contains("max_deliver is 3, asked for 4"), "{why}");
    }
}
