//! The client options every client command shares, as flags over `LAX_*` environment
//! variables.

use clap::{Args, ValueEnum};
use lax_client::{ClientOptions, LaxClient, Tier};

use crate::failure::Failure;

/// Where the client connects. Every other client option comes from its `LAX_*` environment
/// variable (`LAX_PUBLISH_TIMEOUT`, `LAX_RETRY_ATTEMPTS`, `LAX_NATS_AUTH__TOKEN`, …).
#[derive(Debug, Clone, Default, Args)]
pub(crate) struct ClientArgs {
    /// NATS server URLs, comma-separated [default: nats://localhost:4222].
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
}

impl ClientArgs {
    /// `LAX_*` environment variables, overridden by the flags, validated.
    pub(crate) fn options(&self) -> Result<ClientOptions, Failure> {
        let mut options = ClientOptions::from_env()?;
        if !self.nats_urls.is_empty() {
            options.nats_urls.clone_from(&self.nats_urls);
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
        };
        let options = args.options().unwrap();
        assert_eq!(options.nats_urls, ["nats://a:4222", "nats://b:4222"]);
        assert_eq!(options.broker_addrs, ["b:1"]);
        assert_eq!(options.broker_token.as_deref(), Some("t"));
    }
}
