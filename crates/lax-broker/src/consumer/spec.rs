//! What a Subscribe asks for: subject, group, start position and options, checked.

use async_nats::jetstream::consumer::{self, DeliverPolicy};
use lax_core::{Limits, validate::validate_filter_subject};
use lax_proto::broker::v1 as pb;
use tonic::Status;

use super::group::{ConsumerShape, non_negative, validate_dead_letter_subject};
use crate::names::validate_name;

/// Messages per pull when `prefetch` is 0.
pub(crate) const DEFAULT_PREFETCH: usize = 64;

/// A checked SubscribeRequest.
#[derive(Debug, Clone)]
pub(crate) struct SubscribeSpec {
    pub(crate) subject: String,
    pub(crate) group: Option<String>,
    pub(crate) shape: ConsumerShape,
    /// Messages per pull request.
    pub(crate) prefetch: usize,
    /// Most unsettled messages the subscriber wants (0: the broker's limit).
    pub(crate) max_inflight: usize,
    pub(crate) manual_ack: bool,
    /// The subscriber settles through the Ack calls (a LAX addition to the contract).
    pub(crate) uses_ack_rpc: bool,
}

impl SubscribeSpec {
    pub(crate) fn parse(request: pb::SubscribeRequest) -> Result<Self, Status> {
        validate_filter_subject(&request.subject, Limits::DEFAULT_MAX_SUBJECT_LEN)
            .map_err(|e| Status::invalid_argument(e.message().to_owned()))?;
        let group = match request.consumer_group.as_str() {
            "" => None,
            name => {
                validate_name("consumer group", name)?;
                Some(name.to_owned())
            }
        };
        let options = request.options.unwrap_or_default();
        validate_dead_letter_subject(&options.dead_letter_subject)?;
        let max_inflight = non_negative(options.max_inflight, "max_inflight")?;
        let prefetch = match non_negative(options.prefetch, "prefetch")? {
            0 => DEFAULT_PREFETCH,
            n => n as usize,
        };
        Ok(SubscribeSpec {
            shape: ConsumerShape {
                deliver_policy: start_position(&request.start_position)?,
                ack_wait_seconds: non_negative(options.ack_wait_seconds, "ack_wait_seconds")?,
                max_deliver: non_negative(options.max_deliver, "max_deliver")?,
                // The subscriber's max_inflight is its own credit; a group's max ack pending
                // is the group's (set by CreateConsumerGroup).
                max_ack_pending: if group.is_some() { 0 } else { max_inflight },
                flow_control: options.enable_flow_control,
                idle_heartbeat_seconds: 0,
                dead_letter_subject: options.dead_letter_subject,
                filter_subject: request.subject.clone(),
            },
            // A pull larger than the ack-pending cap could never be filled.
            prefetch: if max_inflight > 0 {
                prefetch.min(max_inflight as usize)
            } else {
                prefetch
            },
            max_inflight: max_inflight as usize,
            manual_ack: options.manual_ack,
            uses_ack_rpc: options.uses_ack_rpc,
            subject: request.subject,
            group,
        })
    }

    /// Whether the subscriber settles each message itself; otherwise the broker acks it on
    /// hand-over (`manual_ack = false`, or a client without the Ack calls).
    pub(crate) fn settles_itself(&self) -> bool {
        self.manual_ack && self.uses_ack_rpc
    }

    /// The consumer this subscription asks for: the group's durable, or an ephemeral named
    /// `name`.
    pub(crate) fn consumer_config(&self, ephemeral_name: &str) -> consumer::Config {
        match &self.group {
            Some(group) => self.shape.config(Some(group)),
            None => consumer::Config {
                name: Some(ephemeral_name.to_owned()),
                inactive_threshold: super::EPHEMERAL_INACTIVE_THRESHOLD,
                ..self.shape.config(None)
            },
        }
    }
}

/// `start_position`: `new` (the default), `last`, `first` or `sequence:N`.
fn start_position(position: &str) -> Result<DeliverPolicy, Status> {
    match position {
        "" | "new" => Ok(DeliverPolicy::New),
        "last" => Ok(DeliverPolicy::Last),
        "first" => Ok(DeliverPolicy::All),
        other => match other.strip_prefix("sequence:").map(str::parse::<u64>) {
            Some(Ok(start_sequence)) if start_sequence > 0 => {
                Ok(DeliverPolicy::ByStartSequence { start_sequence })
            }
            _ => Err(Status::invalid_argument(format!(
                "unknown start_position {other:?}: expected \"new\", \"last\", \"first\" or \"sequence:N\" with N >= 1"
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consumer::group::{LaxSettings, MAX_DELIVER_METADATA};

    fn request(start: &str, options: pb::SubscribeOptions) -> pb::SubscribeRequest {
        pb::SubscribeRequest {
            subject: "orders.>".into(),
            consumer_group: String::new(),
            options: Some(options),
            start_position: start.into(),
        }
    }

    #[test]
    fn start_positions_map_onto_deliver_policies() {
        assert_eq!(start_position("").unwrap(), DeliverPolicy::New);
        assert_eq!(start_position("new").unwrap(), DeliverPolicy::New);
        assert_eq!(start_position("last").unwrap(), DeliverPolicy::Last);
        assert_eq!(start_position("first").unwrap(), DeliverPolicy::All);
        assert_eq!(
            start_position("sequence:42").unwrap(),
            DeliverPolicy::ByStartSequence { start_sequence: 42 }
        );
        for bad in [
            "sequence:0",
            "sequence:",
            "sequence:x",
            "oldest",
            "sequence:-1",
        ] {
            assert_eq!(
                start_position(bad).unwrap_err().code(),
                tonic::Code::InvalidArgument,
                "{bad}"
            );
        }
    }

    #[test]
    fn options_map_onto_the_consumer() {
        let spec = SubscribeSpec::parse(request(
            "first",
            pb::SubscribeOptions {
                max_inflight: 10,
                manual_ack: true,
                ack_wait_seconds: 7,
                max_deliver: 3,
                prefetch: 50,
                enable_flow_control: true,
                dead_letter_subject: "dead.orders".into(),
                uses_ack_rpc: true,
            },
        ))
        .unwrap();
        assert_eq!(spec.prefetch, 10, "a pull never exceeds max_inflight");
        assert!(spec.settles_itself());
        let config = spec.consumer_config("eph");
        assert_eq!(config.name.as_deref(), Some("eph"));
        assert_eq!(config.durable_name, None);
        assert_eq!(config.max_ack_pending, 10);
        assert_eq!(config.ack_wait, std::time::Duration::from_secs(7));
        assert_eq!(config.filter_subject, "orders.>");
        assert_eq!(config.metadata[MAX_DELIVER_METADATA], "3");
        let settings = LaxSettings::of(&config);
        assert_eq!(settings.dead_letter_subject.as_deref(), Some("dead.orders"));
        assert!(settings.flow_control);

        let mut grouped = request(
            "",
            pb::SubscribeOptions {
                max_inflight: 100,
                manual_ack: true,
                ..Default::default()
            },
        );
        grouped.consumer_group = "workers".into();
        let spec = SubscribeSpec::parse(grouped).unwrap();
        assert_eq!(spec.prefetch, DEFAULT_PREFETCH);
        assert!(
            !spec.settles_itself(),
            "an old-contract client cannot ack: the broker acks on hand-over"
        );
        let config = spec.consumer_config("ignored");
        assert_eq!(config.durable_name.as_deref(), Some("workers"));
        assert_eq!(
            config.max_ack_pending, 0,
            "a member's max_inflight is its own credit, not the group's setting"
        );
        assert_eq!(config.deliver_policy, DeliverPolicy::New);
    }

    #[test]
    fn bad_requests_are_invalid_arguments() {
        let mut no_subject = request("", Default::default());
        no_subject.subject.clear();
        let mut bad_group = request("", Default::default());
        bad_group.consumer_group = "a.b".into();
        for bad in [
            no_subject,
            bad_group,
            request(
                "",
                pb::SubscribeOptions {
                    max_deliver: -1,
                    ..Default::default()
                },
            ),
            request(
                "",
                pb::SubscribeOptions {
                    dead_letter_subject: "dead.>".into(),
                    ..Default::default()
                },
            ),
        ] {
            assert_eq!(
                SubscribeSpec::parse(bad).unwrap_err().code(),
                tonic::Code::InvalidArgument
            );
        }
    }
}
