//! The Python SDK's FastAPI example as an axum service: `POST /events` publishes straight to
//! NATS, `POST /orders` goes through the broker with an ack, `GET /metrics` serves
//! Prometheus text. Ctrl-C (or SIGTERM) stops accepting requests, finishes the ones in
//! flight, then closes the client, which drains its publishes.
//!
//! Each request continues the W3C trace it arrives with (`traceparent` header) into its
//! publish, and from there through the broker to whoever processes the message:
//! `curl -H 'traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01' …`.
//!
//! `cargo run -p lax-client --features axum,init-tracing --example axum` (servers from `lax dev`; listen
//! address from `LAX_HTTP_LISTEN`, default `127.0.0.1:8000`).

use axum::{
    Json, Router,
    extract::State,
    middleware,
    routing::{get, post},
};
use lax_client::{
    ClientOptions, LaxClient, PublishOptions,
    axum::{ApiError, continue_trace, metrics_handler},
};
use serde_json::{Value, json};

/// The application: every route shares one client.
pub(crate) fn app(client: LaxClient) -> Router {
    Router::new()
        .route("/events", post(publish_event))
        .route("/orders", post(create_order))
        .route("/metrics", get(metrics_handler))
        .layer(middleware::from_fn(continue_trace))
        .with_state(client)
}

async fn publish_event(
    State(client): State<LaxClient>,
    Json(data): Json<Value>,
) -> Result<Json<Value>, ApiError> {
    // Memory tier: direct NATS.
    let receipt = client
        .publish("events.api", lax_client::Json(&data))
        .await?;
    Ok(Json(json!({ "message_id": receipt.message_id })))
}

async fn create_order(
    State(client): State<LaxClient>,
    Json(order): Json<Value>,
) -> Result<Json<Value>, ApiError> {
    // Persistent tier with ack: through the broker.
    let receipt = client
        .publish_with(
            "orders.created",
            lax_client::Json(&order),
            PublishOptions::persistent(),
        )
        .await?;
    let ack = receipt.ack.as_ref();
    Ok(Json(json!({
        "order_id": order.get("id").cloned().unwrap_or(Value::Null),
        "message_id": receipt.message_id,
        "stream": ack.map(|a| a.stream.clone()),
        "sequence": ack.map(|a| a.sequence),
    })))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = ClientOptions::from_env()?;
    lax_client::init_tracing(&options);
    let client = LaxClient::connect(options).await?;
    let listen = std::env::var("LAX_HTTP_LISTEN").unwrap_or_else(|_| "127.0.0.1:8000".into());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app(client.clone()))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    client.close().await?;
    Ok(())
}
