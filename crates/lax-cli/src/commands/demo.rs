//! `lax demo`: the Python SDK's quick start, end to end, with what happened at each step:
//! a direct subscription, a memory-tier event, a persistent order with ack, a batch, and the
//! order read back through the broker.
//!
//! It runs against the servers the client options name (those of `lax dev` by default). When
//! nothing listens on the NATS URL it starts a stack of its own — nats-server in a temporary
//! directory plus the broker, on free ports — and stops it afterwards; when NATS is there but
//! no broker answers, it runs the broker in-process against that NATS.

use std::{
    net::{IpAddr, Ipv4Addr},
    time::{Duration, Instant},
};

use clap::Args;
use futures::StreamExt as _;
use lax_broker::{Broker, BrokerConfig, RunningBroker};
use lax_client::{
    BatchMessage, ClientOptions, DirectSubscription, Json, LaxClient, PublishOptions,
    StartPosition, SubscribeOptions, Tier,
};
use serde_json::json;

use crate::{
    client_args::{ClientArgs, connect},
    failure::Failure,
    format::{describe_receipt, millis, payload_text},
    stack::{LocalStack, StackSpec},
};

/// How long the demo waits for a message it published to come back.
const RECEIVE_DEADLINE: Duration = Duration::from_secs(5);

/// How long probing whether a server listens may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// Options of `lax demo`.
#[derive(Debug, Clone, Args)]
pub(crate) struct DemoArgs {
    #[command(flatten)]
    client: ClientArgs,
}

/// What the demo started for itself, stopped when it ends.
enum Started {
    Nothing,
    Broker(Box<RunningBroker>),
    Stack(Box<LocalStack>, tempfile::TempDir),
}

pub(crate) async fn run(args: DemoArgs) -> Result<(), Failure> {
    let mut options = args.client.options()?;
    let started = start_what_is_missing(&mut options).await?;
    let walked = walk_through(&options).await;
    let stopped = match started {
        Started::Nothing => Ok(()),
        Started::Broker(broker) => broker.shutdown().await.map_err(Failure::from),
        // The directory is removed once the stack has stopped.
        Started::Stack(stack, _dir) => stack.stop().await,
    };
    walked?;
    stopped
}

async fn start_what_is_missing(options: &mut ClientOptions) -> Result<Started, Failure> {
    println!("LAX demo");
    let nats_url = options.nats_urls[0].clone();
    if !listens(&nats_url, 4222).await {
        let dir = tempfile::TempDir::with_prefix("lax-demo-")
            .map_err(|e| Failure::runtime(format!("cannot create a temporary directory: {e}")))?;
        let stack = LocalStack::start(&StackSpec {
            host: IpAddr::V4(Ipv4Addr::LOCALHOST),
            nats_port: 0,
            monitor_port: 0,
            grpc_port: 0,
            metrics_port: 0,
            data_dir: dir.path().join("data"),
        })
        .await?;
        println!(
            "  nothing listens on {nats_url}: started a stack of our own (stopped at the end)\n\
             \x20 NATS     {} (nats-server pid {}, JetStream in {})\n\
             \x20 gRPC     {} (LAX broker, in-process; replicated tier with 1 replica)\n\
             \x20 metrics  {}",
            stack.nats_url(),
            stack.nats_pid(),
            dir.path().display(),
            stack.grpc_addr(),
            stack.metrics_url()
        );
        options.nats_urls = vec![stack.nats_url()];
        options.broker_addrs = vec![format!("http://{}", stack.grpc_addr())];
        return Ok(Started::Stack(Box::new(stack), dir));
    }
    let broker_addr = options.broker_addrs[0].clone();
    if !listens(&broker_addr, 50051).await {
        let mut config = BrokerConfig::new(options.nats_urls.clone());
        config.listen = (Ipv4Addr::LOCALHOST, 0).into();
        config.metrics_listen = (Ipv4Addr::LOCALHOST, 0).into();
        config.replicated_replicas = 1;
        let broker = Broker::start(config).await?;
        println!(
            "  NATS     {nats_url}\n\
             \x20 gRPC     {} (no broker at {broker_addr}: started one in-process)",
            broker.grpc_addr()
        );
        options.broker_addrs = vec![format!("http://{}", broker.grpc_addr())];
        return Ok(Started::Broker(Box::new(broker)));
    }
    println!("  NATS     {nats_url}\n  gRPC     {broker_addr}");
    Ok(Started::Nothing)
}

/// True when something accepts TCP connections at the URL's host and port.
async fn listens(url: &str, default_port: u16) -> bool {
    let target = tcp_target(url, default_port);
    matches!(
        tokio::time::timeout(PROBE_TIMEOUT, tokio::net::TcpStream::connect(&target)).await,
        Ok(Ok(_))
    )
}

/// `host:port` of a `nats://user:pass@host:port` or `http://host:port/` style address.
fn tcp_target(url: &str, default_port: u16) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let authority = rest.split('/').next().unwrap_or(rest);
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, port)| port.parse::<u16>().is_ok());
    if has_port {
        authority.to_owned()
    } else {
        format!("{authority}:{default_port}")
    }
}

async fn walk_through(options: &ClientOptions) -> Result<(), Failure> {
    let began = Instant::now();
    let client = connect(options).await?;
    let walked = steps(&client, options).await;
    let closed = client.close().await;
    walked?;
    closed?;
    println!("\ndemo finished in {:.2} s", began.elapsed().as_secs_f64());
    Ok(())
}

async fn steps(client: &LaxClient, options: &ClientOptions) -> Result<(), Failure> {
    println!("\n1. a direct subscription on events.>");
    let mut events = client.subscribe_direct("events.>", None).await?;
    println!("   subscribed (core NATS)");

    println!(
        "\n2. a memory-tier event: events.user.login {{\"user_id\":\"123\",\"ip\":\"192.168.1.1\"}}"
    );
    let sent = Instant::now();
    let login = client
        .publish(
            "events.user.login",
            Json(json!({"user_id": "123", "ip": "192.168.1.1"})),
        )
        .await?;
    println!(
        "   → published in {}: {}",
        millis(sent.elapsed()),
        describe_receipt(&login)
    );
    receive(&mut events, 1, sent).await?;

    println!(
        "\n3. a persistent order with ack: orders.created {{\"order_id\":\"456\",\"amount\":99.99}}"
    );
    let sent = Instant::now();
    let order = client
        .publish_with(
            "orders.created",
            Json(json!({"order_id": "456", "amount": 99.99})),
            PublishOptions::tier(Tier::Persistent).require_ack(true),
        )
        .await
        .map_err(|e| Failure::from_broker(e, options))?;
    println!(
        "   → stored in {}: {}",
        millis(sent.elapsed()),
        describe_receipt(&order)
    );

    println!("\n4. a batch: 3 × events.click, 2 × events.view");
    let batch: Vec<BatchMessage> =
        (1..=3)
            .map(|n| BatchMessage::json("events.click", &json!({"button": format!("buy-{n}")})))
            .chain((1..=2).map(|n| {
                BatchMessage::json("events.view", &json!({"page": format!("/product/{n}")}))
            }))
            .collect();
    let sent = Instant::now();
    let result = client.batch_publish(batch).await;
    println!(
        "   → {} published, {} failed, in {} (route direct); ids {}",
        result.success_count,
        result.failure_count,
        millis(sent.elapsed()),
        result.message_ids.join(", ")
    );
    if let Some((index, error)) = result.errors().next() {
        return Err(Failure::runtime(format!(
            "batch message {index} failed: {error}"
        )));
    }
    receive(&mut events, result.success_count, sent).await?;

    let ack = order
        .ack
        .clone()
        .ok_or_else(|| Failure::runtime("the order was stored without an ack"))?;
    println!(
        "\n5. the order, read back through the broker from stream {} at sequence {}",
        ack.stream, ack.sequence
    );
    let sent = Instant::now();
    let mut orders = client
        .subscribe(
            "orders.created",
            SubscribeOptions::default().start(StartPosition::Sequence(ack.sequence)),
        )
        .await
        .map_err(|e| Failure::from_broker(e, options))?;
    let stored = tokio::time::timeout(RECEIVE_DEADLINE, orders.next())
        .await
        .map_err(|_| {
            Failure::runtime(format!(
                "the order did not come back within {RECEIVE_DEADLINE:?}"
            ))
        })?
        .ok_or_else(|| Failure::runtime("the broker ended the subscription"))?
        .map_err(|e| Failure::from_broker(e, options))?;
    if stored.id != order.message_id {
        return Err(Failure::runtime(format!(
            "read back message {} at sequence {}, not our order {}",
            stored.id, stored.sequence, order.message_id
        )));
    }
    stored
        .ack()
        .await
        .map_err(|e| Failure::from_broker(e, options))?;
    println!(
        "   ← received {} {} (id {}) from stream {} sequence {}, delivery {}, acked; {} after subscribing",
        stored.subject,
        payload_text(&stored.payload),
        stored.id,
        stored.stream,
        stored.sequence,
        stored.delivery_count,
        millis(sent.elapsed())
    );
    Ok(())
}

/// Waits for `count` messages on the subscription, printing each.
async fn receive(
    events: &mut DirectSubscription,
    count: usize,
    sent: Instant,
) -> Result<(), Failure> {
    for _ in 0..count {
        let message = tokio::time::timeout(RECEIVE_DEADLINE, events.next())
            .await
            .map_err(|_| {
                Failure::runtime(format!(
                    "the direct subscription received nothing within {RECEIVE_DEADLINE:?}"
                ))
            })?
            .ok_or_else(|| Failure::runtime("the direct subscription ended"))?;
        println!(
            "   ← received {} {} (id {}), {} after publishing",
            message.subject,
            payload_text(&message.payload),
            message.message_id.as_deref().unwrap_or("-"),
            millis(sent.elapsed())
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_become_host_and_port() {
        assert_eq!(tcp_target("nats://localhost:4222", 1), "localhost:4222");
        assert_eq!(tcp_target("nats://u:p@10.0.0.1:4223", 1), "10.0.0.1:4223");
        assert_eq!(tcp_target("nats://demo.nats.io", 4222), "demo.nats.io:4222");
        assert_eq!(tcp_target("http://127.0.0.1:50051/", 1), "127.0.0.1:50051");
        assert_eq!(tcp_target("broker:50051", 1), "broker:50051");
        assert_eq!(tcp_target("broker", 50051), "broker:50051");
    }
}
