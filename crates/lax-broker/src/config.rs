//! The broker's settings: a plain struct with defaults, read from files with serde or built
//! in code; the `lax broker` and `lax-broker` command lines fill one from flags and
//! environment variables (`lax_broker::cli::BrokerArgs`, with the `cli` feature).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{
    error::BrokerError,
    security::{self, Permissions, SecretString},
};

/// How the broker connects, listens and publishes.
///
/// Start from [`BrokerConfig::new`] (defaults everywhere but the NATS URLs) or
/// [`BrokerConfig::single_node`], then chain the setters (as with tonic's `Endpoint`) or
/// assign the public fields. New fields may come in any release, hence `#[non_exhaustive]`.
/// Deserializing (from TOML, JSON, …) fills what is missing with the defaults and refuses
/// unknown keys; serializing leaves the secrets out.
///
/// ```
/// use lax_broker::BrokerConfig;
///
/// let config = BrokerConfig::new(["nats://127.0.0.1:4222"])
///     .listen("127.0.0.1:0".parse().unwrap())
///     .replicated_replicas(1) // a single-node dev server
///     .auth_token_file("/run/secrets/lax-token");
/// assert!(config.auto_create_streams());
/// assert_eq!(config.listen.port(), 0);
///
/// let from_file: BrokerConfig =
///     serde_json::from_str(r#"{"nats_urls": ["nats://n1:4222"], "max_inflight": 500}"#).unwrap();
/// assert_eq!(from_file.max_inflight, 500);
/// assert_eq!(from_file.replicated_replicas, 3);
/// ```
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct BrokerConfig {
    /// NATS server URLs; empty means [`DEFAULT_NATS_URL`].
    pub nats_urls: Vec<String>,

    /// Address the gRPC server listens on (port 0 picks a free port).
    pub listen: SocketAddr,

    /// Address of the Prometheus `/metrics` endpoint (port 0 picks a free port).
    pub metrics_listen: SocketAddr,

    /// Do not serve `/metrics`.
    pub no_metrics: bool,

    /// Replicas of a `replicated`-tier stream. Set 1 for a single-node dev server; below 3 a
    /// warning is logged at start-up.
    pub replicated_replicas: u8,

    /// Create a stream when a publish finds none capturing its subject (the default).
    pub auto_create: bool,

    /// Most publishes in flight across all clients; past it publishes fail with
    /// RESOURCE_EXHAUSTED ("broker buffer full").
    pub max_inflight: u32,

    /// Most unanswered publishes per StreamPublish call; the broker stops reading the call's
    /// requests while this many wait for acks.
    pub stream_window: u32,

    /// Most unanswered publishes per BatchPublish call.
    pub batch_window: u32,

    /// How long a publish waits for its JetStream ack when the request sets no timeout.
    pub publish_timeout_ms: u64,

    /// How long the first connection attempt to NATS may take.
    pub nats_connect_timeout_ms: u64,

    /// Longest pause between reconnection attempts while NATS is unreachable.
    pub nats_reconnect_max_delay_ms: u64,

    /// How long a subject → stream lookup is cached.
    pub stream_cache_ttl_ms: u64,

    /// Largest gRPC request accepted, in bytes (a BatchPublish carries many messages).
    pub max_request_bytes: usize,

    /// Most concurrent gRPC requests per client connection; more are shed with UNAVAILABLE.
    pub max_concurrent_requests: u32,

    /// Most messages one subscriber has delivered and not yet settled: caps the
    /// subscriber's own `max_inflight` (which is used when lower). The broker pulls from
    /// JetStream only as much as a subscriber has room for.
    pub subscriber_max_inflight: u32,

    /// Most payload bytes one subscriber has delivered and not yet settled (raised to the
    /// NATS server's max_payload when lower, so that any message fits).
    pub subscriber_max_inflight_bytes: usize,

    /// Most messages delivered and not yet settled across all subscribers of the broker.
    pub consume_max_inflight: usize,

    /// Most bytes delivered and not yet settled across all subscribers of the broker
    /// (raised to the per-subscriber limit when lower).
    pub consume_max_inflight_bytes: usize,

    /// Longest time the broker keeps a delivered message leased for a subscriber that is
    /// still connected and settling messages (it renews JetStream's ack wait meanwhile).
    pub max_lease_ms: u64,

    /// How long a graceful shutdown waits for in-flight requests before closing anyway.
    pub shutdown_timeout_ms: u64,

    /// PEM certificate (chain) of the gRPC server; with `--tls-key`, the broker serves gRPC
    /// over TLS only. `/metrics` stays plain HTTP.
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `--tls-cert`.
    pub tls_key: Option<PathBuf>,

    /// PEM file of the CA(s) that sign client certificates; when set, every client must
    /// present one (mutual TLS). Needs `--tls-cert` and `--tls-key`.
    pub tls_client_ca: Option<PathBuf>,

    /// Bearer token every BrokerService and StreamManager call must carry as
    /// `authorization: Bearer <token>`; health checks and reflection stay open. Prefer
    /// `--auth-token-file` or the environment over the command line.
    #[serde(skip_serializing)]
    pub auth_token: Option<SecretString>,

    /// File holding the bearer token (surrounding whitespace is ignored).
    pub auth_token_file: Option<PathBuf>,

    /// Per-token permissions (a JSON file; see [`Permissions`]): the tokens the broker
    /// accepts, each with the subjects it may publish to and read and whether it may manage
    /// streams. Replaces `--auth-token`.
    #[serde(
        skip_serializing,
        deserialize_with = "security::deserialize_optional_permissions"
    )]
    pub permissions: Option<Permissions>,

    /// NATS credentials file (user JWT and NKey seed, as `nsc` writes it).
    pub nats_creds: Option<PathBuf>,

    /// NATS authentication token.
    #[serde(skip_serializing)]
    pub nats_token: Option<SecretString>,

    /// NATS user name (with `--nats-password`).
    pub nats_user: Option<String>,

    /// NATS password (with `--nats-user`).
    #[serde(skip_serializing)]
    pub nats_password: Option<SecretString>,

    /// PEM file of the CA that signed the NATS servers' certificates; TLS to NATS becomes
    /// required.
    pub nats_tls_ca: Option<PathBuf>,

    /// PEM client certificate for NATS (mutual TLS, with `--nats-tls-key`).
    pub nats_tls_cert: Option<PathBuf>,

    /// PEM private key of `--nats-tls-cert`.
    pub nats_tls_key: Option<PathBuf>,

    /// OTLP/gRPC endpoint of an OpenTelemetry collector (e.g. `http://otel-collector:4317`)
    /// to export the broker's spans to; needs the `opentelemetry` feature. The broker
    /// library installs no subscriber: `lax broker` and `lax-broker` build the exporter with
    /// [`BrokerConfig::otlp_tracing`], add its layer to their subscriber and send the last
    /// spans when the broker stops; a program embedding the broker does the same.
    pub otlp_endpoint: Option<String>,
}

impl Default for BrokerConfig {
    /// [`BrokerConfig::new`] with no NATS URL ([`DEFAULT_NATS_URL`] then).
    fn default() -> Self {
        BrokerConfig::new(Vec::<String>::new())
    }
}

/// `setters!(field: Type, …)`: a consuming setter per field, `field(value)`; an `Option`
/// field's setter takes the value itself.
macro_rules! setters {
    ($($field:ident: $ty:ty),* $(,)?) => {$(
        #[doc = concat!("Sets [`", stringify!($field), "`](Self::", stringify!($field), ").")]
        pub fn $field(mut self, value: $ty) -> Self {
            self.$field = value;
            self
        }
    )*};
    (optional $($field:ident: $ty:ty),* $(,)?) => {$(
        #[doc = concat!("Sets [`", stringify!($field), "`](Self::", stringify!($field), ").")]
        pub fn $field(mut self, value: impl Into<$ty>) -> Self {
            self.$field = Some(value.into());
            self
        }
    )*};
}

impl BrokerConfig {
    /// Defaults for everything but the NATS URLs; the gRPC server listens on
    /// `0.0.0.0:50051` and `/metrics` on `0.0.0.0:9090`.
    pub fn new<I, S>(nats_urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        BrokerConfig {
            nats_urls: nats_urls.into_iter().map(Into::into).collect(),
            listen: SocketAddr::from(([0, 0, 0, 0], 50051)),
            metrics_listen: SocketAddr::from(([0, 0, 0, 0], 9090)),
            no_metrics: false,
            replicated_replicas: 3,
            auto_create: true,
            max_inflight: 10_000,
            stream_window: 1024,
            batch_window: 256,
            publish_timeout_ms: 5_000,
            nats_connect_timeout_ms: 5_000,
            nats_reconnect_max_delay_ms: 2_000,
            stream_cache_ttl_ms: 60_000,
            max_request_bytes: 16 * 1024 * 1024,
            max_concurrent_requests: 10_000,
            subscriber_max_inflight: 1_000,
            subscriber_max_inflight_bytes: 8 * 1024 * 1024,
            consume_max_inflight: 100_000,
            consume_max_inflight_bytes: 64 * 1024 * 1024,
            max_lease_ms: 3_600_000,
            shutdown_timeout_ms: 30_000,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            auth_token: None,
            auth_token_file: None,
            permissions: None,
            nats_creds: None,
            nats_token: None,
            nats_user: None,
            nats_password: None,
            nats_tls_ca: None,
            nats_tls_cert: None,
            nats_tls_key: None,
            otlp_endpoint: None,
        }
    }

    /// A broker in front of one local single-node NATS, as for `lax dev` and tests: gRPC and
    /// `/metrics` on free loopback ports, and the replicated tier on 1 replica (a single node
    /// has no more; the broker logs that it runs so).
    pub fn single_node<I, S>(nats_urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        BrokerConfig {
            listen: loopback,
            metrics_listen: loopback,
            replicated_replicas: 1,
            ..BrokerConfig::new(nats_urls)
        }
    }

    setters!(
        listen: SocketAddr,
        metrics_listen: SocketAddr,
        no_metrics: bool,
        replicated_replicas: u8,
        auto_create: bool,
        max_inflight: u32,
        stream_window: u32,
        batch_window: u32,
        publish_timeout_ms: u64,
        nats_connect_timeout_ms: u64,
        nats_reconnect_max_delay_ms: u64,
        stream_cache_ttl_ms: u64,
        max_request_bytes: usize,
        max_concurrent_requests: u32,
        subscriber_max_inflight: u32,
        subscriber_max_inflight_bytes: usize,
        consume_max_inflight: usize,
        consume_max_inflight_bytes: usize,
        max_lease_ms: u64,
        shutdown_timeout_ms: u64,
    );

    setters!(optional
        tls_cert: PathBuf,
        tls_key: PathBuf,
        tls_client_ca: PathBuf,
        auth_token: SecretString,
        auth_token_file: PathBuf,
        permissions: Permissions,
        nats_creds: PathBuf,
        nats_token: SecretString,
        nats_user: String,
        nats_password: SecretString,
        nats_tls_ca: PathBuf,
        nats_tls_cert: PathBuf,
        nats_tls_key: PathBuf,
        otlp_endpoint: String,
    );

    /// The NATS URLs to connect to: [`nats_urls`](Self::nats_urls), else
    /// [`DEFAULT_NATS_URL`].
    pub fn resolved_nats_urls(&self) -> Vec<String> {
        if self.nats_urls.is_empty() {
            vec![DEFAULT_NATS_URL.to_owned()]
        } else {
            self.nats_urls.clone()
        }
    }

    /// Whether publishes that no stream captures create one.
    pub fn auto_create_streams(&self) -> bool {
        self.auto_create
    }

    /// Sets whether publishes that no stream captures create one.
    pub fn set_auto_create_streams(&mut self, enabled: bool) {
        self.auto_create = enabled;
    }

    /// Ack wait of a publish whose request sets no timeout.
    pub fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.publish_timeout_ms)
    }

    /// Checks the values, among them that the security settings go together and that the files they name are readable
    /// and hold a usable certificate, key or token.
    ///
    /// # Errors
    ///
    /// [`BrokerError::Config`] naming the first bad value.
    pub fn validate(&self) -> Result<(), BrokerError> {
        let bad = |what: &str| Err(BrokerError::Config(what.to_owned()));
        if self
            .resolved_nats_urls()
            .iter()
            .any(|url| url.trim().is_empty())
        {
            return bad("a NATS URL is empty");
        }
        if !(1..=5).contains(&self.replicated_replicas) {
            return bad("replicated-replicas must be between 1 and 5");
        }
        for (value, name) in [
            (self.max_inflight, "max-inflight"),
            (self.stream_window, "stream-window"),
            (self.batch_window, "batch-window"),
            (self.max_concurrent_requests, "max-concurrent-requests"),
            (self.subscriber_max_inflight, "subscriber-max-inflight"),
        ] {
            if value == 0 {
                return Err(BrokerError::Config(format!("{name} must be at least 1")));
            }
        }
        for (value, name) in [
            (self.publish_timeout_ms, "publish-timeout-ms"),
            (self.max_lease_ms, "max-lease-ms"),
            (self.nats_connect_timeout_ms, "nats-connect-timeout-ms"),
            (
                self.nats_reconnect_max_delay_ms,
                "nats-reconnect-max-delay-ms",
            ),
        ] {
            if value == 0 {
                return Err(BrokerError::Config(format!(
                    "{name} must be greater than 0"
                )));
            }
        }
        if self.consume_max_inflight == 0 {
            return bad("consume-max-inflight must be at least 1");
        }
        if self.max_request_bytes == 0 {
            return bad("max-request-bytes must be greater than 0");
        }
        if let Some(endpoint) = &self.otlp_endpoint {
            check_otlp_endpoint(endpoint)?;
        }
        security::validate(self)
    }

    /// The span export of [`otlp_endpoint`](Self::otlp_endpoint), as service `lax-broker`
    /// (unless `OTEL_SERVICE_NAME` says otherwise); `None` without an endpoint. Call it in
    /// a Tokio runtime, add [`OtlpTracing::layer`](lax_core::trace::OtlpTracing::layer) to
    /// the subscriber, and [`shutdown`](lax_core::trace::OtlpTracing::shutdown) it after
    /// the broker stops.
    ///
    /// # Errors
    ///
    /// [`BrokerError::Config`] when the endpoint is not a usable URL.
    #[cfg(feature = "opentelemetry")]
    pub fn otlp_tracing(&self) -> Result<Option<lax_core::trace::OtlpTracing>, BrokerError> {
        self.otlp_endpoint
            .as_deref()
            .map(|endpoint| lax_core::trace::OtlpTracing::new(endpoint, "lax-broker"))
            .transpose()
            .map_err(|e| BrokerError::Config(format!("otlp-endpoint: {e}")))
    }
}

/// An OTLP endpoint is usable only with the `opentelemetry` feature, and only as a URL.
pub(crate) fn check_otlp_endpoint(endpoint: &str) -> Result<(), BrokerError> {
    #[cfg(feature = "opentelemetry")]
    return lax_core::trace::OtlpTracing::check_endpoint(endpoint)
        .map_err(|e| BrokerError::Config(format!("otlp-endpoint: {e}")));
    #[cfg(not(feature = "opentelemetry"))]
    Err(BrokerError::Config(format!(
        "otlp-endpoint is {endpoint:?} but the broker was built without its `opentelemetry` feature"
    )))
}

/// Where the broker looks for NATS when told nothing.
pub const DEFAULT_NATS_URL: &str = "nats://localhost:4222";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_built_configs_are_validated() {
        let mut config = BrokerConfig::new(["nats://127.0.0.1:4222"]);
        assert!(config.validate().is_ok());
        config.max_inflight = 0;
        assert!(
            matches!(config.validate(), Err(BrokerError::Config(m)) if m.contains("max-inflight"))
        );
        let mut config = BrokerConfig::new([""]);
        assert!(config.validate().is_err());
        config.nats_urls.clear();
        config.set_auto_create_streams(false);
        assert!(!config.auto_create_streams());
        assert!(config.validate().is_ok());
        assert_eq!(config.resolved_nats_urls(), [DEFAULT_NATS_URL]);
    }

    #[test]
    fn setters_set_and_options_wrap() {
        let config = BrokerConfig::default()
            .max_inflight(7)
            .nats_user("u")
            .nats_password("p")
            .tls_client_ca("ca.pem");
        assert_eq!(config.max_inflight, 7);
        assert_eq!(config.nats_user.as_deref(), Some("u"));
        assert_eq!(config.nats_password.as_ref().map(|p| p.expose()), Some("p"));
        assert_eq!(config.tls_client_ca.as_deref(), Some("ca.pem".as_ref()));
    }

    #[test]
    fn serde_fills_defaults_refuses_unknown_keys_and_never_writes_secrets() {
        let config: BrokerConfig = serde_json::from_value(serde_json::json!({
            "nats_urls": ["nats://a:4222"],
            "auto_create": false,
            "auth_token": "t0ken",
        }))
        .unwrap();
        assert_eq!(config.nats_urls, ["nats://a:4222"]);
        assert!(!config.auto_create_streams());
        assert_eq!(config.max_inflight, 10_000);
        assert_eq!(
            config.auth_token.as_ref().map(|t| t.expose()),
            Some("t0ken")
        );

        let written = serde_json::to_string(&config).unwrap();
        assert!(!written.contains("t0ken"), "{written}");

        let typo = serde_json::from_value::<BrokerConfig>(serde_json::json!({"max_inflght": 1}));
        assert!(typo.unwrap_err().to_string().contains("max_inflght"));
    }
}
