//! Client configuration: every option of the Python SDK with its defaults, plus TLS, auth and
//! several broker addresses. Deserialisable with `serde` (a TOML/YAML/JSON section works),
//! loadable from `LAX_*` environment variables, and built in code with [`ClientOptions::builder`].

use std::time::Duration;

use lax_core::{
    Error,
    breaker::BreakerConfig,
    limit::{LimitConfig, LimitMode},
    retry::RetryConfig,
    stack::StackConfig,
};
use lax_transport_grpc::GrpcOptions;
use lax_transport_nats::NatsOptions;
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
/// Durations deserialise from seconds (`5`, `0.1`, as the Python SDK took them) or from
/// strings with a unit (`"500ms"`, `"5s"`, `"2m"`).
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
pub struct ClientOptions {
    /// NATS servers for the direct path.
    #[serde(deserialize_with = "one_or_many")]
    pub nats_urls: Vec<String>,
    /// How long connecting to NATS may take.
    #[serde(with = "lax_core::config::duration")]
    pub nats_connect_timeout: Duration,
    /// NATS authentication.
    pub nats_auth: NatsAuth,
    /// TLS for NATS.
    pub nats_tls: Option<NatsTls>,
    /// Addresses of LAX brokers (`host:port` or `http(s)://host:port`); `broker_addr` is
    /// accepted as an alias.
    #[serde(alias = "broker_addr", deserialize_with = "one_or_many")]
    pub broker_addrs: Vec<String>,
    /// Bearer token sent to the broker on every call.
    pub broker_token: Option<String>,
    /// TLS for the broker.
    pub broker_tls: Option<BrokerTls>,
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
    /// (its Raft election timeout), and the broker keeps re-sending a message within each
    /// attempt while the stream has no leader, so the budget needs about 10 s plus one
    /// attempt: the default 15 s, with 3 attempts of 5 s, covers an election without an
    /// error (checked by `leader_kill_is_not_an_error` in lax-client's `cluster` tests).
    /// Shorter budgets fail fast during an election with a retryable error, flagged "may
    /// have been stored" when it is so; resending with the same message id is safe.
    #[serde(with = "lax_core::config::duration")]
    pub retry_budget: Duration,
    /// Attempts of a broker publish that fails with a retryable error (1 = no retry).
    pub retry_attempts: u32,
    /// Delay before the first retry.
    #[serde(with = "lax_core::config::duration")]
    pub retry_initial_delay: Duration,
    /// Factor between consecutive retry delays.
    pub retry_multiplier: f64,
    /// Longest delay between retries.
    #[serde(with = "lax_core::config::duration")]
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
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            nats_urls: vec!["nats://localhost:4222".into()],
            nats_connect_timeout: Duration::from_secs(5),
            nats_auth: NatsAuth::default(),
            nats_tls: None,
            broker_addrs: vec!["localhost:50051".into()],
            broker_token: None,
            broker_tls: None,
            connection_pool_size: 10,
            max_concurrent_publishes: 1000,
            overload: OverloadBehavior::Wait,
            publish_timeout: Duration::from_secs(5),
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
        }
    }
}

/// Environment variables read by [`ClientOptions::from_env`], by option name.
const ENV_PREFIX: &str = "LAX_";

impl ClientOptions {
    /// A builder starting from the defaults.
    pub fn builder() -> ClientOptionsBuilder {
        ClientOptionsBuilder {
            options: ClientOptions::default(),
        }
    }

    /// The defaults overridden by `LAX_*` environment variables, validated.
    ///
    /// Each option reads `LAX_` + its name in upper case (`LAX_NATS_URLS`, `LAX_BROKER_ADDR`,
    /// `LAX_PUBLISH_TIMEOUT`, `LAX_RETRY_ATTEMPTS`, …); lists are comma-separated; nested
    /// options join with a double underscore (`LAX_NATS_AUTH__TOKEN`, `LAX_BROKER_TLS__CA_FILE`).
    pub fn from_env() -> Result<Self, Error> {
        Self::from_vars(std::env::vars())
    }

    /// Like [`from_env`](Self::from_env), over the given variables (handy in tests).
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Result<Self, Error> {
        let mut root = serde_json::Map::new();
        let known = serde_json::to_value(ClientOptions::default())
            .map_err(|e| Error::internal(e.to_string()))?;
        for (key, value) in vars {
            let Some(name) = key.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let path: Vec<String> = name
                .to_ascii_lowercase()
                .split("__")
                .map(String::from)
                .collect();
            let path = match path[0].as_str() {
                "broker_addr" => vec!["broker_addrs".to_owned()],
                _ => path,
            };
            // Only options the client has; other LAX_* variables belong to other tools.
            if known.get(&path[0]).is_none() {
                continue;
            }
            let value = env_value(&path[0], &value);
            insert_path(&mut root, &path, value);
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
        if self.retry_attempts == 0 {
            return Err(Error::config(
                "retry_attempts counts attempts and must be at least 1 (1 = no retry)",
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
        self.nats_options().validate()?;
        self.grpc_options().validate()?;
        self.stack_config().validate()?;
        Ok(())
    }
}

impl ClientOptions {
    /// The direct path's transport options.
    pub fn nats_options(&self) -> NatsOptions {
        NatsOptions {
            nats_urls: self.nats_urls.clone(),
            connect_timeout: self.nats_connect_timeout,
            client_name: Some(format!("lax-client/{}", env!("CARGO_PKG_VERSION"))),
            auth: self.nats_auth.clone(),
            tls: self.nats_tls.clone(),
            metrics_prefix: self.metrics_prefix.clone(),
            ..NatsOptions::default()
        }
    }

    /// The broker path's transport options.
    pub fn grpc_options(&self) -> GrpcOptions {
        GrpcOptions {
            broker_addrs: self.broker_addrs.clone(),
            connection_pool_size: self.connection_pool_size,
            connect_timeout: self.nats_connect_timeout,
            publish_timeout: self.publish_timeout,
            auth_token: self.broker_token.clone(),
            tls: self.broker_tls.clone(),
            metrics_prefix: self.metrics_prefix.clone(),
            ..GrpcOptions::default()
        }
    }

    /// The layer stack's configuration: retry, breakers, in-flight cap, timeout, metrics.
    pub fn stack_config(&self) -> StackConfig {
        StackConfig {
            retry: Some(RetryConfig {
                max_attempts: self.retry_attempts,
                first_delay: self.retry_initial_delay,
                multiplier: self.retry_multiplier,
                max_delay: self.retry_max_delay,
                deadline: Some(self.retry_budget),
                ..RetryConfig::default()
            }),
            breaker: Some(BreakerConfig {
                failure_threshold: self.circuit_breaker_threshold,
                open_timeout: self.circuit_breaker_timeout,
                half_open_trials: self.circuit_breaker_half_open_requests,
            }),
            limit: Some(LimitConfig {
                max_in_flight: self.max_concurrent_publishes,
                mode: match self.overload {
                    OverloadBehavior::Wait => LimitMode::Wait,
                    OverloadBehavior::FailFast => LimitMode::FailFast,
                },
            }),
            publish_timeout: self.publish_timeout,
            metrics_prefix: self.metrics_prefix.clone(),
        }
    }
}

/// Lists split on commas; numbers and booleans parse as such; everything else stays a string.
fn env_value(option: &str, raw: &str) -> serde_json::Value {
    use serde_json::Value;
    if matches!(option, "nats_urls" | "broker_addrs") {
        return Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_owned()))
                .collect(),
        );
    }
    match serde_json::from_str::<Value>(raw) {
        Ok(v @ (Value::Number(_) | Value::Bool(_))) => v,
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

    setters! {
        /// NATS connect timeout.
        nats_connect_timeout: Duration,
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
        o.validate().unwrap();
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
            ClientOptions::builder().retry_attempts(0).build(),
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
