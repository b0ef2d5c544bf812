//! Property tests of the broker's proto → request mapping ([`lax_broker::input`]): requests
//! with adversarial subjects, headers, names, options and limits against the properties in
//! `support/request_oracle.rs`, which the fuzz target `broker_request` in `fuzz/` checks on
//! arbitrary bytes for much longer (`cargo xtask fuzz`).

use std::collections::HashMap;

use lax_proto::broker::v1 as pb;
use proptest::prelude::*;

mod support {
    pub(crate) mod request_oracle;
}
use support::request_oracle as oracle;

fn subject() -> impl Strategy<Value = String> {
    let token = prop_oneof![
        "[a-z0-9_-]{1,6}",
        Just("*".to_owned()),
        Just(">".to_owned()),
        Just(String::new()),
        Just("$JS".to_owned()),
        Just("$SYS".to_owned()),
        Just("API".to_owned()),
        "[a-z]{0,2}[ \t\n\u{a0}\u{2028}][a-z]{0,2}",
        any::<String>(),
    ];
    prop_oneof![
        8 => prop::collection::vec(token, 1..5).prop_map(|tokens| tokens.join(".")),
        1 => "[a-z]{1,10}(\\.[a-z]{1,10}){95,110}",
    ]
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        "[A-Za-z0-9_-]{1,12}",
        any::<String>(),
        "[A-Z]{1,4}[. */>\\\\][A-Z]{0,3}",
        "[A-Z]{250,260}",
    ]
}

fn headers() -> impl Strategy<Value = HashMap<String, String>> {
    let header_name = prop_oneof![
        "[!-9;-~]{1,10}",
        any::<String>(),
        Just("traceparent".to_owned()),
        Just("Nats-Msg-Id".to_owned()),
    ];
    let value = prop_oneof![
        "[ -~]{0,16}",
        any::<String>(),
        "[ -~]{0,4}[\r\n][ -~]{0,4}",
        Just("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned()),
    ];
    prop::collection::hash_map(header_name, value, 0..4)
}

fn tier() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("memory".to_owned()),
        Just("persistent".to_owned()),
        Just("replicated".to_owned()),
        any::<String>(),
    ]
}

fn publish_options() -> impl Strategy<Value = pb::PublishOptions> {
    (
        tier(),
        any::<bool>(),
        prop_oneof![Just(0), -5..5, any::<i32>()],
    )
        .prop_map(|(tier, require_ack, timeout_ms)| pb::PublishOptions {
            tier,
            require_ack,
            timeout_ms,
            ..Default::default()
        })
}

fn publish_request() -> impl Strategy<Value = pb::PublishRequest> {
    (
        subject(),
        prop::collection::vec(any::<u8>(), 0..80),
        headers(),
        prop_oneof![
            Just(String::new()),
            "[ -~]{1,12}",
            any::<String>(),
            "[a-z]{0,3}\n"
        ],
        prop_oneof![Just(String::new()), any::<String>()],
        prop_oneof![Just(String::new()), "[ -~]{0,8}\r?"],
        prop::option::of(publish_options()),
    )
        .prop_map(
            |(subject, payload, headers, message_id, trace_id, key, options)| pb::PublishRequest {
                subject,
                payload: payload.into(),
                headers,
                message_id,
                trace_id,
                key,
                options,
            },
        )
}

fn number() -> impl Strategy<Value = i64> {
    prop_oneof![Just(0i64), Just(-1), 1..1000i64, any::<i64>()]
}

fn stream_config() -> impl Strategy<Value = pb::StreamConfig> {
    (
        prop::collection::vec(subject(), 0..3),
        tier(),
        prop_oneof![
            Just(String::new()),
            Just("file".to_owned()),
            Just("memory".to_owned()),
            any::<String>()
        ],
        prop_oneof![Just(0), -2..8, any::<i32>()],
        (number(), number(), number()),
        prop_oneof![
            Just(String::new()),
            Just("old".to_owned()),
            Just("new".to_owned()),
            any::<String>()
        ],
    )
        .prop_map(
            |(subjects, tier, storage_type, num_replicas, limits, discard_policy)| {
                let (max_msgs, max_bytes, per_subject) = limits;
                pb::StreamConfig {
                    subjects,
                    tier,
                    storage_type,
                    num_replicas,
                    max_msgs,
                    max_bytes,
                    max_msg_size: per_subject.clamp(i32::MIN.into(), i32::MAX.into()) as i32,
                    max_consumers: (max_msgs % 100) as i32,
                    discard_policy,
                    retention: Some(pb::RetentionPolicy {
                        max_msgs_per_subject: per_subject,
                        ..Default::default()
                    }),
                    ..Default::default()
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn publish_requests_are_mapped_or_refused_as_invalid(
        request in publish_request(),
        defaults in prop::option::of(publish_options()),
        max_payload in prop_oneof![Just(lax_broker::input::DEFAULT_MAX_PAYLOAD), 0..64usize],
    ) {
        oracle::publish(request, defaults.as_ref(), max_payload);
    }

    #[test]
    fn subscriptions_read_only_well_formed_subjects(
        subject in subject(),
        group in prop_oneof![Just(String::new()), name()],
        dead_letter in prop_oneof![Just(String::new()), subject()],
        start_position in prop_oneof![
            Just(String::new()),
            Just("first".to_owned()),
            "sequence:-?[0-9]{1,3}",
            any::<String>()
        ],
        counts in (any::<i32>(), -3..100i32, -3..100i32),
    ) {
        oracle::subscribe(pb::SubscribeRequest {
            subject,
            consumer_group: group,
            start_position,
            options: Some(pb::SubscribeOptions {
                dead_letter_subject: dead_letter,
                max_inflight: counts.0,
                prefetch: counts.1,
                max_deliver: counts.2,
                ..Default::default()
            }),
        });
    }

    #[test]
    fn consumer_groups_need_valid_names_and_filters(
        name in name(),
        stream in name(),
        filter in prop_oneof![Just(String::new()), subject()],
    ) {
        oracle::consumer_group(pb::ConsumerGroupRequest {
            name,
            stream,
            subject_filter: filter,
            ..Default::default()
        });
    }

    #[test]
    fn stream_configs_are_mapped_or_refused_as_invalid(
        name in name(),
        config in stream_config(),
        replicated_replicas in 1..5usize,
    ) {
        oracle::stream_config(&name, &config, replicated_replicas);
    }
}
