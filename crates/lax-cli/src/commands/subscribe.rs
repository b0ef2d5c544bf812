//! `lax sub`: print the messages published to a subject, read through the broker from
//! JetStream (acking each) or, with `--direct`, over core NATS.

use std::str::FromStr;

use clap::Args;
use futures::{Stream, StreamExt as _};
use lax_client::{
    ClientOptions, DirectMessage, Error, Headers, LaxClient, ReceivedMessage, StartPosition,
    SubscribeOptions,
};

use lax_broker::cli::shutdown_signal;

use crate::{
    client_args::{ClientArgs, connect},
    failure::Failure,
    format::payload_text,
};

/// Options of `lax sub`.
#[derive(Debug, Clone, Args)]
pub(crate) struct SubArgs {
    /// Subject or wildcard filter (`orders.*`, `events.>`).
    subject: String,
    /// Share the messages with the other members of this consumer group (with --direct, a
    /// NATS queue group).
    #[arg(long, value_name = "GROUP")]
    group: Option<String>,
    /// Subscribe over core NATS (memory-tier traffic, no acks) instead of through the broker.
    #[arg(long)]
    direct: bool,
    /// Where to start reading the stream: `new`, `last`, `first` or a sequence number
    /// (through the broker only).
    #[arg(long, default_value = "new", value_parser = parse_start, conflicts_with = "direct")]
    start: StartPosition,
    /// Exit after this many messages.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
    /// Print each message as a JSON line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

fn parse_start(text: &str) -> Result<StartPosition, String> {
    match text {
        "new" => Ok(StartPosition::New),
        "last" => Ok(StartPosition::Last),
        "first" => Ok(StartPosition::First),
        other => u64::from_str(other)
            .ok()
            .filter(|sequence| *sequence > 0)
            .map(StartPosition::Sequence)
            .ok_or_else(|| {
                format!("{other:?} is not new, last, first or a stream sequence (1 or more)")
            }),
    }
}

/// What `lax sub` prints of a message, from either kind of subscription.
struct Printed<'a> {
    subject: &'a str,
    message_id: Option<&'a str>,
    headers: &'a Headers,
    payload: &'a [u8],
    /// Stream, sequence and delivery count, for messages read from JetStream.
    stored: Option<(&'a str, u64, u64)>,
}

impl Printed<'_> {
    fn print(&self, json: bool) {
        if json {
            let headers: serde_json::Map<String, serde_json::Value> = self
                .headers
                .iter()
                .map(|(name, value)| (name.to_owned(), value.into()))
                .collect();
            let mut line = serde_json::json!({
                "subject": self.subject,
                "message_id": self.message_id,
                "headers": headers,
                "payload": payload_text(self.payload),
            });
            if let (Some((stream, sequence, deliveries)), Some(object)) =
                (self.stored, line.as_object_mut())
            {
                object.insert("stream".into(), stream.into());
                object.insert("sequence".into(), sequence.into());
                object.insert("delivery_count".into(), deliveries.into());
            }
            println!("{line}");
        } else {
            println!("{}: {}", self.subject, payload_text(self.payload));
        }
    }
}

pub(crate) async fn run(args: SubArgs) -> Result<(), Failure> {
    let options = args.client.options()?;
    let client = connect(&options).await?;
    let received = if args.direct {
        receive_direct(&client, &args).await
    } else {
        receive_through_broker(&client, &args, &options).await
    };
    let closed = client.close().await;
    received?;
    closed.map_err(Failure::from)
}

async fn receive_direct(client: &LaxClient, args: &SubArgs) -> Result<(), Failure> {
    let subscription = client
        .subscribe_direct(&args.subject, args.group.clone())
        .await?;
    announce(args, "direct");
    let messages = subscription.map(Ok::<DirectMessage, Error>);
    consume(args, messages, |message| async move {
        Printed {
            subject: &message.subject,
            message_id: message.message_id.as_deref(),
            headers: &message.headers,
            payload: &message.payload,
            stored: None,
        }
        .print(args.json);
        Ok(())
    })
    .await
    .map_err(Failure::from)
}

async fn receive_through_broker(
    client: &LaxClient,
    args: &SubArgs,
    options: &ClientOptions,
) -> Result<(), Failure> {
    let mut subscribe_options = SubscribeOptions::default().start(args.start);
    subscribe_options.consumer_group.clone_from(&args.group);
    let subscription = client
        .subscribe(&args.subject, subscribe_options)
        .await
        .map_err(|e| Failure::from_broker(e, options))?;
    announce(args, "through the broker");
    consume(args, subscription, |message: ReceivedMessage| async move {
        Printed {
            subject: &message.subject,
            message_id: Some(&message.id),
            headers: &message.headers,
            payload: &message.payload,
            stored: Some((&message.stream, message.sequence, message.delivery_count)),
        }
        .print(args.json);
        message.ack().await
    })
    .await
    .map_err(|e| Failure::from_broker(e, options))
}

/// Tells the person (and tests) on stderr that messages published from now on are seen.
fn announce(args: &SubArgs, how: &str) {
    let group = args
        .group
        .as_deref()
        .map(|g| format!(", group {g}"))
        .unwrap_or_default();
    eprintln!(
        "subscribed to {} ({how}{group}); waiting for messages",
        args.subject
    );
}

/// Handles messages until `--count` is reached, the subscription ends, or Ctrl-C / SIGTERM.
async fn consume<M, F, Fut>(
    args: &SubArgs,
    mut messages: impl Stream<Item = Result<M, Error>> + Unpin,
    mut handle: F,
) -> Result<(), Error>
where
    F: FnMut(M) -> Fut,
    Fut: Future<Output = Result<(), Error>>,
{
    let received = async {
        let mut seen = 0;
        while let Some(message) = messages.next().await {
            handle(message?).await?;
            seen += 1;
            if args.count.is_some_and(|count| seen >= count) {
                return Ok(());
            }
        }
        Err(Error::unavailable("the subscription ended"))
    };
    tokio::select! {
        outcome = received => outcome,
        () = shutdown_signal() => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_positions_parse() {
        assert_eq!(parse_start("first").unwrap(), StartPosition::First);
        assert_eq!(parse_start("42").unwrap(), StartPosition::Sequence(42));
        assert!(parse_start("0").is_err());
        assert!(parse_start("soon").unwrap_err().contains("soon"));
    }
}
