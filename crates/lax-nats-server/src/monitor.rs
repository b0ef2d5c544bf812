//! A minimal HTTP/1.0 GET client for nats-server's monitoring endpoints (`/healthz`, `/jsz`,
//! `/varz`, ...), written over a tokio `TcpStream` so that supervising a server needs no HTTP
//! dependency.

use std::{error::Error as StdError, fmt, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

/// How long one monitoring request may take, connect to last byte.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(5);

/// Monitoring answers are small; anything larger is cut off as an error.
const MAX_RESPONSE_BYTES: u64 = 16 * 1024 * 1024;

/// A monitoring endpoint's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponse {
    /// The HTTP status code.
    pub status: u16,
    /// The body, decoded as UTF-8 (lossily).
    pub body: String,
}

impl HttpResponse {
    /// Parses the body as JSON.
    ///
    /// # Errors
    ///
    /// When the body is not JSON.
    pub fn json(&self) -> Result<serde_json::Value, serde_json::Error> {
        serde_json::from_str(&self.body)
    }
}

/// A monitoring request that failed: a bad URL, a connection or I/O failure, a timeout or a
/// malformed answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError {
    /// The URL requested.
    pub url: String,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "GET {}: {}", self.url, self.message)
    }
}

impl StdError for HttpError {}

/// Sends `GET <path>` to `base` (`http://host:port`, a server's monitoring address) over
/// HTTP/1.0 and reads the whole answer, all within `timeout`.
///
/// # Errors
///
/// [`HttpError`] on a bad URL, a connection or I/O failure, a timeout or a malformed answer.
/// A non-200 status is *not* an error: check [`HttpResponse::status`].
pub async fn http_get(
    base: &str,
    path: &str,
    timeout: Duration,
) -> Result<HttpResponse, HttpError> {
    let url = format!("{}{}", base.trim_end_matches('/'), path);
    let http_err = |message: String| HttpError {
        url: url.clone(),
        message,
    };
    let authority = base
        .strip_prefix("http://")
        .ok_or_else(|| http_err("only http:// URLs are supported".to_owned()))?
        .trim_end_matches('/');
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };

    let exchange = async {
        let mut stream = TcpStream::connect(authority).await?;
        let request = format!(
            "GET {path} HTTP/1.0\r\nHost: {authority}\r\nAccept: application/json\r\n\
             Connection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await?;
        let mut raw = Vec::new();
        stream
            .take(MAX_RESPONSE_BYTES)
            .read_to_end(&mut raw)
            .await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(raw)) => raw,
        Ok(Err(e)) => return Err(http_err(e.to_string())),
        Err(_) => return Err(http_err(format!("no complete answer within {timeout:?}"))),
    };
    parse_response(&raw).map_err(http_err)
}

fn parse_response(raw: &[u8]) -> Result<HttpResponse, String> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("incomplete HTTP answer ({} bytes)", raw.len()))?;
    let head = String::from_utf8_lossy(&raw[..split]);
    let body = String::from_utf8_lossy(&raw[split + 4..]).into_owned();
    let status_line = head.lines().next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/") {
        return Err(format!("not an HTTP answer: {status_line:?}"));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("bad status line: {status_line:?}"))?;
    Ok(HttpResponse { status, body })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_status_and_body() {
        let raw = b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"status\":\"ok\"}";
        let response = parse_response(raw).unwrap();
        assert_eq!(response.status, 200);
        assert_eq!(response.json().unwrap()["status"], serde_json::json!("ok"));
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_response(b"hello").is_err());
        assert!(parse_response(b"SSH-2.0\r\n\r\n").is_err());
    }

    #[tokio::test]
    async fn get_against_a_local_listener() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 1024];
            let n = socket.read(&mut buf).await.unwrap();
            let request = String::from_utf8_lossy(&buf[..n]).into_owned();
            socket
                .write_all(b"HTTP/1.0 503 Service Unavailable\r\n\r\n{\"status\":\"unavailable\"}")
                .await
                .unwrap();
            request
        });
        let base = format!("http://{addr}");
        let response = http_get(&base, "/healthz?js-enabled-only=true", DEFAULT_HTTP_TIMEOUT)
            .await
            .unwrap();
        assert_eq!(response.status, 503);
        let request = server.await.unwrap();
        assert!(request.starts_with("GET /healthz?js-enabled-only=true HTTP/1.0\r\n"));
    }
}
