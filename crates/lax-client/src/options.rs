//! Client configuration: every option of the Python SDK under its Python name with its
//! Python default, plus TLS, auth and several broker addresses. Deserialisable with `serde` (a
//! TOML/YAML/JSON section works), loadable from `LAX_*` environment variables, and built in
//! code with [`ClientOptions::builder`].

use std::{path::PathBuf, time::Duration};

use lax_core::{
    Error,
    breaker::BreakerConfig,
    limit::{LimitConfig, LimitMode},
    retry::RetryConfig,
    stack::StackConfig,
};
use lax_transport_grpc::GrpcOptions;
use lax_transport_nats::{NatsOptions, ReconnectPolicy};
use serde::{Deserialize, Deserializer, Serialize};

pub use lax_transport_grpc::TlsOptions as BrokerTls;
pub use lax_transport_nats::{NatsAuth, NatsTls};

/// What the client does when `max_concurrent_publishes` are already in flight.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverloadBehavior {
    /// Wait for a slot (back-pressure), within the publish timeout.
    #[default]
    Wait,
    /// Fail at once with [`ErrorKind::Overloaded`](lax_core::ErrorKind::Overloaded).
    FailFast,
}

/// Everything a [`LaxClient`](crate::LaxClient) needs to connect and behave.
///
/// Every option of the Python SDK `lax-nats-client` is accepted under its Python name with the
/// same meaning and default (`broker_addr`, `retry_delay`, `max_retry_delay`, `grpc_timeout`,
/// `use_tls`, `tls_cert_path`, `nats_max_reconnect_attempts`, …); the richer LAX names
/// (`broker_addrs`, `retry_initial_delay`, `broker_tls`, …) work too. Durations deserialise
/// from seconds (`5`, `0.1`, as the Python SDK took them) or from strings with a unit
/// (`"500ms"`, `"5s"`, `"2m"`).
///
/// New options may be added in any release: build the options with
/// [`ClientOptions::builder`], `serde` or [`Default`] and then set fields, never with a
/// struct literal.
///
/// ```
/// use lax_client::ClientOptions;
///
/// let options: ClientOptions = serde_json::from_str(r#"{
///     "nats_urls": ["nats://nats1:4222", "nats://nats2:4222"],
///     "broker_addr": "broker:50051",
///     "connection_pool_size": 20,
///     "publish_timeout": 2.5,
///     "metrics_prefix": "myapp_lax"
/// }"#).unwrap();
/// assert_eq!(options.broker_addrs, ["broker:50051"]);
/// assert_eq!(options.publish_timeout.as_millis(), 2500);
/// assert_eq!(options.retry_attempts, 3); // the default
/// options.validate().unwrap();
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ClientOptions {
    /// NATS servers for the direct path.
    #[serde(deserialize_with = "one_or_many")]
    pub nats_urls: Vec<String>,
    /// How long connecting to NATS may take.
    #[serde(with = "lax_core::config::duration")]
    pub nats_connect_timeout: Duration,
    /// Reconnect attempts in a row after the NATS connection breaks before the client gives
    /// up and closes; `-1` (the default) reconnects forever.
    pub nats_max_reconnect_attempts: i64,
    /// Wait between NATS reconnect attempts (the first one is immediate), plus a jitter of
    /// up to 100 ms so that many clients do not come back in step.
    #[serde(with = "lax_core::config::duration")]
    pub nats_reconnect_wait: Duration,
    /// NATS authentication.
    pub nats_auth: NatsAuth,
    /// TLS for NATS.
    pub nats_tls: Option<NatsTls>,
    /// Addresses of LAX brokers (`host:port` or `http(s)://host:port`); `broker_addr` is
    /// accepted as an alias. Broker publishes take the brokers in turn; when one dies its
    /// connections move to the others, and back once it answers again (each address needs
    /// at least one of the `connection_pool_size` connections).
    #[serde(alias = "broker_addr", deserialize_with = "one_or_many")]
    pub broker_addrs: Vec<String>,
    /// Bearer token sent to the broker on every call.
    pub broker_token: Option<String>,
    /// TLS for the broker, in full (CA, server name, client certificate); takes precedence
    /// over `use_tls` and `tls_cert_path`.
    pub broker_tls: Option<BrokerTls>,
    /// TLS to the broker (the Python SDK's switch): verified against `tls_cert_path`, or the
    /// system's trust roots when that is unset.
    pub use_tls: bool,
    /// PEM file of the CA (or the broker's own certificate) trusted when `use_tls` is on.
    pub tls_cert_path: Option<PathBuf>,
    /// gRPC connections to the brokers.
    pub connection_pool_size: usize,
    /// Cap on publishes in flight through the client.
    pub max_concurrent_publishes: usize,
    /// What happens at the cap.
    pub overload: OverloadBehavior,
    /// Timeout of one attempt of a publish (the broker's answer included), when the message
    /// sets no timeout of its own.
    #[serde(with = "lax_core::config::duration")]
    pub publish_timeout: Duration,
    /// How long one publish may take, retries included, when the message sets no timeout of
    /// its own (a message's timeout bounds its whole publish).
    ///
    /// It must outlast a JetStream stream-leader election, or a failover reaches callers as
    /// errors. nats-server elects a new leader 4–9 s after the old one stops answering
    /// (its Raft election timeout). Within each attempt the broker re-sends the message
    /// (same id, de-duplicated by JetStream) when its ack is overdue (after a fifth of the
    /// attempt: a leader killed after taking it never acks) and every ≤ 0.5 s while the
    /// stream has no leader; if the election outlasts the attempt it answers UNAVAILABLE
    /// flagged transient a tenth of the attempt (≤ 0.5 s) before the attempt's deadline, and
    /// the next attempt carries on. So the budget needs about 10 s plus one attempt: the
    /// default 15 s, with 3 attempts of 5 s, covers an election without an error (checked by
    /// `leader_kill_is_not_an_error` in lax-client's `cluster` tests). The broker breaker
    /// does not count those transient answers for its first 15 s
    /// ([`BreakerConfig::transient_grace`](lax_core::breaker::BreakerConfig::transient_grace)),
    /// so an election does not open it. Shorter budgets fail fast during an election with a
    /// retryable error, flagged "may have been stored" when it is so; resending with the
    /// same message id is safe.
    #[serde(with = "lax_core::config::duration")]
    pub retry_budget: Duration,
    /// Deadline of every broker call that is not a publish: consumer groups, streams, and
    /// settling received messages.
    #[serde(with = "lax_core::config::duration")]
    pub grpc_timeout: Duration,
    /// Attempts of a broker publish that fails with a retryable error: 3 = the first try
    /// and two retries; `0` and `1` both mean no retry.
    pub retry_attempts: u32,
    /// Delay before the first retry; `retry_delay` is accepted as an alias.
    #[serde(alias = "retry_delay", with = "lax_core::config::duration")]
    pub retry_initial_delay: Duration,
    /// Factor between consecutive retry delays.
    pub retry_multiplier: f64,
    /// Longest delay between retries; `max_retry_delay` is accepted as an alias.
    #[serde(alias = "max_retry_delay", with = "lax_core::config::duration")]
    pub retry_max_delay: Duration,
    /// Consecutive failures that open a path's circuit breaker.
    pub circuit_breaker_threshold: u32,
    /// How long an open breaker rests before trial requests.
    #[serde(with = "lax_core::config::duration")]
    pub circuit_breaker_timeout: Duration,
    /// Trial requests admitted while half-open.
    pub circuit_breaker_half_open_requests: u32,
    /// Record Prometheus metrics.
    pub enable_metrics: bool,
    /// Prefix of every metric name.
    pub metrics_prefix: String,
    /// Log filter for [`init_tracing`](crate::init_tracing) (e.g. `INFO`, `lax=debug`).
    pub log_level: String,
    /// OTLP/gRPC endpoint of an OpenTelemetry collector (e.g. `http://otel-collector:4317`)
    /// to export the client's spans to; needs the `opentelemetry` feature. The client
    /// installs nothing: it builds the exporter on connect and hands its `tracing` layer
    /// out with [`LaxClient::otel_layer`](crate::LaxClient::otel_layer) for the application
    /// to add to its subscriber, and [`close`](crate::LaxClient::close) sends the last
    /// spans. Unset (the default), nothing is exported.
    pub otlp_endpoint: Option<String>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            nats_urls: vec!["nats://localhost:4222".into()],
            nats_connect_timeout: Duration::from_secs(5),
            nats_max_reconnect_attempts: -1,
            nats_reconnect_wait: Duration::from_secs(2),
            nats_auth: NatsAuth::default(),
            nats_tls: None,
            broker_addrs: vec!["localhost:50051".into()],
            broker_token: None,
            broker_tls: None,
            use_tls: false,
            tls_cert_path: None,
            connection_pool_size: 10,
            max_concurrent_publishes: 1000,
            overload: OverloadBehavior::Wait,
            publish_timeout: Duration::from_secs(5),
            grpc_timeout: Duration::from_secs(30),
            retry_budget: Duration::from_secs(15),
            retry_attempts: 3,
            retry_initial_delay: Duration::from_millis(100),
            retry_multiplier: 2.0,
            retry_max_delay: Duration::from_secs(5),
            circuit_breaker_threshold: 10,
            circuit_breaker_timeout: Duration::from_secs(30),
            circuit_breaker_half_open_requests: 3,
            enable_metrics: true,
            metrics_prefix: "lax_client".into(),
            log_level: "INFO".into(),
            otlp_endpoint: None,
        }
    }
}

/// Environment variables read by [`ClientOptions::from_env`], by option name.
const ENV_PREFIX: &str = "LAX_";

/// Python SDK option names that are aliases of a LAX name: `(python, lax)`.
const ALIASES: [(&str, &str); 3] = [
    ("broker_addr", "broker_addrs"),
    ("retry_delay", "retry_initial_delay"),
    ("max_retry_delay", "retry_max_delay"),
];

impl ClientOptions {
    /// A builder starting from the defaults.
    pub fn builder() -> ClientOptionsBuilder {
        ClientOptionsBuilder {
            options: ClientOptions::default(),
        }
    }

    /// The defaults overridden by `LAX_*` environment variables, validated.
    ///
    /// Each option reads `LAX_` + its name in upper case, under its Python name or its LAX
    /// name (`LAX_NATS_URLS`, `LAX_BROKER_ADDR`, `LAX_PUBLISH_TIMEOUT`, `LAX_RETRY_DELAY`,
    /// `LAX_USE_TLS`, …); lists are comma-separated; nested options join with a double
    /// underscore (`LAX_NATS_AUTH__TOKEN`, `LAX_BROKER_TLS__CA_FILE`). A value is read as the
    /// option's type: `LAX_BROKER_TOKEN=12345` is the text `12345`, `LAX_RETRY_DELAY=0.2` is
    /// 200 ms. Setting one option under both of its names is an error.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_vars(std::env::vars())
    }

    /// Like [`from_env`](Self::from_env), over the given variables (handy in tests).
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, Error> {
        let schema = env_schema()?;
        let mut root = serde_json::Map::new();
        let mut set_by: std::collections::HashMap<Vec<String>, String> = Default::default();
        for (key, value) in vars {
            let Some(name) = key.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let mut path: Vec<String> = name
                .to_ascii_lowercase()
                .split("__")
                .map(String::from)
                .collect();
            if let Some((_, lax)) = ALIASES.iter().find(|(python, _)| *python == path[0]) {
                path[0] = (*lax).to_owned();
            }
            // Only options the client has; other LAX_* variables belong to other tools. An
            // unknown nested name is passed on for serde to refuse by name.
            if schema.get(&path[0]).is_none() {
                continue;
            }
            let shape = path
                .iter()
                .try_fold(&schema, |node, part| node.get(part.as_str()))
                .unwrap_or(&serde_json::Value::Null);
            if let Some(earlier) = set_by.insert(path.clone(), key.clone()) {
                return Err(Error::config(format!(
                    "{earlier} and {key} set the same option; keep one"
                )));
            }
            insert_path(&mut root, &path, env_value(shape, &value));
        }
        let options: ClientOptions = serde_json::from_value(serde_json::Value::Object(root))
            .map_err(|e| Error::config(format!("LAX_* environment variables: {e}")))?;
        options.validate()?;
        Ok(options)
    }

    /// Checks every value, naming the first bad one.
    pub fn validate(&self) -> Result<(), Error> {
        fn positive(name: &str, d: Duration) -> Result<(), Error> {
            if d.is_zero() {
                return Err(Error::config(format!("{name} must be greater than zero")));
            }
            Ok(())
        }
        if self.nats_urls.is_empty() || self.nats_urls.iter().any(|u| u.trim().is_empty()) {
            return Err(Error::config(
                "nats_urls must list at least one non-empty URL",
            ));
        }
        if self.broker_addrs.is_empty() || self.broker_addrs.iter().any(|a| a.trim().is_empty()) {
            return Err(Error::config(
                "broker_addrs must list at least one non-empty address",
            ));
        }
        positive("nats_connect_timeout", self.nats_connect_timeout)?;
        positive("publish_timeout", self.publish_timeout)?;
        positive("retry_budget", self.retry_budget)?;
        positive("circuit_breaker_timeout", self.circuit_breaker_timeout)?;
        if self.connection_pool_size == 0 {
            return Err(Error::config("connection_pool_size must be at least 1"));
        }
        if self.max_concurrent_publishes == 0 {
            return Err(Error::config("max_concurrent_publishes must be at least 1"));
        }
        positive("grpc_timeout", self.grpc_timeout)?;
        positive("nats_reconnect_wait", self.nats_reconnect_wait)?;
        if self.nats_max_reconnect_attempts == 0 || self.nats_max_reconnect_attempts < -1 {
            return Err(Error::config(format!(
                "nats_max_reconnect_attempts is {}: use -1 to reconnect forever or a count of at least 1",
                self.nats_max_reconnect_attempts
            )));
        }
        if self.tls_cert_path.is_some() && !self.use_tls && self.broker_tls.is_none() {
            return Err(Error::config(
                "tls_cert_path is set but use_tls is false: set use_tls = true for TLS to the broker",
            ));
        }
        if !(self.retry_multiplier.is_finite() && self.retry_multiplier >= 1.0) {
            return Err(Error::config("retry_multiplier must be a number >= 1"));
        }
        if self.retry_max_delay < self.retry_initial_delay {
            return Err(Error::config(
                "retry_max_delay must not be shorter than retry_initial_delay",
            ));
        }
        if self.circuit_breaker_threshold == 0 {
            return Err(Error::config(
                "circuit_breaker_threshold must be at least 1",
            ));
        }
        if self.circuit_breaker_half_open_requests == 0 {
            return Err(Error::config(
                "circuit_breaker_half_open_requests must be at least 1",
            ));
        }
        if self.enable_metrics
            && (self.metrics_prefix.is_empty()
                || !self
                    .metrics_prefix
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
                || self
                    .metrics_prefix
                    .starts_with(|c: char| c.is_ascii_digit()))
        {
            return Err(Error::config(format!(
                "metrics_prefix {:?} is not a valid Prometheus name prefix",
                self.metrics_prefix
            )));
        }
        if let Some(endpoint) = &self.otlp_endpoint {
            check_otlp_endpoint(endpoint)?;
        }
        self.nats_options().validate()?;
        self.grpc_options().validate()?;
        self.stack_config().validate()?;
        Ok(())
    }
}

/// An OTLP endpoint is usable only with the `opentelemetry` feature, and only as a URL.
fn check_otlp_endpoint(endpoint: &str) -> Result<(), Error> {
    #[cfg(feature = "opentelemetry")]
    return lax_core::trace::OtlpTracing::check_endpoint(endpoint)
        .map_err(|e| Error::config(format!("otlp_endpoint: {e}")));
    #[cfg(not(feature = "opentelemetry"))]
    Err(Error::config(format!(
        "otlp_endpoint is {endpoint:?} but lax-client was built without its `opentelemetry` feature"
    )))
}

impl ClientOptions {
    /// The direct path's transport options.
    pub fn nats_options(&self) -> NatsOptions {
        let mut reconnect = ReconnectPolicy::default()
            .initial_delay(self.nats_reconnect_wait)
            .max_delay(self.nats_reconnect_wait);
        // -1 (forever) and any other value validate() refuses map to "never give up".
        reconnect.max_attempts = usize::try_from(self.nats_max_reconnect_attempts)
            .ok()
            .filter(|&n| n > 0);
        let mut options = NatsOptions::new(self.nats_urls.iter().cloned())
            .connect_timeout(self.nats_connect_timeout)
            .reconnect(reconnect)
            .client_name(format!("lax-client/{}", env!("CARGO_PKG_VERSION")))
            .auth(self.nats_auth.clone())
            .metrics_prefix(self.metrics_prefix.clone());
        options.tls.clone_from(&self.nats_tls);
        options
    }

    /// The broker path's transport options.
    pub fn grpc_options(&self) -> GrpcOptions {
        let mut options = GrpcOptions::new(self.broker_addrs.iter().cloned())
            .connection_pool_size(self.connection_pool_size)
            .connect_timeout(self.nats_connect_timeout)
            .publish_timeout(self.publish_timeout)
            .call_timeout(self.grpc_timeout)
            .metrics_prefix(self.metrics_prefix.clone());
        options.auth_token.clone_from(&self.broker_token);
        options.tls = self.broker_tls();
        options
    }

    /// TLS to the broker: `broker_tls` when set, else what `use_tls` and `tls_cert_path` say.
    fn broker_tls(&self) -> Option<BrokerTls> {
        self.broker_tls.clone().or_else(|| {
            self.use_tls.then(|| {
                let mut tls = BrokerTls::default();
                tls.ca_file.clone_from(&self.tls_cert_path);
                tls
            })
        })
    }

    /// The layer stack's configuration: retry, breakers, in-flight cap, timeout, metrics.
    pub fn stack_config(&self) -> StackConfig {
        let retry = RetryConfig::default()
            // The Python SDK's `retry_attempts = 0` means no retry: one attempt.
            .max_attempts(self.retry_attempts.max(1))
            .first_delay(self.retry_initial_delay)
            .multiplier(self.retry_multiplier)
            .max_delay(self.retry_max_delay)
            .deadline(self.retry_budget);
        let breaker = BreakerConfig::default()
            .failure_threshold(self.circuit_breaker_threshold)
            .open_timeout(self.circuit_breaker_timeout)
            .half_open_trials(self.circuit_breaker_half_open_requests);
        let limit = LimitConfig::new(self.max_concurrent_publishes).mode(match self.overload {
            OverloadBehavior::Wait => LimitMode::Wait,
            OverloadBehavior::FailFast => LimitMode::FailFast,
        });
        let mut config = StackConfig::default();
        config.retry = Some(retry);
        config.breaker = Some(breaker);
        config.limit = Some(limit);
        config.publish_timeout = self.publish_timeout;
        config.metrics_prefix.clone_from(&self.metrics_prefix);
        config
    }
}

/// The shape of every option, nested ones included, as JSON: the defaults with every optional
/// section filled in. An environment variable's value is read as the type found here.
fn env_schema() -> Result<serde_json::Value, Error> {
    let sample = ClientOptions {
        nats_tls: Some(NatsTls::default()),
        broker_tls: Some(BrokerTls::default()),
        ..ClientOptions::default()
    };
    serde_json::to_value(sample).map_err(|e| Error::internal(e.to_string()))
}

/// `raw` as the type of `shape`: lists split on commas, numbers and booleans parse as such
/// (a value that does not is left as text, for the option to refuse by name), and text
/// options (those with a text or no default) keep the text as it is, digits or not.
fn env_value(shape: &serde_json::Value, raw: &str) -> serde_json::Value {
    use serde_json::Value;
    match shape {
        Value::Array(_) => Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_owned()))
                .collect(),
        ),
        Value::Number(_) | Value::Bool(_) => match serde_json::from_str::<Value>(raw.trim()) {
            Ok(v @ (Value::Number(_) | Value::Bool(_))) => v,
            _ => Value::String(raw.to_owned()),
        },
        _ => Value::String(raw.to_owned()),
    }
}

fn insert_path(
    map: &mut serde_json::Map<String, serde_json::Value>,
    path: &[String],
    value: serde_json::Value,
) {
    match path {
        [] => {}
        [last] => {
            map.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let child = map
                .entry(first.clone())
                .or_insert_with(|| serde_json::Value::Object(Default::default()));
            if let serde_json::Value::Object(child) = child {
                insert_path(child, rest, value);
            }
        }
    }
}

fn one_or_many<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s.split(',').map(|s| s.trim().to_owned()).collect(),
        OneOrMany::Many(v) => v,
    })
}

/// Builds [`ClientOptions`] in code.
///
/// ```
/// use std::time::Duration;
/// use lax_client::ClientOptions;
///
/// let options = ClientOptions::builder()
///     .nats_urls(["nats://127.0.0.1:4222"])
///     .broker_addr("127.0.0.1:50051")
///     .publish_timeout(Duration::from_secs(2))
///     .build()
///     .unwrap();
/// assert_eq!(options.connection_pool_size, 10);
/// ```
#[derive(Debug, Clone)]
pub struct ClientOptionsBuilder {
    options: ClientOptions,
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty),* $(,)?) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, value: $ty) -> Self {
                self.options.$name = value;
                self
            }
        )*
    };
}

impl ClientOptionsBuilder {
    /// NATS servers.
    pub fn nats_urls<I: IntoIterator<Item = S>, S: Into<String>>(mut self, urls: I) -> Self {
        self.options.nats_urls = urls.into_iter().map(Into::into).collect();
        self
    }

    /// One broker address (replacing the list).
    pub fn broker_addr(mut self, addr: impl Into<String>) -> Self {
        self.options.broker_addrs = vec![addr.into()];
        self
    }

    /// Several broker addresses.
    pub fn broker_addrs<I: IntoIterator<Item = S>, S: Into<String>>(mut self, addrs: I) -> Self {
        self.options.broker_addrs = addrs.into_iter().map(Into::into).collect();
        self
    }

    /// Bearer token for the broker.
    pub fn broker_token(mut self, token: impl Into<String>) -> Self {
        self.options.broker_token = Some(token.into());
        self
    }

    /// Metrics name prefix.
    pub fn metrics_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.options.metrics_prefix = prefix.into();
        self
    }

    /// TLS to the broker trusting the CA (or certificate) in `path`: the Python SDK's
    /// `use_tls=True, tls_cert_path=path`.
    pub fn tls_cert_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.options.use_tls = true;
        self.options.tls_cert_path = Some(path.into());
        self
    }

    /// Log filter for [`init_tracing`](crate::init_tracing).
    pub fn log_level(mut self, level: impl Into<String>) -> Self {
        self.options.log_level = level.into();
        self
    }

    /// OTLP/gRPC collector endpoint for the client's spans (feature `opentelemetry`).
    pub fn otlp_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.options.otlp_endpoint = Some(endpoint.into());
        self
    }

    setters! {
        /// NATS connect timeout.
        nats_connect_timeout: Duration,
        /// NATS reconnect attempts in a row; -1 forever.
        nats_max_reconnect_attempts: i64,
        /// Wait between NATS reconnect attempts.
        nats_reconnect_wait: Duration,
        /// NATS credentials.
        nats_auth: NatsAuth,
        /// TLS for NATS.
        nats_tls: Option<NatsTls>,
        /// TLS for the broker.
        broker_tls: Option<BrokerTls>,
        /// gRPC connections.
        connection_pool_size: usize,
        /// In-flight cap.
        max_concurrent_publishes: usize,
        /// Behaviour at the cap.
        overload: OverloadBehavior,
        /// Timeout of one attempt.
        publish_timeout: Duration,
        /// Deadline of non-publish broker calls.
        grpc_timeout: Duration,
        /// TLS to the broker (system roots unless `tls_cert_path` is given).
        use_tls: bool,
        /// Deadline of one publish, retries included.
        retry_budget: Duration,
        /// Attempts per broker publish.
        retry_attempts: u32,
        /// First retry delay.
        retry_initial_delay: Duration,
        /// Retry delay factor.
        retry_multiplier: f64,
        /// Longest retry delay.
        retry_max_delay: Duration,
        /// Failures that open a breaker.
        circuit_breaker_threshold: u32,
        /// Rest time of an open breaker.
        circuit_breaker_timeout: Duration,
        /// Trial requests while half-open.
        circuit_breaker_half_open_requests: u32,
        /// Record metrics.
        enable_metrics: bool,
    }

    /// The options, validated.
    pub fn build(self) -> Result<ClientOptions, Error> {
        self.options.validate()?;
        Ok(self.options)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_python_sdk() {
        let o = ClientOptions::default();
        assert_eq!(o.nats_urls, ["nats://localhost:4222"]);
        assert_eq!(o.nats_connect_timeout, Duration::from_secs(5));
        assert_eq!(o.broker_addrs, ["localhost:50051"]);
        assert_eq!(o.connection_pool_size, 10);
        assert_eq!(o.publish_timeout, Duration::from_secs(5));
        assert_eq!(o.retry_budget, Duration::from_secs(15));
        assert_eq!(o.retry_attempts, 3);
        assert_eq!(o.retry_initial_delay, Duration::from_millis(100));
        assert_eq!(o.retry_multiplier, 2.0);
        assert_eq!(o.retry_max_delay, Duration::from_secs(5));
        assert_eq!(o.circuit_breaker_threshold, 10);
        assert_eq!(o.circuit_breaker_timeout, Duration::from_secs(30));
        assert_eq!(o.circuit_breaker_half_open_requests, 3);
        assert_eq!(o.max_concurrent_publishes, 1000);
        assert_eq!(o.metrics_prefix, "lax_client");
        assert_eq!(o.nats_max_reconnect_attempts, -1);
        assert_eq!(o.nats_reconnect_wait, Duration::from_secs(2));
        assert_eq!(o.grpc_timeout, Duration::from_secs(30));
        assert!(!o.use_tls);
        assert_eq!(o.tls_cert_path, None);
        assert!(o.enable_metrics);
        assert_eq!(o.log_level, "INFO");
        o.validate().unwrap();
    }

    /// The Python SDK's configuration, every option under its own name, as a user would
    /// write it in a JSON/YAML file.
    const PYTHON_CONFIG: &str = r#"{
        "nats_urls": ["nats://nats1:4222", "nats://nats2:4222"],
        "nats_connect_timeout": 3.0,
        "nats_max_reconnect_attempts": 10,
        "nats_reconnect_wait": 0.5,
        "broker_addr": "broker:50051",
        "grpc_timeout": 12.5,
        "use_tls": true,
        "tls_cert_path": "/etc/lax/ca.pem",
        "connection_pool_size": 20,
        "publish_timeout": 2.0,
        "retry_attempts": 0,
        "retry_delay": 0.2,
        "retry_multiplier": 3.0,
        "max_retry_delay": 4.0,
        "circuit_breaker_threshold": 7,
        "circuit_breaker_timeout": 15.0,
        "circuit_breaker_half_open_requests": 2,
        "enable_metrics": true,
        "metrics_prefix": "myapp_lax",
        "log_level": "DEBUG",
        "max_concurrent_publishes": 500
    }"#;

    #[test]
    fn every_python_option_name_is_accepted_with_its_meaning() {
        let o: ClientOptions = serde_json::from_str(PYTHON_CONFIG).unwrap();
        assert_eq!(o.nats_urls, ["nats://nats1:4222", "nats://nats2:4222"]);
        assert_eq!(o.nats_connect_timeout, Duration::from_secs(3));
        assert_eq!(o.broker_addrs, ["broker:50051"]);
        assert_eq!(o.grpc_timeout, Duration::from_millis(12_500));
        assert_eq!(o.retry_initial_delay, Duration::from_millis(200));
        assert_eq!(o.retry_max_delay, Duration::from_secs(4));
        assert_eq!(o.retry_multiplier, 3.0);
        assert_eq!(o.circuit_breaker_timeout, Duration::from_secs(15));
        assert_eq!(o.max_concurrent_publishes, 500);
        assert_eq!(o.log_level, "DEBUG");

        // Reconnect attempts and wait drive the NATS transport's policy: a fixed wait.
        let reconnect = o.nats_options().reconnect;
        assert_eq!(reconnect.max_attempts, Some(10));
        assert_eq!(reconnect.base_delay(2), Duration::from_millis(500));
        assert_eq!(reconnect.base_delay(9), Duration::from_millis(500));
        let forever = ClientOptions::default().nats_options().reconnect;
        assert_eq!(forever.max_attempts, None);
        assert_eq!(forever.base_delay(5), Duration::from_secs(2));

        // grpc_timeout bounds the broker's non-publish calls; publishes keep publish_timeout.
        let grpc = o.grpc_options();
        assert_eq!(grpc.call_timeout, Duration::from_millis(12_500));
        assert_eq!(grpc.publish_timeout, Duration::from_secs(2));
        assert_eq!(grpc.connection_pool_size, 20);

        // use_tls + tls_cert_path: TLS to the broker trusting that file.
        let tls = grpc.tls.expect("TLS on");
        assert_eq!(
            tls.ca_file.as_deref(),
            Some(std::path::Path::new("/etc/lax/ca.pem"))
        );
        assert!(ClientOptions::default().grpc_options().tls.is_none());

        // retry_attempts = 0: no retry, one attempt.
        let retry = o.stack_config().retry.expect("retry layer");
        assert_eq!(retry.max_attempts, 1);
        assert_eq!(retry.first_delay, Duration::from_millis(200));
        assert_eq!(retry.multiplier, 3.0);
        let breaker = o.stack_config().breaker.expect("breaker");
        assert_eq!(breaker.failure_threshold, 7);
        assert_eq!(breaker.half_open_trials, 2);
    }

    #[test]
    fn python_and_lax_names_of_one_option_cannot_both_be_set() {
        let err = serde_json::from_str::<ClientOptions>(
            r#"{"retry_delay": 0.2, "retry_initial_delay": 0.3}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("duplicate field"), "{err}");
        let err = ClientOptions::from_vars(
            [
                ("LAX_RETRY_DELAY", "0.2"),
                ("LAX_RETRY_INITIAL_DELAY", "0.3"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        )
        .unwrap_err();
        assert_eq!(err.kind(), lax_core::ErrorKind::Config);
        assert!(err.message().contains("LAX_RETRY_DELAY"), "{err}");
        assert!(err.message().contains("LAX_RETRY_INITIAL_DELAY"), "{err}");
    }

    #[test]
    fn env_values_take_the_type_of_their_option() {
        let ca = tempfile::NamedTempFile::new().unwrap();
        let ca_path = ca.path().to_str().unwrap().to_owned();
        let vars = [
            ("LAX_BROKER_TOKEN", "12345"),
            ("LAX_RETRY_DELAY", "0.2"),
            ("LAX_MAX_RETRY_DELAY", "3"),
            ("LAX_NATS_MAX_RECONNECT_ATTEMPTS", "-1"),
            ("LAX_NATS_RECONNECT_WAIT", "0.5"),
            ("LAX_GRPC_TIMEOUT", "10"),
            ("LAX_USE_TLS", "true"),
            ("LAX_TLS_CERT_PATH", ca_path.as_str()),
            ("LAX_LOG_LEVEL", "DEBUG"),
            ("LAX_METRICS_PREFIX", "app2"),
            ("LAX_NATS_AUTH__USER", "007"),
            ("LAX_NATS_AUTH__PASSWORD", "1234"),
            ("LAX_RETRY_ATTEMPTS", "0"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let o = ClientOptions::from_vars(vars).unwrap();
        assert_eq!(o.broker_token.as_deref(), Some("12345"));
        assert_eq!(o.retry_initial_delay, Duration::from_millis(200));
        assert_eq!(o.retry_max_delay, Duration::from_secs(3));
        assert_eq!(o.nats_max_reconnect_attempts, -1);
        assert_eq!(o.nats_reconnect_wait, Duration::from_millis(500));
        assert_eq!(o.grpc_timeout, Duration::from_secs(10));
        assert!(o.use_tls);
        assert_eq!(o.tls_cert_path.as_deref(), Some(ca.path()));
        assert_eq!(o.log_level, "DEBUG");
        assert_eq!(o.metrics_prefix, "app2");
        assert_eq!(o.nats_auth.user.as_deref(), Some("007"));
        assert_eq!(o.nats_auth.password.as_deref(), Some("1234"));
        assert_eq!(o.retry_attempts, 0);

        let err = ClientOptions::from_vars([("LAX_USE_TLS".into(), "maybe".into())]).unwrap_err();
        assert!(err.message().contains("maybe"), "{err}");
        let err =
            ClientOptions::from_vars([("LAX_NATS_AUTH__TOKN".into(), "x".into())]).unwrap_err();
        assert!(err.message().contains("tokn"), "{err}");
    }

    #[test]
    fn a_certificate_without_use_tls_is_refused() {
        let o = ClientOptions {
            tls_cert_path: Some("/etc/lax/ca.pem".into()),
            ..ClientOptions::default()
        };
        let err = o.validate().unwrap_err();
        assert!(err.message().contains("use_tls"), "{err}");
    }

    #[test]
    fn env_vars_override_defaults() {
        let vars = [
            ("LAX_NATS_URLS", "nats://a:4222, nats://b:4222"),
            ("LAX_BROKER_ADDR", "broker:50051"),
            ("LAX_CONNECTION_POOL_SIZE", "4"),
            ("LAX_PUBLISH_TIMEOUT", "250ms"),
            ("LAX_ENABLE_METRICS", "false"),
            ("LAX_NATS_AUTH__TOKEN", "s3cret"),
            ("LAX_UNRELATED_TOOL_SETTING", "ignored"),
            ("PATH", "/bin"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let o = ClientOptions::from_vars(vars).unwrap();
        assert_eq!(o.nats_urls, ["nats://a:4222", "nats://b:4222"]);
        assert_eq!(o.broker_addrs, ["broker:50051"]);
        assert_eq!(o.connection_pool_size, 4);
        assert_eq!(o.publish_timeout, Duration::from_millis(250));
        assert!(!o.enable_metrics);
        assert_eq!(o.nats_auth.token.as_deref(), Some("s3cret"));
    }

    #[test]
    fn bad_values_are_config_errors() {
        let err = ClientOptions::from_vars([("LAX_CONNECTION_POOL_SIZE".into(), "0".into())])
            .unwrap_err();
        assert_eq!(err.kind(), lax_core::ErrorKind::Config);
        assert!(err.message().contains("connection_pool_size"));
        let err =
            ClientOptions::from_vars([("LAX_PUBLISH_TIMEOUT".into(), "soon".into())]).unwrap_err();
        assert!(err.message().contains("LAX_"), "{err}");
        for bad in [
            ClientOptions::builder()
                .publish_timeout(Duration::ZERO)
                .build(),
            ClientOptions::builder()
                .circuit_breaker_threshold(0)
                .build(),
            ClientOptions::builder()
                .grpc_timeout(Duration::ZERO)
                .build(),
            ClientOptions::builder()
                .nats_max_reconnect_attempts(0)
                .build(),
            ClientOptions::builder()
                .nats_max_reconnect_attempts(-2)
                .build(),
            ClientOptions::builder().metrics_prefix("my-app").build(),
            ClientOptions::builder()
                .nats_urls(Vec::<String>::new())
                .build(),
        ] {
            assert_eq!(bad.unwrap_err().kind(), lax_core::ErrorKind::Config);
        }
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = serde_json::from_str::<ClientOptions>(r#"{"pool_size": 3}"#).unwrap_err();
        assert!(err.to_string().contains("pool_size"));
    }
}
