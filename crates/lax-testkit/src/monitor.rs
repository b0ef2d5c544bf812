//! nats-server's monitoring endpoints (`/healthz`, `/jsz`, `/varz`, ...), over the minimal
//! HTTP/1.0 client of `lax-nats-server`.

use std::time::Duration;

pub use lax_nats_server::monitor::{HttpError, HttpResponse, http_get};

use crate::TestkitError;

/// How long one monitoring request may take, connect to last byte.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// [`http_get`] and parse the body as JSON, failing on a non-200 status.
///
/// # Errors
///
/// [`TestkitError::Http`] when the request fails or the status is not 200;
/// [`TestkitError::Json`] for a body that is not JSON.
pub async fn get_json(
    base: &str,
    path: &str,
    timeout: Duration,
) -> Result<serde_json::Value, TestkitError> {
    let url = format!("{}{}", base.trim_end_matches('/'), path);
    let response = http_get(base, path, timeout).await?;
    if response.status != 200 {
        return Err(TestkitError::Http {
            url,
            message: format!("status {}: {}", response.status, response.body.trim()),
        });
    }
    response
        .json()
        .map_err(|source| TestkitError::Json { url, source })
}
