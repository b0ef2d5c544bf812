//! TLS, and optionally mutual TLS, on the gRPC port.

use std::{error::Error as _, path::Path, time::Duration};

use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};

use super::read_file;
use crate::{config::BrokerConfig, error::BrokerError};

/// Longest TLS handshake; a client that stalls its handshake is dropped instead of holding a
/// slot.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `server` serving TLS when `--tls-cert`/`--tls-key` are set (requiring client certificates
/// signed by `--tls-client-ca` when that is set), else `server` unchanged.
pub(crate) fn with_tls<L>(
    server: Server<L>,
    config: &BrokerConfig,
) -> Result<Server<L>, BrokerError> {
    let Some(tls) = server_tls_config(config)? else {
        return Ok(server);
    };
    server.tls_config(tls).map_err(|e| {
        // tonic's own message is generic ("transport error"); the cause is in the chain.
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        BrokerError::Config(format!("gRPC TLS setup failed: {message}"))
    })
}

fn server_tls_config(config: &BrokerConfig) -> Result<Option<ServerTlsConfig>, BrokerError> {
    let (cert, key) = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => (cert, key),
        (None, None) => return Ok(None),
        _ => {
            return Err(BrokerError::Config(
                "--tls-cert and --tls-key go together".into(),
            ));
        }
    };
    let cert = read_pem("--tls-cert", cert, "CERTIFICATE-----")?;
    let key = read_pem("--tls-key", key, "PRIVATE KEY-----")?;
    let mut tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(cert, key))
        .timeout(HANDSHAKE_TIMEOUT);
    if let Some(ca) = &config.tls_client_ca {
        let ca = read_pem("--tls-client-ca", ca, "CERTIFICATE-----")?;
        tls = tls.client_ca_root(Certificate::from_pem(ca));
    }
    Ok(Some(tls))
}

/// Reads a PEM file and checks it holds a block whose label ends with `label_end`, so that a
/// wrong file is named at start-up rather than failing every handshake.
fn read_pem(flag: &str, path: &Path, label_end: &str) -> Result<Vec<u8>, BrokerError> {
    let pem = read_file(flag, path)?;
    let holds_block = String::from_utf8_lossy(&pem)
        .lines()
        .any(|line| line.starts_with("-----BEGIN ") && line.trim_end().ends_with(label_end));
    if !holds_block {
        let what = if label_end.contains("KEY") {
            "private key"
        } else {
            "certificate"
        };
        return Err(BrokerError::Config(format!(
            "{flag} {} holds no PEM {what}",
            path.display()
        )));
    }
    Ok(pem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_without_pem_blocks_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, "not a certificate").unwrap();
        std::fs::write(
            &key,
            "-----BEGIN PRIVATE KEY-----\n-----END PRIVATE KEY-----\n",
        )
        .unwrap();
        let mut config = BrokerConfig::new(["nats://127.0.0.1:4222"]);
        config.tls_cert = Some(cert.clone());
        config.tls_key = Some(key.clone());
        let Err(BrokerError::Config(message)) = server_tls_config(&config) else {
            panic!("a file without a certificate is refused");
        };
        assert!(
            message.contains("--tls-cert") && message.contains("holds no PEM certificate"),
            "{message}"
        );

        // Swapped files: the key file holds no key.
        config.tls_cert = Some(key);
        config.tls_key = Some(cert);
        assert!(server_tls_config(&config).is_err());
    }

    #[test]
    fn no_tls_without_a_certificate() {
        let config = BrokerConfig::new(["nats://127.0.0.1:4222"]);
        assert!(server_tls_config(&config).unwrap().is_none());
    }
}
