//! The broker's command line (feature `cli`): [`BrokerArgs`], the flags and `LAX_BROKER_*`
//! environment variables of `lax broker` and the `lax-broker` binary, turned into a
//! [`BrokerConfig`]; [`init_logging`] and [`shutdown_signal`], which both binaries share.

use std::{net::SocketAddr, path::PathBuf};

use clap::{ArgAction, Args};
use tracing_subscriber::{Registry, layer::Identity};

use crate::{BrokerConfig, Permissions, SecretString};

fn parse_permissions_file(path: &str) -> Result<Permissions, String> {
    Permissions::from_file(path.as_ref()).map_err(|e| e.to_string())
}

/// The broker's flags, each with its environment variable; `BrokerConfig::from` turns them
/// into the config, and [`BrokerConfig::validate`] checks what clap cannot.
#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
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

    /// OTLP/gRPC endpoint of an OpenTelemetry collector (e.g. http://otel-collector:4317):
    /// the broker's spans (those `RUST_LOG` enables) are exported there in batches, the last
    /// ones when the broker stops. Needs a build with the `opentelemetry` feature.
    #[arg(long, env = "LAX_BROKER_OTLP_ENDPOINT", value_name = "URL")]
    pub otlp_endpoint: Option<String>,
}

impl From<BrokerArgs> for BrokerConfig {
    fn from(args: BrokerArgs) -> Self {
        let nats_urls = if args.nats_urls.is_empty() {
            args.shared_nats_urls
        } else {
            args.nats_urls
        };
        BrokerConfig {
            auto_create: args.auto_create && !args.no_auto_create,
            listen: args.listen,
            metrics_listen: args.metrics_listen,
            no_metrics: args.no_metrics,
            replicated_replicas: args.replicated_replicas,
            max_inflight: args.max_inflight,
            stream_window: args.stream_window,
            batch_window: args.batch_window,
            publish_timeout_ms: args.publish_timeout_ms,
            nats_connect_timeout_ms: args.nats_connect_timeout_ms,
            nats_reconnect_max_delay_ms: args.nats_reconnect_max_delay_ms,
            stream_cache_ttl_ms: args.stream_cache_ttl_ms,
            max_request_bytes: args.max_request_bytes,
            max_concurrent_requests: args.max_concurrent_requests,
            subscriber_max_inflight: args.subscriber_max_inflight,
            subscriber_max_inflight_bytes: args.subscriber_max_inflight_bytes,
            consume_max_inflight: args.consume_max_inflight,
            consume_max_inflight_bytes: args.consume_max_inflight_bytes,
            max_lease_ms: args.max_lease_ms,
            shutdown_timeout_ms: args.shutdown_timeout_ms,
            tls_cert: args.tls_cert,
            tls_key: args.tls_key,
            tls_client_ca: args.tls_client_ca,
            auth_token: args.auth_token,
            auth_token_file: args.auth_token_file,
            permissions: args.permissions,
            nats_creds: args.nats_creds,
            nats_token: args.nats_token,
            nats_user: args.nats_user,
            nats_password: args.nats_password,
            nats_tls_ca: args.nats_tls_ca,
            nats_tls_cert: args.nats_tls_cert,
            nats_tls_key: args.nats_tls_key,
            otlp_endpoint: args.otlp_endpoint,
            ..BrokerConfig::new(nats_urls)
        }
    }
}

/// Sends `tracing` logs to stderr, filtered by `RUST_LOG` or else `default_filter`, in colour
/// only on a terminal and never when `NO_COLOR` is set (<https://no-color.org>).
pub fn init_logging(default_filter: &str) {
    install_logging(default_filter, None::<Identity>);
}

/// What [`init_broker_logging`] set up; [`shutdown`](Self::shutdown) it after the broker
/// stops.
#[derive(Debug)]
pub struct BrokerLogging {
    #[cfg(feature = "opentelemetry")]
    otlp: Option<lax_core::trace::OtlpTracing>,
}

impl BrokerLogging {
    /// Sends the spans not yet exported to the OTLP collector, if there is one.
    pub async fn shutdown(self) {
        #[cfg(feature = "opentelemetry")]
        if let Some(otlp) = self.otlp {
            match otlp.shutdown().await {
                Ok(()) => tracing::info!(endpoint = otlp.endpoint(), "spans exported"),
                Err(error) => tracing::warn!(%error, "the last spans were not exported"),
            }
        }
    }
}

/// [`init_logging`] for the broker's command lines: with
/// [`otlp_endpoint`](BrokerConfig::otlp_endpoint) set, the spans the filter enables are also
/// exported to that OpenTelemetry collector. Call it inside a Tokio runtime.
///
/// # Errors
///
/// [`BrokerError::Config`](crate::BrokerError::Config) when the endpoint is unusable, or set
/// in a build without the `opentelemetry` feature.
pub fn init_broker_logging(
    default_filter: &str,
    config: &BrokerConfig,
) -> Result<BrokerLogging, crate::BrokerError> {
    #[cfg(feature = "opentelemetry")]
    {
        let otlp = config.otlp_tracing()?;
        install_logging(default_filter, otlp.as_ref().map(|otlp| otlp.layer()));
        if let Some(otlp) = &otlp {
            tracing::info!(endpoint = otlp.endpoint(), "exporting spans over OTLP");
        }
        Ok(BrokerLogging { otlp })
    }
    #[cfg(not(feature = "opentelemetry"))]
    {
        if let Some(endpoint) = &config.otlp_endpoint {
            crate::config::check_otlp_endpoint(endpoint)?;
        }
        install_logging(default_filter, None::<Identity>);
        Ok(BrokerLogging {})
    }
}

/// Installs the subscriber: `export` (spans to a collector) and the stderr log, each under
/// the filter.
///
/// At `info` and quieter the log takes events only, not spans: the fmt layer formats the
/// fields of every span it records, for context a line might print, and one span per
/// message cost the broker about a sixth of its CPU per publish (`perf`, 256 in flight)
/// for context no line at that level printed. With no export either, the per-message spans
/// are then disabled altogether. `RUST_LOG=debug` (or finer) records them again, so debug
/// lines carry their span context.
fn install_logging<L>(default_filter: &str, export: Option<L>)
where
    L: tracing_subscriber::Layer<Registry> + Send + Sync + 'static,
{
    use std::io::IsTerminal as _;
    use tracing_subscriber::{
        EnvFilter, Layer as _,
        filter::{FilterExt as _, LevelFilter, filter_fn},
        layer::SubscriberExt as _,
        util::SubscriberInitExt as _,
    };
    let filter =
        || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let log_filter = filter();
    let verbose = log_filter
        .max_level_hint()
        .is_none_or(|level| level >= LevelFilter::DEBUG);
    // A list rather than an `Option` layer: a missing export must not keep spans enabled.
    let mut layers: Vec<Box<dyn tracing_subscriber::Layer<Registry> + Send + Sync>> = Vec::new();
    if let Some(export) = export {
        layers.push(export.with_filter(filter()).boxed());
    }
    layers.push(
        tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(use_color(
                std::io::stderr().is_terminal(),
                std::env::var_os("NO_COLOR"),
            ))
            .with_filter(log_filter.and(filter_fn(move |meta| verbose || meta.is_event())))
            .boxed(),
    );
    tracing_subscriber::registry().with(layers).init();
}

/// Colours only on a terminal, and not when `NO_COLOR` is set to anything but "".
fn use_color(is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    is_terminal && no_color.is_none_or(|value| value.is_empty())
}

/// Completes on Ctrl-C or SIGTERM.
///
/// Both handlers are installed when this is called, not when the future is first polled:
/// call it before the server starts, so a SIGTERM that comes as soon as the server answers
/// is a clean stop, not the default action that kills the process.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};
    let listen = |kind: SignalKind, name: &'static str| {
        let installed = signal(kind);
        async move {
            match installed {
                Ok(mut signal) => {
                    signal.recv().await;
                    tracing::info!("{name} received");
                }
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for {name}");
                    std::future::pending::<()>().await;
                }
            }
        }
    };
    let ctrl_c = listen(SignalKind::interrupt(), "Ctrl-C");
    let terminate = listen(SignalKind::terminate(), "SIGTERM");
    async move {
        tokio::select! {
            () = ctrl_c => {}
            () = terminate => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{BrokerError, DEFAULT_NATS_URL};

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: BrokerArgs,
    }

    fn parse(args: &[&str]) -> Result<BrokerConfig, clap::Error> {
        Cli::try_parse_from(args).map(|cli| cli.args.into())
    }

    #[test]
    fn no_color_turns_colours_off_even_on_a_terminal() {
        assert!(use_color(true, None));
        assert!(
            use_color(true, Some("".into())),
            "an empty NO_COLOR is unset"
        );
        assert!(!use_color(true, Some("1".into())));
        assert!(!use_color(false, None));
    }

    #[test]
    fn flags_parse_and_the_last_auto_create_flag_wins() {
        let config = parse(&[
            "lax",
            "--nats-url",
            "nats://a:4222,nats://b:4222",
            "--listen",
            "127.0.0.1:0",
            "--replicated-replicas",
            "1",
            "--max-inflight",
            "9",
            "--no-auto-create",
        ])
        .unwrap();
        assert_eq!(config.nats_urls, ["nats://a:4222", "nats://b:4222"]);
        assert_eq!(config.replicated_replicas, 1);
        assert_eq!(config.max_inflight, 9);
        assert_eq!(config.listen, "127.0.0.1:0".parse().unwrap());
        assert!(!config.auto_create_streams());

        let config = parse(&["lax", "--no-auto-create", "--auto-create-streams"]).unwrap();
        assert!(config.auto_create_streams());
        assert_eq!(config.resolved_nats_urls(), [DEFAULT_NATS_URL]);
    }

    #[test]
    fn bad_values_are_usage_errors() {
        assert!(parse(&["lax", "--replicated-replicas", "0"]).is_err());
        assert!(parse(&["lax", "--max-inflight", "0"]).is_err());
        assert!(parse(&["lax", "--listen", "nowhere"]).is_err());
    }

    #[test]
    fn security_flags_parse_and_pair_up() {
        let config = parse(&[
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
        assert!(
            matches!(config.validate(), Err(BrokerError::Config(_))),
            "files are absent"
        );

        for unpaired in [
            &["lax", "--tls-cert", "cert.pem"][..],
            &["lax", "--tls-client-ca", "ca.pem"],
            &["lax", "--nats-user", "u"],
            &["lax", "--nats-tls-key", "key.pem"],
            &["lax", "--auth-token", "t", "--auth-token-file", "token"],
        ] {
            assert!(parse(unpaired).is_err(), "{unpaired:?}");
        }
    }
}
