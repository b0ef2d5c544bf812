//! The Grafana dashboard in `deploy/grafana/lax-dashboard.json` against what a running
//! broker and client export: after a session that publishes (stored, duplicate, refused),
//! consumes in a group (a redelivery, a dead letter) and leaves a backlog, every metric each
//! dashboard query names must be a series in the broker's `/metrics` or the client's
//! `render_metrics()`, carrying every label the query selects or groups by.
#![cfg(feature = "prometheus")]

mod common;

use std::{collections::BTreeSet, time::Duration};

use common::{DEADLINE, Env};
use futures::StreamExt as _;
use lax_broker::{Broker, BrokerConfig};
use lax_client::{
    ClientOptions, ErrorKind, LaxClient, PublishOptions, StartPosition, SubscribeOptions, Tier,
};
use lax_proto::broker::v1::StreamConfig;
use lax_testkit::wait_for;

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../deploy/grafana/lax-dashboard.json"
);

/// One metric a query names, with the labels it selects on or groups by.
#[derive(Debug)]
struct Reference {
    metric: String,
    labels: BTreeSet<String>,
}

/// The metrics a PromQL expression names (identifiers starting `lax_`), each with the label
/// names of its `{…}` selector and of every `by (…)` in the expression (`le` aside, which
/// histograms' `_bucket` series carry).
fn references(expr: &str) -> Vec<Reference> {
    let identifier = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut grouped = BTreeSet::new();
    for (at, _) in expr.match_indices("by (") {
        let rest = &expr[at + "by (".len()..];
        let list = &rest[..rest.find(')').expect("a closed `by (`")];
        grouped.extend(
            list.split(',')
                .map(str::trim)
                .filter(|l| !l.is_empty() && *l != "le")
                .map(str::to_owned),
        );
    }
    let mut found = Vec::new();
    let mut rest = expr;
    while let Some(start) = rest.find("lax_") {
        let preceded = rest[..start].chars().next_back().is_some_and(identifier);
        let name_len = rest[start..]
            .find(|c: char| !identifier(c))
            .unwrap_or(rest.len() - start);
        let metric = &rest[start..start + name_len];
        rest = &rest[start + name_len..];
        if preceded {
            continue;
        }
        let mut labels = grouped.clone();
        if let Some(selector) = rest.strip_prefix('{') {
            let selector = &selector[..selector.find('}').expect("a closed selector")];
            for matcher in selector.split(',') {
                let name = matcher
                    .split(['=', '!'])
                    .next()
                    .expect("a label name")
                    .trim();
                labels.insert(name.to_owned());
            }
        }
        found.push(Reference {
            metric: metric.to_owned(),
            labels,
        });
    }
    found
}

/// The sample lines of `metric` in an exposition text.
fn samples<'a>(text: &'a str, metric: &str) -> Vec<&'a str> {
    text.lines()
        .filter(|line| {
            line.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .collect()
}

/// The value of the one sample of `series` (a name with its labels, as rendered).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_names_series_the_broker_and_client_export() {
    let env = Env::start().await;
    let mut config = BrokerConfig::single_node([env.nats.url()]);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.metrics_listen = "127.0.0.1:0".parse().unwrap();
    config.no_metrics = false;
    config.shutdown_timeout_ms = 5_000;
    let broker = Broker::start(config).await.expect("broker starts");
    let metrics_url = format!(
        "http://{}/metrics",
        broker.metrics_addr().expect("metrics are served")
    );
    let options = ClientOptions::builder()
        .nats_urls([env.nats.url()])
        .broker_addr(format!("http://{}", broker.grpc_addr()))
        .connection_pool_size(2)
        .retry_attempts(1)
        .build()
        .unwrap();
    let client = LaxClient::connect(options).await.unwrap();
    // A memory-tier stream: acked memory-tier messages are stored, persistent ones refused.
    client
        .admin()
        .unwrap()
        .create_stream(
            "DASH",
            StreamConfig {
                subjects: vec!["dash.>".into()],
                tier: "memory".into(),
                ..Default::default()
            },
        )
        .await
        .expect("stream created");
    let acked = || PublishOptions::tier(Tier::Memory).require_ack(true);

    // Publishing: stored, a duplicate, a refusal by a known stream, and a direct message.
    for n in 0..3 {
        client
            .publish_with(
                "dash.orders",
                format!("order-{n}"),
                acked().message_id(format!("order-{n}")),
            )
            .await
            .expect("stored");
    }
    let again = client
        .publish_with("dash.orders", "order-0", acked().message_id("order-0"))
        .await
        .expect("a duplicate is answered");
    assert!(again.ack.unwrap().duplicate);
    let refused = client
        .publish_with("dash.orders", "too strong", PublishOptions::persistent())
        .await
        .expect_err("a memory stream refuses the persistent tier");
    assert_eq!(refused.kind(), ErrorKind::Rejected);
    client.publish("dash.direct", "d").await.expect("direct");

    // Consuming in a group: the first message is nacked until it is dead-lettered; the
    // other two stay in the backlog (the group's lag).
    let mut subscription = client
        .subscribe(
            "dash.orders",
            SubscribeOptions::group("billing")
                .start(StartPosition::First)
                .max_deliver(2)
                .max_inflight(1)
                .prefetch(1),
        )
        .await
        .expect("group subscription");
    for delivery in 1..=2 {
        let message = tokio::time::timeout(DEADLINE, subscription.next())
            .await
            .expect("a delivery within the deadline")
            .expect("open")
            .expect("a message");
        assert_eq!(
            (message.id.as_str(), message.delivery_count),
            ("order-0", delivery)
        );
        message.nack(Duration::ZERO).await.expect("nack");
    }
    let http = reqwest::Client::new();
    let scrape = || async {
        http.get(&metrics_url)
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("exposition text")
    };
    // Scraped once the message is dead-lettered and terminated: the group then holds the
    // two others, undelivered (its lag) or delivered and not acknowledged.
    let group = |name: &str| {
        format!(r#"lax_broker_consumer_group_{name}{{stream="DASH",group="billing"}}"#)
    };
    let broker_text = wait_for(DEADLINE, || async {
        let text = scrape().await;
        let dead = value(
            &text,
            r#"lax_broker_dead_letters_total{stream="DASH",consumer="billing"}"#,
        );
        let held = value(&text, &group("pending_messages"))
            .zip(value(&text, &group("ack_pending_messages")))
            .map(|(lag, unacked)| lag + unacked);
        (dead == Some(1.0) && held == Some(2.0)).then_some(text)
    })
    .await
    .expect("the message is dead-lettered and the group holds the other two");
    let client_text = client.render_metrics();

    // The session's figures, where they are certain.
    for (series, expected) in [
        (
            r#"lax_broker_stream_publish_total{stream="DASH",result="stored"}"#,
            3.0,
        ),
        (
            r#"lax_broker_stream_publish_total{stream="DASH",result="duplicate"}"#,
            1.0,
        ),
        (
            r#"lax_broker_stream_publish_total{stream="DASH",result="failed_precondition"}"#,
            1.0,
        ),
        (
            r#"lax_broker_redeliveries_total{stream="DASH",consumer="billing"}"#,
            1.0,
        ),
        (r#"lax_broker_grpc_streams_open{rpc="Subscribe"}"#, 1.0),
    ] {
        assert_eq!(
            value(&broker_text, series),
            Some(expected),
            "{series}\n{broker_text}"
        );
    }
    assert!(
        value(&broker_text, &group("redelivered_messages")).is_some(),
        "{broker_text}"
    );
    assert!(
        value(
            &broker_text,
            r#"lax_broker_grpc_streams_open{rpc="StreamPublish"}"#
        )
        .is_some_and(|open| open >= 1.0),
        "{broker_text}"
    );

    // Every query of the dashboard against both expositions.
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).expect("the dashboard file"))
            .expect("the dashboard is JSON");
    let mut queries = 0;
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a PromQL expr");
            let named = references(expr);
            assert!(!named.is_empty(), "{expr} names no LAX metric");
            for reference in named {
                let text = if reference.metric.starts_with("lax_broker_") {
                    &broker_text
                } else {
                    &client_text
                };
                let lines = samples(text, &reference.metric);
                assert!(
                    !lines.is_empty(),
                    "panel {:?}: {} is not exported\n{text}",
                    panel["title"],
                    reference.metric
                );
                for label in &reference.labels {
                    assert!(
                        lines.iter().any(|l| l.contains(&format!("{label}=\""))),
                        "panel {:?}: no {} series has the label {label}: {lines:#?}",
                        panel["title"],
                        reference.metric
                    );
                }
            }
            queries += 1;
        }
    }
    assert!(queries >= 20, "only {queries} queries found");
    println!("{queries} dashboard queries checked against live series");

    drop(subscription);
    client.close().await.expect("close");
    broker.shutdown().await.expect("broker shuts down");
}

#[test]
fn references_read_names_selectors_and_groupings() {
    let found = references(
        r#"histogram_quantile(0.99, sum by (le, rpc) (rate(lax_broker_publish_latency_seconds_bucket{tier="x", code!~"ok"}[5m]))) / lax_client_publish_total"#,
    );
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].metric, "lax_broker_publish_latency_seconds_bucket");
    assert_eq!(
        found[0].labels,
        ["code", "rpc", "tier"].map(String::from).into()
    );
    assert_eq!(found[1].metric, "lax_client_publish_total");
    assert!(references("sum(up)").is_empty());
}
