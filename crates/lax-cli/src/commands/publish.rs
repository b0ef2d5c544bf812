//! `lax pub`: publish one message (or N copies) by tier.

use std::{
    io::Read as _,
    time::{Duration, Instant},
};

use bytes::Bytes;
use clap::Args;
use lax_client::{PublishOptions, Receipt, Route, Tier};

use crate::{
    client_args::{ClientArgs, TierArg, connect, parse_header},
    failure::Failure,
    format::{describe_receipt, millis},
};

/// Options of `lax pub`.
#[derive(Debug, Clone, Args)]
pub(crate) struct PubArgs {
    /// Subject to publish to (e.g. `orders.created`).
    subject: String,
    /// The payload; `-` reads it from standard input; none sends an empty message.
    data: Option<String>,
    /// Storage tier: memory without --ack goes straight to NATS, everything else through the
    /// broker to JetStream.
    #[arg(long, value_enum, default_value_t = TierArg::Memory)]
    tier: TierArg,
    /// Wait for the JetStream ack (forces the broker path).
    #[arg(long)]
    ack: bool,
    /// A header to send, repeatable.
    #[arg(long = "header", short = 'H', value_name = "NAME=VALUE", value_parser = parse_header)]
    headers: Vec<(String, String)>,
    /// Publish the message this many times (each with its own message id).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    count: u64,
    /// Print each receipt as a JSON line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub(crate) async fn run(args: PubArgs) -> Result<(), Failure> {
    let payload = match args.data.as_deref() {
        Some("-") => {
            let mut data = Vec::new();
            std::io::stdin().read_to_end(&mut data).map_err(|e| {
                Failure::runtime(format!("cannot read the payload from stdin: {e}"))
            })?;
            Bytes::from(data)
        }
        Some(text) => Bytes::copy_from_slice(text.as_bytes()),
        None => Bytes::new(),
    };
    let options = args.client.options()?;
    let client = connect(&options).await?;
    let mut publish_options = PublishOptions::tier(Tier::from(args.tier)).require_ack(args.ack);
    for (name, value) in &args.headers {
        publish_options = publish_options.header(name, value);
    }
    let through_broker = publish_options.route() == Route::Broker;
    let mut outcome = Ok(());
    for _ in 0..args.count {
        let started = Instant::now();
        match client
            .publish_with(&args.subject, payload.clone(), publish_options.clone())
            .await
        {
            Ok(receipt) => print_receipt(&args, &receipt, started.elapsed()),
            Err(error) if through_broker => {
                outcome = Err(Failure::from_broker(error, &options));
                break;
            }
            Err(error) => {
                outcome = Err(error.into());
                break;
            }
        }
    }
    // Direct publishes have only left once flushed.
    let closed = client.close().await;
    outcome?;
    closed.map_err(Failure::from)
}

fn print_receipt(args: &PubArgs, receipt: &Receipt, latency: Duration) {
    if args.json {
        let line = serde_json::json!({
            "subject": args.subject,
            "message_id": receipt.message_id,
            "route": receipt.route,
            "tier": Tier::from(args.tier),
            "stream": receipt.ack.as_ref().map(|a| &a.stream),
            "sequence": receipt.ack.as_ref().map(|a| a.sequence),
            "duplicate": receipt.ack.as_ref().map(|a| a.duplicate),
            "latency_ms": latency.as_secs_f64() * 1e3,
        });
        println!("{line}");
    } else {
        println!(
            "published {} in {}: {}",
            args.subject,
            millis(latency),
            describe_receipt(receipt)
        );
    }
}
