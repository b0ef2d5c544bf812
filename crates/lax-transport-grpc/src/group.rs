//! [`ConsumerGroupConfig`]: LAX's own description of a consumer group, with the defaults of
//! the Python SDK, turned into the wire message only when sent (see `convert::admin`).

use std::time::{Duration, SystemTime};

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
}
