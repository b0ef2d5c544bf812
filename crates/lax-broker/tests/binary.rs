//! The `lax-broker` binary: flags in, a serving broker out, a clean stop on SIGTERM.

use std::{net::TcpListener, process::Stdio, time::Duration};

use lax_testkit::{NatsServer, wait_until};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tokio::process::Command;
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const DEADLINE: Duration = Duration::from_secs(60);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

#[tokio::test]
async fn serves_until_sigterm_then_exits_0() {
    let nats = NatsServer::start().await.expect("nats-server starts");
    let listen = format!("127.0.0.1:{}", free_port());
    let mut broker = Command::new(env!("CARGO_BIN_EXE_lax-broker"))
        .args(["--nats-url", &nats.url(), "--listen", &listen])
        .args(["--no-metrics", "--replicated-replicas", "1"])
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("lax-broker runs");

    let endpoint = format!("http://{listen}");
    let serving = wait_until(DEADLINE, || {
        let endpoint = endpoint.clone();
        async move {
            let Ok(channel) = Channel::from_shared(endpoint)
                .expect("a valid URI")
                .connect()
                .await
            else {
                return false;
            };
            let mut health = HealthClient::new(channel);
            let request = HealthCheckRequest {
                service: "broker.v1.BrokerService".into(),
            };
            health
                .check(request)
                .await
                .is_ok_and(|r| r.into_inner().status() == ServingStatus::Serving)
        }
    })
    .await;
    assert!(serving.is_ok(), "lax-broker never served on {listen}");

    let pid = Pid::from_raw(broker.id().expect("running") as i32);
    kill(pid, Signal::SIGTERM).expect("SIGTERM sent");
    let status = tokio::time::timeout(DEADLINE, broker.wait())
        .await
        .expect("lax-broker stops after SIGTERM")
        .expect("reaped");
    assert!(status.success(), "{status}");
}

#[tokio::test]
async fn bad_flags_exit_2() {
    let output = Command::new(env!("CARGO_BIN_EXE_lax-broker"))
        .args(["--replicated-replicas", "0"])
        .output()
        .await
        .expect("lax-broker runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--replicated-replicas"), "{stderr}");
}
