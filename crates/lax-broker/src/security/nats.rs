//! Credentials and TLS for the broker's NATS connection.

use std::{error::Error as _, io};

use async_nats::{ConnectError, ConnectErrorKind, ConnectOptions};

use crate::{config::BrokerConfig, error::BrokerError};

/// Adds the configured NATS authentication (at most one method, see
/// [`validate`](super::validate), which also checked the files) and TLS settings to
/// `options`.
pub(crate) async fn apply_nats_security(
    mut options: ConnectOptions,
    config: &BrokerConfig,
) -> Result<ConnectOptions, BrokerError> {
    if let Some(path) = &config.nats_creds {
        options = options
            .credentials_file(path)
            .await
            .map_err(|e| BrokerError::Config(format!("--nats-creds {}: {e}", path.display())))?;
    }
    if let Some(token) = &config.nats_token {
        options = options.token(token.expose().to_owned());
    }
    if let (Some(user), Some(password)) = (&config.nats_user, &config.nats_password) {
        options = options.user_and_password(user.clone(), password.expose().to_owned());
    }
    if let Some(ca) = &config.nats_tls_ca {
        options = options.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&config.nats_tls_cert, &config.nats_tls_key) {
        options = options
            .add_client_certificate(cert.clone(), key.clone())
            .require_tls(true);
    }
    Ok(options)
}

/// Why NATS refused the broker, when retrying cannot help: the server rejected the
/// credentials, or the TLS handshake failed. `None` for errors that may pass (NATS not up
/// yet, a network problem).
pub(crate) fn refusal_reason(error: &ConnectError) -> Option<String> {
    match error.kind() {
        ConnectErrorKind::AuthorizationViolation | ConnectErrorKind::Authentication => {
            Some(format!(
                "NATS refused the broker's credentials ({error}); check --nats-creds, \
                 --nats-token or --nats-user/--nats-password"
            ))
        }
        ConnectErrorKind::Tls => Some(tls_failure(error)),
        // A failed handshake surfaces as an I/O error carrying rustls' refusal as invalid data
        // (unknown issuer, certificate required); an unreachable server never does.
        ConnectErrorKind::Io
            if error
                .source()
                .and_then(|source| source.downcast_ref::<io::Error>())
                .is_some_and(|io| io.kind() == io::ErrorKind::InvalidData) =>
        {
            Some(tls_failure(error))
        }
        _ => None,
    }
}

fn tls_failure(error: &ConnectError) -> String {
    format!(
        "TLS with NATS failed ({error}); check --nats-tls-ca and --nats-tls-cert/--nats-tls-key"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unusable_creds_file_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("user.creds");
        std::fs::write(&creds, "no JWT in here").unwrap();
        let mut config = BrokerConfig::new(["nats://127.0.0.1:4222"]);
        config.nats_creds = Some(creds);
        assert!(matches!(
            apply_nats_security(ConnectOptions::new(), &config).await,
            Err(BrokerError::Config(m)) if m.contains("--nats-creds")
        ));
    }

    #[test]
    fn only_credential_and_tls_failures_are_refusals() {
        let refused = ConnectError::new(ConnectErrorKind::AuthorizationViolation);
        let message = refusal_reason(&refused).expect("a refusal");
        assert!(
            message.contains("refused the broker's credentials"),
            "{message}"
        );
        assert!(refusal_reason(&ConnectError::new(ConnectErrorKind::Tls)).is_some());
        let handshake = io::Error::new(io::ErrorKind::InvalidData, "invalid peer certificate");
        let message = refusal_reason(&ConnectError::with_source(ConnectErrorKind::Io, handshake))
            .expect("a failed handshake is a refusal");
        assert!(message.contains("TLS with NATS failed"), "{message}");
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert!(
            refusal_reason(&ConnectError::with_source(ConnectErrorKind::Io, refused)).is_none()
        );
        for passing in [
            ConnectErrorKind::Io,
            ConnectErrorKind::TimedOut,
            ConnectErrorKind::Dns,
        ] {
            assert!(refusal_reason(&ConnectError::new(passing)).is_none());
        }
    }
}
