//! The real `lax` binary against real servers: a test-kit nats-server and an in-process broker,
//! or the binary's own `lax dev` stack.

use std::{net::TcpListener, process::Stdio, time::Duration};

use lax_broker::{Broker, BrokerConfig, RunningBroker};
use lax_testkit::NatsServer;
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncRead, BufReader, Lines},
    process::{Child, Command},
};

const DEADLINE: Duration = Duration::from_secs(60);

/// A nats-server and a broker, with the flags that point `lax` at them.
struct Servers {
    nats: NatsServer,
    broker: Option<RunningBroker>,
}

impl Servers {
    async fn start() -> Servers {
        let nats = NatsServer::start().await.expect("nats-server starts");
        let mut config = BrokerConfig::new([nats.url()]);
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.no_metrics = true;
        config.replicated_replicas = 1;
        config.shutdown_timeout_ms = 5_000;
        let broker = Broker::start(config).await.expect("broker starts");
        Servers {
            nats,
            broker: Some(broker),
        }
    }

    fn flags(&self) -> Vec<String> {
        let broker = self.broker.as_ref().expect("broker running");
        vec![
            "--nats-url".into(),
            self.nats.url(),
            "--broker-addr".into(),
            format!("http://{}", broker.grpc_addr()),
        ]
    }

    async fn stop(mut self) {
        if let Some(broker) = self.broker.take() {
            broker.shutdown().await.expect("broker stops");
        }
    }
}

/// Variables `lax` reads besides `LAX_*` ones; removed so the machine's settings cannot leak
/// into a test.
const FOREIGN_VARIABLES: [&str; 6] = [
    "NATS_URL",
    "NATS_CREDS",
    "NATS_CA",
    "NATS_CERT",
    "NATS_KEY",
    "NO_COLOR",
];

/// The variables of this environment that `lax` would read as settings: `LAX_*` (but the
/// nats-server location) and [`FOREIGN_VARIABLES`].
fn settings_from_the_environment() -> Vec<std::ffi::OsString> {
    std::env::vars_os()
        .map(|(name, _)| name)
        .filter(|name| name.to_string_lossy().starts_with("LAX_") && name != "LAX_NATS_SERVER")
        .chain(FOREIGN_VARIABLES.map(Into::into))
        .collect()
}

/// `lax ARGS` with no `LAX_*` (or `NATS_*`, `NO_COLOR`) variables from the environment.
fn lax<I, S>(args: I) -> Command
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut command = Command::new(env!("CARGO_BIN_EXE_lax"));
    for name in settings_from_the_environment() {
        command.env_remove(name);
    }
    command
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs `lax ARGS` to completion within the deadline: (exit code, stdout, stderr).
async fn run(args: &[&str]) -> (i32, String, String) {
    let output = tokio::time::timeout(DEADLINE, lax(args).output())
        .await
        .unwrap_or_else(|_| panic!("lax {args:?} did not finish in {DEADLINE:?}"))
        .expect("lax runs");
    (
        output.status.code().expect("exited, not killed"),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn with<'a>(flags: &'a [String], args: &[&'a str]) -> Vec<&'a str> {
    args.iter()
        .copied()
        .chain(flags.iter().map(String::as_str))
        .collect()
}

/// Reads lines until one contains `needle`, within the deadline; returns it.
async fn wait_for_line<R: AsyncRead + Unpin>(
    lines: &mut Lines<BufReader<R>>,
    needle: &str,
) -> String {
    let found = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.expect("readable output") {
            if line.contains(needle) {
                return Some(line);
            }
        }
        None
    })
    .await
    .unwrap_or_else(|_| panic!("no line with {needle:?} within {DEADLINE:?}"));
    found.unwrap_or_else(|| panic!("the output ended without a line containing {needle:?}"))
}

async fn wait_exit(child: &mut Child) -> i32 {
    tokio::time::timeout(DEADLINE, child.wait())
        .await
        .expect("exits in time")
        .expect("waitable")
        .code()
        .expect("exited, not killed")
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

#[tokio::test(flavor = "multi_thread")]
async fn pub_then_sub_sees_the_message() {
    let servers = Servers::start().await;
    let flags = servers.flags();
    let mut sub = lax(with(
        &flags,
        &["sub", "cli.greetings", "--direct", "--count", "1"],
    ))
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("lax sub starts");
    let mut stderr = BufReader::new(sub.stderr.take().unwrap()).lines();
    wait_for_line(&mut stderr, "subscribed").await;

    let (code, stdout, stderr_text) = run(&with(
        &flags,
        &["pub", "cli.greetings", "hello from lax", "-H", "trace=1"],
    ))
    .await;
    assert_eq!(code, 0, "{stderr_text}");
    assert!(stdout.contains("route direct"), "{stdout}");

    let mut stdout = BufReader::new(sub.stdout.take().unwrap()).lines();
    let line = wait_for_line(&mut stdout, "hello from lax").await;
    assert_eq!(line, "cli.greetings: hello from lax");
    assert_eq!(wait_exit(&mut sub).await, 0);
    servers.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sub_through_the_broker_reads_the_stream_and_acks() {
    let servers = Servers::start().await;
    let flags = servers.flags();
    // The first publish creates stream SHIPMENTS; the subscription reads it from the start.
    let (code, _, stderr) = run(&with(
        &flags,
        &["pub", "shipments.sent", "first", "--tier", "persistent"],
    ))
    .await;
    assert_eq!(code, 0, "{stderr}");
    let mut sub = lax(with(
        &flags,
        &[
            "sub",
            "shipments.*",
            "--start",
            "first",
            "--count",
            "2",
            "--json",
        ],
    ))
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .expect("lax sub starts");
    let mut stderr = BufReader::new(sub.stderr.take().unwrap()).lines();
    wait_for_line(
        &mut stderr,
        "subscribed to shipments.* (through the broker)",
    )
    .await;
    let (code, _, stderr_text) = run(&with(
        &flags,
        &["pub", "shipments.sent", "second", "--tier", "persistent"],
    ))
    .await;
    assert_eq!(code, 0, "{stderr_text}");

    assert_eq!(wait_exit(&mut sub).await, 0);
    let mut stdout = BufReader::new(sub.stdout.take().unwrap()).lines();
    let mut received = Vec::new();
    while let Some(line) = stdout.next_line().await.unwrap() {
        received.push(serde_json::from_str::<serde_json::Value>(&line).expect("a JSON line"));
    }
    assert_eq!(received.len(), 2, "{received:?}");
    for (message, (payload, sequence)) in received.iter().zip([("first", 1), ("second", 2)]) {
        assert_eq!(message["payload"], payload);
        assert_eq!(message["stream"], "SHIPMENTS");
        assert_eq!(message["sequence"], sequence);
        assert_eq!(message["delivery_count"], 1);
    }
    servers.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_acked_publish_reports_its_stream_and_sequence() {
    let servers = Servers::start().await;
    let flags = servers.flags();
    let (code, stdout, stderr) = run(&with(
        &flags,
        &[
            "pub",
            "ledger.entry",
            "-",
            "--tier",
            "persistent",
            "--ack",
            "--count",
            "2",
            "--json",
        ],
    ))
    .await;
    assert_eq!(code, 0, "{stderr}");
    let receipts: Vec<serde_json::Value> = stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("JSON lines"))
        .collect();
    assert_eq!(receipts.len(), 2, "{stdout}");
    for (receipt, sequence) in receipts.iter().zip([1, 2]) {
        assert_eq!(receipt["route"], "broker");
        assert_eq!(receipt["stream"], "LEDGER");
        assert_eq!(receipt["sequence"], sequence);
        assert_eq!(receipt["duplicate"], false);
    }
    servers.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_are_created_listed_described_and_removed() {
    let servers = Servers::start().await;
    let flags = servers.flags();
    let (code, stdout, stderr) = run(&with(
        &flags,
        &[
            "streams",
            "create",
            "AUDIT",
            "--subjects",
            "audit.>",
            "--tier",
            "memory",
            "--max-msgs",
            "100",
        ],
    ))
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("created stream AUDIT"), "{stdout}");

    let (code, stdout, _) = run(&with(&flags, &["streams", "ls"])).await;
    assert_eq!(code, 0);
    let row = stdout
        .lines()
        .find(|line| line.starts_with("AUDIT"))
        .unwrap_or_else(|| panic!("AUDIT listed: {stdout}"));
    assert!(row.contains("memory") && row.contains("audit.>"), "{row}");

    let (code, stdout, stderr) = run(&with(&flags, &["streams", "ls", "--json"])).await;
    assert_eq!(code, 0, "{stderr}");
    let listed: serde_json::Value = serde_json::from_str(&stdout).expect("ls --json is JSON");
    let audit = listed
        .as_array()
        .and_then(|streams| streams.iter().find(|s| s["name"] == "AUDIT"))
        .unwrap_or_else(|| panic!("AUDIT in {listed:#}"));
    assert_eq!(audit["tier"], "memory");
    assert_eq!(audit["subjects"], serde_json::json!(["audit.>"]));
    assert_eq!(audit["max_msgs"], 100);

    let (code, stdout, _) = run(&with(&flags, &["streams", "info", "AUDIT"])).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("max msgs 100"), "{stdout}");

    let (code, stdout, stderr) = run(&with(&flags, &["streams", "info", "AUDIT", "--json"])).await;
    assert_eq!(code, 0, "{stderr}");
    let info: serde_json::Value = serde_json::from_str(&stdout).expect("info --json is JSON");
    assert_eq!(info["name"], "AUDIT");
    assert_eq!(info["state"]["messages"], 0);
    assert!(info["consumers"].is_array(), "{info:#}");

    // Without a terminal, rm refuses to delete unasked.
    let (code, _, stderr) = run(&with(&flags, &["streams", "rm", "AUDIT"])).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    let (code, _, _) = run(&with(&flags, &["streams", "info", "AUDIT"])).await;
    assert_eq!(code, 0, "AUDIT survives a refused rm");

    let (code, _, _) = run(&with(&flags, &["streams", "rm", "AUDIT", "--force"])).await;
    assert_eq!(code, 0);
    let (code, _, stderr) = run(&with(&flags, &["streams", "info", "AUDIT"])).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("not found"), "{stderr}");
    servers.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_json_has_the_figures_and_the_raw_ratio() {
    let servers = Servers::start().await;
    let flags = servers.flags();
    let report = tempfile::NamedTempFile::new().unwrap();
    let html = report.path().to_str().unwrap();
    for args in [
        &[
            "bench",
            "--msgs",
            "2000",
            "--concurrency",
            "8",
            "--compare-raw",
            "--json",
        ][..],
        &[
            "bench",
            "--route",
            "broker",
            "--tier",
            "memory",
            "--msgs",
            "300",
            "--compare-raw",
            "--json",
            "--html",
            html,
        ],
    ] {
        let (code, stdout, stderr) = run(&with(&flags, args)).await;
        assert_eq!(code, 0, "{args:?}: {stderr}");
        let figures: serde_json::Value =
            serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
        for key in [
            "msgs_per_sec",
            "p50_us",
            "p99_us",
            "p999_us",
            "max_us",
            "raw_msgs_per_sec",
            "raw_p99_us",
            "ratio",
        ] {
            let value = figures[key]
                .as_f64()
                .unwrap_or_else(|| panic!("{key}: {figures}"));
            assert!(value > 0.0, "{key}: {figures}");
        }
        assert!(figures["p50_us"].as_f64() <= figures["max_us"].as_f64());
        assert_eq!(figures["size"], 128);
    }
    let page = std::fs::read_to_string(report.path()).unwrap();
    assert!(
        page.contains("<svg") && page.contains("<polyline"),
        "{page}"
    );
    servers.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_measures_delivery_pacing_batches_and_sweeps() {
    let servers = Servers::start().await;
    let flags = servers.flags();
    let json = |stdout: &str| -> serde_json::Value {
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    };
    // Paced, end to end, against raw at the same rate and concurrency.
    let paced = [
        "bench",
        "--route",
        "broker",
        "--tier",
        "memory",
        "--msgs",
        "400",
        "--rate",
        "4000",
        "--concurrency",
        "4",
        "--e2e",
        "--compare-raw",
        "--json",
    ];
    let (code, stdout, stderr) = run(&with(&flags, &paced)).await;
    assert_eq!(code, 0, "{stderr}");
    let figures = json(&stdout);
    for prefix in ["", "raw_"] {
        assert_eq!(figures[format!("{prefix}e2e_received")], 400, "{figures}");
        assert_eq!(figures[format!("{prefix}concurrency")], 4, "{figures}");
        for key in [
            "e2e_p99_us",
            "pacer_lateness_p99_us",
            "client_cpu_us_per_msg",
        ] {
            let value = figures[format!("{prefix}{key}")].as_f64();
            assert!(value.is_some_and(|v| v >= 0.0), "{prefix}{key}: {figures}");
        }
    }
    // Direct, end to end over a core NATS subscription.
    let (code, stdout, stderr) = run(&with(
        &flags,
        &["bench", "--msgs", "1000", "--e2e", "--json"],
    ))
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(json(&stdout)["e2e_received"], 1000, "{stdout}");
    // Batches, LAX and raw.
    let batched = [
        "bench",
        "--route",
        "broker",
        "--tier",
        "memory",
        "--msgs",
        "1000",
        "--batch",
        "500",
        "--concurrency",
        "1",
        "--compare-raw",
        "--json",
    ];
    let (code, stdout, stderr) = run(&with(&flags, &batched)).await;
    assert_eq!(code, 0, "{stderr}");
    let figures = json(&stdout);
    assert_eq!(
        (figures["msgs"].as_u64(), figures["batch"].as_u64()),
        (Some(1000), Some(500))
    );
    // A small sweep: the table and the report.
    let report = tempfile::NamedTempFile::new().unwrap();
    let sweep = [
        "bench",
        "sweep",
        "--route",
        "broker",
        "--tier",
        "memory",
        "--msgs",
        "200",
        "--concurrency",
        "1,8",
        "--sizes",
        "128,1024",
        "--html",
        report.path().to_str().unwrap(),
    ];
    let (code, stdout, stderr) = run(&with(&flags, &sweep)).await;
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        stdout.lines().filter(|l| l.contains(" 200 ")).count(),
        4,
        "{stdout}"
    );
    let page = std::fs::read_to_string(report.path()).unwrap();
    assert_eq!(page.matches("<svg").count(), 4, "{page}");
    servers.stop().await;
}

#[tokio::test]
async fn bad_usage_exits_2_and_says_what_is_wrong() {
    for (args, says) in [
        (&["pub"][..], "<SUBJECT>"),
        (&["pub", "s", "--tier", "gold"], "gold"),
        (&["pub", "s", "--header", "novalue"], "NAME=VALUE"),
        (&["bench", "--msgs", "0"], "--msgs"),
        (
            &["bench", "--route", "direct", "--tier", "persistent"],
            "--route broker",
        ),
        (&["sub"], "<SUBJECT>"),
        (&["streams", "create", "S"], "--subjects"),
        (&["launch"], "launch"),
    ] {
        let (code, _, stderr) = run(args).await;
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    let (code, stdout, _) = run(&["bench", "--help"]).await;
    assert_eq!(code, 0);
    assert!(stdout.contains("--compare-raw"), "{stdout}");
}

#[tokio::test]
async fn unreachable_servers_exit_1_and_name_the_fix() {
    let nowhere = format!("nats://127.0.0.1:{}", free_port());
    let (code, _, stderr) = run(&["pub", "x", "hi", "--nats-url", &nowhere]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("no nats-server at {nowhere}")) && stderr.contains("lax dev"),
        "{stderr}"
    );

    // NATS_URL, as the nats CLI reads it, when no flag or LAX_NATS_URLS says otherwise.
    let output = tokio::time::timeout(
        DEADLINE,
        lax(["pub", "x", "hi"]).env("NATS_URL", &nowhere).output(),
    )
    .await
    .expect("lax pub ends")
    .expect("lax runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("no nats-server at {nowhere}")),
        "{stderr}"
    );

    let no_broker = format!("127.0.0.1:{}", free_port());
    let (code, _, stderr) = run(&["streams", "ls", "--broker-addr", &no_broker]).await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("no LAX broker") && stderr.contains("--broker-addr"),
        "{stderr}"
    );
}

#[tokio::test]
async fn dev_starts_and_stops_cleanly_leaving_no_process() {
    let data = tempfile::tempdir().unwrap();
    let mut dev = lax([
        "dev",
        "--nats-port",
        "0",
        "--monitor-port",
        "0",
        "--grpc-port",
        "0",
        "--metrics-port",
        "0",
        "--data-dir",
    ])
    .arg(data.path())
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .expect("lax dev starts");
    let mut stdout = BufReader::new(dev.stdout.take().unwrap()).lines();
    let nats_line = wait_for_line(&mut stdout, "nats-server pid").await;
    let pid: i32 = nats_line
        .split("nats-server pid ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("a pid in {nats_line:?}"));
    let nats_url = nats_line
        .split_whitespace()
        .find(|word| word.starts_with("nats://"))
        .expect("the NATS URL")
        .to_owned();
    let grpc = wait_for_line(&mut stdout, "gRPC").await;
    let grpc = grpc
        .split_whitespace()
        .nth(1)
        .expect("the gRPC address")
        .to_owned();
    wait_for_line(&mut stdout, "replicated with 1 replica").await;

    // The stack works: an acked publish through its broker lands in its JetStream.
    let (code, stdout_text, stderr) = run(&[
        "pub",
        "dev.check",
        "ok",
        "--tier",
        "persistent",
        "--nats-url",
        &nats_url,
        "--broker-addr",
        &grpc,
    ])
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout_text.contains("stream DEV sequence 1"),
        "{stdout_text}"
    );

    kill(Pid::from_raw(dev.id().unwrap() as i32), Signal::SIGTERM).unwrap();
    assert_eq!(wait_exit(&mut dev).await, 0);
    assert_eq!(
        kill(Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH),
        "nats-server {pid} outlived lax dev"
    );
    assert!(data.path().join("nats-server.log").is_file());
}

#[tokio::test]
async fn dev_says_which_port_is_taken() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let data = tempfile::tempdir().unwrap();
    let (code, _, stderr) = run(&[
        "dev",
        "--nats-port",
        "0",
        "--monitor-port",
        "0",
        "--metrics-port",
        "0",
        "--grpc-port",
        &port,
        "--data-dir",
        data.path().to_str().unwrap(),
    ])
    .await;
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!("port {port} (gRPC)")) && stderr.contains("--grpc-port"),
        "{stderr}"
    );
}

#[tokio::test]
async fn demo_runs_end_to_end_with_no_servers() {
    let nowhere = format!("nats://127.0.0.1:{}", free_port());
    let (code, stdout, stderr) = run(&["demo", "--nats-url", &nowhere]).await;
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    for expected in [
        "started a stack of our own",
        "route direct",
        "received events.user.login",
        "stream ORDERS sequence",
        "5 published, 0 failed",
        "received events.view",
        "from stream ORDERS sequence 1, delivery 1, acked",
        "demo finished",
    ] {
        assert!(stdout.contains(expected), "{expected:?} missing:\n{stdout}");
    }
}

#[tokio::test]
async fn completions_are_printed_for_bash_zsh_and_fish() {
    for (shell, marker) in [
        ("bash", "complete -F _lax"),
        ("zsh", "#compdef lax"),
        ("fish", "complete -c lax"),
    ] {
        let (code, stdout, stderr) = run(&["completions", shell]).await;
        assert_eq!(code, 0, "{shell}: {stderr}");
        assert!(stdout.contains(marker), "{shell}: {stdout}");
        assert!(stdout.contains("streams"), "{shell} completes subcommands");
    }
    let (code, _, stderr) = run(&["completions", "tcsh"]).await;
    assert_eq!(code, 2, "{stderr}");
}

/// A detached tmux session on a private socket: one shell command in a real terminal, read
/// with `capture-pane` and typed into with `send-keys`. The server is killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    /// Whether tmux can be run; the terminal tests say why they skip when it cannot.
    fn available() -> bool {
        std::process::Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|output| output.status.success())
    }

    /// Runs `script` (a `sh` command line) in a new session; after it ends, the pane prints
    /// `lax-exit=<code>` and stays open.
    fn start(script: &str) -> Tmux {
        let socket = format!("lax-test-{}-{}", std::process::id(), free_port());
        let mut command = std::process::Command::new("tmux");
        // A new tmux server takes its environment from the client that starts it.
        for name in settings_from_the_environment() {
            command.env_remove(name);
        }
        let status = command
            .args(["-L", &socket, "-f", "/dev/null", "new-session", "-d"])
            .args(["-x", "250", "-y", "50", "-s", "lax"])
            .arg(format!("{script}; echo lax-exit=$?; read _"))
            .status()
            .expect("tmux runs");
        assert!(status.success(), "tmux new-session failed: {status}");
        Tmux { socket }
    }

    fn tmux(&self, args: &[&str]) -> std::process::Output {
        std::process::Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux runs")
    }

    /// The whole pane, history included; `escapes` keeps the colour sequences.
    fn capture(&self, escapes: bool) -> String {
        let mut args = vec!["capture-pane", "-p", "-J", "-S", "-", "-t", "lax"];
        if escapes {
            args.push("-e");
        }
        String::from_utf8_lossy(&self.tmux(&args).stdout).into_owned()
    }

    /// Waits until the pane shows `text`; returns the pane.
    async fn wait_for(&self, text: &str) -> String {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let pane = self.capture(false);
            if pane.contains(text) {
                return pane;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the terminal never showed {text:?}:\n{pane}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Types `keys` (tmux key names, e.g. `"y"`, `"Enter"`).
    fn send(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", "lax"];
        args.extend_from_slice(keys);
        assert!(self.tmux(&args).status.success(), "tmux send-keys failed");
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.tmux(&["kill-server"]);
    }
}

/// `'arg' 'arg' …` for a `sh` command line.
fn shell_words(args: &[&str]) -> String {
    args.iter()
        .map(|arg| format!("'{}'", arg.replace('\'', r"'\''")))
        .collect::<Vec<_>>()
        .join(" ")
}

#[tokio::test(flavor = "multi_thread")]
async fn streams_rm_asks_on_a_terminal_and_deletes_only_on_yes() {
    if !Tmux::available() {
        eprintln!("skipped: tmux is not installed (apt-get install tmux), so no real terminal");
        return;
    }
    let servers = Servers::start().await;
    let flags = servers.flags();
    let (code, _, stderr) = run(&with(
        &flags,
        &["streams", "create", "DOOMED", "--subjects", "doomed.>"],
    ))
    .await;
    assert_eq!(code, 0, "{stderr}");
    let rm = shell_words(&with(
        &flags,
        &[env!("CARGO_BIN_EXE_lax"), "streams", "rm", "DOOMED"],
    ));

    // Anything but yes keeps the stream.
    let terminal = Tmux::start(&rm);
    terminal
        .wait_for("Delete stream DOOMED and its 0 messages? [y/N]")
        .await;
    terminal.send(&["n", "Enter"]);
    let pane = terminal.wait_for("lax-exit=").await;
    assert!(pane.contains("lax-exit=1"), "{pane}");
    assert!(pane.contains("DOOMED was not deleted"), "{pane}");
    let (code, _, _) = run(&with(&flags, &["streams", "info", "DOOMED"])).await;
    assert_eq!(code, 0, "DOOMED survives a no");
    drop(terminal);

    let terminal = Tmux::start(&rm);
    terminal.wait_for("[y/N]").await;
    terminal.send(&["y", "Enter"]);
    let pane = terminal.wait_for("lax-exit=").await;
    assert!(
        pane.contains("deleted stream DOOMED") && pane.contains("lax-exit=0"),
        "{pane}"
    );
    let (code, _, stderr) = run(&with(&flags, &["streams", "info", "DOOMED"])).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("not found"), "{stderr}");
    servers.stop().await;
}

#[tokio::test]
async fn logs_are_coloured_on_a_terminal_unless_no_color_is_set() {
    if !Tmux::available() {
        eprintln!("skipped: tmux is not installed (apt-get install tmux), so no real terminal");
        return;
    }
    let no_broker = format!("127.0.0.1:{}", free_port());
    let ls = shell_words(&[
        env!("CARGO_BIN_EXE_lax"),
        "streams",
        "ls",
        "--broker-addr",
        &no_broker,
    ]);
    // Debug logs say what the client tries; on a terminal they carry colour sequences.
    let mut panes = Vec::new();
    for prefix in ["RUST_LOG=debug", "RUST_LOG=debug NO_COLOR=1"] {
        let terminal = Tmux::start(&format!("{prefix} {ls}"));
        let pane = terminal.wait_for("lax-exit=").await;
        assert!(
            pane.contains("lax-exit=1") && pane.contains("DEBUG"),
            "{pane}"
        );
        panes.push(terminal.capture(true));
    }
    assert!(
        panes[0].contains("\u{1b}["),
        "colours on a terminal:\n{}",
        panes[0]
    );
    assert!(!panes[1].contains("\u{1b}["), "NO_COLOR=1:\n{}", panes[1]);
}
