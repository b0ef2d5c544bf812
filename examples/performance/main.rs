//! A quick throughput check of both routes through the full client stack, side by side with
//! raw async-nats core publishes (the Python SDK's performance test, in Rust). For the full
//! tool with latency percentiles, use `lax bench`.
//!
//! `cargo run --release -p lax-client --example performance -- [MESSAGES]` with the servers
//! from `lax dev` (or `LAX_NATS_URLS` / `LAX_BROKER_ADDR`).

use std::time::Instant;

use bytes::Bytes;
use futures::{StreamExt, stream};
use lax_client::{ClientOptions, LaxClient, PublishOptions, Tier};

const CONCURRENCY: usize = 256;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let messages: usize = std::env::args()
        .nth(1)
        .map(|n| n.parse())
        .transpose()?
        .unwrap_or(20_000);
    let options = ClientOptions::from_env()?;
    let raw = async_nats::connect(options.nats_urls.join(",")).await?;
    let client = LaxClient::connect(options).await?;
    let payload = Bytes::from(vec![b'x'; 128]);

    // The raw side sends what LAX sends on the direct path: the payload and a `Message-Id`.
    let start = Instant::now();
    for _ in 0..messages {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Message-Id", lax_core::new_message_id().as_str());
        raw.publish_with_headers("perf.raw", headers, payload.clone())
            .await?;
    }
    raw.flush().await?;
    let raw_rate = messages as f64 / start.elapsed().as_secs_f64();

    let start = Instant::now();
    for _ in 0..messages {
        client.publish("perf.direct", payload.clone()).await?;
    }
    client.flush().await?;
    let direct_rate = messages as f64 / start.elapsed().as_secs_f64();

    let broker_messages = messages / 4;
    let start = Instant::now();
    let failures = stream::iter(0..broker_messages)
        .map(|_| {
            client.publish_with(
                "perf.persistent",
                payload.clone(),
                PublishOptions::tier(Tier::Persistent),
            )
        })
        .buffer_unordered(CONCURRENCY)
        .filter(|r| std::future::ready(r.is_err()))
        .count()
        .await;
    let broker_rate = broker_messages as f64 / start.elapsed().as_secs_f64();

    println!("raw async-nats (same header): {raw_rate:>10.0} msg/s");
    println!(
        "LAX direct (memory tier)    : {direct_rate:>10.0} msg/s  ({:.2}× raw)",
        direct_rate / raw_rate
    );
    println!(
        "LAX broker (persistent, ack): {broker_rate:>10.0} msg/s  ({failures} failed, {CONCURRENCY} in flight)"
    );
    client.close().await?;
    Ok(())
}
