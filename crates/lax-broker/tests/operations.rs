//! NATS outages, the replicated tier on a cluster, health, reflection and metrics.

mod common;

use std::time::Duration;

use common::{Harness, WAIT, clients, request, test_config};
use lax_broker::Broker;
use lax_proto::broker::v1::GetStreamInfoRequest;
use lax_testkit::{NatsCluster, wait_for, wait_until};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tonic::{Code, transport::Channel};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

/// A channel to the broker, once it reports SERVING.
async fn serving_channel(h: &Harness) -> Channel {
    let channel = Channel::from_shared(format!("http://{}", h.broker.grpc_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    assert_eq!(health(channel.clone()).await, ServingStatus::Serving as i32);
    channel
}

async fn health(channel: Channel) -> i32 {
    HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: "broker.v1.BrokerService".into(),
        })
        .await
        .map(|r| r.into_inner().status)
        .unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_while_nats_is_down_and_recovers_without_a_restart() {
    let mut h = Harness::start().await;
    let channel = serving_channel(&h).await;
    h.client
        .publish(request("events.a", "x", "persistent"))
        .await
        .unwrap();

    h.nats.stop().await.unwrap();
    let client = h.client.clone();
    wait_until(WAIT, || {
        let mut client = client.clone();
        async move {
            matches!(client.publish(request("events.a", "x", "persistent")).await, Err(s) if s.code() == Code::Unavailable)
        }
    })
    .await
    .expect("publishes fail UNAVAILABLE while NATS is down");
    wait_until(WAIT, || {
        health(channel.clone()).then_eq(ServingStatus::NotServing as i32)
    })
    .await
    .expect("health turns NOT_SERVING");

    h.nats.restart().await.unwrap();
    wait_until(WAIT, || {
        let mut client = client.clone();
        async move {
            client
                .publish(request("events.a", "y", "persistent"))
                .await
                .is_ok()
        }
    })
    .await
    .expect("publishes succeed again after NATS is back");
    wait_until(WAIT, || {
        health(channel.clone()).then_eq(ServingStatus::Serving as i32)
    })
    .await
    .expect("health turns SERVING again");
    h.broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_nats_server_turns_health_not_serving_within_seconds() {
    use nix::{
        sys::signal::{Signal, kill},
        unistd::Pid,
    };
    let h = Harness::start().await;
    let channel = serving_channel(&h).await;
    let pid = Pid::from_raw(h.nats.pid().expect("running") as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    let frozen = tokio::time::Instant::now();
    let noticed = wait_until(Duration::from_secs(10), || {
        health(channel.clone()).then_eq(ServingStatus::NotServing as i32)
    })
    .await;
    let took = frozen.elapsed();
    kill(pid, Signal::SIGCONT).unwrap();
    println!("health NOT_SERVING {took:?} after nats-server froze");
    noticed.expect("health turns NOT_SERVING within 10 s of a freeze");
    wait_until(WAIT, || {
        health(channel.clone()).then_eq(ServingStatus::Serving as i32)
    })
    .await
    .expect("health turns SERVING again once it thaws");
    h.broker.shutdown().await.unwrap();
}

trait ThenEq: Future<Output = i32> + Sized {
    async fn then_eq(self, expected: i32) -> bool {
        self.await == expected
    }
}
impl<F: Future<Output = i32>> ThenEq for F {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicated_publishes_get_three_replicas_on_a_cluster() {
    common::init_tracing();
    let cluster = NatsCluster::start(3).await.expect("3-node cluster starts");
    let mut config = test_config(cluster.urls());
    config.replicated_replicas = 3;
    let broker = Broker::start(config).await.unwrap();
    let (mut client, mut streams) = clients(&broker).await;
    // A fresh R3 stream may need a moment to elect its leader; wait for the first ack.
    let stored = wait_for(WAIT, || {
        let mut client = client.clone();
        async move {
            client
                .publish(request("ledger.entry", "x", "replicated"))
                .await
                .ok()
        }
    })
    .await
    .expect("a replicated publish succeeds on the cluster")
    .into_inner();
    assert_eq!(stored.stream, "LEDGER");
    let info = streams
        .get_stream_info(GetStreamInfoRequest {
            name: "LEDGER".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let config = info.config.unwrap().config.unwrap();
    assert_eq!(
        (config.num_replicas, config.tier.as_str()),
        (3, "replicated")
    );
    let again = client
        .publish(request("ledger.entry", "y", "replicated"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.stream, "LEDGER");
    broker.shutdown().await.unwrap();
}

async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut body))
        .await
        .unwrap()
        .unwrap();
    body
}

/// `list_reflected_services!(v1, channel)`: the service names that reflection version lists.
/// A macro because v1 and v1alpha are the same messages in two generated modules.
macro_rules! list_reflected_services {
    ($version:ident, $channel:expr) => {{
        use tonic_reflection::pb::$version::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut responses = ServerReflectionClient::new($channel)
            .server_reflection_info(futures::stream::iter([request]))
            .await
            .unwrap()
            .into_inner();
        let response = responses.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!(
                "unexpected {} reflection answer {response:?}",
                stringify!($version)
            );
        };
        list.service
            .into_iter()
            .map(|s| s.name)
            .collect::<Vec<String>>()
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_health_and_reflection_are_served() {
    let mut h = Harness::start().await;
    h.client
        .publish(request("audit.x", "x", "persistent"))
        .await
        .unwrap();
    let _ = h
        .client
        .publish(request("audit..x", "x", "persistent"))
        .await
        .unwrap_err();
    let body = http_get(h.broker.metrics_addr().unwrap(), "/metrics").await;
    assert!(
        body.starts_with("HTTP/1.0 200") || body.starts_with("HTTP/1.1 200"),
        "{body}"
    );
    assert!(
        body.contains("lax_broker_requests_total{rpc=\"Publish\",code=\"ok\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("lax_broker_requests_total{rpc=\"Publish\",code=\"invalid_argument\"} 1"),
        "{body}"
    );
    assert!(
        body.contains("lax_broker_publish_latency_seconds_bucket"),
        "{body}"
    );
    assert!(body.contains("lax_broker_nats_connected 1"), "{body}");

    let channel = Channel::from_shared(format!("http://{}", h.broker.grpc_addr()))
        .unwrap()
        .connect()
        .await
        .unwrap();
    // Both reflection versions list the broker's services: tools ask one or the other.
    for names in [
        list_reflected_services!(v1, channel.clone()),
        list_reflected_services!(v1alpha, channel),
    ] {
        assert!(
            names.iter().any(|n| n == "broker.v1.BrokerService")
                && names.iter().any(|n| n == "broker.v1.StreamManager"),
            "{names:?}"
        );
    }
    h.broker.shutdown().await.unwrap();
}
