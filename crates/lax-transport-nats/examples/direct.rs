//! Publishing and subscribing over core NATS with the transport alone.
//!
//! ```sh
//! nats-server &
//! cargo run -p lax-transport-nats --example direct -- nats://127.0.0.1:4222
//! ```
//!
//! The server URL comes from the first argument, else `NATS_URL`, else
//! `nats://localhost:4222`.

use std::time::Duration;

use futures::StreamExt;
use lax_core::{PublishRequest, Publisher};
use lax_transport_nats::{NatsOptions, NatsPublisher};

const MESSAGES: usize = 5;

#[tokio::main]
async fn main() -> Result<(), lax_core::Error> {
    let url = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("NATS_URL").ok())
        .unwrap_or_else(|| NatsOptions::DEFAULT_URL.to_owned());
    let options = NatsOptions::new([url]).client_name("lax-direct-example");
    let publisher = NatsPublisher::connect(options).await?;
    println!("connected: {publisher:?}");

    // Report connection changes while the example runs.
    let mut events = publisher.events();
    tokio::spawn(async move {
        while let Ok(event) = events.recv().await {
            println!("connection event: {event}");
        }
    });

    let mut orders = publisher.subscribe("example.orders.>", None).await?;
    for i in 0..MESSAGES {
        let request = PublishRequest::new(format!("example.orders.{i}"), format!("order {i}"))
            .with_header("Trace-Id", format!("trace-{i}"));
        let receipt = publisher.publish(request).await?;
        println!(
            "published {} ({:?} route)",
            receipt.message_id, receipt.route
        );
    }
    publisher.flush().await?;

    for _ in 0..MESSAGES {
        match tokio::time::timeout(Duration::from_secs(5), orders.next()).await {
            Ok(Some(message)) => println!(
                "received {} on {}: {:?} (Message-Id {:?})",
                String::from_utf8_lossy(&message.payload),
                message.subject,
                message.headers.get("Trace-Id"),
                message.message_id,
            ),
            Ok(None) => break,
            Err(_) => {
                eprintln!("no message within 5 s");
                break;
            }
        }
    }
    publisher.close().await
}
