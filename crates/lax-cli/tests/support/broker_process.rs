//! A real `lax broker` process for the fault tests: started on free ports, signalled
//! (SIGSTOP/SIGCONT/SIGKILL), restarted on the same ports, and asked through its `/metrics`
//! endpoint how many publishes it has acked.

#![allow(dead_code, reason = "each test file uses a different part")]

use std::{net::TcpListener, process::Stdio, time::Duration};

use lax_testkit::{monitor::http_get, wait_until};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tokio::process::{Child, Command};

/// How long a broker may take to listen, and a `/metrics` scrape to answer.
const WAIT: Duration = Duration::from_secs(45);

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

/// A `lax broker` process, killed on drop.
pub(crate) struct BrokerProcess {
    child: Option<Child>,
    args: Vec<String>,
    listen: String,
    metrics: String,
}

impl BrokerProcess {
    /// Starts `lax broker` on `nats_urls` (comma-separated) with `args` added, on free
    /// ports, and waits until it accepts connections.
    pub(crate) async fn start(nats_urls: &str, args: &[&str]) -> BrokerProcess {
        let mut broker = BrokerProcess {
            child: None,
            args: [&["--nats-url", nats_urls], args]
                .concat()
                .into_iter()
                .map(str::to_owned)
                .collect(),
            listen: format!("127.0.0.1:{}", free_port()),
            metrics: format!("127.0.0.1:{}", free_port()),
        };
        broker.spawn().await;
        broker
    }

    async fn spawn(&mut self) {
        let mut command = Command::new(env!("CARGO_BIN_EXE_lax"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("LAX_") {
                command.env_remove(name);
            }
        }
        let child = command
            .arg("broker")
            .args(&self.args)
            .args(["--listen", &self.listen, "--metrics-listen", &self.metrics])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("lax broker starts");
        self.child = Some(child);
        let listen = &self.listen;
        wait_until(WAIT, || async {
            tokio::net::TcpStream::connect(listen).await.is_ok()
        })
        .await
        .expect("lax broker listens");
    }

    /// The gRPC address, as a client option.
    pub(crate) fn addr(&self) -> String {
        format!("http://{}", self.listen)
    }

    pub(crate) fn signal(&self, signal: Signal) {
        let pid = self
            .child
            .as_ref()
            .and_then(Child::id)
            .expect("the broker runs");
        kill(Pid::from_raw(pid as i32), signal).expect("signal the broker");
    }

    /// SIGKILLs the broker and reaps it.
    pub(crate) async fn kill(&mut self) {
        self.signal(Signal::SIGKILL);
        let mut child = self.child.take().expect("the broker runs");
        tokio::time::timeout(WAIT, child.wait())
            .await
            .expect("a SIGKILLed broker exits")
            .expect("reap the broker");
    }

    /// Starts the broker again, on the same ports, and waits until it accepts connections.
    pub(crate) async fn restart(&mut self) {
        assert!(self.child.is_none(), "the broker still runs");
        self.spawn().await;
    }

    /// Publishes this broker process has acked (`lax_broker_publish_total` with result
    /// `stored` or `duplicate`), read from its `/metrics`.
    pub(crate) async fn acked(&self) -> u64 {
        let base = format!("http://{}", self.metrics);
        let response = http_get(&base, "/metrics", WAIT)
            .await
            .expect("the broker serves /metrics");
        assert_eq!(response.status, 200, "{}", response.body);
        response
            .body
            .lines()
            .filter(|line| line.starts_with("lax_broker_publish_total{"))
            .filter(|line| {
                line.contains("result=\"stored\"") || line.contains("result=\"duplicate\"")
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }
}
