//! The Python SDK's quick start in Rust: a memory-tier event straight to NATS, a persistent
//! order through the broker with its ack, and a batch.
//!
//! Start the servers with `cargo run -p lax-cli -- dev` (or point `LAX_NATS_URLS` and
//! `LAX_BROKER_ADDR` at yours), then: `cargo run -p lax-client --features init-tracing --example simple`.

use lax_client::{BatchMessage, ClientOptions, Json, LaxClient, PublishOptions, Tier};
use serde_json::json;

#[tokio::main]
async fn main() -> Result<(), lax_client::Error> {
    let options = ClientOptions::from_env()?;
    lax_client::init_tracing(&options);
    let client = LaxClient::connect(options).await?;

    // Memory tier: direct NATS, no ack.
    let event = client
        .publish(
            "events.user.login",
            Json(json!({"user_id": "123", "ip": "192.168.1.1"})),
        )
        .await?;
    println!("event {} went {}", event.message_id, event.route);

    // Persistent tier with ack: the broker stores it in JetStream and says where.
    let order = client
        .publish_with(
            "orders.created",
            Json(json!({"order_id": "456", "amount": 99.99})),
            PublishOptions::tier(Tier::Persistent).require_ack(true),
        )
        .await?;
    if let Some(ack) = &order.ack {
        println!(
            "order {} stored in {} at sequence {}",
            order.message_id, ack.stream, ack.sequence
        );
    }

    // A batch: both messages are published concurrently.
    let batch = client
        .batch_publish([
            BatchMessage::json("events.click", &json!({"button": "submit"})),
            BatchMessage::json("events.view", &json!({"page": "/home"})),
        ])
        .await;
    println!(
        "sent {} messages ({} failed)",
        batch.success_count, batch.failure_count
    );

    client.close().await
}
