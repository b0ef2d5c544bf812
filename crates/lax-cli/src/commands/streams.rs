//! `lax streams ls|info|create|rm`: stream administration through the broker.

use std::io::{BufRead as _, IsTerminal as _, Write as _};

use clap::{Args, Subcommand};
use lax_client::{BrokerAdmin, ClientOptions};
use lax_proto::broker::v1::{
    ConsumerInfo, GetStreamInfoRequest, ListStreamsRequest, Stream, StreamConfig, StreamState,
};
use serde_json::{Value, json};

use crate::{
    client_args::{ClientArgs, TierArg},
    failure::Failure,
};

/// Options of `lax streams`.
#[derive(Debug, Clone, Args)]
pub(crate) struct StreamsArgs {
    #[command(subcommand)]
    action: StreamsAction,
    /// Print JSON (one document) instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(flatten)]
    client: ClientArgs,
}

#[derive(Debug, Clone, Subcommand)]
enum StreamsAction {
    /// List the streams.
    Ls {
        /// Only streams capturing subjects that match this filter.
        #[arg(long, value_name = "SUBJECT")]
        subject: Option<String>,
    },
    /// Describe a stream: configuration, state and consumers.
    Info {
        /// Stream name.
        name: String,
    },
    /// Create a stream.
    Create(CreateArgs),
    /// Delete a stream and its messages, after asking (on a terminal) unless --force.
    Rm {
        /// Stream name.
        name: String,
        /// Delete without asking; required when stdin is not a terminal.
        #[arg(long, short)]
        force: bool,
    },
}

#[derive(Debug, Clone, Args)]
struct CreateArgs {
    /// Stream name (no `.`, `*`, `>`, `/`, `\` or whitespace).
    name: String,
    /// Subjects it captures, comma-separated (e.g. `orders.>`).
    #[arg(
        long,
        value_delimiter = ',',
        required = true,
        value_name = "SUBJECT[,SUBJECT...]"
    )]
    subjects: Vec<String>,
    /// Tier, which sets storage and replicas.
    #[arg(long, value_enum, default_value_t = TierArg::Persistent)]
    tier: TierArg,
    /// Most messages kept (oldest dropped first).
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
    max_msgs: Option<i64>,
    /// Most bytes kept.
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
    max_bytes: Option<i64>,
    /// Longest a message is kept, in seconds.
    #[arg(long, value_parser = clap::value_parser!(i64).range(1..))]
    max_age_secs: Option<i64>,
    /// A description.
    #[arg(long)]
    description: Option<String>,
}

pub(crate) async fn run(args: StreamsArgs) -> Result<(), Failure> {
    let options = args.client.options()?;
    let json = args.json;
    if let StreamsAction::Rm { force: false, .. } = &args.action
        && !std::io::stdin().is_terminal()
    {
        return Err(Failure::usage(
            "`lax streams rm` asks before deleting, and stdin is not a terminal: pass --force \
             to delete without asking",
        ));
    }
    let admin = connect_admin(&options).await?;
    let failed = |e| Failure::from_broker(e, &options);
    match args.action {
        StreamsAction::Ls { subject } => {
            let listed = admin
                .list_streams(ListStreamsRequest {
                    subject_filter: subject.unwrap_or_default(),
                    ..Default::default()
                })
                .await
                .map_err(failed)?;
            if json {
                print_json(&Value::Array(
                    listed.streams.iter().map(stream_json).collect(),
                ));
            } else {
                print_table(&listed.streams);
            }
        }
        StreamsAction::Info { name } => {
            let info = admin
                .stream_info(GetStreamInfoRequest {
                    name,
                    include_consumers: true,
                    include_stats: false,
                })
                .await
                .map_err(failed)?;
            if json {
                let mut value = info.config.as_ref().map(stream_json).unwrap_or_default();
                value["state"] = info.state.as_ref().map(state_json).unwrap_or_default();
                value["consumers"] = info.consumers.iter().map(consumer_json).collect();
                print_json(&value);
                return Ok(());
            }
            if let Some(stream) = &info.config {
                print_stream(stream, info.state.as_ref());
            }
            for consumer in &info.consumers {
                println!(
                    "consumer   {} (delivered {}, ack pending {}, redelivered {}{})",
                    consumer.name,
                    consumer.delivered,
                    consumer.ack_pending,
                    consumer.redelivered,
                    if consumer.active { ", active" } else { "" }
                );
            }
        }
        StreamsAction::Create(create) => {
            let name = create.name.clone();
            let stream = admin
                .create_stream(name, stream_config(create))
                .await
                .map_err(failed)?;
            if json {
                print_json(&stream_json(&stream));
            } else {
                println!("created stream {}", stream.name);
                print_stream(&stream, stream.state.as_ref());
            }
        }
        StreamsAction::Rm { name, force } => {
            if !force {
                let info = admin
                    .stream_info(GetStreamInfoRequest {
                        name: name.clone(),
                        ..Default::default()
                    })
                    .await
                    .map_err(failed)?;
                let messages = info.state.map_or(0, |state| state.messages);
                let question = format!(
                    "Delete stream {name} and its {messages} message{}? [y/N] ",
                    if messages == 1 { "" } else { "s" }
                );
                if !confirm(question).await? {
                    return Err(Failure::runtime(format!(
                        "not confirmed: stream {name} was not deleted"
                    )));
                }
            }
            let deleted = admin.delete_stream(&name).await.map_err(failed)?;
            if !deleted.success {
                return Err(Failure::runtime(format!(
                    "the broker did not delete stream {name}: {}",
                    deleted.message
                )));
            }
            if json {
                print_json(&json!({ "deleted": name }));
            } else {
                println!("deleted stream {name}");
            }
        }
    }
    Ok(())
}

/// Asks `question` on stderr and reads the answer from stdin (a terminal): only `y` or `yes`
/// (any case) confirms.
async fn confirm(question: String) -> Result<bool, Failure> {
    let answer = tokio::task::spawn_blocking(move || {
        let mut stderr = std::io::stderr().lock();
        stderr.write_all(question.as_bytes())?;
        stderr.flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        Ok::<_, std::io::Error>(answer)
    })
    .await
    .map_err(|e| Failure::runtime(format!("asking for confirmation: {e}")))?
    .map_err(|e| Failure::runtime(format!("reading the answer: {e}")))?;
    Ok(is_yes(&answer))
}

fn is_yes(answer: &str) -> bool {
    matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

fn print_json(value: &Value) {
    println!("{value:#}");
}

fn stream_json(stream: &Stream) -> Value {
    let config = stream.config.clone().unwrap_or_default();
    json!({
        "name": stream.name,
        "description": config.description,
        "subjects": config.subjects,
        "tier": config.tier,
        "storage": config.storage_type,
        "replicas": config.num_replicas,
        "max_msgs": positive(config.max_msgs),
        "max_bytes": positive(config.max_bytes),
        "max_age_secs": config.max_age.map(|age| age.seconds),
        "state": stream.state.as_ref().map(state_json),
    })
}

/// A limit, `null` when unlimited (0 or -1 on the wire).
fn positive(value: i64) -> Option<i64> {
    (value > 0).then_some(value)
}

fn state_json(state: &StreamState) -> Value {
    json!({
        "messages": state.messages,
        "bytes": state.bytes,
        "first_seq": state.first_seq,
        "last_seq": state.last_seq,
        "consumer_count": state.consumer_count,
    })
}

fn consumer_json(consumer: &ConsumerInfo) -> Value {
    json!({
        "name": consumer.name,
        "delivered": consumer.delivered,
        "ack_pending": consumer.ack_pending,
        "redelivered": consumer.redelivered,
        "active": consumer.active,
    })
}

fn stream_config(create: CreateArgs) -> StreamConfig {
    StreamConfig {
        description: create.description.unwrap_or_default(),
        subjects: create.subjects,
        tier: lax_client::Tier::from(create.tier).as_str().to_owned(),
        max_msgs: create.max_msgs.unwrap_or_default(),
        max_bytes: create.max_bytes.unwrap_or_default(),
        max_age: create
            .max_age_secs
            .map(|seconds| prost_types::Duration { seconds, nanos: 0 }),
        ..Default::default()
    }
}

fn print_table(streams: &[Stream]) {
    if streams.is_empty() {
        println!("no streams");
        return;
    }
    println!(
        "{:<24} {:<11} {:<7} {:>8} {:>10} {:>12} {:>9}  SUBJECTS",
        "NAME", "TIER", "STORAGE", "REPLICAS", "MESSAGES", "BYTES", "LAST SEQ"
    );
    for stream in streams {
        let config = stream.config.clone().unwrap_or_default();
        let state = stream.state.unwrap_or_default();
        println!(
            "{:<24} {:<11} {:<7} {:>8} {:>10} {:>12} {:>9}  {}",
            stream.name,
            config.tier,
            config.storage_type,
            config.num_replicas,
            state.messages,
            state.bytes,
            state.last_seq,
            config.subjects.join(",")
        );
    }
}

fn print_stream(stream: &Stream, state: Option<&StreamState>) {
    let config = stream.config.clone().unwrap_or_default();
    println!("stream     {}", stream.name);
    println!("subjects   {}", config.subjects.join(", "));
    println!(
        "tier       {} ({} storage, {} replica{})",
        config.tier,
        config.storage_type,
        config.num_replicas,
        if config.num_replicas == 1 { "" } else { "s" }
    );
    if !config.description.is_empty() {
        println!("about      {}", config.description);
    }
    let limit = |value: i64| {
        if value > 0 {
            value.to_string()
        } else {
            "unlimited".to_owned()
        }
    };
    println!(
        "limits     max msgs {}, max bytes {}, max age {}",
        limit(config.max_msgs),
        limit(config.max_bytes),
        config
            .max_age
            .map_or_else(|| "unlimited".to_owned(), |age| format!("{}s", age.seconds))
    );
    if let Some(state) = state {
        println!(
            "state      {} messages, {} bytes, sequences {}..={}, {} consumers",
            state.messages, state.bytes, state.first_seq, state.last_seq, state.consumer_count
        );
    }
}

/// Connects to the broker for administration, explaining an unreachable one.
pub(crate) async fn connect_admin(options: &ClientOptions) -> Result<BrokerAdmin, Failure> {
    BrokerAdmin::connect(&options.grpc_options())
        .await
        .map_err(|e| Failure::from_broker(e, options))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_y_or_yes_confirms() {
        for yes in ["y\n", "Y\n", "yes\n", " YES \n"] {
            assert!(is_yes(yes), "{yes:?}");
        }
        for no in ["\n", "n\n", "no\n", "yess\n", ""] {
            assert!(!is_yes(no), "{no:?}");
        }
    }
}
