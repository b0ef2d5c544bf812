//! axum integration (feature `axum`): [`LaxClient`] as router state, LAX errors as HTTP
//! responses, a `/metrics` handler, and [`continue_trace`], which carries an incoming
//! request's W3C trace into what its handler publishes.
//!
//! ```no_run
//! use axum::{Json, Router, extract::State, routing::{get, post}};
//! use lax_client::{ClientOptions, LaxClient, PublishOptions, axum::{ApiError, metrics_handler}};
//!
//! async fn create_order(
//!     State(client): State<LaxClient>,
//!     Json(order): Json<serde_json::Value>,
//! ) -> Result<Json<serde_json::Value>, ApiError> {
//!     let receipt = client
//!         .publish_with("orders.created", lax_client::Json(&order), PublishOptions::persistent())
//!         .await?;
//!     Ok(Json(serde_json::json!({ "message_id": receipt.message_id })))
//! }
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let client = LaxClient::connect(ClientOptions::default()).await?;
//! let app: Router = Router::new()
//!     .route("/orders", post(create_order))
//!     .route("/metrics", get(metrics_handler))
//!     .with_state(client);
//! # Ok(()) }
//! ```

use axum::{
    extract::{Request, State},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use lax_core::{
    Error, ErrorKind, Headers,
    trace::{self, TRACEPARENT_HEADER, TRACESTATE_HEADER},
};
use tracing::{Instrument as _, field::Empty};

use crate::LaxClient;

/// A LAX error as an HTTP response: a status that says whose fault it was, and a JSON body
/// `{"error": kind, "message": text, "may_be_stored": bool}`.
///
/// | kind | status |
/// |---|---|
/// | invalid input | 400 |
/// | rejected | 409 |
/// | overloaded | 429 |
/// | circuit open, unavailable, closed | 503 |
/// | timed out | 504 |
/// | configuration, internal | 500 |
#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        ApiError(error)
    }
}

impl ApiError {
    /// The HTTP status for this error.
    pub fn status(&self) -> StatusCode {
        match self.0.kind() {
            ErrorKind::InvalidInput => StatusCode::BAD_REQUEST,
            ErrorKind::Rejected => StatusCode::CONFLICT,
            ErrorKind::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::CircuitOpen | ErrorKind::Unavailable | ErrorKind::Closed => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ErrorKind::TimedOut => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": self.0.kind().as_str(),
            "message": self.0.to_string(),
            "may_be_stored": self.0.may_be_stored(),
        });
        (self.status(), axum::Json(body)).into_response()
    }
}

/// `GET /metrics`: the Prometheus text of the client's metrics
/// ([`LaxClient::render_metrics`]). Takes the client from the router state, directly or
/// through [`FromRef`](axum::extract::FromRef).
pub async fn metrics_handler(State(client): State<LaxClient>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        client.render_metrics(),
    )
}

/// Middleware continuing the trace an HTTP request arrives with into what its handler
/// publishes: each request runs in a `lax.http.request` span that is a child of the request's
/// W3C `traceparent` header (or the root of a new trace without one) and whose context is
/// the task's current one ([`TraceContext::scope`](lax_core::trace::TraceContext::scope)), so each `lax.publish` made by the
/// handler is its child, and the trace goes on through the broker to the consumer. A
/// malformed `traceparent` starts a new trace.
///
/// ```no_run
/// use axum::{Router, middleware, routing::post};
/// use lax_client::axum::continue_trace;
///
/// # fn app(router: Router) -> Router {
/// router.layer(middleware::from_fn(continue_trace))
/// # }
/// ```
pub async fn continue_trace(request: Request, next: Next) -> Response {
    let span = tracing::info_span!(
        "lax.http.request",
        method = %request.method(),
        path = %request.uri().path(),
        status = Empty,
        trace_id = Empty,
        span_id = Empty,
        parent_span_id = Empty,
        invalid_traceparent = Empty,
    );
    let headers: Headers = [TRACEPARENT_HEADER, TRACESTATE_HEADER]
        .into_iter()
        .filter_map(|name| {
            let value = request.headers().get(name)?.to_str().ok()?;
            Some((name, value))
        })
        .collect();
    let context = trace::identify(&span, trace::received(&span, &headers));
    let handled = next.run(request).instrument(span.clone());
    let response = match context {
        Some(context) => context.scope(handled).await,
        None => handled.await,
    };
    span.record("status", response.status().as_u16());
    response
}
