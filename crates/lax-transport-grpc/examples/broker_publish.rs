//! Publishes a few messages to a LAX broker over gRPC and prints their acks.
//!
//! ```text
//! cargo run -p lax-transport-grpc --example broker_publish -- [BROKER_ADDR] [COUNT]
//! ```
//!
//! `BROKER_ADDR` defaults to `localhost:50051`, `COUNT` to 10. Set `LAX_BROKER_TOKEN` to send
//! a bearer token.

use std::time::Instant;

use lax_core::{PublishRequest, Publisher, Tier};
use lax_transport_grpc::{GrpcOptions, GrpcPublisher};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "localhost:50051".to_owned());
    let count: usize = match args.next() {
        Some(count) => count.parse()?,
        None => 10,
    };

    let mut options = GrpcOptions::new([addr]);
    options.connection_pool_size = 2;
    options.auth_token = std::env::var("LAX_BROKER_TOKEN").ok();
    let publisher = GrpcPublisher::connect(options).await?;

    let started = Instant::now();
    let publishes = (0..count).map(|i| {
        let request = PublishRequest::new("examples.greetings", format!("hello #{i}"))
            .with_tier(Tier::Persistent)
            .with_header("Trace-Id", format!("example-{i}"));
        publisher.publish(request)
    });
    for result in futures::future::join_all(publishes).await {
        let receipt = result?;
        if let Some(ack) = receipt.ack {
            println!(
                "{} -> {} #{}{}",
                receipt.message_id,
                ack.stream,
                ack.sequence,
                if ack.duplicate { " (duplicate)" } else { "" }
            );
        }
    }
    println!("{count} messages acked in {:?}", started.elapsed());

    publisher.close().await?;
    Ok(())
}
