//! Stream administration and consumer groups in LAX's own types, against a real nats-server
//! and the in-process LAX broker: what is sent is what JetStream holds, and what comes back
//! reads as it was written.

mod common;

use std::{collections::HashMap, time::Duration};

use common::broker::Env;
use lax_core::{ErrorKind, PublishRequest, Publisher, Tier};
use lax_transport_grpc::{
    BrokerAdmin, ConsumerGroupConfig, DeliverPolicy, DiscardPolicy, GroupJoin, GrpcPublisher,
    ListStreamsOptions, RetentionPolicy, StorageType, StreamConfig, StreamInfoOptions,
};

#[tokio::test]
async fn streams_and_groups_round_trip_through_jetstream() {
    let env = Env::start().await;
    let admin = BrokerAdmin::connect(&env.options(1)).await.unwrap();

    let config = StreamConfig::new(["audit.>"])
        .description("audit trail")
        .tier(Tier::Persistent)
        .retention(RetentionPolicy::Limits)
        .max_messages(1_000)
        .max_bytes(1 << 20)
        .max_age(Duration::from_secs(3600))
        .max_message_size(4096)
        .discard(DiscardPolicy::New)
        .deny_delete(true)
        .metadata("team", "compliance")
        .duplicate_window(Duration::from_secs(30));
    let created = admin.create_stream("AUDIT", config.clone()).await.unwrap();
    assert_eq!(created.name, "AUDIT");
    // The broker resolves what the tier implies; everything given comes back as given.
    let mut resolved = config.clone().storage(StorageType::File).replicas(1);
    let server_metadata: HashMap<String, String> = created
        .config
        .metadata
        .iter()
        .filter(|(key, _)| key.starts_with("_nats"))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    resolved.metadata.extend(server_metadata);
    assert_eq!(created.config, resolved);

    // JetStream itself holds those settings.
    let held = env
        .js
        .get_stream("AUDIT")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .config
        .clone();
    assert_eq!(
        (
            held.max_messages,
            held.max_bytes,
            held.max_age,
            held.max_message_size
        ),
        (1_000, 1 << 20, Duration::from_secs(3600), 4096)
    );
    assert!(held.deny_delete);

    let publisher = GrpcPublisher::connect(env.options(1)).await.unwrap();
    publisher
        .publish(PublishRequest::new("audit.login", "alice").with_tier(Tier::Persistent))
        .await
        .unwrap();
    publisher.close().await.unwrap();

    let group = ConsumerGroupConfig::default().deliver_policy(DeliverPolicy::All);
    match admin
        .create_consumer_group("auditors", "AUDIT", "audit.>", &group)
        .await
        .unwrap()
    {
        GroupJoin::Created(created) => {
            assert_eq!(
                (created.name.as_str(), created.stream.as_str()),
                ("auditors", "AUDIT")
            );
            assert!(created.created.is_some());
        }
        other => panic!("expected a new group, got {other:?}"),
    }
    assert!(
        admin
            .create_consumer_group("auditors", "AUDIT", "audit.>", &group)
            .await
            .unwrap()
            .already_existed()
    );
    let conflicting = admin
        .create_consumer_group(
            "auditors",
            "AUDIT",
            "audit.>",
            &group.clone().max_ack_pending(7),
        )
        .await
        .unwrap_err();
    assert_eq!(conflicting.kind(), ErrorKind::Rejected, "{conflicting}");

    let info = admin
        .stream_info(
            "AUDIT",
            StreamInfoOptions::default().consumers(true).stats(true),
        )
        .await
        .unwrap();
    assert_eq!(info.stream.state.messages, 1);
    assert_eq!(info.stream.state.last_sequence, 1);
    assert_eq!(info.stream.state.consumer_count, 1);
    assert!(info.stream.state.last_timestamp.is_some());
    assert_eq!(info.consumers.len(), 1);
    assert_eq!(info.consumers[0].name, "auditors");
    let stats = info.stats.expect("stats were asked for");
    assert_eq!(stats.messages_per_subject.get("audit.login"), Some(&1));
    let plain = admin
        .stream_info("AUDIT", StreamInfoOptions::default())
        .await
        .unwrap();
    assert!(plain.consumers.is_empty() && plain.stats.is_none());

    let updated = admin
        .update_stream("AUDIT", config.max_messages(5_000))
        .await
        .unwrap();
    assert_eq!(updated.config.max_messages, Some(5_000));

    env.stream("OTHER", &["other.>"]).await;
    let page = admin
        .list_streams(ListStreamsOptions::default().subject_filter("audit.login"))
        .await
        .unwrap();
    let names: Vec<&str> = page.streams.iter().map(|s| s.name.as_str()).collect();
    assert_eq!((names, page.total), (vec!["AUDIT"], 1));
    // Every stream (the broker's dead-letter stream too, once a group made it), a page at a time.
    let all = admin
        .list_streams(ListStreamsOptions::default())
        .await
        .unwrap();
    let mut names: Vec<String> = all.streams.iter().map(|s| s.name.clone()).collect();
    assert_eq!(all.total as usize, names.len());
    assert!(names.contains(&"AUDIT".to_owned()) && names.contains(&"OTHER".to_owned()));
    let mut paged = Vec::new();
    for offset in 0..all.total {
        let page = admin
            .list_streams(ListStreamsOptions::default().offset(offset).limit(1))
            .await
            .unwrap();
        assert_eq!(
            (page.offset, page.limit, page.total),
            (offset, 1, all.total)
        );
        paged.extend(page.streams.into_iter().map(|s| s.name));
    }
    names.sort();
    paged.sort();
    assert_eq!(paged, names);

    admin.delete_stream("AUDIT").await.unwrap();
    let gone = admin
        .stream_info("AUDIT", StreamInfoOptions::default())
        .await
        .unwrap_err();
    assert_eq!(gone.kind(), ErrorKind::Rejected, "{gone}");
    let refused = admin
        .create_stream(
            "BAD",
            StreamConfig::new(["bad.>"])
                .tier(Tier::Memory)
                .storage(StorageType::File),
        )
        .await
        .unwrap_err();
    assert_eq!(
        refused.kind(),
        ErrorKind::InvalidInput,
        "the broker refuses a contradiction: {refused}"
    );
}
