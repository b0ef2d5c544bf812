//! The bearer token every BrokerService and StreamManager call must carry.

use std::{fmt, sync::Arc};

use subtle::ConstantTimeEq;
use tonic::{Request, Status, service::Interceptor};

use super::{SecretString, read_file};
use crate::{config::BrokerConfig, error::BrokerError};

/// The message of the UNAUTHENTICATED status; the same for a missing and a wrong token, so
/// it tells a caller nothing about the token.
const REFUSAL: &str = "missing or wrong bearer token";

/// The configured token (from `--auth-token` or `--auth-token-file`) as a check; warns when
/// it would travel in clear text.
pub(crate) fn require_bearer_token(
    config: &BrokerConfig,
) -> Result<RequireBearerToken, BrokerError> {
    let token = load_token(config)?;
    if token.is_some() && config.tls_cert.is_none() {
        tracing::warn!(
            "a bearer token is required but TLS is off: the token travels in clear text; \
             set --tls-cert and --tls-key"
        );
    }
    Ok(RequireBearerToken::new(token.as_ref()))
}

/// The token from `--auth-token` or the file of `--auth-token-file`, checked.
pub(super) fn load_token(config: &BrokerConfig) -> Result<Option<SecretString>, BrokerError> {
    let token = match (&config.auth_token, &config.auth_token_file) {
        (Some(token), _) => Some(token.clone()),
        (None, Some(path)) => {
            let contents = read_file("--auth-token-file", path)?;
            let token = String::from_utf8(contents).map_err(|_| {
                BrokerError::Config(format!(
                    "--auth-token-file {}: the auth token is not UTF-8 text",
                    path.display()
                ))
            })?;
            Some(SecretString::new(token.trim()))
        }
        (None, None) => None,
    };
    if let Some(token) = &token {
        check_token(token.expose())?;
    }
    Ok(token)
}

/// A token must be sendable as a header value and unambiguous to compare: visible ASCII, no
/// spaces.
fn check_token(token: &str) -> Result<(), BrokerError> {
    if token.is_empty() {
        return Err(BrokerError::Config("the auth token is empty".into()));
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(BrokerError::Config(
            "the auth token must be visible ASCII characters without spaces".into(),
        ));
    }
    Ok(())
}

/// A tonic [`Interceptor`] refusing, with UNAUTHENTICATED, every call that does not carry
/// `authorization: Bearer <token>`; without a token it lets every call through.
///
/// Tokens are compared in constant time (only their length can leak). `Debug` never shows
/// the token.
#[derive(Clone)]
pub(crate) struct RequireBearerToken {
    expected: Option<Arc<[u8]>>,
}

impl RequireBearerToken {
    /// A check for `token`, or a pass-through for `None`.
    pub(crate) fn new(token: Option<&SecretString>) -> Self {
        RequireBearerToken {
            expected: token.map(|t| Arc::from(t.expose().as_bytes())),
        }
    }

    /// Whether an `authorization` header value carries the expected token.
    fn accepts(expected: &[u8], header: &[u8]) -> bool {
        const SCHEME: &[u8] = b"bearer ";
        let Some(scheme) = header.get(..SCHEME.len()) else {
            return false;
        };
        // The scheme is case-insensitive (RFC 7235); the token is not.
        if !scheme.eq_ignore_ascii_case(SCHEME) {
            return false;
        }
        let presented = header[SCHEME.len()..].trim_ascii_start();
        presented.ct_eq(expected).into()
    }
}

impl fmt::Debug for RequireBearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RequireBearerToken")
            .field("token", &self.expected.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Interceptor for RequireBearerToken {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let Some(expected) = &self.expected else {
            return Ok(request);
        };
        let authorized = request
            .metadata()
            .get("authorization")
            .is_some_and(|value| Self::accepts(expected, value.as_bytes()));
        if authorized {
            Ok(request)
        } else {
            Err(Status::unauthenticated(REFUSAL))
        }
    }
}

#[cfg(test)]
mod tests {
    use tonic::{Code, metadata::MetadataValue};

    use super::*;

    fn call(check: &mut RequireBearerToken, header: Option<&'static str>) -> Result<(), Code> {
        let mut request = Request::new(());
        if let Some(header) = header {
            request
                .metadata_mut()
                .insert("authorization", MetadataValue::from_static(header));
        }
        check.call(request).map(drop).map_err(|status| {
            assert_eq!(status.message(), REFUSAL);
            status.code()
        })
    }

    #[test]
    fn only_the_right_bearer_token_passes() {
        let mut check = RequireBearerToken::new(Some(&"t0ken".into()));
        assert_eq!(call(&mut check, Some("Bearer t0ken")), Ok(()));
        assert_eq!(call(&mut check, Some("bearer  t0ken")), Ok(()));
        for refused in [
            None,
            Some("Bearer wrong"),
            Some("Bearer t0ke"),
            Some("Bearer t0ken2"),
            Some("Bearer T0KEN"),
            Some("Basic t0ken"),
            Some("t0ken"),
            Some("Bearer"),
            Some("Bearer "),
        ] {
            assert_eq!(
                call(&mut check, refused),
                Err(Code::Unauthenticated),
                "{refused:?}"
            );
        }
        assert!(!format!("{check:?}").contains("t0ken"));
    }

    #[test]
    fn without_a_token_every_call_passes() {
        let mut check = RequireBearerToken::new(None);
        assert_eq!(call(&mut check, None), Ok(()));
        assert_eq!(call(&mut check, Some("Bearer anything")), Ok(()));
    }

    #[test]
    fn the_token_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "from-a-file\n").unwrap();
        let mut config = BrokerConfig::new(["nats://127.0.0.1:4222"]);
        config.auth_token_file = Some(path.clone());
        let mut check = require_bearer_token(&config).unwrap();
        assert_eq!(call(&mut check, Some("Bearer from-a-file")), Ok(()));

        std::fs::write(&path, "\n").unwrap();
        assert!(matches!(
            require_bearer_token(&config),
            Err(BrokerError::Config(m)) if m.contains("empty")
        ));
        dir.close().unwrap();

        assert!(matches!(
            require_bearer_token(&config),
            Err(BrokerError::Config(m)) if m.contains("cannot read --auth-token-file")
        ));
    }
}
