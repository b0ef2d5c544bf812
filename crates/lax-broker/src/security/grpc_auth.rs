//! The bearer token every BrokerService and StreamManager call must carry.

use std::{fmt, sync::Arc};

use subtle::ConstantTimeEq;
use tonic::{Request, Status, service::Interceptor};

use super::{Grant, Permissions, SecretString, read_file};
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
    if config.permissions.is_some() && config.tls_cert.is_none() {
        tracing::warn!(
            "per-token permissions are on but TLS is off: tokens travel in clear text; set \
             --tls-cert and --tls-key"
        );
    }
    Ok(match &config.permissions {
        Some(permissions) => RequireBearerToken::with_permissions(permissions.clone()),
        None => RequireBearerToken::new(token.as_ref()),
    })
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
/// `authorization: Bearer <token>` with an accepted token, and attaching the caller's
/// [`Grant`] to the calls it lets through: the token's grant from the permissions file, or
/// all access with a single token or none.
///
/// Tokens are compared in constant time (only their length can leak). `Debug` never shows
/// a token.
#[derive(Clone)]
pub(crate) struct RequireBearerToken {
    tokens: Tokens,
    everything: Arc<Grant>,
}

#[derive(Clone)]
enum Tokens {
    Open,
    Single(Arc<[u8]>),
    PerToken(Arc<Permissions>),
}

impl RequireBearerToken {
    /// A check for `token`, or a pass-through for `None`.
    pub(crate) fn new(token: Option<&SecretString>) -> Self {
        let tokens = match token {
            Some(t) => Tokens::Single(Arc::from(t.expose().as_bytes())),
            None => Tokens::Open,
        };
        RequireBearerToken {
            tokens,
            everything: Arc::new(Grant::everything()),
        }
    }

    /// A check for the tokens of `permissions`, each with its grant.
    pub(crate) fn with_permissions(permissions: Permissions) -> Self {
        RequireBearerToken {
            tokens: Tokens::PerToken(Arc::new(permissions)),
            everything: Arc::new(Grant::everything()),
        }
    }

    /// The token of an `authorization` header value (`Bearer <token>`).
    fn presented(header: &[u8]) -> Option<&[u8]> {
        const SCHEME: &[u8] = b"bearer ";
        let scheme = header.get(..SCHEME.len())?;
        // The scheme is case-insensitive (RFC 7235); the token is not.
        if !scheme.eq_ignore_ascii_case(SCHEME) {
            return None;
        }
        Some(header[SCHEME.len()..].trim_ascii_start())
    }

    /// The grant of the call's token, if it is accepted.
    fn grant(&self, header: Option<&[u8]>) -> Option<Arc<Grant>> {
        let presented = header.and_then(Self::presented);
        match &self.tokens {
            Tokens::Open => Some(Arc::clone(&self.everything)),
            Tokens::Single(expected) => presented
                .filter(|p| bool::from(p.ct_eq(expected)))
                .map(|_| Arc::clone(&self.everything)),
            Tokens::PerToken(permissions) => presented.and_then(|p| permissions.grant_for(p)),
        }
    }
}

impl fmt::Debug for RequireBearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tokens = match &self.tokens {
            Tokens::Open => "none".to_owned(),
            Tokens::Single(_) => "<redacted>".to_owned(),
            Tokens::PerToken(permissions) => format!("{permissions:?}"),
        };
        f.debug_struct("RequireBearerToken")
            .field("tokens", &tokens)
            .finish()
    }
}

impl Interceptor for RequireBearerToken {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        let grant = self
            .grant(header)
            .ok_or_else(|| Status::unauthenticated(REFUSAL))?;
        request.extensions_mut().insert(grant);
        Ok(request)
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
