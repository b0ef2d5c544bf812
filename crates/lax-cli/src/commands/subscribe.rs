//! `lax sub`: print the messages published to a subject.

use clap::Args;
use futures::StreamExt as _;
use lax_client::DirectMessage;

use crate::{
    client_args::{ClientArgs, connect},
    failure::Failure,
    format::payload_text,
    signal::shutdown_signal,
};

/// Options of `lax sub`.
#[derive(Debug, Clone, Args)]
pub(crate) struct SubArgs {
    /// Subject or wildcard filter (`orders.*`, `events.>`).
    subject: String,
    /// Share the messages with the other members of this queue / consumer group.
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
    /// Subscribe over core NATS (memory-tier traffic, no acks) instead of through the broker.
    #[arg(long)]
    direct: bool,
    /// Exit after this many messages.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Print each message as a JSON line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

pub(crate) async fn run(args: SubArgs) -> Result<(), Failure> {
    if !args.direct {
        return Err(Failure::usage(
            "subscribing through the broker is not available in this build; use `lax sub \
             --direct` to receive over core NATS",
        ));
    }
    let options = args.client.options()?;
    let client = connect(&options).await?;
    let mut subscription = client
        .subscribe_direct(&args.subject, args.group.clone())
        .await?;
    eprintln!(
        "subscribed to {} (direct{}); waiting for messages",
        args.subject,
        args.group
            .as_deref()
            .map(|g| format!(", group {g}"))
            .unwrap_or_default()
    );
    let received = async {
        let mut seen = 0;
        while let Some(message) = subscription.next().await {
            print_direct(&args, &message);
            seen += 1;
            if args.count.is_some_and(|count| seen >= count) {
                return Ok(());
            }
        }
        Err(Failure::runtime("the NATS connection closed"))
    };
    let outcome = tokio::select! {
        outcome = received => outcome,
        () = shutdown_signal() => Ok(()),
    };
    let closed = client.close().await;
    outcome?;
    closed.map_err(Failure::from)
}

fn print_direct(args: &SubArgs, message: &DirectMessage) {
    if args.json {
        let headers: serde_json::Map<String, serde_json::Value> = message
            .headers
            .iter()
            .map(|(name, value)| (name.to_owned(), value.into()))
            .collect();
        let line = serde_json::json!({
            "subject": message.subject,
            "message_id": message.message_id,
            "headers": headers,
            "payload": payload_text(&message.payload),
        });
        println!("{line}");
    } else {
        println!("{}: {}", message.subject, payload_text(&message.payload));
    }
}
