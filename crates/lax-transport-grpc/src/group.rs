//! [`ConsumerGroupConfig`]: LAX's own description of a consumer group, with the defaults of
//! the Python SDK, turned into the wire message only when sent.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use lax_core::Error;
use lax_proto::broker::v1 as proto;

/// Where a new consumer group starts reading its stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeliverPolicy {
    /// Every message the stream holds.
    All,
    /// The last message stored, then new ones.
    Last,
    /// Only messages stored from now on (the default, as in the Python SDK).
    #[default]
    New,
    /// From this stream sequence on (1 is the first).
    ByStartSequence(u64),
    /// From the first message stored at or after this time.
    ByStartTime(SystemTime),
}

/// How a consumer group (one durable JetStream consumer shared by its members) delivers.
///
/// The defaults are the Python SDK's: deliver policy `new`, 5 deliveries, 30 s ack wait, 1000
/// messages pending, flow control on, 30 s idle heartbeat. Replay is always instant and
/// unthrottled (the Python SDK's `replay_policy` `instant` and `rate_limit` 0).
///
/// ```
/// use std::time::Duration;
/// use lax_transport_grpc::{ConsumerGroupConfig, DeliverPolicy};
///
/// let config = ConsumerGroupConfig::default()
///     .deliver_policy(DeliverPolicy::All)
///     .ack_wait(Duration::from_secs(120));
/// assert_eq!(config.max_ack_pending, 1000);
/// assert_eq!(config.max_deliver, Some(5));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerGroupConfig {
    /// Where the group starts. Default [`DeliverPolicy::New`].
    pub deliver_policy: DeliverPolicy,
    /// Deliveries before a message is dead-lettered; `None` for unlimited. Default 5.
    pub max_deliver: Option<u32>,
    /// How long a delivered message may stay unsettled before it is redelivered (whole
    /// seconds on the wire, rounded up). Default 30 s.
    pub ack_wait: Duration,
    /// Most messages delivered to the group and not yet settled. Default 1000.
    pub max_ack_pending: u32,
    /// JetStream flow control on the group's consumer. Default on.
    pub flow_control: bool,
    /// Heartbeat interval of an idle consumer (whole seconds). Default 30 s.
    pub idle_heartbeat: Duration,
    /// Where dead letters go; `lax.dlq.<stream>.<subject>` when unset.
    pub dead_letter_subject: Option<String>,
}

impl Default for ConsumerGroupConfig {
    fn default() -> Self {
        ConsumerGroupConfig {
            deliver_policy: DeliverPolicy::New,
            max_deliver: Some(5),
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 1000,
            flow_control: true,
            idle_heartbeat: Duration::from_secs(30),
            dead_letter_subject: None,
        }
    }
}

impl ConsumerGroupConfig {
    /// Sets where the group starts.
    pub fn deliver_policy(mut self, policy: DeliverPolicy) -> Self {
        self.deliver_policy = policy;
        self
    }

    /// Sets the deliveries before dead-lettering (`None`: unlimited).
    pub fn max_deliver(mut self, max_deliver: Option<u32>) -> Self {
        self.max_deliver = max_deliver;
        self
    }

    /// Sets the ack wait.
    pub fn ack_wait(mut self, ack_wait: Duration) -> Self {
        self.ack_wait = ack_wait;
        self
    }

    /// Sets the most unsettled messages of the group.
    pub fn max_ack_pending(mut self, max_ack_pending: u32) -> Self {
        self.max_ack_pending = max_ack_pending;
        self
    }

    /// Sets flow control.
    pub fn flow_control(mut self, flow_control: bool) -> Self {
        self.flow_control = flow_control;
        self
    }

    /// Sets the idle heartbeat.
    pub fn idle_heartbeat(mut self, idle_heartbeat: Duration) -> Self {
        self.idle_heartbeat = idle_heartbeat;
        self
    }

    /// Sets the dead-letter subject.
    pub fn dead_letter_subject(mut self, subject: impl Into<String>) -> Self {
        self.dead_letter_subject = Some(subject.into());
        self
    }

    /// The wire message; [`InvalidInput`](lax_core::ErrorKind::InvalidInput) for a value the
    /// wire cannot carry.
    pub fn to_proto(&self) -> Result<proto::ConsumerGroupConfig, Error> {
        let whole_seconds = |value: Duration, name: &str| {
            let seconds = value.as_secs() + u64::from(value.subsec_nanos() > 0);
            i32::try_from(seconds).map_err(|_| Error::invalid_input(format!("{name} is too long")))
        };
        let count = |value: u32, name: &str| {
            i32::try_from(value).map_err(|_| Error::invalid_input(format!("{name} is too large")))
        };
        let (deliver_policy, start_sequence, start_time) = match self.deliver_policy {
            DeliverPolicy::All => ("all", 0, None),
            DeliverPolicy::Last => ("last", 0, None),
            DeliverPolicy::New => ("new", 0, None),
            DeliverPolicy::ByStartSequence(sequence) => ("by_start_sequence", sequence, None),
            DeliverPolicy::ByStartTime(at) => {
                let since_epoch = at.duration_since(UNIX_EPOCH).map_err(|_| {
                    Error::invalid_input("deliver_policy start time is before 1970")
                })?;
                let timestamp = prost_types::Timestamp {
                    seconds: i64::try_from(since_epoch.as_secs()).map_err(|_| {
                        Error::invalid_input("deliver_policy start time is too far")
                    })?,
                    nanos: i32::try_from(since_epoch.subsec_nanos()).unwrap_or(0),
                };
                ("by_start_time", 0, Some(timestamp))
            }
        };
        Ok(proto::ConsumerGroupConfig {
            deliver_policy: deliver_policy.to_owned(),
            max_deliver: count(self.max_deliver.unwrap_or(0), "max_deliver")?,
            ack_wait_seconds: whole_seconds(self.ack_wait, "ack_wait")?,
            max_ack_pending: count(self.max_ack_pending, "max_ack_pending")?,
            flow_control: self.flow_control,
            idle_heartbeat_seconds: whole_seconds(self.idle_heartbeat, "idle_heartbeat")?,
            start_sequence,
            start_time,
            dead_letter_subject: self.dead_letter_subject.clone().unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_python_sdks_on_the_wire() {
        let wire = ConsumerGroupConfig::default().to_proto().unwrap();
        assert_eq!(wire.deliver_policy, "new");
        assert_eq!(wire.max_deliver, 5);
        assert_eq!(wire.ack_wait_seconds, 30);
        assert_eq!(wire.max_ack_pending, 1000);
        assert!(wire.flow_control);
        assert_eq!(wire.idle_heartbeat_seconds, 30);
        assert_eq!(wire.dead_letter_subject, "");
    }

    #[test]
    fn every_setting_reaches_the_wire() {
        let at = UNIX_EPOCH + Duration::new(1_700_000_000, 5);
        let wire = ConsumerGroupConfig::default()
            .deliver_policy(DeliverPolicy::ByStartTime(at))
            .max_deliver(None)
            .ack_wait(Duration::from_millis(1500))
            .max_ack_pending(7)
            .flow_control(false)
            .dead_letter_subject("dead.jobs")
            .to_proto()
            .unwrap();
        assert_eq!(wire.deliver_policy, "by_start_time");
        let start = wire.start_time.unwrap();
        assert_eq!((start.seconds, start.nanos), (1_700_000_000, 5));
        assert_eq!(wire.max_deliver, 0, "0 is unlimited on the wire");
        assert_eq!(wire.ack_wait_seconds, 2, "rounded up");
        assert_eq!(wire.max_ack_pending, 7);
        assert!(!wire.flow_control);
        assert_eq!(wire.dead_letter_subject, "dead.jobs");
        let wire = ConsumerGroupConfig::default()
            .deliver_policy(DeliverPolicy::ByStartSequence(42))
            .to_proto()
            .unwrap();
        assert_eq!(
            (wire.deliver_policy.as_str(), wire.start_sequence),
            ("by_start_sequence", 42)
        );
        let err = ConsumerGroupConfig::default()
            .max_ack_pending(u32::MAX)
            .to_proto()
            .unwrap_err();
        assert_eq!(err.kind(), lax_core::ErrorKind::InvalidInput);
    }
}
