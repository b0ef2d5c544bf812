//! Connection behaviour against a real nats-server: restarts and the bounded reconnect buffer,
//! the server's max_payload, stalled connections, subscriptions and close.

mod common;

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use common::{DEADLINE, options, server, wait_for_state};
use futures::StreamExt;
use lax_core::{ErrorKind, PublishRequest, Publisher};
use lax_testkit::NatsServer;
use lax_transport_nats::{
    ConnectionEvent, ConnectionState, DirectMessage, DirectSubscription, NatsOptions, NatsPublisher,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinSet,
};

async fn next_message(subscription: &mut DirectSubscription) -> DirectMessage {
    tokio::time::timeout(DEADLINE, subscription.next())
        .await
        .expect("a message within the deadline")
        .expect("subscription open")
}

/// A message whose size in the reconnect buffer is known: subject `restart.m` (9 bytes), a
/// 6-byte id (header block 32 bytes), and `payload` bytes.
fn sized_request(i: usize, payload: usize) -> PublishRequest {
    PublishRequest::new("restart.m", vec![b'x'; payload]).with_message_id(format!("id-{i:03}"))
}
const SIZED_OVERHEAD: usize = 9 + 32;

#[tokio::test]
async fn publishes_during_a_restart_are_buffered_up_to_the_bound_then_delivered() {
    const BUFFERED: usize = 16;
    let mut server = server().await;
    let publisher =
        NatsPublisher::connect(options(server.url()).reconnect_buffer_messages(BUFFERED))
            .await
            .expect("connect");
    let mut events = publisher.events();
    // On this connection: async-nats re-subscribes before sending what it buffered.
    let mut subscription = publisher
        .subscribe("restart.>", None)
        .await
        .expect("subscribe");

    server.stop().await.expect("stop");
    wait_for_state(&publisher, ConnectionState::Disconnected).await;

    let mut accepted = Vec::new();
    let refused = loop {
        let request = sized_request(accepted.len(), 10);
        let id = request.message_id.clone();
        match publisher.publish(request).await {
            Ok(receipt) => {
                assert_eq!(receipt.message_id, id);
                accepted.push(id);
            }
            Err(error) => break error,
        }
        assert!(
            accepted.len() <= BUFFERED,
            "the buffer bound was not enforced"
        );
    };
    assert_eq!(
        accepted.len(),
        BUFFERED,
        "exactly the buffer's capacity is accepted"
    );
    assert_eq!(refused.kind(), ErrorKind::Unavailable, "{refused}");
    assert!(refused.trips_breaker() && !refused.may_be_stored());
    assert!(
        refused.message().contains("reconnect buffer is full"),
        "{refused}"
    );

    server.restart().await.expect("restart");
    wait_for_state(&publisher, ConnectionState::Connected).await;
    for id in &accepted {
        let message = next_message(&mut subscription).await;
        assert_eq!(
            message.message_id.as_ref(),
            Some(id),
            "buffered messages arrive in order"
        );
    }
    let after = publisher
        .publish(sized_request(999, 10))
        .await
        .expect("publish after reconnect");
    assert_eq!(
        next_message(&mut subscription).await.message_id,
        Some(after.message_id)
    );

    let mut seen = Vec::new();
    while let Ok(event) = events.try_recv() {
        seen.push(event);
    }
    let disconnected = seen
        .iter()
        .position(|e| *e == ConnectionEvent::Disconnected);
    let reconnected = seen.iter().position(|e| *e == ConnectionEvent::Reconnected);
    assert!(
        matches!((disconnected, reconnected), (Some(d), Some(r)) if d < r),
        "events: {seen:?}"
    );
    publisher.close().await.expect("close");
    assert_eq!(publisher.state(), ConnectionState::Closed);
}

#[tokio::test]
async fn the_reconnect_buffer_is_bounded_in_bytes_too() {
    const PAYLOAD: usize = 100;
    const BUDGET: usize = 10 * (PAYLOAD + SIZED_OVERHEAD) + 50;
    let mut server = server().await;
    let publisher = NatsPublisher::connect(options(server.url()).reconnect_buffer_bytes(BUDGET))
        .await
        .expect("connect");
    server.stop().await.expect("stop");
    wait_for_state(&publisher, ConnectionState::Disconnected).await;
    let mut accepted = 0;
    let refused = loop {
        match publisher.publish(sized_request(accepted, PAYLOAD)).await {
            Ok(_) => accepted += 1,
            Err(error) => break error,
        }
    };
    assert_eq!(accepted, 10);
    assert_eq!(refused.kind(), ErrorKind::Unavailable);
    assert!(
        refused.message().contains(&format!("{BUDGET} bytes")),
        "{refused}"
    );
    // A smaller message still fits in what is left.
    publisher
        .publish(sized_request(500, 5))
        .await
        .expect("fits in the remaining 50 bytes");
    drop(publisher);

    // Nothing to reconnect to: connecting fails at once instead of hanging.
    let error = NatsPublisher::connect(options(server.url()))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
}

#[tokio::test]
async fn flush_times_out_while_disconnected_instead_of_hanging() {
    let mut server = server().await;
    let publisher =
        NatsPublisher::connect(options(server.url()).flush_timeout(Duration::from_millis(300)))
            .await
            .expect("connect");
    publisher.flush().await.expect("flush while connected");
    server.stop().await.expect("stop");
    wait_for_state(&publisher, ConnectionState::Disconnected).await;
    let error = publisher.flush().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::TimedOut, "{error}");
    assert!(error.message().contains("disconnected"), "{error}");
}

#[tokio::test]
async fn a_message_over_max_payload_is_refused_and_the_connection_survives() {
    const MAX_PAYLOAD: usize = 1024;
    let server = NatsServer::builder()
        .jetstream(false)
        .max_payload(MAX_PAYLOAD as u32)
        .start()
        .await
        .expect("nats-server starts");
    let publisher = NatsPublisher::connect(options(server.url()))
        .await
        .expect("connect");
    assert_eq!(publisher.max_payload(), MAX_PAYLOAD);
    let mut subscription = publisher
        .subscribe("size.>", None)
        .await
        .expect("subscribe");

    // The payload alone fits; with the header block it does not.
    let payload_fits =
        PublishRequest::new("size.big", vec![0u8; MAX_PAYLOAD - 10]).with_header("Trace-Id", "t");
    let error = publisher.publish(payload_fits).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput, "{error}");
    assert!(error.message().contains("max_payload of 1024"), "{error}");
    let too_big = PublishRequest::new("size.big", vec![0u8; MAX_PAYLOAD + 1]);
    assert_eq!(
        publisher.publish(too_big).await.unwrap_err().kind(),
        ErrorKind::InvalidInput
    );

    let small = PublishRequest::new("size.small", "fits");
    let receipt = publisher
        .publish(small)
        .await
        .expect("the connection is still usable");
    let message = next_message(&mut subscription).await;
    assert_eq!(
        message.subject, "size.small",
        "nothing oversized reached the server"
    );
    assert_eq!(message.message_id, Some(receipt.message_id));
    assert_eq!(publisher.state(), ConnectionState::Connected);
    publisher.close().await.expect("close");
}

/// A TCP proxy that forwards until told to stall, then holds every connection open without
/// passing a byte either way (as a peer that hangs), and accepts new ones without answering.
struct StallingProxy {
    addr: SocketAddr,
    stall: watch::Sender<bool>,
    _tasks: JoinSet<()>,
}

impl StallingProxy {
    async fn start(upstream: SocketAddr) -> StallingProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (stall, stalled) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(async move {
            // Dropped with the accept task, which aborts every pump.
            let mut pumps = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                let stalled = stalled.clone();
                pumps.spawn(async move {
                    if *stalled.borrow() {
                        let _held_open = client;
                        return std::future::pending().await;
                    }
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::join!(
                        pump(client_read, server_write, stalled.clone()),
                        pump(server_read, client_write, stalled),
                    );
                });
            }
        });
        StallingProxy {
            addr,
            stall,
            _tasks: tasks,
        }
    }

    fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    stalled: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if *stalled.borrow() {
            // Swallow everything from now on, keeping both sockets open.
            let _held_open = (from, to);
            return std::future::pending().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn a_silently_stalled_connection_is_detected_by_pings() {
    let server = server().await;
    let upstream: SocketAddr = format!("127.0.0.1:{}", server.port()).parse().unwrap();
    let proxy = StallingProxy::start(upstream).await;
    let ping_interval = Duration::from_millis(400);
    let publisher = NatsPublisher::connect(
        options(proxy.url())
            .ping_interval(ping_interval)
            .connect_timeout(Duration::from_millis(500)),
    )
    .await
    .expect("connect through the proxy");
    // Prove the path works, then cut it without closing anything.
    publisher
        .subscribe("stall.>", None)
        .await
        .expect("round trip through the proxy");
    let detection = NatsOptions::default()
        .ping_interval(ping_interval)
        .stall_detection_time();
    assert_eq!(detection, Duration::from_millis(1200));

    proxy.stall.send_replace(true);
    let stalled_at = Instant::now();
    let mut watch = publisher.watch_state();
    let margin = Duration::from_secs(2);
    tokio::time::timeout(
        detection + margin,
        watch.wait_for(|state| *state == ConnectionState::Disconnected),
    )
    .await
    .unwrap_or_else(|_| panic!("a stall went unnoticed for {:?}", detection + margin))
    .expect("watch open");
    let took = stalled_at.elapsed();
    eprintln!(
        "stall detected after {took:?} (ping interval {ping_interval:?}, bound {detection:?})"
    );
    // The last answer came just before the stall, so the third unanswered ping is due about
    // `detection` later; much sooner would mean something else noticed.
    assert!(
        took >= detection - ping_interval,
        "detected after {took:?}, before the third ping was due"
    );

    // Publishing now is buffered, not lost in the dead socket.
    publisher
        .publish(PublishRequest::new("stall.after", "x"))
        .await
        .expect("buffered while reconnecting");
}

#[tokio::test]
async fn subscriptions_filter_share_by_queue_group_and_end_on_close() {
    let server = server().await;
    let publisher = NatsPublisher::connect(options(server.url()))
        .await
        .expect("connect");

    for bad in ["", "a..b", "a.>.b", "a b"] {
        let error = publisher.subscribe(bad, None).await.unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidInput, "{bad:?}");
    }
    let error = publisher
        .subscribe("jobs.>", Some("bad group".into()))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput);

    let mut worker_a = publisher
        .subscribe("jobs.*", Some("workers".into()))
        .await
        .expect("worker a");
    let mut worker_b = publisher
        .subscribe("jobs.*", Some("workers".into()))
        .await
        .expect("worker b");
    assert_eq!(worker_a.queue_group(), Some("workers"));
    let mut audit = publisher.subscribe("jobs.>", None).await.expect("audit");

    const JOBS: usize = 20;
    for i in 0..JOBS {
        publisher
            .publish(PublishRequest::new(format!("jobs.j{i}"), format!("{i}")))
            .await
            .expect("publish");
    }
    publisher
        .publish(PublishRequest::new("jobs.deep.not_matched_by_star", "x"))
        .await
        .expect("publish");
    let mut audited = Vec::new();
    for _ in 0..=JOBS {
        audited.push(next_message(&mut audit).await.payload);
    }
    assert_eq!(audited.len(), JOBS + 1, "the full wildcard sees everything");

    // Each job goes to exactly one worker.
    let mut handled = 0;
    while handled < JOBS {
        tokio::select! {
            Some(_) = worker_a.next() => handled += 1,
            Some(_) = worker_b.next() => handled += 1,
            () = tokio::time::sleep(DEADLINE) => panic!("only {handled} of {JOBS} jobs delivered"),
        }
    }

    publisher.close().await.expect("close");
    let end = tokio::time::timeout(DEADLINE, audit.next())
        .await
        .expect("the stream ends");
    assert_eq!(end, None, "nothing beyond the {JOBS} jobs, then the end");
    for worker in [&mut worker_a, &mut worker_b] {
        let end = tokio::time::timeout(DEADLINE, async { while worker.next().await.is_some() {} });
        end.await.expect("every subscription ends on close");
    }
    let error = publisher.subscribe("jobs.>", None).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Closed);
    let error = publisher.flush().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Closed, "{error}");
    publisher.close().await.expect("closing twice is harmless");
}

#[tokio::test]
async fn concurrent_close_waits_for_the_first_and_publishes_after_are_closed() {
    let server = server().await;
    let publisher = Arc::new(
        NatsPublisher::connect(options(server.url()))
            .await
            .expect("connect"),
    );
    let clone = (*publisher).clone();
    let (a, b) = tokio::join!(publisher.close(), clone.close());
    a.expect("first close");
    b.expect("second close");
    assert!(clone.is_closed());
    let error = clone
        .publish(PublishRequest::new("late.x", Bytes::from_static(b"x")))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Closed);
    assert_eq!(publisher.state(), ConnectionState::Closed);
}
