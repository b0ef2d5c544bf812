//! The message model: what a caller publishes and what it gets back.

use std::{collections::BTreeMap, fmt, str::FromStr, time::Duration, time::SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Storage tier of a message; it decides the route and the JetStream storage behind it.
///
/// Parsed from the wire strings `memory`, `persistent` and `replicated`; the empty string means
/// [`Tier::Memory`], as in the `broker.v1` contract.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Fire-and-forget over core NATS unless an ack is required; memory storage when acked.
    #[default]
    Memory,
    /// File storage, one replica.
    Persistent,
    /// File storage, replicated (three replicas by default).
    Replicated,
}

impl Tier {
    /// Every tier, weakest first.
    pub const ALL: [Tier; 3] = [Tier::Memory, Tier::Persistent, Tier::Replicated];

    /// The wire string: `memory`, `persistent` or `replicated`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Tier::Memory => "memory",
            Tier::Persistent => "persistent",
            Tier::Replicated => "replicated",
        }
    }

    /// Position in [`Tier::ALL`], handy for per-tier tables.
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Tier {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" | "memory" => Ok(Tier::Memory),
            "persistent" => Ok(Tier::Persistent),
            "replicated" => Ok(Tier::Replicated),
            other => Err(Error::invalid_input(format!(
                "unknown tier {other:?}: expected \"memory\", \"persistent\" or \"replicated\""
            ))),
        }
    }
}

/// The path a publish takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    /// Core NATS publish: lowest latency, no ack.
    Direct,
    /// gRPC to the LAX broker, which writes to JetStream and returns the ack.
    Broker,
}

impl Route {
    /// Both routes ([`Route::index`] is the position here).
    pub const ALL: [Route; 2] = [Route::Direct, Route::Broker];

    /// Position in [`Route::ALL`], for per-route tables.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// `direct` or `broker`, as used in metric labels and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Route::Direct => "direct",
            Route::Broker => "broker",
        }
    }
}

impl fmt::Display for Route {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Message headers: one value per name, kept in name order.
///
/// Names and values are checked by [`crate::validate`] before anything is sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Headers(BTreeMap<String, String>);

impl Headers {
    /// No headers.
    pub const fn new() -> Self {
        Headers(BTreeMap::new())
    }

    /// Sets `name` to `value`, returning the value it replaces.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) -> Option<String> {
        self.0.insert(name.into(), value.into())
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Removes `name`, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        self.0.remove(name)
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no headers.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Name/value pairs in name order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Bytes these headers take in a NATS `HPUB` header block (`NATS/1.0\r\n`, one
    /// `name: value\r\n` per header, a closing `\r\n`); 0 when empty.
    pub fn wire_len(&self) -> usize {
        if self.0.is_empty() {
            return 0;
        }
        let lines: usize = self.0.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
        "NATS/1.0\r\n".len() + lines + 2
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Headers(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

impl<K: Into<String>, V: Into<String>, const N: usize> From<[(K, V); N]> for Headers {
    fn from(pairs: [(K, V); N]) -> Self {
        pairs.into_iter().collect()
    }
}

impl From<std::collections::HashMap<String, String>> for Headers {
    fn from(map: std::collections::HashMap<String, String>) -> Self {
        Headers(map.into_iter().collect())
    }
}

impl IntoIterator for Headers {
    type Item = (String, String);
    type IntoIter = std::collections::btree_map::IntoIter<String, String>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

/// The header existing LAX clients use to carry the message id on the direct path.
pub const MESSAGE_ID_HEADER: &str = "Message-Id";
/// The header JetStream reads for de-duplication.
pub const NATS_MSG_ID_HEADER: &str = "Nats-Msg-Id";
/// The header carrying a trace id end to end.
pub const TRACE_ID_HEADER: &str = "Trace-Id";

/// Generates a new message id: a NUID, 22 URL-safe characters, unique without coordination.
pub fn new_message_id() -> String {
    nuid::next().to_string()
}

/// Per-message options: tier, ack, timeout, de-duplication and retries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct PublishOptions {
    /// Storage tier; [`Tier::Memory`] by default.
    pub tier: Tier,
    /// Wait for a JetStream ack (forces the broker route).
    pub require_ack: bool,
    /// Deadline for this publish, retries included; the client's default when `None`.
    #[serde(with = "opt_duration_ms")]
    pub timeout: Option<Duration>,
    /// The key JetStream de-duplicates on (`Nats-Msg-Id`); the message id when `None`.
    pub dedup_id: Option<String>,
    /// Attempts for this message (1 = no retry); the client's retry policy when `None`.
    pub retry_attempts: Option<u32>,
}

impl PublishOptions {
    /// Options for `tier`, everything else default.
    pub fn tier(tier: Tier) -> Self {
        PublishOptions {
            tier,
            ..Default::default()
        }
    }

    /// Sets whether an ack is required.
    pub fn with_ack(mut self, require_ack: bool) -> Self {
        self.require_ack = require_ack;
        self
    }

    /// Sets the per-message timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the de-duplication key.
    pub fn with_dedup_id(mut self, dedup_id: impl Into<String>) -> Self {
        self.dedup_id = Some(dedup_id.into());
        self
    }

    /// Overrides the number of attempts for this message.
    pub fn with_retry_attempts(mut self, attempts: u32) -> Self {
        self.retry_attempts = Some(attempts);
        self
    }

    /// The route the default LAX routing table picks: memory tier without ack goes direct,
    /// everything else through the broker.
    pub fn default_route(&self) -> Route {
        if self.tier == Tier::Memory && !self.require_ack {
            Route::Direct
        } else {
            Route::Broker
        }
    }
}

mod opt_duration_ms {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

/// One message to publish: subject, payload, headers, id and options.
///
/// The id is fixed when the request is made and stays the same on every retry, so JetStream
/// stores a retried message once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishRequest {
    /// NATS subject, e.g. `orders.created`.
    pub subject: String,
    /// Payload bytes; cloning is a reference-count bump, never a copy.
    pub payload: Bytes,
    /// Application headers.
    pub headers: Headers,
    /// The message id returned to the caller and, unless `dedup_id` is set, sent as
    /// `Nats-Msg-Id`.
    pub message_id: String,
    /// Per-message options.
    pub options: PublishOptions,
}

impl PublishRequest {
    /// A memory-tier request with a fresh message id.
    pub fn new(subject: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        PublishRequest {
            subject: subject.into(),
            payload: payload.into(),
            headers: Headers::new(),
            message_id: new_message_id(),
            options: PublishOptions::default(),
        }
    }

    /// Replaces the options.
    pub fn with_options(mut self, options: PublishOptions) -> Self {
        self.options = options;
        self
    }

    /// Sets the tier.
    pub fn with_tier(mut self, tier: Tier) -> Self {
        self.options.tier = tier;
        self
    }

    /// Sets whether an ack is required.
    pub fn with_ack(mut self, require_ack: bool) -> Self {
        self.options.require_ack = require_ack;
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// Replaces the headers.
    pub fn with_headers(mut self, headers: Headers) -> Self {
        self.headers = headers;
        self
    }

    /// Sets the message id (instead of the generated one).
    pub fn with_message_id(mut self, id: impl Into<String>) -> Self {
        self.message_id = id.into();
        self
    }

    /// Sets the per-message timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(timeout);
        self
    }

    /// The key JetStream de-duplicates on: the dedup id when set, else the message id.
    pub fn dedup_key(&self) -> &str {
        self.options.dedup_id.as_deref().unwrap_or(&self.message_id)
    }

    /// The route the default LAX routing table picks for this request's options.
    pub fn default_route(&self) -> Route {
        self.options.default_route()
    }
}

/// What JetStream answered for an acked publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The stream that stored the message.
    pub stream: String,
    /// Its stream sequence.
    pub sequence: u64,
    /// JetStream already held a message with this id inside its duplicate window, so this
    /// publish stored nothing new.
    pub duplicate: bool,
    /// When the broker recorded the ack, if it said.
    pub timestamp: Option<SystemTime>,
}

/// The answer to a successful publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The message id.
    pub message_id: String,
    /// The path the message took.
    pub route: Route,
    /// The JetStream ack, for acked routes.
    pub ack: Option<Ack>,
}

impl Receipt {
    /// A receipt for a direct (un-acked) publish.
    pub fn direct(message_id: impl Into<String>) -> Self {
        Receipt {
            message_id: message_id.into(),
            route: Route::Direct,
            ack: None,
        }
    }

    /// A receipt for an acked publish through the broker.
    pub fn acked(message_id: impl Into<String>, ack: Ack) -> Self {
        Receipt {
            message_id: message_id.into(),
            route: Route::Broker,
            ack: Some(ack),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn tiers_parse_from_wire_strings() {
        assert_eq!("".parse::<Tier>().unwrap(), Tier::Memory);
        assert_eq!("memory".parse::<Tier>().unwrap(), Tier::Memory);
        assert_eq!("persistent".parse::<Tier>().unwrap(), Tier::Persistent);
        assert_eq!("replicated".parse::<Tier>().unwrap(), Tier::Replicated);
        let err = "Persistent".parse::<Tier>().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidInput);
        assert!(err.to_string().contains("unknown tier \"Persistent\""));
        for tier in Tier::ALL {
            assert_eq!(tier.as_str().parse::<Tier>().unwrap(), tier);
        }
    }

    #[test]
    fn default_route_follows_the_lax_table() {
        let direct = PublishRequest::new("events.x", "a");
        assert_eq!(direct.default_route(), Route::Direct);
        assert_eq!(direct.clone().with_ack(true).default_route(), Route::Broker);
        assert_eq!(
            direct.clone().with_tier(Tier::Persistent).default_route(),
            Route::Broker
        );
        assert_eq!(
            direct.with_tier(Tier::Replicated).default_route(),
            Route::Broker
        );
    }

    #[test]
    fn message_ids_are_unique_and_dedup_key_prefers_dedup_id() {
        let a = PublishRequest::new("a", "");
        let b = PublishRequest::new("a", "");
        assert_ne!(a.message_id, b.message_id);
        assert_eq!(a.dedup_key(), a.message_id);
        let c = a.with_options(PublishOptions::default().with_dedup_id("order-456"));
        assert_eq!(c.dedup_key(), "order-456");
    }

    #[test]
    fn header_wire_len_matches_the_hpub_block() {
        let h = Headers::from([("a", "1")]);
        assert_eq!(h.wire_len(), "NATS/1.0\r\na: 1\r\n\r\n".len());
        assert_eq!(Headers::new().wire_len(), 0);
    }
}
