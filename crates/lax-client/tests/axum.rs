//! The axum example (`examples/axum`) driven with real HTTP requests against real servers.
#![cfg(all(feature = "axum", feature = "init-tracing"))]

mod common;

#[allow(dead_code, reason = "the example's `main` is not used here")]
#[path = "../../../examples/axum/main.rs"]
mod example;

use common::Env;
use futures::StreamExt;
use lax_client::{ErrorKind, LaxClient};
use serde_json::{Value, json};

#[tokio::test]
async fn the_fastapi_example_works_over_http_and_shuts_down_gracefully() {
    let env = Env::start().await;
    let client = LaxClient::connect(env.options()).await.unwrap();
    let mut events = env.subscribe("events.api").await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        axum::serve(listener, example::app(client.clone()))
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .into_future(),
    );
    let http = reqwest::Client::new();

    // POST /events → direct NATS.
    let response = http
        .post(format!("{base}/events"))
        .json(&json!({"user_id": "123"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    let seen = tokio::time::timeout(common::DEADLINE, events.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        seen.headers.unwrap().get("Message-Id").unwrap().as_str(),
        body["message_id"].as_str().unwrap()
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&seen.payload).unwrap(),
        json!({"user_id": "123"})
    );

    // POST /orders → broker, persistent, acked.
    let response = http
        .post(format!("{base}/orders"))
        .json(&json!({"id": "o-1", "amount": 99.99}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["order_id"], "o-1");
    assert_eq!(body["stream"], "ORDERS");
    assert_eq!(body["sequence"], 1);
    assert_eq!(env.count("ORDERS").await, 1);

    // A bad request body is the web framework's 4xx, never a 5xx.
    let response = http
        .post(format!("{base}/orders"))
        .header("content-type", "application/json")
        .body("not json")
        .send()
        .await
        .unwrap();
    assert!(response.status().is_client_error());

    // GET /metrics → Prometheus text with the Python SDK's names.
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("lax_client_publish_total{tier=\"memory\",status=\"success\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("lax_client_publish_total{tier=\"persistent\",status=\"success\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("lax_client_publish_latency_seconds"),
        "{text}"
    );

    // Graceful shutdown: the server stops, then the client closes and refuses publishes.
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
    client.close().await.unwrap();
    let err = client.publish("events.api", "late").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Closed);
}

#[tokio::test]
async fn lax_errors_become_http_statuses() {
    use axum::response::IntoResponse;
    use lax_client::{Error, axum::ApiError};
    let cases = [
        (Error::invalid_input("bad subject"), 400),
        (Error::rejected("tier mismatch"), 409),
        (Error::unavailable("down"), 503),
        (Error::timed_out("no ack"), 504),
    ];
    for (error, status) in cases {
        assert_eq!(ApiError(error).into_response().status().as_u16(), status);
    }
}
