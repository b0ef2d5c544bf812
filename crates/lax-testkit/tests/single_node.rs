//! One real nats-server: acked JetStream publishes, restart with the same store, kill, and
//! process hygiene.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use async_nats::jetstream::{
    self,
    stream::{Config, StorageType},
};
use lax_testkit::{NatsServer, TestkitError, create_stream_with_retry, wait_until};

const DEADLINE: Duration = Duration::from_secs(20);

/// True once `pid` no longer names a live process (gone, or a zombie awaiting its reaper).
fn process_is_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => {
            // The state follows the parenthesised command name.
            let state = stat.rsplit(')').next().unwrap_or("").trim_start();
            state.starts_with('Z') || state.starts_with('X')
        }
    }
}

async fn wait_gone(pid: u32) {
    wait_until(
        Duration::from_secs(10),
        || async move { process_is_gone(pid) },
    )
    .await
    .unwrap_or_else(|_| panic!("process {pid} is still alive"));
}

fn orders_config() -> Config {
    Config {
        name: "ORDERS".into(),
        subjects: vec!["orders.>".into()],
        storage: StorageType::File,
        ..Default::default()
    }
}

async fn message_count(server: &NatsServer) -> u64 {
    let js = jetstream::new(server.client().await.unwrap());
    let mut stream = js.get_stream("ORDERS").await.unwrap();
    stream.info().await.unwrap().state.messages
}

#[tokio::test]
async fn acked_publish_survives_restart_and_kill() {
    let started = Instant::now();
    let mut server = NatsServer::start().await.unwrap();
    eprintln!("single node ready in {:?}", started.elapsed());

    assert_eq!(server.url(), format!("nats://127.0.0.1:{}", server.port()));
    assert!(server.monitor_url().starts_with("http://127.0.0.1:"));
    let first_pid = server.pid().expect("running");
    let port = server.port();
    let store_dir = server.store_dir();

    let js = jetstream::new(server.client().await.unwrap());
    create_stream_with_retry(&js, orders_config(), DEADLINE)
        .await
        .unwrap();
    let ack = js
        .publish("orders.created", "order 1".into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(ack.stream, "ORDERS");
    assert_eq!(ack.sequence, 1);
    assert!(!ack.duplicate);
    assert!(store_dir.join("jetstream").is_dir(), "file store under -sd");
    drop(js);

    // Graceful restart: same port, same store, new process.
    let restart = Instant::now();
    server.restart().await.unwrap();
    eprintln!("graceful restart ready in {:?}", restart.elapsed());
    assert_eq!(server.port(), port);
    assert_eq!(server.store_dir(), store_dir);
    assert_ne!(server.pid(), Some(first_pid));
    wait_gone(first_pid).await;
    assert_eq!(message_count(&server).await, 1);

    // Crash: SIGKILL, then start again.
    let second_pid = server.pid().unwrap();
    server.kill().await.unwrap();
    assert_eq!(server.pid(), None);
    assert!(!server.is_running());
    wait_gone(second_pid).await;
    server.restart().await.unwrap();
    assert_eq!(
        message_count(&server).await,
        1,
        "the acked message survived SIGKILL"
    );

    let js = jetstream::new(server.client().await.unwrap());
    let ack = js
        .publish("orders.created", "order 2".into())
        .await
        .unwrap()
        .await
        .unwrap();
    assert_eq!(ack.sequence, 2);

    // The monitoring view agrees.
    let state = server.stream_state("ORDERS").await.unwrap().unwrap();
    assert_eq!((state.messages, state.first_seq, state.last_seq), (2, 1, 2));
    assert!(server.log_tail(50).contains("Server is ready"));

    let pid = server.pid().unwrap();
    server.stop().await.unwrap();
    assert_eq!(server.pid(), None);
    wait_gone(pid).await;
    // Stopping twice is fine.
    server.stop().await.unwrap();
}

#[tokio::test]
async fn drop_kills_the_server_and_removes_its_directory() {
    let server = NatsServer::start().await.unwrap();
    let pid = server.pid().unwrap();
    let dir = server.dir().to_path_buf();
    assert!(dir.is_dir());
    drop(server);
    wait_gone(pid).await;
    assert!(!dir.exists());
}

#[test]
fn a_panicking_test_still_kills_its_server() {
    let (tx, rx) = std::sync::mpsc::channel();
    let result = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let server = NatsServer::start().await.unwrap();
            tx.send(server.pid().unwrap()).unwrap();
            panic!("deliberate panic while a server runs");
        })
    })
    .join();
    assert!(result.is_err(), "the thread panicked");
    let pid = rx.recv().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !process_is_gone(pid) {
        assert!(Instant::now() < deadline, "server {pid} outlived the panic");
        std::thread::sleep(Duration::from_millis(10));
    }
}

const ORPHAN_CHILD_ENV: &str = "LAX_TESTKIT_ORPHAN_CHILD";

/// Helper run as a child process by `a_killed_test_process_leaves_no_server`: starts a
/// server, prints its pid and waits to be killed. Does nothing in a normal test run.
#[tokio::test]
async fn orphan_child_helper() {
    if std::env::var_os(ORPHAN_CHILD_ENV).is_none() {
        return;
    }
    let server = NatsServer::start().await.unwrap();
    println!(
        "LAX_SERVER_PID={} LAX_SERVER_DIR={}",
        server.pid().unwrap(),
        server.dir().display()
    );
    std::future::pending::<()>().await;
}

#[tokio::test]
async fn a_killed_test_process_leaves_no_server() {
    use tokio::io::AsyncBufReadExt as _;

    // The helper test runs in a child copy of this test binary; kill_on_drop cleans it up
    // should this test fail half-way.
    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "orphan_child_helper",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ORPHAN_CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (server_pid, server_dir) = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            // libtest may print "test orphan_child_helper ... " on the same line.
            if let Some((_, rest)) = line.split_once("LAX_SERVER_PID=") {
                let (pid, dir) = rest.split_once(" LAX_SERVER_DIR=").unwrap();
                return (pid.parse::<u32>().unwrap(), PathBuf::from(dir.trim()));
            }
        }
        panic!("the child exited without starting a server");
    })
    .await
    .expect("the child started a server in time");
    assert!(!process_is_gone(server_pid));
    assert!(server_dir.join("store").is_dir());

    // SIGKILL: no unwinding, no Drop. Only the watchdog can clean up.
    child.kill().await.unwrap();
    wait_gone(server_pid).await;
    wait_until(Duration::from_secs(10), || async { !server_dir.exists() })
        .await
        .expect("the watchdog removes the server's directory");
}

#[tokio::test]
async fn builder_options_reach_the_server() {
    let server = NatsServer::builder()
        .args(["--user", "alice", "--pass", "s3cret"])
        .max_payload(4096)
        .name("authed")
        .start()
        .await
        .unwrap();
    assert_eq!(server.name(), Some("authed"));

    let refused =
        tokio::time::timeout(Duration::from_secs(5), async_nats::connect(server.url())).await;
    assert!(
        !matches!(refused, Ok(Ok(_))),
        "a client without credentials must be refused"
    );

    let client =
        async_nats::ConnectOptions::with_user_and_password("alice".into(), "s3cret".into())
            .connect(server.url())
            .await
            .unwrap();
    assert_eq!(client.server_info().max_payload, 4096);

    let varz = server.monitor_json("/varz").await.unwrap();
    assert_eq!(varz["max_payload"], 4096);
    assert_eq!(varz["server_name"], "authed");
}

#[tokio::test]
async fn a_server_without_jetstream() {
    let server = NatsServer::builder()
        .jetstream(false)
        .start()
        .await
        .unwrap();
    let client = server.client().await.unwrap();
    assert!(!client.server_info().jetstream);
}

#[tokio::test]
async fn startup_failure_quotes_the_server_log() {
    let err = NatsServer::builder()
        .config("this is { not a valid config")
        .startup_timeout(Duration::from_secs(10))
        .start()
        .await
        .unwrap_err();
    assert!(matches!(err, TestkitError::Startup { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("exited while starting"), "{message}");
    assert!(message.contains("--- server log"), "{message}");
    assert!(message.to_lowercase().contains("error"), "{message}");
}

#[tokio::test]
async fn servers_side_by_side_get_their_own_ports_and_dirs() {
    let (a, b) = tokio::join!(NatsServer::start(), NatsServer::start());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.port(), b.port());
    assert_ne!(a.monitor_port(), b.monitor_port());
    assert_ne!(a.store_dir(), b.store_dir());
    assert!(Path::new(&a.log_path()).is_file());
}
