//! A 3-node JetStream cluster keeps every acked publish to an R3 stream while a node is
//! killed, and the restarted node catches up.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use async_nats::jetstream::{
    self,
    stream::{Config, StorageType},
};
use lax_testkit::{
    NatsCluster, create_stream_with_retry, publish_with_retry, wait_for, wait_until,
};

const DEADLINE: Duration = Duration::from_secs(30);
const PUBLISHERS: usize = 4;
/// Acks needed before the kill, and again after it (proof of progress without the node).
const ACKS_PER_PHASE: usize = 150;
/// Safety bound on each publisher.
const MAX_PER_PUBLISHER: usize = 5_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r3_stream_loses_no_acked_message_when_a_node_dies() {
    let started = Instant::now();
    let mut cluster = NatsCluster::start(3).await.unwrap();
    eprintln!("3-node cluster ready in {:?}", started.elapsed());
    assert_eq!(cluster.len(), 3);
    assert_eq!(cluster.urls().len(), 3);

    let client = cluster.client().await.unwrap();
    let js = jetstream::new(client);
    let create = Instant::now();
    let stream = create_stream_with_retry(
        &js,
        Config {
            name: "ORDERS".into(),
            subjects: vec!["orders.>".into()],
            storage: StorageType::File,
            num_replicas: 3,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        },
        DEADLINE,
    )
    .await
    .unwrap();
    eprintln!("R3 stream created in {:?}", create.elapsed());
    let stream_leader = stream
        .cached_info()
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .expect("an R3 stream has a leader");
    let victim = (0..3)
        .find(|&i| cluster.node(i).name() == Some(stream_leader.as_str()))
        .expect("the stream leader is one of our nodes");

    // Publishers: each message has its own Nats-Msg-Id and is retried with that id until
    // acked, so a publish that lands during the leader election is stored exactly once.
    let acked: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    let ack_count = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let (js, acked, ack_count, stop) =
            (js.clone(), acked.clone(), ack_count.clone(), stop.clone());
        publishers.push(tokio::spawn(async move {
            let mut duplicates = 0usize;
            for i in 0..MAX_PER_PUBLISHER {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let id = format!("p{p}-{i}");
                let ack = publish_with_retry(
                    &js,
                    &format!("orders.p{p}"),
                    &id,
                    id.clone().into(),
                    DEADLINE,
                )
                .await
                .unwrap_or_else(|e| panic!("{id} never acked: {e}"));
                duplicates += usize::from(ack.duplicate);
                acked.lock().unwrap().insert(id, ack.sequence);
                ack_count.fetch_add(1, Ordering::SeqCst);
            }
            duplicates
        }));
    }

    wait_until(DEADLINE, || async {
        ack_count.load(Ordering::SeqCst) >= ACKS_PER_PHASE
    })
    .await
    .expect("acks before the kill");
    let acked_at_kill = ack_count.load(Ordering::SeqCst);
    let killed_at = Instant::now();
    cluster.kill_node(victim).await.unwrap();
    eprintln!("killed n{victim} (the stream leader) after {acked_at_kill} acks");

    wait_until(DEADLINE, || async {
        ack_count.load(Ordering::SeqCst) >= acked_at_kill + ACKS_PER_PHASE
    })
    .await
    .expect("publishing goes on with one node down");
    eprintln!(
        "{ACKS_PER_PHASE} more acks with n{victim} down took {:?}",
        killed_at.elapsed()
    );
    stop.store(true, Ordering::SeqCst);
    let mut duplicates = 0;
    for publisher in publishers {
        duplicates += publisher.await.unwrap();
    }

    let acked = acked.lock().unwrap().clone();
    let total = acked.len() as u64;
    eprintln!("{total} messages acked ({duplicates} acks were duplicates of a retried publish)");

    // Every ack names a distinct sequence, and the stream holds exactly the acked messages.
    let sequences: HashSet<u64> = acked.values().copied().collect();
    assert_eq!(
        sequences.len() as u64,
        total,
        "two acked ids share a sequence"
    );
    let (info_stream, state) = wait_for(DEADLINE, || async {
        let mut stream = js.get_stream("ORDERS").await.ok()?;
        let state = stream.info().await.ok()?.state.clone();
        Some((stream, state))
    })
    .await
    .expect("stream info");
    assert_eq!(
        state.messages, total,
        "stream holds exactly the acked messages"
    );
    assert_eq!(state.last_sequence, total);
    assert_eq!(*sequences.iter().max().unwrap(), total);

    // Read every stored message back by sequence (from the stream leader: no consumer,
    // so no dependency on the meta leader, which may itself be re-electing).
    let mut stored = BTreeMap::new();
    for sequence in 1..=total {
        let message = wait_for(DEADLINE, || async {
            info_stream.get_raw_message(sequence).await.ok()
        })
        .await
        .unwrap_or_else(|_| panic!("message {sequence} cannot be read back"));
        let id = message
            .headers
            .get("Nats-Msg-Id")
            .map(|v| v.as_str().to_owned())
            .expect("every message carries its id");
        assert_eq!(message.payload, id.as_bytes(), "payload is the id");
        assert!(
            stored.insert(id, sequence).is_none(),
            "an id is stored twice"
        );
    }
    assert_eq!(stored, acked, "0 acked messages lost, none stored twice");

    // The killed node comes back and catches up.
    let restart = Instant::now();
    cluster.restart_node(victim).await.unwrap();
    let cluster_back = restart.elapsed();
    let node = cluster.node(victim);
    let caught_up = wait_until(DEADLINE, || async {
        matches!(
            node.stream_state("ORDERS").await,
            Ok(Some(s)) if s.last_seq == total && s.messages == total
        )
    })
    .await;
    if caught_up.is_err() {
        let state = node.stream_state("ORDERS").await;
        panic!("n{victim} did not catch up to {total} within {DEADLINE:?}: {state:?}");
    }
    eprintln!(
        "n{victim} back in the cluster after {cluster_back:?}, caught up to seq {total} after {:?}",
        restart.elapsed()
    );
    for i in 0..3 {
        let state = cluster
            .node(i)
            .stream_state("ORDERS")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (state.messages, state.last_seq),
            (total, total),
            "node n{i}"
        );
    }
}

#[tokio::test]
async fn node_lifecycle_and_readiness() {
    let mut cluster = NatsCluster::start(3).await.unwrap();
    let leader = cluster.meta_leader().await.unwrap().expect("a meta leader");
    for i in 0..3 {
        let node = cluster.node(i);
        assert_eq!(node.name(), Some(format!("n{i}").as_str()));
        assert_eq!(
            node.meta_leader().await.unwrap().as_deref(),
            Some(leader.as_str())
        );
        assert!(node.cluster_port().is_some());
        assert!(node.healthz().await.unwrap());
    }

    // Stop the meta leader gracefully: the others elect a new one.
    let leader_index = (0..3)
        .find(|&i| cluster.node(i).name() == Some(leader.as_str()))
        .unwrap();
    cluster.stop_node(leader_index).await.unwrap();
    assert!(cluster.node(leader_index).pid().is_none());
    cluster.wait_ready(DEADLINE).await.unwrap();
    let new_leader = cluster.meta_leader().await.unwrap().unwrap();
    assert_ne!(new_leader, leader);

    cluster.restart_node(leader_index).await.unwrap();
    assert!(cluster.node(leader_index).pid().is_some());
    assert!(
        cluster
            .node(leader_index)
            .meta_leader()
            .await
            .unwrap()
            .is_some()
    );
}
