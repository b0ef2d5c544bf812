//! Configuration of the gRPC transport, with the defaults of the LAX wire contract.

use std::{fmt, path::PathBuf, time::Duration};

use lax_core::{Error, Limits};
use serde::{Deserialize, Serialize};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// How single publishes travel to the broker.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublishMode {
    /// Over long-lived `StreamPublish` streams, one per connection, many publishes multiplexed
    /// on each and every ack matched back to its caller by message id.
    #[default]
    Stream,
    /// One unary `Publish` call per message.
    Unary,
}

/// TLS to the broker.
///
/// The broker's certificate is verified against `ca_file` when given, else against the
/// system's trust roots.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct TlsOptions {
    /// PEM file of the CA (or CAs) trusted for the broker's certificate; the system's trust
    /// roots when unset.
    pub ca_file: Option<PathBuf>,
    /// The name to verify the broker's certificate against, when it differs from the host of
    /// the address.
    pub domain: Option<String>,
    /// PEM certificate presented to the broker (mutual TLS); needs `client_key_file`.
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of `client_cert_file`.
    pub client_key_file: Option<PathBuf>,
}

// Builder-style setters, as tonic's `Endpoint`: `TlsOptions` is `#[non_exhaustive]`.
impl TlsOptions {
    /// Sets `ca_file`: PEM file of the CA (or CAs) trusted for the broker's certificate; the
    /// system's trust roots when unset.
    pub fn ca_file(mut self, ca_file: impl Into<PathBuf>) -> Self {
        self.ca_file = Some(ca_file.into());
        self
    }

    /// Sets `domain`: the name to verify the broker's certificate against, when it differs from the
    /// host of the address.
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    /// Sets `client_cert_file`: PEM certificate presented to the broker (mutual TLS); needs
    /// `client_key_file`.
    pub fn client_cert_file(mut self, client_cert_file: impl Into<PathBuf>) -> Self {
        self.client_cert_file = Some(client_cert_file.into());
        self
    }

    /// Sets `client_key_file`: PEM private key of `client_cert_file`.
    pub fn client_key_file(mut self, client_key_file: impl Into<PathBuf>) -> Self {
        self.client_key_file = Some(client_key_file.into());
        self
    }
}

impl fmt::Debug for TlsOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsOptions")
            .field("ca_file", &self.ca_file)
            .field("domain", &self.domain)
            .field("client_cert_file", &self.client_cert_file)
            .field(
                "client_key_file",
                &self.client_key_file.as_ref().map(|_| "<set>"),
            )
            .finish()
    }
}

impl TlsOptions {
    /// Reads the files and builds tonic's TLS configuration.
    fn client_config(&self) -> Result<ClientTlsConfig, Error> {
        let mut config = match &self.ca_file {
            Some(ca_file) => {
                ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(ca_file)?))
            }
            None => ClientTlsConfig::new().with_native_roots(),
        };
        if let Some(domain) = &self.domain {
            config = config.domain_name(domain.clone());
        }
        match (&self.client_cert_file, &self.client_key_file) {
            (Some(cert), Some(key)) => {
                config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
            }
            (None, None) => {}
            _ => {
                return Err(Error::config(
                    "tls.client_cert_file and tls.client_key_file must be given together",
                ));
            }
        }
        Ok(config)
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, Error> {
    std::fs::read(path)
        .map_err(|e| Error::config(format!("cannot read {}: {e}", path.display())).with_source(e))
}

/// Options of [`GrpcPublisher`](crate::GrpcPublisher) and [`BrokerAdmin`](crate::BrokerAdmin).
///
/// Deserialises from any serde format; missing fields take the defaults below (those of the
/// LAX wire contract), durations are written like `"5s"` or `"250ms"`:
///
/// ```
/// let options: lax_transport_grpc::GrpcOptions = serde_json::from_str(
///     r#"{ "broker_addrs": ["broker-1:50051", "broker-2:50051"], "publish_timeout": "2s" }"#,
/// ).unwrap();
/// assert_eq!(options.connection_pool_size, 10);
/// options.validate().unwrap();
/// ```
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct GrpcOptions {
    /// Broker addresses, `host:port` or `http(s)://host:port`. Connection `i` of the pool
    /// belongs to address `i % len` (so keep `connection_pool_size` at least the number of
    /// addresses) and publishes take the brokers in turn. A connection whose broker dies
    /// moves to the next address, and back once its own answers again. Default
    /// `["localhost:50051"]`.
    pub broker_addrs: Vec<String>,
    /// Number of HTTP/2 connections in the pool. Default 10.
    pub connection_pool_size: usize,
    /// How a single publish travels. Default [`PublishMode::Stream`].
    pub mode: PublishMode,
    /// Deadline to establish one connection. Default 5 s.
    #[serde(with = "lax_core::config::duration")]
    pub connect_timeout: Duration,
    /// Deadline of a publish whose message sets no timeout of its own. Default 5 s.
    #[serde(with = "lax_core::config::duration")]
    pub publish_timeout: Duration,
    /// Deadline of every call that is not a publish: stream administration, consumer groups,
    /// settling received messages (the Python SDK's `grpc_timeout`). Default 30 s.
    #[serde(with = "lax_core::config::duration")]
    pub call_timeout: Duration,
    /// Interval of HTTP/2 keep-alive pings. Default 10 s.
    #[serde(with = "lax_core::config::duration")]
    pub keep_alive_interval: Duration,
    /// How long a keep-alive ping may go unanswered before the connection counts as broken.
    /// Default 5 s.
    #[serde(with = "lax_core::config::duration")]
    pub keep_alive_timeout: Duration,
    /// First delay before re-establishing a broken connection; doubles per failed attempt.
    /// Default 100 ms.
    #[serde(with = "lax_core::config::duration")]
    pub reconnect_initial_backoff: Duration,
    /// Longest delay between reconnection attempts. Default 5 s.
    #[serde(with = "lax_core::config::duration")]
    pub reconnect_max_backoff: Duration,
    /// How long `close` waits for the broker to end the publish streams. Default 5 s.
    #[serde(with = "lax_core::config::duration")]
    pub close_timeout: Duration,
    /// Publishes queued per connection before `publish` waits for room. Default 1024.
    pub stream_buffer: usize,
    /// Largest payload accepted, in bytes; larger ones fail as invalid input before anything
    /// is sent. Default 1 MiB (NATS' default `max_payload`).
    pub max_payload: usize,
    /// Bearer token sent as `authorization: Bearer <token>` on every call.
    pub auth_token: Option<String>,
    /// TLS settings; `None` for plaintext HTTP/2.
    pub tls: Option<TlsOptions>,
    /// Prefix of the metric names. Default `lax_client`.
    pub metrics_prefix: String,
}

impl Default for GrpcOptions {
    fn default() -> Self {
        GrpcOptions {
            broker_addrs: vec!["localhost:50051".to_owned()],
            connection_pool_size: 10,
            mode: PublishMode::Stream,
            connect_timeout: Duration::from_secs(5),
            publish_timeout: Duration::from_secs(5),
            call_timeout: Duration::from_secs(30),
            keep_alive_interval: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(5),
            reconnect_initial_backoff: Duration::from_millis(100),
            reconnect_max_backoff: Duration::from_secs(5),
            close_timeout: Duration::from_secs(5),
            stream_buffer: 1024,
            max_payload: Limits::DEFAULT_MAX_PAYLOAD,
            auth_token: None,
            tls: None,
            metrics_prefix: "lax_client".to_owned(),
        }
    }
}

// Builder-style setters, as tonic's `Endpoint`: `GrpcOptions` is `#[non_exhaustive]`.
impl GrpcOptions {
    /// Sets `broker_addrs`: broker addresses, `host:port` or `http(s)://host:port`; publishes
    /// are spread over them and fail over between them (see the field). Default
    /// `["localhost:50051"]`.
    pub fn broker_addrs<I, S>(mut self, broker_addrs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.broker_addrs = broker_addrs.into_iter().map(Into::into).collect();
        self
    }

    /// Sets `connection_pool_size`: number of HTTP/2 connections in the pool. Default 10.
    pub fn connection_pool_size(mut self, connection_pool_size: usize) -> Self {
        self.connection_pool_size = connection_pool_size;
        self
    }

    /// Sets `mode`: how a single publish travels. Default [`PublishMode::Stream`].
    pub fn mode(mut self, mode: PublishMode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets `connect_timeout`: deadline to establish one connection. Default 5 s.
    pub fn connect_timeout(mut self, connect_timeout: Duration) -> Self {
        self.connect_timeout = connect_timeout;
        self
    }

    /// Sets `publish_timeout`: deadline of a publish whose message sets no timeout of its own.
    /// Default 5 s.
    pub fn publish_timeout(mut self, publish_timeout: Duration) -> Self {
        self.publish_timeout = publish_timeout;
        self
    }

    /// Sets `call_timeout`: deadline of every call that is not a publish: stream administration,
    /// consumer groups, settling received messages (the Python SDK's `grpc_timeout`). Default 30 s.
    pub fn call_timeout(mut self, call_timeout: Duration) -> Self {
        self.call_timeout = call_timeout;
        self
    }

    /// Sets `keep_alive_interval`: interval of HTTP/2 keep-alive pings. Default 10 s.
    pub fn keep_alive_interval(mut self, keep_alive_interval: Duration) -> Self {
        self.keep_alive_interval = keep_alive_interval;
        self
    }

    /// Sets `keep_alive_timeout`: how long a keep-alive ping may go unanswered before the
    /// connection counts as broken. Default 5 s.
    pub fn keep_alive_timeout(mut self, keep_alive_timeout: Duration) -> Self {
        self.keep_alive_timeout = keep_alive_timeout;
        self
    }

    /// Sets `reconnect_initial_backoff`: first delay before re-establishing a broken connection;
    /// doubles per failed attempt. Default 100 ms.
    pub fn reconnect_initial_backoff(mut self, reconnect_initial_backoff: Duration) -> Self {
        self.reconnect_initial_backoff = reconnect_initial_backoff;
        self
    }

    /// Sets `reconnect_max_backoff`: longest delay between reconnection attempts. Default 5 s.
    pub fn reconnect_max_backoff(mut self, reconnect_max_backoff: Duration) -> Self {
        self.reconnect_max_backoff = reconnect_max_backoff;
        self
    }

    /// Sets `close_timeout`: how long `close` waits for the broker to end the publish streams.
    /// Default 5 s.
    pub fn close_timeout(mut self, close_timeout: Duration) -> Self {
        self.close_timeout = close_timeout;
        self
    }

    /// Sets `stream_buffer`: publishes queued per connection before `publish` waits for room.
    /// Default 1024.
    pub fn stream_buffer(mut self, stream_buffer: usize) -> Self {
        self.stream_buffer = stream_buffer;
        self
    }

    /// Sets `max_payload`: largest payload accepted, in bytes; larger ones fail as invalid input
    /// before anything is sent. Default 1 MiB (NATS' default `max_payload`).
    pub fn max_payload(mut self, max_payload: usize) -> Self {
        self.max_payload = max_payload;
        self
    }

    /// Sets `auth_token`: bearer token sent as `authorization: Bearer <token>` on every call.
    pub fn auth_token(mut self, auth_token: impl Into<String>) -> Self {
        self.auth_token = Some(auth_token.into());
        self
    }

    /// Sets `tls`: TLS settings; `None` for plaintext HTTP/2.
    pub fn tls(mut self, tls: TlsOptions) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets `metrics_prefix`: prefix of the metric names. Default `lax_client`.
    pub fn metrics_prefix(mut self, metrics_prefix: impl Into<String>) -> Self {
        self.metrics_prefix = metrics_prefix.into();
        self
    }
}

impl fmt::Debug for GrpcOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcOptions")
            .field("broker_addrs", &self.broker_addrs)
            .field("connection_pool_size", &self.connection_pool_size)
            .field("mode", &self.mode)
            .field("connect_timeout", &self.connect_timeout)
            .field("publish_timeout", &self.publish_timeout)
            .field("call_timeout", &self.call_timeout)
            .field("keep_alive_interval", &self.keep_alive_interval)
            .field("keep_alive_timeout", &self.keep_alive_timeout)
            .field("reconnect_initial_backoff", &self.reconnect_initial_backoff)
            .field("reconnect_max_backoff", &self.reconnect_max_backoff)
            .field("close_timeout", &self.close_timeout)
            .field("stream_buffer", &self.stream_buffer)
            .field("max_payload", &self.max_payload)
            .field(
                "auth_token",
                &self.auth_token.as_ref().map(|_| "<redacted>"),
            )
            .field("tls", &self.tls)
            .field("metrics_prefix", &self.metrics_prefix)
            .finish()
    }
}

impl GrpcOptions {
    /// Options for these broker addresses, everything else default.
    pub fn new<I, S>(broker_addrs: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        GrpcOptions {
            broker_addrs: broker_addrs.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }

    /// Checks every value, failing with [`ErrorKind::Config`](lax_core::ErrorKind::Config) on
    /// the first bad one. [`GrpcPublisher::connect`](crate::GrpcPublisher::connect) calls it.
    pub fn validate(&self) -> Result<(), Error> {
        self.endpoints()?;
        Ok(())
    }

    /// The input limits publishes are checked against.
    pub(crate) fn limits(&self) -> Limits {
        Limits::default().with_max_payload(self.max_payload)
    }

    /// One endpoint per broker address, configured with timeouts, keep-alive and TLS, after
    /// checking every option.
    pub(crate) fn endpoints(&self) -> Result<Vec<Endpoint>, Error> {
        if self.connection_pool_size == 0 {
            return Err(Error::config("connection_pool_size must be at least 1"));
        }
        if self.stream_buffer == 0 {
            return Err(Error::config("stream_buffer must be at least 1"));
        }
        if self.max_payload == 0 {
            return Err(Error::config("max_payload must be at least 1 byte"));
        }
        for (name, value) in [
            ("connect_timeout", self.connect_timeout),
            ("publish_timeout", self.publish_timeout),
            ("call_timeout", self.call_timeout),
            ("keep_alive_interval", self.keep_alive_interval),
            ("keep_alive_timeout", self.keep_alive_timeout),
            ("reconnect_initial_backoff", self.reconnect_initial_backoff),
            ("reconnect_max_backoff", self.reconnect_max_backoff),
            ("close_timeout", self.close_timeout),
        ] {
            if value.is_zero() {
                return Err(Error::config(format!("{name} must be greater than zero")));
            }
        }
        if self.reconnect_initial_backoff > self.reconnect_max_backoff {
            return Err(Error::config(
                "reconnect_initial_backoff must not exceed reconnect_max_backoff",
            ));
        }
        if self.publish_timeout > Limits::DEFAULT_MAX_TIMEOUT {
            return Err(Error::config(format!(
                "publish_timeout must not exceed {:?}",
                Limits::DEFAULT_MAX_TIMEOUT
            )));
        }
        if self.metrics_prefix.is_empty() {
            return Err(Error::config("metrics_prefix must not be empty"));
        }
        crate::auth::BearerAuth::new(self.auth_token.as_deref())?;
        if self.broker_addrs.is_empty() {
            return Err(Error::config("broker_addrs must name at least one broker"));
        }
        let tls = self
            .tls
            .as_ref()
            .map(TlsOptions::client_config)
            .transpose()?;
        self.broker_addrs
            .iter()
            .map(|addr| self.endpoint(addr, tls.as_ref()))
            .collect()
    }

    fn endpoint(&self, addr: &str, tls: Option<&ClientTlsConfig>) -> Result<Endpoint, Error> {
        let uri = broker_uri(addr, tls.is_some())?;
        let endpoint = Endpoint::from_shared(uri)
            .map_err(|e| Error::config(format!("broker address {addr:?}: {e}")).with_source(e))?
            .connect_timeout(self.connect_timeout)
            .http2_keep_alive_interval(self.keep_alive_interval)
            .keep_alive_timeout(self.keep_alive_timeout)
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        match tls {
            Some(tls) => endpoint
                .tls_config(tls.clone())
                .map_err(|e| Error::config(format!("TLS for {addr:?}: {e}")).with_source(e)),
            None => Ok(endpoint),
        }
    }
}

/// `host:port` → `http://host:port` (`https://` with TLS); explicit schemes must agree with
/// the TLS setting.
fn broker_uri(addr: &str, tls: bool) -> Result<String, Error> {
    let addr = addr.trim();
    let (scheme, rest) = match addr.split_once("://") {
        Some((scheme, rest)) => (scheme.to_ascii_lowercase(), rest),
        None => ((if tls { "https" } else { "http" }).to_owned(), addr),
    };
    match (scheme.as_str(), tls) {
        ("http", false) | ("https", true) => {}
        ("https", false) => {
            return Err(Error::config(format!(
                "broker address {addr:?} is https but no tls options are set (tls.ca_file)"
            )));
        }
        ("http", true) => {
            return Err(Error::config(format!(
                "broker address {addr:?} is plain http but tls options are set"
            )));
        }
        (other, _) => {
            return Err(Error::config(format!(
                "broker address {addr:?} has scheme {other:?}; use host:port, http:// or https://"
            )));
        }
    }
    let authority = rest.trim_end_matches('/');
    if authority.is_empty() || authority.contains('/') {
        return Err(Error::config(format!(
            "broker address {addr:?} must be host:port, without a path"
        )));
    }
    Ok(format!("{scheme}://{authority}"))
}

#[cfg(test)]
mod tests {
    use lax_core::ErrorKind;

    use super::*;

    #[test]
    fn defaults_follow_the_wire_contract() {
        let options: GrpcOptions = serde_json::from_str("{}").unwrap();
        assert_eq!(options, GrpcOptions::default());
        assert_eq!(options.broker_addrs, ["localhost:50051"]);
        assert_eq!(options.connection_pool_size, 10);
        assert_eq!(options.publish_timeout, Duration::from_secs(5));
        assert_eq!(options.metrics_prefix, "lax_client");
        assert_eq!(options.mode, PublishMode::Stream);
        options.validate().unwrap();
    }

    #[test]
    fn deserialises_durations_and_modes() {
        let options: GrpcOptions = serde_json::from_str(
            r#"{"mode": "unary", "publish_timeout": "250ms", "connection_pool_size": 2,
                "auth_token": "s3cret"}"#,
        )
        .unwrap();
        assert_eq!(options.mode, PublishMode::Unary);
        assert_eq!(options.publish_timeout, Duration::from_millis(250));
        assert!(
            !format!("{options:?}").contains("s3cret"),
            "the token is redacted"
        );
        assert!(serde_json::from_str::<GrpcOptions>(r#"{"pool": 3}"#).is_err());
    }

    #[test]
    fn invalid_values_are_config_errors() {
        let cases: Vec<(&str, GrpcOptions)> = vec![
            (
                "pool",
                GrpcOptions {
                    connection_pool_size: 0,
                    ..Default::default()
                },
            ),
            (
                "timeout",
                GrpcOptions {
                    publish_timeout: Duration::ZERO,
                    ..Default::default()
                },
            ),
            (
                "connect",
                GrpcOptions {
                    connect_timeout: Duration::ZERO,
                    ..Default::default()
                },
            ),
            (
                "keepalive",
                GrpcOptions {
                    keep_alive_timeout: Duration::ZERO,
                    ..Default::default()
                },
            ),
            (
                "buffer",
                GrpcOptions {
                    stream_buffer: 0,
                    ..Default::default()
                },
            ),
            ("addrs", GrpcOptions::new(Vec::<String>::new())),
            ("scheme", GrpcOptions::new(["ftp://broker:1"])),
            ("path", GrpcOptions::new(["http://broker:1/x"])),
            ("https without tls", GrpcOptions::new(["https://broker:1"])),
            (
                "token",
                GrpcOptions {
                    auth_token: Some("a\nb".into()),
                    ..Default::default()
                },
            ),
            (
                "backoff",
                GrpcOptions {
                    reconnect_initial_backoff: Duration::from_secs(10),
                    ..Default::default()
                },
            ),
            (
                "zero call timeout",
                GrpcOptions {
                    call_timeout: Duration::ZERO,
                    ..Default::default()
                },
            ),
            (
                "missing ca file",
                GrpcOptions {
                    tls: Some(TlsOptions {
                        ca_file: Some("/nonexistent/ca.pem".into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ),
        ];
        for (what, options) in cases {
            let error = options.validate().expect_err(what);
            assert_eq!(error.kind(), ErrorKind::Config, "{what}: {error}");
        }
        // TLS without a CA file trusts the system's roots, as the Python SDK's `use_tls`.
        GrpcOptions {
            tls: Some(TlsOptions::default()),
            ..Default::default()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn addresses_accept_host_port_and_schemes() {
        assert_eq!(
            broker_uri("localhost:50051", false).unwrap(),
            "http://localhost:50051"
        );
        assert_eq!(broker_uri("http://h:1", false).unwrap(), "http://h:1");
        assert_eq!(broker_uri("h:1", true).unwrap(), "https://h:1");
        assert_eq!(broker_uri("HTTPS://h:1/", true).unwrap(), "https://h:1");
        assert!(broker_uri("http://h:1", true).is_err());
        assert!(broker_uri("", false).is_err());
    }
}
