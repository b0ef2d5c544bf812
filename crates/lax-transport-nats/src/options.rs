//! Connection options: servers, timeouts, reconnect policy, auth, TLS, liveness pings and the
//! bound on what is buffered while disconnected.
//!
//! [`NatsOptions`] deserialises with `serde` (every field has a default), and
//! [`NatsOptions::validate`] names the first bad value with an
//! [`ErrorKind::Config`](lax_core::ErrorKind::Config) error.

use std::{fmt, path::PathBuf, str::FromStr, time::Duration};

use async_nats::{ConnectOptions, ServerAddr};
use lax_core::Error;
use serde::{Deserialize, Serialize};

/// Everything [`NatsPublisher::connect`](crate::NatsPublisher::connect) needs.
///
/// Durations deserialise from seconds (`5`, `0.25`) or from strings with a unit (`"500ms"`,
/// `"5s"`, `"1m 30s"`).
///
/// ```
/// use std::time::Duration;
/// use lax_transport_nats::NatsOptions;
///
/// let options: NatsOptions = serde_json::from_str(r#"{
///     "nats_urls": ["nats://nats1:4222", "nats://nats2:4222"],
///     "connect_timeout": "2s",
///     "auth": { "user": "app", "password": "secret" },
///     "reconnect": { "max_attempts": 10 }
/// }"#).unwrap();
/// assert_eq!(options.connect_timeout, Duration::from_secs(2));
/// assert_eq!(options.ping_interval, Duration::from_secs(3)); // the default
/// options.validate().unwrap();
/// ```
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct NatsOptions {
    /// Servers to connect to; the client picks one and fails over to the others.
    pub nats_urls: Vec<String>,
    /// How long establishing one connection (TCP, TLS, handshake) may take.
    #[serde(with = "lax_core::config::duration")]
    pub connect_timeout: Duration,
    /// What happens after the connection breaks.
    pub reconnect: ReconnectPolicy,
    /// The connection name the server shows in its monitoring endpoints.
    pub client_name: Option<String>,
    /// Credentials; none by default.
    pub auth: NatsAuth,
    /// TLS settings; when `None`, TLS is used only if the server requires it, trusting the
    /// system's roots.
    pub tls: Option<NatsTls>,
    /// How often the client pings the server when nothing arrives from it. The connection is
    /// declared dead when a third ping is due with two still unanswered (async-nats allows two
    /// outstanding pings and does not make that configurable), so a peer that goes silent
    /// without closing the connection is detected after at most **3 × `ping_interval`** of
    /// silence: 9 s with the default of 3 s.
    #[serde(with = "lax_core::config::duration")]
    pub ping_interval: Duration,
    /// Most messages queued for the connection at once. While connected this is back-pressure
    /// (a publish waits for room); while disconnected it bounds the reconnect buffer, and a
    /// publish that finds it full fails with
    /// [`ErrorKind::Unavailable`](lax_core::ErrorKind::Unavailable).
    pub reconnect_buffer_messages: usize,
    /// Most bytes (subject, headers and payload) accepted while disconnected; publishes beyond
    /// it fail with [`ErrorKind::Unavailable`](lax_core::ErrorKind::Unavailable). `0` refuses
    /// every publish while disconnected.
    pub reconnect_buffer_bytes: usize,
    /// Messages a [`DirectSubscription`](crate::DirectSubscription) holds before the server
    /// side drops them as a slow consumer.
    pub subscription_capacity: usize,
    /// Deadline of [`flush`](lax_core::Publisher::flush), of the flush and drain in
    /// [`close`](lax_core::Publisher::close), and of the subscription round trip.
    #[serde(with = "lax_core::config::duration")]
    pub flush_timeout: Duration,
    /// Prefix of the metric names (`{prefix}_nats_connections`,
    /// `{prefix}_connection_errors_total`).
    pub metrics_prefix: String,
}

impl NatsOptions {
    /// Default server list.
    pub const DEFAULT_URL: &'static str = "nats://localhost:4222";
    /// Default connect timeout.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default ping interval: a stalled connection is detected within 9 s.
    pub const DEFAULT_PING_INTERVAL: Duration = Duration::from_secs(3);
    /// Pings async-nats sends without an answer before the one that closes the connection.
    pub const MAX_OUTSTANDING_PINGS: u32 = 2;
    /// Default bound on queued messages (async-nats' own default).
    pub const DEFAULT_RECONNECT_BUFFER_MESSAGES: usize = 2048;
    /// Default bound on bytes accepted while disconnected: 8 MiB, as the Go client.
    pub const DEFAULT_RECONNECT_BUFFER_BYTES: usize = 8 * 1024 * 1024;
    /// Default subscription capacity (async-nats' own default).
    pub const DEFAULT_SUBSCRIPTION_CAPACITY: usize = 65_536;
    /// Default flush timeout.
    pub const DEFAULT_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
    /// Default metrics prefix.
    pub const DEFAULT_METRICS_PREFIX: &'static str = "lax_client";

    /// Options for these servers, everything else default.
    pub fn new<I, S>(urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        NatsOptions {
            nats_urls: urls.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }

    /// The longest a silently stalled connection goes unnoticed:
    /// `ping_interval × (MAX_OUTSTANDING_PINGS + 1)`.
    pub fn stall_detection_time(&self) -> Duration {
        self.ping_interval
            .saturating_mul(Self::MAX_OUTSTANDING_PINGS + 1)
    }

    /// Checks every value, naming the first bad one.
    pub fn validate(&self) -> Result<(), Error> {
        self.server_addrs()?;
        for (name, value) in [
            ("connect_timeout", self.connect_timeout),
            ("ping_interval", self.ping_interval),
            ("flush_timeout", self.flush_timeout),
        ] {
            if value.is_zero() {
                return Err(Error::config(format!("{name} must be greater than zero")));
            }
        }
        self.reconnect.validate()?;
        if self.reconnect_buffer_messages == 0 {
            return Err(Error::config(
                "reconnect_buffer_messages must be at least 1",
            ));
        }
        if self.subscription_capacity == 0 {
            return Err(Error::config("subscription_capacity must be at least 1"));
        }
        validate_metrics_prefix(&self.metrics_prefix)?;
        if let Some(name) = &self.client_name
            && name.contains(|c: char| c.is_control())
        {
            return Err(Error::config(
                "client_name must not contain control characters",
            ));
        }
        self.auth.validate()?;
        if let Some(tls) = &self.tls {
            tls.validate()?;
        }
        Ok(())
    }

    /// The parsed server list.
    pub(crate) fn server_addrs(&self) -> Result<Vec<ServerAddr>, Error> {
        if self.nats_urls.is_empty() {
            return Err(Error::config(
                "nats_urls is empty: give at least one server",
            ));
        }
        self.nats_urls
            .iter()
            .enumerate()
            .map(|(i, url)| {
                ServerAddr::from_str(url).map_err(|e| {
                    Error::config(format!("nats_urls[{i}] {url:?} is not a NATS URL: {e}"))
                })
            })
            .collect()
    }

    /// The async-nats options these stand for, without the event callback.
    pub(crate) async fn connect_options(&self) -> Result<ConnectOptions, Error> {
        let reconnect = self.reconnect.clone();
        let mut options = ConnectOptions::new()
            .connection_timeout(self.connect_timeout)
            .ping_interval(self.ping_interval)
            .client_capacity(self.reconnect_buffer_messages)
            .subscription_capacity(self.subscription_capacity)
            .max_reconnects(self.reconnect.max_attempts)
            .reconnect_delay_callback(move |attempt| reconnect.delay(attempt));
        if let Some(name) = &self.client_name {
            options = options.name(name);
        }
        options = self.auth.apply(options).await?;
        if let Some(tls) = &self.tls {
            options = tls.apply(options);
        }
        Ok(options)
    }
}

impl Default for NatsOptions {
    fn default() -> Self {
        NatsOptions {
            nats_urls: vec![Self::DEFAULT_URL.to_owned()],
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            reconnect: ReconnectPolicy::default(),
            client_name: None,
            auth: NatsAuth::default(),
            tls: None,
            ping_interval: Self::DEFAULT_PING_INTERVAL,
            reconnect_buffer_messages: Self::DEFAULT_RECONNECT_BUFFER_MESSAGES,
            reconnect_buffer_bytes: Self::DEFAULT_RECONNECT_BUFFER_BYTES,
            subscription_capacity: Self::DEFAULT_SUBSCRIPTION_CAPACITY,
            flush_timeout: Self::DEFAULT_FLUSH_TIMEOUT,
            metrics_prefix: Self::DEFAULT_METRICS_PREFIX.to_owned(),
        }
    }
}

// Builder-style setters, as tonic's `Endpoint`: `NatsOptions` is `#[non_exhaustive]`.
impl NatsOptions {
    /// Sets `nats_urls`: servers to connect to; the client picks one and fails over to the others.
    pub fn nats_urls<I, S>(mut self, nats_urls: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.nats_urls = nats_urls.into_iter().map(Into::into).collect();
        self
    }

    /// Sets `connect_timeout`: how long establishing one connection (TCP, TLS, handshake) may take.
    pub fn connect_timeout(mut self, connect_timeout: Duration) -> Self {
        self.connect_timeout = connect_timeout;
        self
    }

    /// Sets `reconnect`: what happens after the connection breaks.
    pub fn reconnect(mut self, reconnect: ReconnectPolicy) -> Self {
        self.reconnect = reconnect;
        self
    }

    /// Sets `client_name`: the connection name the server shows in its monitoring endpoints.
    pub fn client_name(mut self, client_name: impl Into<String>) -> Self {
        self.client_name = Some(client_name.into());
        self
    }

    /// Sets `auth`: credentials; none by default.
    pub fn auth(mut self, auth: NatsAuth) -> Self {
        self.auth = auth;
        self
    }

    /// Sets `tls`: TLS settings; when `None`, TLS is used only if the server requires it, trusting
    /// the system's roots.
    pub fn tls(mut self, tls: NatsTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets `ping_interval`: how often the client pings the server when nothing arrives from it.
    /// The connection is declared dead when a third ping is due with two still unanswered
    /// (async-nats allows two outstanding pings and does not make that configurable), so a peer
    /// that goes silent without closing the connection is detected after at most **3 ×
    /// `ping_interval`** of silence: 9 s with the default of 3 s.
    pub fn ping_interval(mut self, ping_interval: Duration) -> Self {
        self.ping_interval = ping_interval;
        self
    }

    /// Sets `reconnect_buffer_messages`: most messages queued for the connection at once. While
    /// connected this is back-pressure (a publish waits for room); while disconnected it bounds the
    /// reconnect buffer, and a publish that finds it full fails with
    /// [`ErrorKind::Unavailable`](lax_core::ErrorKind::Unavailable).
    pub fn reconnect_buffer_messages(mut self, reconnect_buffer_messages: usize) -> Self {
        self.reconnect_buffer_messages = reconnect_buffer_messages;
        self
    }

    /// Sets `reconnect_buffer_bytes`: most bytes (subject, headers and payload) accepted while
    /// disconnected; publishes beyond it fail with
    /// [`ErrorKind::Unavailable`](lax_core::ErrorKind::Unavailable). `0` refuses every publish
    /// while disconnected.
    pub fn reconnect_buffer_bytes(mut self, reconnect_buffer_bytes: usize) -> Self {
        self.reconnect_buffer_bytes = reconnect_buffer_bytes;
        self
    }

    /// Sets `subscription_capacity`: messages a [`DirectSubscription`](crate::DirectSubscription)
    /// holds before the server side drops them as a slow consumer.
    pub fn subscription_capacity(mut self, subscription_capacity: usize) -> Self {
        self.subscription_capacity = subscription_capacity;
        self
    }

    /// Sets `flush_timeout`: deadline of [`flush`](lax_core::Publisher::flush), of the flush and
    /// drain in [`close`](lax_core::Publisher::close), and of the subscription round trip.
    pub fn flush_timeout(mut self, flush_timeout: Duration) -> Self {
        self.flush_timeout = flush_timeout;
        self
    }

    /// Sets `metrics_prefix`: prefix of the metric names (`{prefix}_nats_connections`,
    /// `{prefix}_connection_errors_total`).
    pub fn metrics_prefix(mut self, metrics_prefix: impl Into<String>) -> Self {
        self.metrics_prefix = metrics_prefix.into();
        self
    }
}

impl fmt::Debug for NatsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Spelled out so that secrets go through `NatsAuth`'s redacting Debug.
        f.debug_struct("NatsOptions")
            .field("nats_urls", &self.nats_urls)
            .field("connect_timeout", &self.connect_timeout)
            .field("reconnect", &self.reconnect)
            .field("client_name", &self.client_name)
            .field("auth", &self.auth)
            .field("tls", &self.tls)
            .field("ping_interval", &self.ping_interval)
            .field("reconnect_buffer_messages", &self.reconnect_buffer_messages)
            .field("reconnect_buffer_bytes", &self.reconnect_buffer_bytes)
            .field("subscription_capacity", &self.subscription_capacity)
            .field("flush_timeout", &self.flush_timeout)
            .field("metrics_prefix", &self.metrics_prefix)
            .finish()
    }
}

fn validate_metrics_prefix(prefix: &str) -> Result<(), Error> {
    let mut chars = prefix.chars();
    let valid_first = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':');
    if !valid_first || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
        return Err(Error::config(format!(
            "metrics_prefix {prefix:?} is not a Prometheus metric name prefix \
             ([a-zA-Z_:][a-zA-Z0-9_:]*)"
        )));
    }
    Ok(())
}

/// How the client reconnects after losing its connection.
///
/// Attempt 1 is immediate; attempt `n` waits `initial_delay × 2^(n-2)`, at most `max_delay`,
/// plus a random jitter of up to `jitter`, so that many clients do not come back in step.
/// The count restarts after every successful connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ReconnectPolicy {
    /// Connection attempts in a row (each server tried counts as one) before the client
    /// gives up and closes; `None` (the default) never gives up.
    pub max_attempts: Option<usize>,
    /// Delay before the second attempt.
    #[serde(with = "lax_core::config::duration")]
    pub initial_delay: Duration,
    /// Longest delay between attempts.
    #[serde(with = "lax_core::config::duration")]
    pub max_delay: Duration,
    /// Upper bound of the random delay added to each wait.
    #[serde(with = "lax_core::config::duration")]
    pub jitter: Duration,
}

impl ReconnectPolicy {
    /// The wait before attempt `attempt` (1-based), jitter excluded.
    pub fn base_delay(&self, attempt: usize) -> Duration {
        if attempt <= 1 {
            return Duration::ZERO;
        }
        let doublings = u32::try_from(attempt - 2).unwrap_or(u32::MAX).min(31);
        self.initial_delay
            .saturating_mul(1 << doublings)
            .min(self.max_delay)
    }

    fn delay(&self, attempt: usize) -> Duration {
        let base = self.base_delay(attempt);
        if base.is_zero() || self.jitter.is_zero() {
            return base;
        }
        base + self.jitter.mul_f64(rand::random::<f64>())
    }

    fn validate(&self) -> Result<(), Error> {
        if self.max_attempts == Some(0) {
            return Err(Error::config(
                "reconnect.max_attempts must be at least 1; leave it unset (null) to retry forever",
            ));
        }
        if self.initial_delay > self.max_delay {
            return Err(Error::config(format!(
                "reconnect.initial_delay ({:?}) is longer than reconnect.max_delay ({:?})",
                self.initial_delay, self.max_delay
            )));
        }
        Ok(())
    }
}

impl Default for ReconnectPolicy {
    fn default() -> Self {
        ReconnectPolicy {
            max_attempts: None,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(4),
            jitter: Duration::from_millis(100),
        }
    }
}

// Builder-style setters, as tonic's `Endpoint`: `ReconnectPolicy` is `#[non_exhaustive]`.
impl ReconnectPolicy {
    /// Sets `max_attempts`: connection attempts in a row (each server tried counts as one) before
    /// the client gives up and closes; `None` (the default) never gives up.
    pub fn max_attempts(mut self, max_attempts: usize) -> Self {
        self.max_attempts = Some(max_attempts);
        self
    }

    /// Sets `initial_delay`: delay before the second attempt.
    pub fn initial_delay(mut self, initial_delay: Duration) -> Self {
        self.initial_delay = initial_delay;
        self
    }

    /// Sets `max_delay`: longest delay between attempts.
    pub fn max_delay(mut self, max_delay: Duration) -> Self {
        self.max_delay = max_delay;
        self
    }

    /// Sets `jitter`: upper bound of the random delay added to each wait.
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }
}

/// Credentials for the NATS server. At most one method may be set; `user` and `password` go
/// together.
///
/// `Debug` shows which method is set, never the secret.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct NatsAuth {
    /// Token authentication.
    pub token: Option<String>,
    /// User name (with `password`).
    pub user: Option<String>,
    /// Password (with `user`).
    pub password: Option<String>,
    /// A `.creds` file (user JWT and NKey seed), as `nsc` writes it.
    pub credentials_file: Option<PathBuf>,
    /// An NKey user seed (`SU...`).
    pub nkey_seed: Option<String>,
}

impl NatsAuth {
    /// Token authentication.
    pub fn token(token: impl Into<String>) -> Self {
        NatsAuth {
            token: Some(token.into()),
            ..Default::default()
        }
    }

    /// User and password authentication.
    pub fn user_password(user: impl Into<String>, password: impl Into<String>) -> Self {
        NatsAuth {
            user: Some(user.into()),
            password: Some(password.into()),
            ..Default::default()
        }
    }

    /// Authentication with a `.creds` file.
    pub fn credentials_file(path: impl Into<PathBuf>) -> Self {
        NatsAuth {
            credentials_file: Some(path.into()),
            ..Default::default()
        }
    }

    /// NKey authentication with a user seed.
    pub fn nkey_seed(seed: impl Into<String>) -> Self {
        NatsAuth {
            nkey_seed: Some(seed.into()),
            ..Default::default()
        }
    }

    /// The names of the methods that are set.
    fn methods(&self) -> Vec<&'static str> {
        [
            ("token", self.token.is_some()),
            (
                "user/password",
                self.user.is_some() || self.password.is_some(),
            ),
            ("credentials_file", self.credentials_file.is_some()),
            ("nkey_seed", self.nkey_seed.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, set)| set.then_some(name))
        .collect()
    }

    fn validate(&self) -> Result<(), Error> {
        let methods = self.methods();
        if methods.len() > 1 {
            return Err(Error::config(format!(
                "auth: set one method, not {}",
                methods.join(" and ")
            )));
        }
        if self.user.is_some() != self.password.is_some() {
            return Err(Error::config("auth: user and password go together"));
        }
        for (name, value) in [
            ("token", &self.token),
            ("user", &self.user),
            ("nkey_seed", &self.nkey_seed),
        ] {
            if value.as_deref() == Some("") {
                return Err(Error::config(format!("auth.{name} is empty")));
            }
        }
        if let Some(path) = &self.credentials_file
            && !path.is_file()
        {
            return Err(Error::config(format!(
                "auth.credentials_file {} is not a readable file",
                path.display()
            )));
        }
        Ok(())
    }

    async fn apply(&self, options: ConnectOptions) -> Result<ConnectOptions, Error> {
        if let Some(token) = &self.token {
            return Ok(options.token(token.clone()));
        }
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            return Ok(options.user_and_password(user.clone(), password.clone()));
        }
        if let Some(seed) = &self.nkey_seed {
            return Ok(options.nkey(seed.clone()));
        }
        if let Some(path) = &self.credentials_file {
            return options.credentials_file(path).await.map_err(|e| {
                Error::config(format!("auth.credentials_file {}: {e}", path.display()))
                    .with_source(e)
            });
        }
        Ok(options)
    }
}

impl fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redacted = |secret: &Option<String>| secret.as_ref().map(|_| "<redacted>");
        f.debug_struct("NatsAuth")
            .field("token", &redacted(&self.token))
            .field("user", &self.user)
            .field("password", &redacted(&self.password))
            .field("credentials_file", &self.credentials_file)
            .field("nkey_seed", &redacted(&self.nkey_seed))
            .finish()
    }
}

/// TLS settings for the NATS connection.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct NatsTls {
    /// PEM file of the CA that signed the server's certificate; the system's roots when unset.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for mutual TLS (with `key_file`).
    pub cert_file: Option<PathBuf>,
    /// PEM client key, for mutual TLS (with `cert_file`).
    pub key_file: Option<PathBuf>,
    /// Refuse servers that do not offer TLS.
    pub required: bool,
}

// Builder-style setters, as tonic's `Endpoint`: `NatsTls` is `#[non_exhaustive]`.
impl NatsTls {
    /// Sets `ca_file`: PEM file of the CA that signed the server's certificate; the system's roots
    /// when unset.
    pub fn ca_file(mut self, ca_file: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(ca_file.into());
        self
    }

    /// Sets `cert_file`: PEM client certificate, for mutual TLS (with `key_file`).
    pub fn cert_file(mut self, cert_file: impl Into<PathBuf>) -> Self {
        self.cert_file = Some(cert_file.into());
        self
    }

    /// Sets `key_file`: PEM client key, for mutual TLS (with `cert_file`).
    pub fn key_file(mut self, key_file: impl Into<PathBuf>) -> Self {
        self.key_file = Some(key_file.into());
        self
    }

    /// Sets `required`: refuse servers that do not offer TLS.
    pub fn required(mut self, required: bool) -> Self {
        self.required = required;
        self
    }
}

impl NatsTls {
    /// TLS required, trusting the CA in `ca_file`.
    pub fn with_ca(ca_file: impl Into<PathBuf>) -> Self {
        NatsTls {
            ca_file: Some(ca_file.into()),
            required: true,
            ..Default::default()
        }
    }

    /// Adds a client certificate and key, for mutual TLS.
    pub fn with_client_cert(
        mut self,
        cert_file: impl Into<PathBuf>,
        key_file: impl Into<PathBuf>,
    ) -> Self {
        self.cert_file = Some(cert_file.into());
        self.key_file = Some(key_file.into());
        self
    }

    fn validate(&self) -> Result<(), Error> {
        if self.cert_file.is_some() != self.key_file.is_some() {
            return Err(Error::config("tls: cert_file and key_file go together"));
        }
        for (name, path) in [
            ("ca_file", &self.ca_file),
            ("cert_file", &self.cert_file),
            ("key_file", &self.key_file),
        ] {
            if let Some(path) = path
                && !path.is_file()
            {
                return Err(Error::config(format!(
                    "tls.{name} {} is not a readable file",
                    path.display()
                )));
            }
        }
        Ok(())
    }

    fn apply(&self, mut options: ConnectOptions) -> ConnectOptions {
        if let Some(ca) = &self.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        options.require_tls(self.required)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lax_core::ErrorKind;

    fn config_error(options: &NatsOptions) -> String {
        let err = options.validate().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config, "{err}");
        err.message().to_owned()
    }

    #[test]
    fn defaults() {
        let options = NatsOptions::default();
        assert_eq!(options.nats_urls, ["nats://localhost:4222"]);
        assert_eq!(options.connect_timeout, Duration::from_secs(5));
        assert_eq!(options.flush_timeout, Duration::from_secs(5));
        assert_eq!(options.metrics_prefix, "lax_client");
        assert_eq!(options.reconnect.max_attempts, None);
        assert!(options.stall_detection_time() <= Duration::from_secs(10));
        options.validate().unwrap();
        let empty: NatsOptions = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, options);
    }

    #[test]
    fn deserialises_durations_and_auth() {
        let options: NatsOptions = serde_json::from_str(
            r#"{
                "nats_urls": ["nats://a:4222", "tls://b:4443"],
                "connect_timeout": 2.5,
                "ping_interval": "500ms",
                "flush_timeout": "1m 30s",
                "reconnect": {"max_attempts": 3, "initial_delay": "50ms"},
                "auth": {"token": "t0k"},
                "tls": {"required": true}
            }"#,
        )
        .unwrap();
        assert_eq!(options.connect_timeout, Duration::from_millis(2500));
        assert_eq!(options.ping_interval, Duration::from_millis(500));
        assert_eq!(options.flush_timeout, Duration::from_secs(90));
        assert_eq!(options.reconnect.max_attempts, Some(3));
        assert_eq!(options.reconnect.initial_delay, Duration::from_millis(50));
        assert_eq!(options.auth, NatsAuth::token("t0k"));
        options.validate().unwrap();
        let round_trip: NatsOptions =
            serde_json::from_value(serde_json::to_value(&options).unwrap()).unwrap();
        assert_eq!(round_trip, options);

        let err = serde_json::from_str::<NatsOptions>(r#"{"ping_interval": "soon"}"#).unwrap_err();
        assert!(err.to_string().contains("not a duration"), "{err}");
        let err = serde_json::from_str::<NatsOptions>(r#"{"nats_url": "x"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn validation_names_the_bad_value() {
        let bad_url = NatsOptions::new(["nats://ok:4222", "nats://bad host:4222"]);
        assert!(config_error(&bad_url).contains("nats_urls[1]"));
        assert!(config_error(&NatsOptions::new(Vec::<String>::new())).contains("empty"));

        let zero = NatsOptions {
            ping_interval: Duration::ZERO,
            ..Default::default()
        };
        assert!(config_error(&zero).contains("ping_interval"));

        let mut never = NatsOptions::default();
        never.reconnect.max_attempts = Some(0);
        assert!(config_error(&never).contains("max_attempts"));

        let mut backwards = NatsOptions::default();
        backwards.reconnect.initial_delay = Duration::from_secs(10);
        assert!(config_error(&backwards).contains("initial_delay"));

        let no_buffer = NatsOptions {
            reconnect_buffer_messages: 0,
            ..Default::default()
        };
        assert!(config_error(&no_buffer).contains("reconnect_buffer_messages"));

        let prefix = NatsOptions {
            metrics_prefix: "my-app".into(),
            ..Default::default()
        };
        assert!(config_error(&prefix).contains("metrics_prefix"));

        let two_methods = NatsOptions {
            auth: NatsAuth {
                token: Some("t".into()),
                ..NatsAuth::user_password("u", "p")
            },
            ..Default::default()
        };
        assert!(config_error(&two_methods).contains("token and user/password"));

        let half_user = NatsOptions {
            auth: NatsAuth {
                user: Some("u".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(config_error(&half_user).contains("user and password"));

        let missing_creds = NatsOptions {
            auth: NatsAuth::credentials_file("/nonexistent/user.creds"),
            ..Default::default()
        };
        assert!(config_error(&missing_creds).contains("credentials_file"));

        let half_cert = NatsOptions {
            tls: Some(NatsTls {
                cert_file: Some("/etc/hostname".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(config_error(&half_cert).contains("cert_file and key_file"));

        let missing_ca = NatsOptions {
            tls: Some(NatsTls::with_ca("/nonexistent/ca.pem")),
            ..Default::default()
        };
        assert!(config_error(&missing_ca).contains("tls.ca_file"));
    }

    #[test]
    fn debug_redacts_secrets() {
        let options = NatsOptions {
            auth: NatsAuth::user_password("alice", "hunter2"),
            ..Default::default()
        };
        let shown = format!("{options:?}");
        assert!(shown.contains("alice"));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!format!("{:?}", NatsAuth::token("s3cr3t")).contains("s3cr3t"));
        assert!(!format!("{:?}", NatsAuth::nkey_seed("SUAB")).contains("SUAB"));
    }

    #[test]
    fn reconnect_backoff_doubles_up_to_the_cap() {
        let policy = ReconnectPolicy::default();
        let delays: Vec<_> = (1..=8).map(|n| policy.base_delay(n)).collect();
        let ms = |n| Duration::from_millis(n);
        assert_eq!(
            delays,
            [
                ms(0),
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1600),
                ms(3200),
                ms(4000)
            ]
        );
        assert_eq!(policy.base_delay(usize::MAX), policy.max_delay);
        for attempt in 2..10 {
            let delay = policy.delay(attempt);
            let base = policy.base_delay(attempt);
            assert!(delay >= base && delay <= base + policy.jitter, "{delay:?}");
        }
        assert_eq!(policy.delay(1), Duration::ZERO);
    }
}
