//! Throwaway certificates for TLS tests (feature `tls`).
//!
//! [`TestPki::generate`] makes a CA, a server certificate for `127.0.0.1` and `localhost`, and
//! a client certificate, all signed by that CA, and writes them as PEM files into a temporary
//! directory that lives as long as the [`TestPki`]. Hand the paths to `nats-server`
//! (`--tlscert`, `--tlskey`, `--tlscacert`), to the LAX broker, or to a client.
//!
//! ```
//! use lax_testkit::TestPki;
//!
//! let pki = TestPki::generate()?;
//! let ca = std::fs::read_to_string(pki.ca_cert())?;
//! assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
//! assert!(pki.server_key().is_file() && pki.client_cert().is_file());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use tempfile::TempDir;

use crate::TestkitError;

/// The names the server certificate is valid for.
pub const SERVER_NAMES: [&str; 2] = ["127.0.0.1", "localhost"];

/// A CA with one server and one client certificate, as PEM files in a temporary directory
/// (removed on drop).
#[derive(Debug)]
pub struct TestPki {
    dir: TempDir,
    ca_cert: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl TestPki {
    /// Generates a fresh CA, a server certificate for [`SERVER_NAMES`] (common name
    /// `nats-server`) and a client certificate (common name `lax-client`, extended key usage
    /// client authentication), and writes them out.
    ///
    /// # Errors
    ///
    /// [`TestkitError::Certificate`] when generating or signing fails,
    /// [`TestkitError::Io`] when the files cannot be written.
    pub fn generate() -> Result<Self, TestkitError> {
        let failed = |context: &str| {
            let context = context.to_owned();
            move |source: rcgen::Error| TestkitError::Certificate {
                context,
                source: Box::new(source),
            }
        };

        let ca_key = KeyPair::generate().map_err(failed("generating the CA key"))?;
        let mut ca_params =
            CertificateParams::new(Vec::<String>::new()).map_err(failed("CA parameters"))?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "LAX test CA");
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .map_err(failed("self-signing the CA certificate"))?;
        let issuer = Issuer::new(ca_params, ca_key);

        let server_key = KeyPair::generate().map_err(failed("generating the server key"))?;
        let mut server_params = CertificateParams::new(SERVER_NAMES.map(str::to_owned).to_vec())
            .map_err(failed("server certificate parameters"))?;
        server_params
            .distinguished_name
            .push(DnType::CommonName, "nats-server");
        let server_cert = server_params
            .signed_by(&server_key, &issuer)
            .map_err(failed("signing the server certificate"))?;

        let client_key = KeyPair::generate().map_err(failed("generating the client key"))?;
        let mut client_params = CertificateParams::new(Vec::<String>::new())
            .map_err(failed("client certificate parameters"))?;
        client_params
            .distinguished_name
            .push(DnType::CommonName, "lax-client");
        client_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client_cert = client_params
            .signed_by(&client_key, &issuer)
            .map_err(failed("signing the client certificate"))?;

        let dir = tempfile::Builder::new()
            .prefix("lax-test-pki-")
            .tempdir()
            .map_err(|e| TestkitError::io("creating the certificate directory", e))?;
        let pki = TestPki {
            ca_cert: dir.path().join("ca.pem"),
            server_cert: dir.path().join("server.pem"),
            server_key: dir.path().join("server-key.pem"),
            client_cert: dir.path().join("client.pem"),
            client_key: dir.path().join("client-key.pem"),
            dir,
        };
        for (path, pem) in [
            (&pki.ca_cert, ca_cert.pem()),
            (&pki.server_cert, server_cert.pem()),
            (&pki.server_key, server_key.serialize_pem()),
            (&pki.client_cert, client_cert.pem()),
            (&pki.client_key, client_key.serialize_pem()),
        ] {
            std::fs::write(path, pem)
                .map_err(|e| TestkitError::io(format!("writing {}", path.display()), e))?;
        }
        Ok(pki)
    }

    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// PEM certificate of the CA that signed the others.
    pub fn ca_cert(&self) -> &Path {
        &self.ca_cert
    }

    /// PEM server certificate, valid for [`SERVER_NAMES`].
    pub fn server_cert(&self) -> &Path {
        &self.server_cert
    }

    /// PEM private key of [`Self::server_cert`].
    pub fn server_key(&self) -> &Path {
        &self.server_key
    }

    /// PEM client certificate, for mutual TLS.
    pub fn client_cert(&self) -> &Path {
        &self.client_cert
    }

    /// PEM private key of [`Self::client_cert`].
    pub fn client_key(&self) -> &Path {
        &self.client_key
    }

    /// `nats-server` flags that serve TLS with [`Self::server_cert`]; with `verify_clients`,
    /// every client must also present a certificate signed by the CA (mutual TLS).
    pub fn nats_server_args(&self, verify_clients: bool) -> Vec<String> {
        let path = |p: &Path| p.display().to_string();
        let mut args = vec![
            if verify_clients {
                "--tlsverify"
            } else {
                "--tls"
            }
            .to_owned(),
            "--tlscert".to_owned(),
            path(&self.server_cert),
            "--tlskey".to_owned(),
            path(&self.server_key),
        ];
        if verify_clients {
            args.extend(["--tlscacert".to_owned(), path(&self.ca_cert)]);
        }
        args
    }
}
