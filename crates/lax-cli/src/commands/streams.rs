//! `lax streams ls|info|create|rm`: stream administration through the broker.

use std::{
    io::{BufRead as _, IsTerminal as _, Write as _},
    time::Duration,
};

use clap::{Args, Subcommand};
use lax_client::{
    ClientOptions,
    admin::{
        BrokerAdmin, ConsumerInfo, ListStreamsOptions, Stream, StreamConfig, StreamInfoOptions,
        StreamState,
    },
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
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_msgs: Option<u64>,
    /// Most bytes kept.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_bytes: Option<u64>,
    /// Longest a message is kept, in seconds.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    max_age_secs: Option<u64>,
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
            let mut list = ListStreamsOptions::default();
            if let Some(subject) = subject {
                list = list.subject_filter(subject);
            }
            let listed = admin.list_streams(list).await.map_err(failed)?;
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
                .stream_info(name, StreamInfoOptions::default().consumers(true))
                .await
                .map_err(failed)?;
            if json {
                let mut value = stream_json(&info.stream);
                value["consumers"] = info.consumers.iter().map(consumer_json).collect();
                print_json(&value);
                return Ok(());
            }
            print_stream(&info.stream);
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
                print_stream(&stream);
            }
        }
        StreamsAction::Rm { name, force } => {
            if !force {
                let info = admin
                    .stream_info(&name, StreamInfoOptions::default())
                    .await
                    .map_err(failed)?;
                let messages = info.stream.state.messages;
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
            admin.delete_stream(&name).await.map_err(failed)?;
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
    let config = &stream.config;
    json!({
        "name": stream.name,
        "description": config.description.as_deref().unwrap_or_default(),
        "subjects": config.subjects,
        "tier": config.tier.map(|tier| tier.as_str()),
        "storage": config.storage.map(|storage| storage.as_str()),
        "replicas": config.replicas,
        "max_msgs": config.max_messages,
        "max_bytes": config.max_bytes,
        "max_age_secs": config.max_age.map(|age| age.as_secs()),
        "state": state_json(&stream.state),
    })
}

fn state_json(state: &StreamState) -> Value {
    json!({
        "messages": state.messages,
        "bytes": state.bytes,
        "first_seq": state.first_sequence,
        "last_seq": state.last_sequence,
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
    let mut config = StreamConfig::new(create.subjects).tier(create.tier.into());
    config.description = create.description;
    config.max_messages = create.max_msgs;
    config.max_bytes = create.max_bytes;
    config.max_age = create.max_age_secs.map(Duration::from_secs);
    config
}

/// A name for an optional value (the tier or storage the broker did not say).
fn or_dash(value: Option<&str>) -> &str {
    value.unwrap_or("-")
}

/// A limit, "unlimited" when unset.
fn limit(value: Option<impl ToString>) -> String {
    value.map_or_else(|| "unlimited".to_owned(), |value| value.to_string())
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
        let (config, state) = (&stream.config, &stream.state);
        println!(
            "{:<24} {:<11} {:<7} {:>8} {:>10} {:>12} {:>9}  {}",
            stream.name,
            or_dash(config.tier.map(|tier| tier.as_str())),
            or_dash(config.storage.map(|storage| storage.as_str())),
            config.replicas.unwrap_or(1),
            state.messages,
            state.bytes,
            state.last_sequence,
            config.subjects.join(",")
        );
    }
}

fn print_stream(stream: &Stream) {
    let (config, state) = (&stream.config, &stream.state);
    let replicas = config.replicas.unwrap_or(1);
    println!("stream     {}", stream.name);
    println!("subjects   {}", config.subjects.join(", "));
    println!(
        "tier       {} ({} storage, {} replica{})",
        or_dash(config.tier.map(|tier| tier.as_str())),
        or_dash(config.storage.map(|storage| storage.as_str())),
        replicas,
        if replicas == 1 { "" } else { "s" }
    );
    if let Some(description) = &config.description {
        println!("about      {description}");
    }
    println!(
        "limits     max msgs {}, max bytes {}, max age {}",
        limit(config.max_messages),
        limit(config.max_bytes),
        limit(config.max_age.map(|age| format!("{}s", age.as_secs())))
    );
    println!(
        "state      {} messages, {} bytes, sequences {}..={}, {} consumers",
        state.messages,
        state.bytes,
        state.first_sequence,
        state.last_sequence,
        state.consumer_count
    );
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
