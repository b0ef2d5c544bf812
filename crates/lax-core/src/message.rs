//! The message model: what a caller publishes and what it gets back.

use std::{collections::BTreeMap, fmt, str::FromStr, sync::Arc, time::Duration, time::SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
pub use smol_str::SmolStr;
use tokio::time::Instant;

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
/// The one header type of a publish, from the caller to the transport, which converts it once
/// into its wire form (async-nats' `HeaderMap` on the direct path, the protobuf map on the
/// broker path). Names and values are checked by [`crate::validate`] before anything is sent.
///
/// Cloning is a reference-count bump (the map is shared, and copied only when a shared map is
/// changed), and no headers allocate nothing, so a request can be kept for a retry for free.
#[derive(Clone, Default)]
pub struct Headers(Option<Arc<BTreeMap<String, String>>>);

/// What [`Headers`] without a map of their own read from.
static NO_HEADERS: BTreeMap<String, String> = BTreeMap::new();

impl Headers {
    /// No headers.
    pub const fn new() -> Self {
        Headers(None)
    }

    fn map(&self) -> &BTreeMap<String, String> {
        self.0.as_deref().unwrap_or(&NO_HEADERS)
    }

    /// The map to change: this one's own, copied first if it is shared with a clone.
    fn map_mut(&mut self) -> &mut BTreeMap<String, String> {
        Arc::make_mut(self.0.get_or_insert_with(Arc::default))
    }

    /// Sets `name` to `value`, returning the value it replaces.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) -> Option<String> {
        self.map_mut().insert(name.into(), value.into())
    }

    /// The value of `name`, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.map().get(name).map(String::as_str)
    }

    /// Removes `name`, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<String> {
        if !self.map().contains_key(name) {
            return None;
        }
        self.map_mut().remove(name)
    }

    /// Number of headers.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// True when there are no headers.
    pub fn is_empty(&self) -> bool {
        self.map().is_empty()
    }

    /// Name/value pairs in name order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &str)> {
        self.map().iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Bytes these headers take in a NATS `HPUB` header block (`NATS/1.0\r\n`, one
    /// `name: value\r\n` per header, a closing `\r\n`); 0 when empty.
    pub fn wire_len(&self) -> usize {
        if self.is_empty() {
            return 0;
        }
        let lines: usize = self.iter().map(|(k, v)| k.len() + v.len() + 4).sum();
        "NATS/1.0\r\n".len() + lines + 2
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl PartialEq for Headers {
    fn eq(&self, other: &Self) -> bool {
        self.map() == other.map()
    }
}

impl Eq for Headers {}

impl Serialize for Headers {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.map().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Headers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = BTreeMap::<String, String>::deserialize(deserializer)?;
        Ok(Headers((!map.is_empty()).then(|| Arc::new(map))))
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let map: BTreeMap<String, String> = iter
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
        Headers((!map.is_empty()).then(|| Arc::new(map)))
    }
}

impl<K: Into<String>, V: Into<String>, const N: usize> From<[(K, V); N]> for Headers {
    fn from(pairs: [(K, V); N]) -> Self {
        pairs.into_iter().collect()
    }
}

impl From<std::collections::HashMap<String, String>> for Headers {
    fn from(map: std::collections::HashMap<String, String>) -> Self {
        map.into_iter().collect()
    }
}

impl IntoIterator for Headers {
    type Item = (String, String);
    type IntoIter = std::collections::btree_map::IntoIter<String, String>;

    /// The pairs in name order; the map is copied only if a clone still shares it.
    fn into_iter(self) -> Self::IntoIter {
        self.0
            .map(Arc::unwrap_or_clone)
            .unwrap_or_default()
            .into_iter()
    }
}

/// The header existing LAX clients use to carry the message id on the direct path.
pub const MESSAGE_ID_HEADER: &str = "Message-Id";
/// The header JetStream reads for de-duplication.
pub const NATS_MSG_ID_HEADER: &str = "Nats-Msg-Id";
/// The header carrying a trace id end to end.
pub const TRACE_ID_HEADER: &str = "Trace-Id";

/// Generates a new message id: a NUID, 22 URL-safe characters, unique without coordination.
///
/// It fits inline in a [`SmolStr`] (up to 23 bytes): making one allocates nothing, and nor
/// does cloning it.
pub fn new_message_id() -> SmolStr {
    SmolStr::new(nuid::next().as_str())
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
    pub dedup_id: Option<SmolStr>,
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
    pub fn with_dedup_id(mut self, dedup_id: impl Into<SmolStr>) -> Self {
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

/// One message to publish: subject, payload, headers, id, options and deadline.
///
/// The id is fixed when the request is made and stays the same on every retry, so JetStream
/// stores a retried message once.
///
/// # One request, cheap to clone
///
/// A request is built once and travels unchanged through every layer to the transport, which
/// converts it into its wire form. Cloning it copies no bytes: the subject and the ids are
/// [`SmolStr`]s (inline up to 23 bytes, a generated id included, else shared), the payload is
/// [`Bytes`] and the [`Headers`] are shared. So [`Retry`](crate::retry::Retry) keeps a copy
/// for the next attempt at the cost of a few reference counts, and a direct publish with a
/// short subject allocates nothing for the request itself.
///
/// # Validation
///
/// Every transport checks the request with [`validate_request`](crate::validate::validate_request)
/// before it sends anything (an invalid one is
/// [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput), never sent). That is the
/// one check in the sending process: the layers above do not repeat it, and the LAX broker
/// checks once more on its side of the wire.
///
/// # Deadline
///
/// [`deadline`](Self::deadline) is the instant the whole publish, retries included, must be
/// over by. Set it with [`with_deadline`](Self::with_deadline), or leave it to the first
/// layer that needs one: [`Retry`](crate::retry::Retry) fixes it when the publish starts,
/// from the message's `timeout` (else its configured `deadline`). From then on everything
/// reads the same instant instead of starting a clock of its own: retry gives up when a
/// backoff would end past it, [`Timeout`](crate::timeout::Timeout) ends an attempt at it at
/// the latest, and a transport sends the time left as the call's deadline (gRPC's
/// `grpc-timeout`, the broker's `timeout_ms`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PublishRequest {
    /// NATS subject, e.g. `orders.created`.
    pub subject: SmolStr,
    /// Payload bytes; cloning is a reference-count bump, never a copy.
    pub payload: Bytes,
    /// Application headers.
    pub headers: Headers,
    /// The message id returned to the caller and, unless `dedup_id` is set, sent as
    /// `Nats-Msg-Id`.
    pub message_id: SmolStr,
    /// Per-message options.
    pub options: PublishOptions,
    /// When the whole publish, retries included, must be over; see "Deadline" above.
    pub deadline: Option<Instant>,
}

impl PublishRequest {
    /// A memory-tier request with a fresh message id.
    pub fn new(subject: impl Into<SmolStr>, payload: impl Into<Bytes>) -> Self {
        PublishRequest {
            subject: subject.into(),
            payload: payload.into(),
            headers: Headers::new(),
            message_id: new_message_id(),
            options: PublishOptions::default(),
            deadline: None,
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
    pub fn with_message_id(mut self, id: impl Into<SmolStr>) -> Self {
        self.message_id = id.into();
        self
    }

    /// Sets the payload.
    pub fn with_payload(mut self, payload: impl Into<Bytes>) -> Self {
        self.payload = payload.into();
        self
    }

    /// Sets the per-message timeout: the time the whole publish may take, retries included,
    /// counted from when its [`deadline`](Self::deadline) is fixed.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.options.timeout = Some(timeout);
        self
    }

    /// Fixes the instant the whole publish must be over by (it wins over the timeout).
    pub fn with_deadline(mut self, deadline: Instant) -> Self {
        self.deadline = Some(deadline);
        self
    }

    /// The deadline, fixed now from `budget` if it was not set: what every layer and the
    /// transport then read. `None` (unbounded) when neither exists.
    pub fn fix_deadline(&mut self, budget: Option<Duration>) -> Option<Instant> {
        if self.deadline.is_none() {
            self.deadline = budget.map(|budget| Instant::now() + budget);
        }
        self.deadline
    }

    /// The time left until the deadline, if there is one (zero once it has passed).
    pub fn time_left(&self) -> Option<Duration> {
        self.deadline
            .map(|deadline| deadline.saturating_duration_since(Instant::now()))
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
    pub message_id: SmolStr,
    /// The path the message took.
    pub route: Route,
    /// The JetStream ack, for acked routes.
    pub ack: Option<Ack>,
}

impl Receipt {
    /// A receipt for a direct (un-acked) publish.
    pub fn direct(message_id: impl Into<SmolStr>) -> Self {
        Receipt {
            message_id: message_id.into(),
            route: Route::Direct,
            ack: None,
        }
    }

    /// A receipt for an acked publish through the broker.
    pub fn acked(message_id: impl Into<SmolStr>, ack: Ack) -> Self {
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
    fn a_clone_shares_everything_and_copies_headers_only_when_changed() {
        let request = PublishRequest::new("orders.created", vec![7u8; 4096])
            .with_header("Trace-Id", "abc")
            .with_options(PublishOptions::default().with_dedup_id("order-456"));
        // A generated id and a short subject live inline: no allocation to make or clone.
        assert!(!request.message_id.is_heap_allocated());
        assert!(!request.subject.is_heap_allocated());
        let mut copy = request.clone();
        assert_eq!(copy, request);
        assert_eq!(copy.payload.as_ptr(), request.payload.as_ptr());
        copy.headers.insert("X-Other", "1");
        assert_eq!(request.headers.len(), 1);
        assert_eq!(copy.headers.len(), 2);
        assert_eq!(copy.headers.remove("Trace-Id").as_deref(), Some("abc"));
        assert_eq!(request.headers.get("Trace-Id"), Some("abc"));
        assert_eq!(
            Headers::new(),
            Headers::from_iter(Vec::<(String, String)>::new())
        );
    }

    #[test]
    fn headers_serialize_as_a_map() {
        let headers = Headers::from([("b", "2"), ("a", "1")]);
        let json = serde_json::to_string(&headers).unwrap();
        assert_eq!(json, r#"{"a":"1","b":"2"}"#);
        assert_eq!(serde_json::from_str::<Headers>(&json).unwrap(), headers);
        assert_eq!(serde_json::to_string(&Headers::new()).unwrap(), "{}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_is_fixed_once() {
        let mut request = PublishRequest::new("a.b", "x");
        assert_eq!(request.fix_deadline(None), None);
        let start = tokio::time::Instant::now();
        let deadline = request.fix_deadline(Some(Duration::from_secs(2)));
        assert_eq!(deadline, Some(start + Duration::from_secs(2)));
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(request.fix_deadline(Some(Duration::from_secs(9))), deadline);
        assert_eq!(request.time_left(), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn header_wire_len_matches_the_hpub_block() {
        let h = Headers::from([("a", "1")]);
        assert_eq!(h.wire_len(), "NATS/1.0\r\na: 1\r\n\r\n".len());
        assert_eq!(Headers::new().wire_len(), 0);
    }
}
