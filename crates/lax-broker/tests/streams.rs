//! StreamManager and consumer groups.

mod common;

use std::collections::HashMap;

use common::{Harness, request};
use lax_proto::broker::v1::{
    ConsumerGroupConfig, ConsumerGroupRequest, CreateStreamRequest, DeleteStreamRequest,
    GetStreamInfoRequest, ListStreamsRequest, StreamConfig, SubscribeRequest, UpdateStreamRequest,
};
use tonic::Code;

fn stream_config(subject: &str, tier: &str) -> StreamConfig {
    StreamConfig {
        subjects: vec![subject.into()],
        tier: tier.into(),
        description: "test stream".into(),
        max_msgs: 1_000,
        duplicate_window: Some(prost_types::Duration {
            seconds: 30,
            nanos: 0,
        }),
        metadata: HashMap::from([("team".into(), "core".into())]),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_created_inspected_updated_listed_and_deleted() {
    let mut h = Harness::start().await;
    let created = h
        .streams
        .create_stream(CreateStreamRequest {
            name: "ORDERS".into(),
            config: Some(stream_config("orders.>", "persistent")),
        })
        .await
        .unwrap()
        .into_inner();
    let config = created.config.unwrap();
    assert_eq!(
        (
            config.storage_type.as_str(),
            config.num_replicas,
            config.tier.as_str()
        ),
        ("file", 1, "persistent")
    );
    assert_eq!(config.max_msgs, 1_000);
    assert_eq!(config.duplicate_window.unwrap().seconds, 30);
    assert_eq!(config.metadata["team"], "core");

    for i in 0..4 {
        h.client
            .publish(request(&format!("orders.{}", i % 2), "abcd", "persistent"))
            .await
            .unwrap();
    }
    h.streams
        .create_stream(CreateStreamRequest {
            name: "EVENTS".into(),
            config: Some(stream_config("events.>", "memory")),
        })
        .await
        .unwrap();
    h.client
        .create_consumer_group(ConsumerGroupRequest {
            name: "billing".into(),
            stream: "ORDERS".into(),
            subject_filter: "orders.>".into(),
            config: None,
        })
        .await
        .unwrap();

    let info = h
        .streams
        .get_stream_info(GetStreamInfoRequest {
            name: "ORDERS".into(),
            include_consumers: true,
            include_stats: true,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.state.unwrap().messages, 4);
    assert_eq!(info.consumers.len(), 1);
    assert_eq!(info.consumers[0].name, "billing");
    let stats = info.stats.unwrap();
    assert_eq!(stats.subject_stats.get("orders.0"), Some(&2));
    assert!(stats.avg_msg_size > 0.0);

    let mut update = stream_config("orders.>", "persistent");
    update.max_msgs = 5_000;
    let updated = h
        .streams
        .update_stream(UpdateStreamRequest {
            name: "ORDERS".into(),
            config: Some(update),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(updated.config.unwrap().max_msgs, 5_000);

    let all = h
        .streams
        .list_streams(ListStreamsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(all.total, 2);
    let names: Vec<_> = all.streams.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains(&"ORDERS") && names.contains(&"EVENTS"),
        "{names:?}"
    );
    let page = h
        .streams
        .list_streams(ListStreamsRequest {
            offset: 1,
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (page.streams.len(), page.total, page.offset, page.limit),
        (1, 2, 1, 1)
    );
    let filtered = h
        .streams
        .list_streams(ListStreamsRequest {
            subject_filter: "events.x".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(filtered.streams.len(), 1);
    assert_eq!(filtered.streams[0].name, "EVENTS");

    let deleted = h
        .streams
        .delete_stream(DeleteStreamRequest {
            name: "ORDERS".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(deleted.success);
    let missing = h
        .streams
        .get_stream_info(GetStreamInfoRequest {
            name: "ORDERS".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    // The cached lookup went with the stream: publishing re-creates it.
    let again = h
        .client
        .publish(request("orders.0", "x", "persistent"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((again.stream.as_str(), again.sequence), ("ORDERS", 1));
    h.broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_stream_configs_are_invalid_arguments() {
    let mut h = Harness::start().await;
    let mut conflicting = stream_config("x.>", "persistent");
    conflicting.storage_type = "memory".into();
    let mut negative = stream_config("x.>", "");
    negative.max_bytes = -1;
    let mut window_too_long = stream_config("x.>", "");
    window_too_long.max_age = Some(prost_types::Duration {
        seconds: 10,
        nanos: 0,
    });
    window_too_long.duplicate_window = Some(prost_types::Duration {
        seconds: 60,
        nanos: 0,
    });
    for (name, config) in [
        ("BAD.NAME", stream_config("x.>", "")),
        ("S", conflicting),
        ("S", negative),
        (
            "S",
            StreamConfig {
                storage_type: "tape".into(),
                ..Default::default()
            },
        ),
        // JetStream's own check (10052): duplicate window longer than max age.
        ("S", window_too_long),
    ] {
        let status = h
            .streams
            .create_stream(CreateStreamRequest {
                name: name.into(),
                config: Some(config),
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
    }
    h.broker.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_groups_exist_once_and_conflicts_are_named() {
    let mut h = Harness::start().await;
    h.client
        .publish(request("tasks.new", "x", "persistent"))
        .await
        .unwrap();
    let group = ConsumerGroupRequest {
        name: "workers".into(),
        stream: "TASKS".into(),
        subject_filter: "tasks.>".into(),
        config: Some(ConsumerGroupConfig {
            deliver_policy: "all".into(),
            max_deliver: 5,
            ack_wait_seconds: 10,
            ..Default::default()
        }),
    };
    let created = h
        .client
        .create_consumer_group(group.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (created.name.as_str(), created.stream.as_str()),
        ("workers", "TASKS")
    );
    assert!(created.created.is_some());

    let again = h
        .client
        .create_consumer_group(group.clone())
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");

    let mut conflicting = group.clone();
    conflicting.config.as_mut().unwrap().max_deliver = 9;
    let conflict = h
        .client
        .create_consumer_group(conflicting)
        .await
        .unwrap_err();
    assert_eq!(conflict.code(), Code::FailedPrecondition);
    assert!(
        conflict.message().contains("max_deliver"),
        "{}",
        conflict.message()
    );

    let mut no_stream = group;
    no_stream.stream = "NOPE".into();
    assert_eq!(
        h.client
            .create_consumer_group(no_stream)
            .await
            .unwrap_err()
            .code(),
        Code::NotFound
    );

    let subscribe = h
        .client
        .subscribe(SubscribeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(
        subscribe.code(),
        Code::InvalidArgument,
        "a subject is required"
    );
    h.broker.shutdown().await.unwrap();
}
