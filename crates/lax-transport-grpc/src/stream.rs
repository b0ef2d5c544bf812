//! LAX's own description of streams, as [`BrokerAdmin`](crate::BrokerAdmin) takes and returns
//! them; turned into the wire messages only when sent (see `convert::admin`).

use std::{collections::HashMap, time::Duration, time::SystemTime};

use lax_core::Tier;

/// Where a stream keeps its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StorageType {
    /// On disk: survives a server restart.
    File,
    /// In memory: lost when the server stops.
    Memory,
}

impl StorageType {
    /// The name on the wire and in JetStream: `file` or `memory`.
    pub const fn as_str(self) -> &'static str {
        match self {
            StorageType::File => "file",
            StorageType::Memory => "memory",
        }
    }
}

/// When a stream lets go of a message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetentionPolicy {
    /// Kept until a limit (messages, bytes, age) pushes it out. The default.
    #[default]
    Limits,
    /// Kept while some consumer has not acknowledged it.
    Interest,
    /// Removed once one consumer acknowledges it (a work queue).
    WorkQueue,
}

impl RetentionPolicy {
    /// The name on the wire: `limits`, `interest` or `workqueue`.
    pub const fn as_str(self) -> &'static str {
        match self {
            RetentionPolicy::Limits => "limits",
            RetentionPolicy::Interest => "interest",
            RetentionPolicy::WorkQueue => "workqueue",
        }
    }
}

/// What a full stream does with a new message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DiscardPolicy {
    /// Drops the oldest messages to make room. The default.
    #[default]
    Old,
    /// Refuses the new message.
    New,
}

impl DiscardPolicy {
    /// The name on the wire: `old` or `new`.
    pub const fn as_str(self) -> &'static str {
        match self {
            DiscardPolicy::Old => "old",
            DiscardPolicy::New => "new",
        }
    }
}

/// How a stream is configured. `None` limits are unlimited; the tier sets storage and replicas
/// unless they are given (given ones must agree with it, or the broker refuses the stream).
///
/// Built with setters; [`BrokerAdmin::create_stream`](crate::BrokerAdmin::create_stream)
/// checks every value before anything is sent and refuses one the wire cannot carry as
/// [`InvalidInput`](lax_core::ErrorKind::InvalidInput).
///
/// ```
/// use std::time::Duration;
/// use lax_core::Tier;
/// use lax_transport_grpc::{RetentionPolicy, StreamConfig};
///
/// let config = StreamConfig::new(["orders.>"])
///     .tier(Tier::Persistent)
///     .retention(RetentionPolicy::WorkQueue)
///     .max_messages(1_000_000)
///     .max_age(Duration::from_secs(24 * 3600));
/// assert_eq!(config.subjects, ["orders.>"]);
/// assert_eq!(config.max_bytes, None);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamConfig {
    /// Subjects the stream captures (wildcards allowed). JetStream uses the stream's name when
    /// empty.
    pub subjects: Vec<String>,
    /// A description.
    pub description: Option<String>,
    /// The tier, which sets storage and replicas; the broker infers it when unset.
    pub tier: Option<Tier>,
    /// Storage; the tier's (or file) when unset.
    pub storage: Option<StorageType>,
    /// Replicas, 1 to 5; the tier's (or 1) when unset.
    pub replicas: Option<u32>,
    /// When messages are let go. Default [`RetentionPolicy::Limits`].
    pub retention: RetentionPolicy,
    /// Most messages kept per subject.
    pub max_messages_per_subject: Option<u64>,
    /// Refuse a new message of a full subject instead of dropping its oldest.
    pub discard_new_per_subject: bool,
    /// Most messages kept.
    pub max_messages: Option<u64>,
    /// Most bytes kept.
    pub max_bytes: Option<u64>,
    /// Longest a message is kept.
    pub max_age: Option<Duration>,
    /// Largest message accepted, in bytes.
    pub max_message_size: Option<u32>,
    /// Most consumers.
    pub max_consumers: Option<u32>,
    /// Store messages without acknowledging the publisher.
    pub no_ack: bool,
    /// What a full stream does. Default [`DiscardPolicy::Old`].
    pub discard: DiscardPolicy,
    /// Allow rollup headers to purge a subject.
    pub allow_rollup: bool,
    /// Refuse deleting single messages.
    pub deny_delete: bool,
    /// Refuse purging the stream.
    pub deny_purge: bool,
    /// Free-form metadata.
    pub metadata: HashMap<String, String>,
    /// The window inside which a repeated message id is stored once; JetStream's (2 min) when
    /// unset.
    pub duplicate_window: Option<Duration>,
}

impl StreamConfig {
    /// A configuration capturing `subjects`, everything else default.
    pub fn new<I, S>(subjects: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        StreamConfig {
            subjects: subjects.into_iter().map(Into::into).collect(),
            ..StreamConfig::default()
        }
    }

    /// Adds a subject.
    pub fn subject(mut self, subject: impl Into<String>) -> Self {
        self.subjects.push(subject.into());
        self
    }

    /// Sets the description.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = Some(description.into());
        self
    }

    /// Sets the tier.
    pub fn tier(mut self, tier: Tier) -> Self {
        self.tier = Some(tier);
        self
    }

    /// Sets the storage.
    pub fn storage(mut self, storage: StorageType) -> Self {
        self.storage = Some(storage);
        self
    }

    /// Sets the number of replicas (1 to 5).
    pub fn replicas(mut self, replicas: u32) -> Self {
        self.replicas = Some(replicas);
        self
    }

    /// Sets the retention policy.
    pub fn retention(mut self, retention: RetentionPolicy) -> Self {
        self.retention = retention;
        self
    }

    /// Sets the most messages kept per subject.
    pub fn max_messages_per_subject(mut self, max: u64) -> Self {
        self.max_messages_per_subject = Some(max);
        self
    }

    /// Sets whether a full subject refuses new messages.
    pub fn discard_new_per_subject(mut self, discard_new: bool) -> Self {
        self.discard_new_per_subject = discard_new;
        self
    }

    /// Sets the most messages kept.
    pub fn max_messages(mut self, max: u64) -> Self {
        self.max_messages = Some(max);
        self
    }

    /// Sets the most bytes kept.
    pub fn max_bytes(mut self, max: u64) -> Self {
        self.max_bytes = Some(max);
        self
    }

    /// Sets the longest a message is kept.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// Sets the largest message accepted.
    pub fn max_message_size(mut self, max: u32) -> Self {
        self.max_message_size = Some(max);
        self
    }

    /// Sets the most consumers.
    pub fn max_consumers(mut self, max: u32) -> Self {
        self.max_consumers = Some(max);
        self
    }

    /// Sets whether publishes are stored without an ack.
    pub fn no_ack(mut self, no_ack: bool) -> Self {
        self.no_ack = no_ack;
        self
    }

    /// Sets what a full stream does.
    pub fn discard(mut self, discard: DiscardPolicy) -> Self {
        self.discard = discard;
        self
    }

    /// Sets whether rollups are allowed.
    pub fn allow_rollup(mut self, allow: bool) -> Self {
        self.allow_rollup = allow;
        self
    }

    /// Sets whether deleting single messages is refused.
    pub fn deny_delete(mut self, deny: bool) -> Self {
        self.deny_delete = deny;
        self
    }

    /// Sets whether purging is refused.
    pub fn deny_purge(mut self, deny: bool) -> Self {
        self.deny_purge = deny;
        self
    }

    /// Adds a metadata entry.
    pub fn metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// Sets the de-duplication window.
    pub fn duplicate_window(mut self, window: Duration) -> Self {
        self.duplicate_window = Some(window);
        self
    }
}

/// What a stream holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamState {
    /// Messages stored.
    pub messages: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// Sequence of the first message stored.
    pub first_sequence: u64,
    /// Sequence of the last message stored.
    pub last_sequence: u64,
    /// Consumers of the stream.
    pub consumer_count: u32,
    /// When the first message stored was stored.
    pub first_timestamp: Option<SystemTime>,
    /// When the last message stored was stored.
    pub last_timestamp: Option<SystemTime>,
}

/// A stream: its configuration (as the server holds it, tier, storage and replicas resolved)
/// and state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stream {
    /// The stream's name.
    pub name: String,
    /// Its configuration.
    pub config: StreamConfig,
    /// What it holds.
    pub state: StreamState,
    /// When it was created.
    pub created: Option<SystemTime>,
}

/// One consumer of a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerInfo {
    /// The consumer's (or consumer group's) name.
    pub name: String,
    /// Its stream.
    pub stream: String,
    /// When it was created.
    pub created: Option<SystemTime>,
    /// Messages delivered.
    pub delivered: u64,
    /// Messages delivered and not yet acknowledged.
    pub ack_pending: u64,
    /// Messages delivered more than once.
    pub redelivered: u64,
    /// Whether something is consuming it now.
    pub active: bool,
}

/// Figures of a stream, derived from what it holds.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct StreamStats {
    /// Messages per second over the span the stored messages cover.
    pub message_rate: u64,
    /// Bytes per second over that span.
    pub byte_rate: u64,
    /// Acks per second.
    pub ack_rate: u64,
    /// Average message size, in bytes.
    pub average_message_size: f64,
    /// Messages stored per subject.
    pub messages_per_subject: HashMap<String, u64>,
}

/// A stream described by [`BrokerAdmin::stream_info`](crate::BrokerAdmin::stream_info).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StreamInfo {
    /// The stream, its configuration and state.
    pub stream: Stream,
    /// Its consumers, when asked for ([`StreamInfoOptions::consumers`]).
    pub consumers: Vec<ConsumerInfo>,
    /// Its figures, when asked for ([`StreamInfoOptions::stats`]).
    pub stats: Option<StreamStats>,
}

/// What [`BrokerAdmin::stream_info`](crate::BrokerAdmin::stream_info) includes beyond the
/// configuration and state. Default: nothing more.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamInfoOptions {
    /// Include the stream's consumers.
    pub consumers: bool,
    /// Include the stream's figures (the server counts messages per subject: costly on a
    /// stream with many subjects).
    pub stats: bool,
}

impl StreamInfoOptions {
    /// Sets whether the consumers are included.
    pub fn consumers(mut self, include: bool) -> Self {
        self.consumers = include;
        self
    }

    /// Sets whether the figures are included.
    pub fn stats(mut self, include: bool) -> Self {
        self.stats = include;
        self
    }
}

/// Which streams [`BrokerAdmin::list_streams`](crate::BrokerAdmin::list_streams) lists, a page
/// at a time. Default: every stream, from the first, as many as the broker gives at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ListStreamsOptions {
    /// Only streams capturing subjects that match this filter.
    pub subject_filter: Option<String>,
    /// Streams to skip.
    pub offset: u32,
    /// Most streams returned; the broker's page size when unset.
    pub limit: Option<u32>,
}

impl ListStreamsOptions {
    /// Sets the subject filter.
    pub fn subject_filter(mut self, filter: impl Into<String>) -> Self {
        self.subject_filter = Some(filter.into());
        self
    }

    /// Sets the streams to skip.
    pub fn offset(mut self, offset: u32) -> Self {
        self.offset = offset;
        self
    }

    /// Sets the most streams returned.
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }
}

/// One page of [`BrokerAdmin::list_streams`](crate::BrokerAdmin::list_streams).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StreamPage {
    /// The streams of this page.
    pub streams: Vec<Stream>,
    /// Streams matching the filter, on every page.
    pub total: u32,
    /// Streams skipped before this page.
    pub offset: u32,
    /// The page size the broker applied.
    pub limit: u32,
}

/// A consumer group as the broker describes it after
/// [`BrokerAdmin::create_consumer_group`](crate::BrokerAdmin::create_consumer_group).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerGroup {
    /// The group's name.
    pub name: String,
    /// Its stream.
    pub stream: String,
    /// Members subscribed now.
    pub members: u32,
    /// Messages delivered to the group.
    pub delivered: u64,
    /// Messages delivered and not yet settled.
    pub ack_pending: u64,
    /// When it was created.
    pub created: Option<SystemTime>,
}
