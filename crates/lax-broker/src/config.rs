//! The broker's settings: a clap [`Args`](clap::Args) struct, so `lax broker` reads them from
//! flags and `LAX_BROKER_*` environment variables, and other code builds one directly.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::{ArgAction, Args};

use crate::{
    error::BrokerError,
    security::{self, Permissions, SecretString},
};

fn parse_permissions_file(path: &str) -> Result<Permissions, String> {
    Permissions::from_file(path.as_ref()).map_err(|e| e.to_string())
}

/// How the broker connects, listens and publishes.
///
/// Every option is a flag of `lax broker` and an environment variable. Build one in code with
/// [`BrokerConfig::new`] (defaults everywhere but the NATS URLs) and adjust the public fields.
///
/// ```
/// use lax_broker::BrokerConfig;
///
/// let mut config = BrokerConfig::new(["nats://127.0.0.1:4222"]);
/// config.listen = "127.0.0.1:0".parse().unwrap();
/// config.replicated_replicas = 1; // a single-node dev server
/// assert!(config.validate().is_ok());
/// assert!(config.auto_create_streams());
/// ```
#[derive(Debug, Clone, Args)]
pub struct BrokerConfig {
    /// NATS server URLs, comma-separated.
    #[arg(
        long = "nats-url",
        env = "LAX_BROKER_NATS_URLS",
        value_delimiter = ',',
        value_name = "URL[,URL...]"
    )]
    pub nats_urls: Vec<String>,

    /// The NATS URLs shared with LAX clients; used when neither `--nats-url` nor
    /// `LAX_BROKER_NATS_URLS` is given.
    #[arg(
        long = "shared-nats-urls",
        env = "LAX_NATS_URLS",
        value_delimiter = ',',
        hide = true
    )]
    pub shared_nats_urls: Vec<String>,

    /// Address the gRPC server listens on (port 0 picks a free port).
    #[arg(long, env = "LAX_BROKER_LISTEN", default_value = "0.0.0.0:50051")]
    pub listen: SocketAddr,

    /// Address of the Prometheus `/metrics` endpoint (port 0 picks a free port).
    #[arg(
        long,
        env = "LAX_BROKER_METRICS_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    pub metrics_listen: SocketAddr,

    /// Do not serve `/metrics`.
    #[arg(long, env = "LAX_BROKER_NO_METRICS")]
    pub no_metrics: bool,

    /// Replicas of a `replicated`-tier stream. Set 1 for a single-node dev server; below 3 a
    /// warning is logged at start-up.
    #[arg(
        long,
        env = "LAX_BROKER_REPLICATED_REPLICAS",
        default_value_t = 3,
        value_parser = clap::value_parser!(u8).range(1..=5)
    )]
    pub replicated_replicas: u8,

    /// Create a stream when a publish finds none capturing its subject (the default).
    #[arg(
        long = "auto-create-streams",
        env = "LAX_BROKER_AUTO_CREATE_STREAMS",
        action = ArgAction::Set,
        num_args = 0..=1,
        default_value_t = true,
        default_missing_value = "true",
        overrides_with = "no_auto_create"
    )]
    pub auto_create: bool,

    /// Refuse publishes that no stream captures instead of creating one.
    #[arg(long = "no-auto-create", overrides_with = "auto_create")]
    pub no_auto_create: bool,

    /// Most publishes in flight across all clients; past it publishes fail with
    /// RESOURCE_EXHAUSTED ("broker buffer full").
    #[arg(
        long,
        env = "LAX_BROKER_MAX_INFLIGHT",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_inflight: u32,

    /// Most unanswered publishes per StreamPublish call; the broker stops reading the call's
    /// requests while this many wait for acks.
    #[arg(
        long,
        env = "LAX_BROKER_STREAM_WINDOW",
        default_value_t = 1024,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub stream_window: u32,

    /// Most unanswered publishes per BatchPublish call.
    #[arg(
        long,
        env = "LAX_BROKER_BATCH_WINDOW",
        default_value_t = 256,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub batch_window: u32,

    /// How long a publish waits for its JetStream ack when the request sets no timeout.
    #[arg(long, env = "LAX_BROKER_PUBLISH_TIMEOUT_MS", default_value_t = 5_000)]
    pub publish_timeout_ms: u64,

    /// How long the first connection attempt to NATS may take.
    #[arg(
        long,
        env = "LAX_BROKER_NATS_CONNECT_TIMEOUT_MS",
        default_value_t = 5_000
    )]
    pub nats_connect_timeout_ms: u64,

    /// Longest pause between reconnection attempts while NATS is unreachable.
    #[arg(
        long,
        env = "LAX_BROKER_NATS_RECONNECT_MAX_DELAY_MS",
        default_value_t = 2_000
    )]
    pub nats_reconnect_max_delay_ms: u64,

    /// How long a subject → stream lookup is cached.
    #[arg(long, env = "LAX_BROKER_STREAM_CACHE_TTL_MS", default_value_t = 60_000)]
    pub stream_cache_ttl_ms: u64,

    /// Largest gRPC request accepted, in bytes (a BatchPublish carries many messages).
    #[arg(long, env = "LAX_BROKER_MAX_REQUEST_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_request_bytes: usize,

    /// Most concurrent gRPC requests per client connection; more are shed with UNAVAILABLE.
    #[arg(
        long,
        env = "LAX_BROKER_MAX_CONCURRENT_REQUESTS",
        default_value_t = 10_000,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub max_concurrent_requests: u32,

    /// Most messages one subscriber has delivered and not yet settled: caps the
    /// subscriber's own `max_inflight` (which is used when lower). The broker pulls from
    /// JetStream only as much as a subscriber has room for.
    #[arg(
        long,
        env = "LAX_BROKER_SUBSCRIBER_MAX_INFLIGHT",
        default_value_t = 1_000,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub subscriber_max_inflight: u32,

    /// Most payload bytes one subscriber has delivered and not yet settled (raised to the
    /// NATS server's max_payload when lower, so that any message fits).
    #[arg(
        long,
        env = "LAX_BROKER_SUBSCRIBER_MAX_INFLIGHT_BYTES",
        default_value_t = 8 * 1024 * 1024
    )]
    pub subscriber_max_inflight_bytes: usize,

    /// Most messages delivered and not yet settled across all subscribers of the broker.
    #[arg(
        long,
        env = "LAX_BROKER_CONSUME_MAX_INFLIGHT",
        default_value_t = 100_000
    )]
    pub consume_max_inflight: usize,

    /// Most bytes delivered and not yet settled across all subscribers of the broker
    /// (raised to the per-subscriber limit when lower).
    #[arg(
        long,
        env = "LAX_BROKER_CONSUME_MAX_INFLIGHT_BYTES",
        default_value_t = 64 * 1024 * 1024
    )]
    pub consume_max_inflight_bytes: usize,

    /// Longest time the broker keeps a delivered message leased for a subscriber that is
    /// still connected and settling messages (it renews JetStream's ack wait meanwhile).
    #[arg(long, env = "LAX_BROKER_MAX_LEASE_MS", default_value_t = 3_600_000)]
    pub max_lease_ms: u64,

    /// How long a graceful shutdown waits for in-flight requests before closing anyway.
    #[arg(long, env = "LAX_BROKER_SHUTDOWN_TIMEOUT_MS", default_value_t = 30_000)]
    pub shutdown_timeout_ms: u64,

    /// PEM certificate (chain) of the gRPC server; with `--tls-key`, the broker serves gRPC
    /// over TLS only. `/metrics` stays plain HTTP.
    #[arg(
        long,
        env = "LAX_BROKER_TLS_CERT",
        value_name = "PATH",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of `--tls-cert`.
    #[arg(
        long,
        env = "LAX_BROKER_TLS_KEY",
        value_name = "PATH",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// PEM file of the CA(s) that sign client certificates; when set, every client must
    /// present one (mutual TLS). Needs `--tls-cert` and `--tls-key`.
    #[arg(
        long,
        env = "LAX_BROKER_TLS_CLIENT_CA",
        value_name = "PATH",
        requires = "tls_cert"
    )]
    pub tls_client_ca: Option<PathBuf>,

    /// Bearer token every BrokerService and StreamManager call must carry as
    /// `authorization: Bearer <token>`; health checks and reflection stay open. Prefer
    /// `--auth-token-file` or the environment over the command line.
    #[arg(
        long,
        env = "LAX_BROKER_AUTH_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true,
        conflicts_with = "auth_token_file"
    )]
    pub auth_token: Option<SecretString>,

    /// File holding the bearer token (surrounding whitespace is ignored).
    #[arg(long, env = "LAX_BROKER_AUTH_TOKEN_FILE", value_name = "PATH")]
    pub auth_token_file: Option<PathBuf>,

    /// Per-token permissions (a JSON file; see [`Permissions`]): the tokens the broker
    /// accepts, each with the subjects it may publish to and read and whether it may manage
    /// streams. Replaces `--auth-token`.
    #[arg(
        long = "permissions-file",
        env = "LAX_BROKER_PERMISSIONS_FILE",
        value_name = "PATH",
        value_parser = parse_permissions_file
    )]
    pub permissions: Option<Permissions>,

    /// NATS credentials file (user JWT and NKey seed, as `nsc` writes it).
    #[arg(long, env = "LAX_BROKER_NATS_CREDS", value_name = "PATH")]
    pub nats_creds: Option<PathBuf>,

    /// NATS authentication token.
    #[arg(
        long,
        env = "LAX_BROKER_NATS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub nats_token: Option<SecretString>,

    /// NATS user name (with `--nats-password`).
    #[arg(
        long,
        env = "LAX_BROKER_NATS_USER",
        value_name = "USER",
        requires = "nats_password"
    )]
    pub nats_user: Option<String>,

    /// NATS password (with `--nats-user`).
    #[arg(
        long,
        env = "LAX_BROKER_NATS_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true,
        requires = "nats_user"
    )]
    pub nats_password: Option<SecretString>,

    /// PEM file of the CA that signed the NATS servers' certificates; TLS to NATS becomes
    /// required.
    #[arg(long, env = "LAX_BROKER_NATS_TLS_CA", value_name = "PATH")]
    pub nats_tls_ca: Option<PathBuf>,

    /// PEM client certificate for NATS (mutual TLS, with `--nats-tls-key`).
    #[arg(
        long,
        env = "LAX_BROKER_NATS_TLS_CERT",
        value_name = "PATH",
        requires = "nats_tls_key"
    )]
    pub nats_tls_cert: Option<PathBuf>,

    /// PEM private key of `--nats-tls-cert`.
    #[arg(
        long,
        env = "LAX_BROKER_NATS_TLS_KEY",
        value_name = "PATH",
        requires = "nats_tls_cert"
    )]
    pub nats_tls_key: Option<PathBuf>,
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
            shared_nats_urls: Vec::new(),
            listen: SocketAddr::from(([0, 0, 0, 0], 50051)),
            metrics_listen: SocketAddr::from(([0, 0, 0, 0], 9090)),
            no_metrics: false,
            replicated_replicas: 3,
            auto_create: true,
            no_auto_create: false,
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

    /// The NATS URLs to connect to: `--nats-url`, else `LAX_NATS_URLS`, else
    /// `nats://localhost:4222`.
    pub fn resolved_nats_urls(&self) -> Vec<String> {
        if !self.nats_urls.is_empty() {
            self.nats_urls.clone()
        } else if !self.shared_nats_urls.is_empty() {
            self.shared_nats_urls.clone()
        } else {
            vec![DEFAULT_NATS_URL.to_owned()]
        }
    }

    /// Whether publishes that no stream captures create one.
    pub fn auto_create_streams(&self) -> bool {
        self.auto_create && !self.no_auto_create
    }

    /// Sets whether publishes that no stream captures create one.
    pub fn set_auto_create_streams(&mut self, enabled: bool) {
        self.auto_create = enabled;
        self.no_auto_create = !enabled;
    }

    /// Ack wait of a publish whose request sets no timeout.
    pub fn publish_timeout(&self) -> Duration {
        Duration::from_millis(self.publish_timeout_ms)
    }

    /// Checks values clap cannot check on its own (and those of a hand-built config), among
    /// them that the security settings go together and that the files they name are readable
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
        security::validate(self)
    }
}

/// Where the broker looks for NATS when told nothing.
pub const DEFAULT_NATS_URL: &str = "nats://localhost:4222";

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        config: BrokerConfig,
    }

    #[test]
    fn flags_parse_and_the_last_auto_create_flag_wins() {
        let cli = Cli::try_parse_from([
            "lax",
            "--nats-url",
            "nats://a:4222,nats://b:4222",
            "--listen",
            "127.0.0.1:0",
            "--replicated-replicas",
            "1",
            "--no-auto-create",
        ])
        .unwrap();
        assert_eq!(cli.config.nats_urls, ["nats://a:4222", "nats://b:4222"]);
        assert_eq!(cli.config.replicated_replicas, 1);
        assert!(!cli.config.auto_create_streams());

        let cli =
            Cli::try_parse_from(["lax", "--no-auto-create", "--auto-create-streams"]).unwrap();
        assert!(cli.config.auto_create_streams());
        assert_eq!(cli.config.resolved_nats_urls(), [DEFAULT_NATS_URL]);
    }

    #[test]
    fn bad_values_are_usage_errors() {
        assert!(Cli::try_parse_from(["lax", "--replicated-replicas", "0"]).is_err());
        assert!(Cli::try_parse_from(["lax", "--max-inflight", "0"]).is_err());
        assert!(Cli::try_parse_from(["lax", "--listen", "nowhere"]).is_err());
    }

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
    }

    #[test]
    fn security_flags_parse_and_pair_up() {
        let cli = Cli::try_parse_from([
            "lax",
            "--tls-cert",
            "cert.pem",
            "--tls-key",
            "key.pem",
            "--tls-client-ca",
            "ca.pem",
            "--auth-token",
            "t0ken",
            "--nats-user",
            "u",
            "--nats-password",
            "p",
            "--nats-tls-ca",
            "nats-ca.pem",
        ])
        .unwrap();
        let config = cli.config;
        assert_eq!(config.tls_cert.as_deref(), Some("cert.pem".as_ref()));
        assert_eq!(config.tls_client_ca.as_deref(), Some("ca.pem".as_ref()));
        assert_eq!(
            config.auth_token.as_ref().map(|t| t.expose()),
            Some("t0ken")
        );
        assert_eq!(config.nats_user.as_deref(), Some("u"));
        assert_eq!(config.nats_tls_ca.as_deref(), Some("nats-ca.pem".as_ref()));
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("t0ken") && !shown.contains("\"p\""),
            "{shown}"
        );

        for unpaired in [
            &["lax", "--tls-cert", "cert.pem"][..],
            &["lax", "--tls-client-ca", "ca.pem"],
            &["lax", "--nats-user", "u"],
            &["lax", "--nats-tls-key", "key.pem"],
            &["lax", "--auth-token", "t", "--auth-token-file", "token"],
        ] {
            assert!(Cli::try_parse_from(unpaired).is_err(), "{unpaired:?}");
        }
    }
}
