//! The client options every client command shares, as flags over `LAX_*` environment
//! variables.

use std::path::PathBuf;

use clap::{Args, ValueEnum};
use lax_client::{ClientOptions, LaxClient, NatsAuth, NatsTls, Tier};

use crate::failure::Failure;

/// The variable the `nats` CLI and NATS clients read the server URLs from; used when neither
/// `--nats-url` nor `LAX_NATS_URLS` is given.
const NATS_URL_ENV: &str = "NATS_URL";

/// Where the client connects and how it proves who it is. Every other client option comes
/// from its `LAX_*` environment variable (`LAX_PUBLISH_TIMEOUT`, `LAX_RETRY_ATTEMPTS`,
/// `LAX_NATS_AUTH__TOKEN`, …). The credential and TLS flags read the same variables as the
/// `nats` CLI.
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct ClientArgs {
    /// NATS server URLs, comma-separated; else `NATS_URL` [default: nats://localhost:4222].
    #[arg(
        long = "nats-url",
        env = "LAX_NATS_URLS",
        value_delimiter = ',',
        value_name = "URL[,URL...]",
        global = true
    )]
    pub(crate) nats_urls: Vec<String>,

    /// LAX broker addresses (`host:port` or `http(s)://host:port`), comma-separated
    /// [default: localhost:50051].
    #[arg(
        long = "broker-addr",
        env = "LAX_BROKER_ADDR",
        value_delimiter = ',',
        value_name = "ADDR[,ADDR...]",
        global = true
    )]
    pub(crate) broker_addrs: Vec<String>,

    /// Bearer token sent to the broker.
    #[arg(
        long,
        env = "LAX_BROKER_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        global = true
    )]
    pub(crate) broker_token: Option<String>,

    /// NATS credentials file (user JWT and NKey seed, as `nsc` writes it); replaces any
    /// `LAX_NATS_AUTH__*` setting.
    #[arg(long, env = "NATS_CREDS", value_name = "FILE", global = true)]
    pub(crate) creds: Option<PathBuf>,

    /// CA certificate (PEM) that signed the NATS server's certificate; turns TLS on.
    #[arg(long, env = "NATS_CA", value_name = "FILE", global = true)]
    pub(crate) tls_ca: Option<PathBuf>,

    /// Client certificate (PEM) for mutual TLS with NATS (with --tls-key).
    #[arg(
        long,
        env = "NATS_CERT",
        value_name = "FILE",
        requires = "tls_key",
        global = true
    )]
    pub(crate) tls_cert: Option<PathBuf>,

    /// Client key (PEM) for mutual TLS with NATS (with --tls-cert).
    #[arg(
        long,
        env = "NATS_KEY",
        value_name = "FILE",
        requires = "tls_cert",
        global = true
    )]
    pub(crate) tls_key: Option<PathBuf>,
}

impl ClientArgs {
    /// `LAX_*` environment variables, overridden by the flags, validated.
    pub(crate) fn options(&self) -> Result<ClientOptions, Failure> {
        let mut options = ClientOptions::from_env()?;
        if !self.nats_urls.is_empty() {
            options.nats_urls.clone_from(&self.nats_urls);
        } else if std::env::var_os("LAX_NATS_URLS").is_none()
            && let Some(urls) = std::env::var(NATS_URL_ENV)
                .ok()
                .filter(|urls| !urls.trim().is_empty())
        {
            options.nats_urls = urls.split(',').map(|url| url.trim().to_owned()).collect();
        }
        if let Some(creds) = &self.creds {
            options.nats_auth = NatsAuth::credentials_file(creds);
        }
        if self.tls_ca.is_some() || self.tls_cert.is_some() {
            let tls = options.nats_tls.get_or_insert_with(NatsTls::default);
            tls.required = true;
            if let Some(ca) = &self.tls_ca {
                tls.ca_file = Some(ca.clone());
            }
            if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
                tls.cert_file = Some(cert.clone());
                tls.key_file = Some(key.clone());
            }
        }
        if !self.broker_addrs.is_empty() {
            options.broker_addrs.clone_from(&self.broker_addrs);
        }
        if let Some(token) = &self.broker_token {
            options.broker_token = Some(token.clone());
        }
        options.validate()?;
        Ok(options)
    }
}

/// Connects a client, explaining an unreachable NATS server.
pub(crate) async fn connect(options: &ClientOptions) -> Result<LaxClient, Failure> {
    LaxClient::connect(options.clone())
        .await
        .map_err(|e| Failure::from_nats(e, options))
}

/// A storage tier on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum TierArg {
    /// JetStream memory storage, or core NATS without an ack.
    Memory,
    /// JetStream file storage, one replica.
    Persistent,
    /// JetStream file storage, replicated.
    Replicated,
}

impl From<TierArg> for Tier {
    fn from(tier: TierArg) -> Self {
        match tier {
            TierArg::Memory => Tier::Memory,
            TierArg::Persistent => Tier::Persistent,
            TierArg::Replicated => Tier::Replicated,
        }
    }
}

/// Parses `NAME=VALUE`.
pub(crate) fn parse_header(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => {
            Ok((name.trim().to_owned(), value.to_owned()))
        }
        _ => Err(format!("{text:?} is not NAME=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_as_name_equals_value() {
        assert_eq!(
            parse_header("trace-id=a=b").unwrap(),
            ("trace-id".to_owned(), "a=b".to_owned())
        );
        assert!(parse_header("novalue").is_err());
        assert!(parse_header("=x").is_err());
    }

    #[test]
    fn flags_override_the_defaults() {
        let args = ClientArgs {
            nats_urls: vec!["nats://a:4222".into(), "nats://b:4222".into()],
            broker_addrs: vec!["b:1".into()],
            broker_token: Some("t".into()),
            ..ClientArgs::default()
        };
        let options = args.options().unwrap();
        assert_eq!(options.nats_urls, ["nats://a:4222", "nats://b:4222"]);
        assert_eq!(options.broker_addrs, ["b:1"]);
        assert_eq!(options.broker_token.as_deref(), Some("t"));
    }

    #[test]
    fn creds_and_tls_flags_set_nats_auth_and_tls() {
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, "x").unwrap();
            path
        };
        let args = ClientArgs {
            creds: Some(file("user.creds")),
            tls_ca: Some(file("ca.pem")),
            tls_cert: Some(file("cert.pem")),
            tls_key: Some(file("key.pem")),
            ..ClientArgs::default()
        };
        let options = args.options().unwrap();
        assert_eq!(
            options.nats_auth.credentials_file.as_deref(),
            Some(dir.path().join("user.creds").as_path())
        );
        assert_eq!(
            options.nats_tls,
            Some(
                NatsTls::with_ca(dir.path().join("ca.pem"))
                    .with_client_cert(dir.path().join("cert.pem"), dir.path().join("key.pem"))
            )
        );

        let missing = ClientArgs {
            tls_ca: Some(dir.path().join("absent.pem")),
            ..ClientArgs::default()
        };
        let error = missing.options().unwrap_err().to_string();
        assert!(error.contains("absent.pem"), "{error}");
    }
}
