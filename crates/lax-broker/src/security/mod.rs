//! Running the broker securely: TLS and a bearer token on the gRPC port, credentials and TLS
//! toward NATS.
//!
//! [`validate`] checks which settings go together and that the files they name are
//! readable and hold what they should; the rest apply the settings when the broker starts.

mod grpc_auth;
mod grpc_tls;
mod nats;
mod permissions;
mod secret;

pub(crate) use grpc_auth::require_bearer_token;
pub(crate) use grpc_tls::with_tls;
pub(crate) use nats::{apply_nats_security, refusal_reason};
pub use permissions::Permissions;
pub(crate) use permissions::{Grant, deserialize_optional_permissions};
pub use secret::SecretString;

use std::path::Path;

use crate::{config::BrokerConfig, error::BrokerError};

/// Checks that the security settings go together, and loads the certificates and the token
/// to check them.
pub(crate) fn validate(config: &BrokerConfig) -> Result<(), BrokerError> {
    let bad = |what: &str| Err(BrokerError::Config(what.to_owned()));
    if config.tls_cert.is_some() != config.tls_key.is_some() {
        return bad("--tls-cert and --tls-key go together");
    }
    if config.tls_client_ca.is_some() && config.tls_cert.is_none() {
        return bad("--tls-client-ca needs --tls-cert and --tls-key (mutual TLS is part of TLS)");
    }
    if config.auth_token.is_some() && config.auth_token_file.is_some() {
        return bad("give --auth-token or --auth-token-file, not both");
    }
    if config.permissions.is_some()
        && (config.auth_token.is_some() || config.auth_token_file.is_some())
    {
        return bad(
            "give --permissions-file or a single --auth-token(-file), not both: the \
             permissions file lists every token the broker accepts",
        );
    }

    let nats_methods: Vec<&str> = [
        ("--nats-creds", config.nats_creds.is_some()),
        ("--nats-token", config.nats_token.is_some()),
        (
            "--nats-user/--nats-password",
            config.nats_user.is_some() || config.nats_password.is_some(),
        ),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect();
    if nats_methods.len() > 1 {
        return Err(BrokerError::Config(format!(
            "give at most one NATS authentication method, not {}",
            nats_methods.join(" and ")
        )));
    }
    if config.nats_user.is_some() != config.nats_password.is_some() {
        return bad("--nats-user and --nats-password go together");
    }
    if config.nats_user.as_deref() == Some("") {
        return bad("--nats-user is empty");
    }
    if config
        .nats_token
        .as_ref()
        .is_some_and(|t| t.expose().is_empty())
    {
        return bad("--nats-token is empty");
    }
    if config.nats_tls_cert.is_some() != config.nats_tls_key.is_some() {
        return bad("--nats-tls-cert and --nats-tls-key go together");
    }
    for (flag, path) in [
        ("--tls-cert", &config.tls_cert),
        ("--tls-key", &config.tls_key),
        ("--tls-client-ca", &config.tls_client_ca),
        ("--auth-token-file", &config.auth_token_file),
        ("--nats-creds", &config.nats_creds),
        ("--nats-tls-ca", &config.nats_tls_ca),
        ("--nats-tls-cert", &config.nats_tls_cert),
        ("--nats-tls-key", &config.nats_tls_key),
    ] {
        if let Some(path) = path {
            std::fs::File::open(path).map_err(|e| unreadable(flag, path, &e))?;
        }
    }
    // Loaded now, and again when serving, so that a bad file stops the start before anything
    // connects.
    grpc_tls::with_tls(tonic::transport::Server::builder(), config)?;
    grpc_auth::load_token(config)?;
    Ok(())
}

/// The grant the authentication interceptor attached to a call; a call without one (which
/// the interceptor never lets through) is refused rather than let through.
pub(crate) fn grant_of<T>(
    request: &tonic::Request<T>,
) -> Result<std::sync::Arc<Grant>, tonic::Status> {
    request
        .extensions()
        .get::<std::sync::Arc<Grant>>()
        .cloned()
        .ok_or_else(|| tonic::Status::permission_denied("the call carries no verified caller"))
}

fn unreadable(flag: &str, path: &Path, error: &std::io::Error) -> BrokerError {
    BrokerError::Config(format!("cannot read {flag} {}: {error}", path.display()))
}

/// Reads a file named by option `flag`, naming both in the error.
fn read_file(flag: &str, path: &Path) -> Result<Vec<u8>, BrokerError> {
    std::fs::read(path).map_err(|e| unreadable(flag, path, &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> BrokerConfig {
        BrokerConfig::new(["nats://127.0.0.1:4222"])
    }

    fn refusal(config: &BrokerConfig) -> String {
        match validate(config) {
            Err(BrokerError::Config(message)) => message,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn tls_files_go_together() {
        let pki = lax_testkit::TestPki::generate().unwrap();
        let mut c = config();
        c.tls_cert = Some(pki.server_cert().to_owned());
        assert!(refusal(&c).contains("--tls-key"));
        c.tls_key = Some(pki.server_key().to_owned());
        assert!(validate(&c).is_ok());
        c.tls_client_ca = Some(pki.ca_cert().to_owned());
        assert!(validate(&c).is_ok());

        let mut c = config();
        c.tls_client_ca = Some("ca.pem".into());
        assert!(refusal(&c).contains("--tls-client-ca needs --tls-cert"));
    }

    #[test]
    fn one_bearer_token_source_with_a_usable_token() {
        let mut c = config();
        c.auth_token = Some("t0ken".into());
        assert!(validate(&c).is_ok());
        c.auth_token_file = Some("token.txt".into());
        assert!(refusal(&c).contains("not both"));

        for bad in ["", "with space", "tab\there", "naïve"] {
            let mut c = config();
            c.auth_token = Some(bad.into());
            assert!(refusal(&c).contains("auth token"), "{bad:?}");
        }
    }

    #[test]
    fn at_most_one_nats_auth_method() {
        let mut c = config();
        c.nats_token = Some("t".into());
        c.nats_creds = Some("user.creds".into());
        let message = refusal(&c);
        assert!(
            message.contains("--nats-creds and --nats-token"),
            "{message}"
        );

        let mut c = config();
        c.nats_user = Some("u".into());
        assert!(refusal(&c).contains("go together"));
        c.nats_password = Some("p".into());
        assert!(validate(&c).is_ok());
        c.nats_token = Some("t".into());
        assert!(refusal(&c).contains("at most one"));

        let mut c = config();
        c.nats_tls_key = Some("key.pem".into());
        assert!(refusal(&c).contains("--nats-tls-cert and --nats-tls-key"));
    }

    #[test]
    fn unreadable_files_name_the_flag_and_the_path() {
        let mut c = config();
        c.nats_tls_ca = Some("/nonexistent/ca.pem".into());
        let message = refusal(&c);
        assert!(
            message.contains("cannot read --nats-tls-ca /nonexistent/ca.pem"),
            "{message}"
        );
        let mut c = config();
        c.auth_token_file = Some("/nonexistent/token".into());
        assert!(refusal(&c).contains("--auth-token-file"));
    }
}
