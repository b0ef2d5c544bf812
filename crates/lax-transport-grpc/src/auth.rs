//! The bearer token on every call.

use std::fmt;

use lax_core::Error;
use tonic::{
    Request, Status,
    metadata::{AsciiMetadataValue, MetadataValue},
    service::Interceptor,
};

/// A tonic [`Interceptor`] that adds `authorization: Bearer <token>` to every call, or
/// nothing when there is no token.
///
/// The header value is marked sensitive, and `Debug` never shows the token.
#[derive(Clone, Default)]
pub struct BearerAuth {
    header: Option<AsciiMetadataValue>,
}

impl BearerAuth {
    /// An interceptor for `token` (`None`: add nothing). A token that cannot be a header
    /// value (control characters, non-ASCII) is a [`Config`](lax_core::ErrorKind::Config)
    /// error.
    pub fn new(token: Option<&str>) -> Result<Self, Error> {
        let header = token
            .map(|token| {
                if token.is_empty() {
                    return Err(Error::config("auth_token is empty"));
                }
                let mut value = MetadataValue::try_from(format!("Bearer {token}"))
                    .map_err(|_| Error::config("auth_token is not a valid header value"))?;
                value.set_sensitive(true);
                Ok(value)
            })
            .transpose()?;
        Ok(BearerAuth { header })
    }
}

impl fmt::Debug for BearerAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BearerAuth")
            .field("token", &self.header.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(header) = &self.header {
            request
                .metadata_mut()
                .insert("authorization", header.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_the_header_only_with_a_token() {
        let mut auth = BearerAuth::new(Some("t0ken")).unwrap();
        let request = auth.call(Request::new(())).unwrap();
        assert_eq!(
            request.metadata().get("authorization").unwrap(),
            "Bearer t0ken"
        );
        assert!(!format!("{auth:?}").contains("t0ken"));

        let mut none = BearerAuth::new(None).unwrap();
        assert!(
            none.call(Request::new(()))
                .unwrap()
                .metadata()
                .get("authorization")
                .is_none()
        );
    }

    #[test]
    fn refuses_tokens_that_cannot_be_headers() {
        assert!(BearerAuth::new(Some("")).is_err());
        assert!(BearerAuth::new(Some("line\nbreak")).is_err());
    }
}
