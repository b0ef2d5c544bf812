//! The metrics a Python SDK dashboard reads, scraped from the client's exporter after a
//! scripted session against a real nats-server and broker, compared with a golden file.
//!
//! The golden file (`tests/golden/metrics.prom`) holds every series: names, labels and values.
//! Values that depend on timing are masked as `*`: latency bucket counts below `+Inf` and
//! sums, and the gRPC connection errors (how many reconnects fail while the broker is down
//! depends on the backoff). Run with `LAX_UPDATE_GOLDEN=1` to rewrite it after a deliberate
//! change, and review the diff.
#![cfg(feature = "prometheus")]

mod common;

use std::{path::PathBuf, time::Duration};

use common::{DEADLINE, Env};
use lax_client::{ErrorKind, LaxClient, PublishOptions};
use lax_testkit::wait_until;

const GOLDEN: &str = "tests/golden/metrics.prom";

/// The exposition text with timing-dependent values masked and the lines in a stable order.
fn normalise(text: &str) -> String {
    let mut lines: Vec<String> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let timing_dependent = (line.contains("_bucket{") && !line.contains("le=\"+Inf\""))
                || line.contains("_sum{")
                || line.contains("_sum ")
                || line.contains("connection_errors_total{type=\"grpc\"}");
            let line = line.replace(
                &format!("version=\"{}\"", env!("CARGO_PKG_VERSION")),
                "version=\"{version}\"",
            );
            match line.rsplit_once(' ') {
                Some((series, _)) if timing_dependent && !line.starts_with('#') => {
                    format!("{series} *")
                }
                _ => line,
            }
        })
        .collect();
    lines.sort();
    lines.join("\n") + "\n"
}

#[tokio::test]
async fn a_scripted_session_exports_what_python_dashboards_query() {
    let mut env = Env::start().await;
    let mut options = env.options();
    options.retry_attempts = 0; // the Python SDK's "no retry"
    options.circuit_breaker_threshold = 2;
    options.circuit_breaker_timeout = Duration::from_secs(600);
    let client = LaxClient::connect(options).await.unwrap();

    // Direct, ok.
    client.publish("golden.direct", "d").await.unwrap();
    // Broker, ok.
    client
        .publish_with("golden.orders", "o", PublishOptions::persistent())
        .await
        .unwrap();
    // Broker errors: the broker is gone; two failures open the broker path's breaker.
    env.stop_broker().await;
    wait_until(DEADLINE, || async { client.broker_connections() == 0 })
        .await
        .expect("the pool sees the broker go");
    for _ in 0..2 {
        let err = client
            .publish_with("golden.orders", "o", PublishOptions::persistent())
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    }
    // Breaker open: refused before any path.
    let err = client
        .publish_with("golden.orders", "o", PublishOptions::persistent())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::CircuitOpen, "{err}");

    let scraped = normalise(&client.render_metrics());
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(GOLDEN);
    if std::env::var_os("LAX_UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &scraped).unwrap();
    }
    let expected = std::fs::read_to_string(&golden).expect("the golden file exists");
    if scraped != expected {
        let diff: Vec<String> = expected
            .lines()
            .filter(|line| !scraped.lines().any(|l| l == *line))
            .map(|line| format!("- {line}"))
            .chain(
                scraped
                    .lines()
                    .filter(|line| !expected.lines().any(|l| l == *line))
                    .map(|line| format!("+ {line}")),
            )
            .collect();
        panic!(
            "the exported metrics differ from {GOLDEN} (rerun with LAX_UPDATE_GOLDEN=1 if the \
             change is deliberate):\n{}",
            diff.join("\n")
        );
    }
    client.close().await.unwrap();
}

#[tokio::test]
async fn clients_keep_their_own_registries_and_install_no_global_recorder() {
    let env = Env::start().await;
    let mut quiet = env.options();
    quiet.metrics_prefix = "quiet".into();
    let first = LaxClient::connect(env.options()).await.unwrap();
    let second = LaxClient::connect(quiet).await.unwrap();
    first.publish("own.a", "x").await.unwrap();
    let first_text = first.render_metrics();
    assert!(
        first_text.contains("lax_client_publish_total{tier=\"memory\",status=\"success\"} 1"),
        "{first_text}"
    );
    assert!(!first_text.contains("quiet_"), "{first_text}");
    let second_text = second.render_metrics();
    assert!(second_text.contains("quiet_info{"), "{second_text}");
    assert!(
        second_text.contains("quiet_publish_total{tier=\"memory\",status=\"success\"} 0"),
        "{second_text}"
    );
    // Nothing went to a global recorder: none was installed, so a global handle sees no
    // LAX metric at all.
    let global = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = global.snapshotter();
    assert!(
        metrics::set_global_recorder(global).is_ok(),
        "no recorder was installed globally"
    );
    first.publish("own.b", "x").await.unwrap();
    assert!(snapshotter.snapshot().into_vec().is_empty());

    // Asked for, the application's recorder gets them.
    let mut global_options = env.options();
    global_options.metrics_prefix = "global".into();
    let global_client = LaxClient::new(global_options)
        .global_metrics()
        .connect()
        .await
        .unwrap();
    global_client.publish("own.d", "x").await.unwrap();
    let recorded_names = || -> Vec<String> {
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, _)| key.key().name().to_owned())
            .collect()
    };
    let names = recorded_names();
    assert!(
        names.iter().any(|n| n == "global_publish_total"),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n == "global_info"), "{names:?}");
    assert!(names.iter().all(|n| n.starts_with("global_")), "{names:?}");
    assert_eq!(global_client.render_metrics(), "");
    global_client.close().await.unwrap();

    let mut disabled = env.options();
    disabled.enable_metrics = false;
    let silent = LaxClient::connect(disabled).await.unwrap();
    silent.publish("own.c", "x").await.unwrap();
    assert_eq!(silent.render_metrics(), "");
    let names = recorded_names();
    assert!(
        !names.iter().any(|n| n.starts_with("lax_client_")),
        "a client without metrics recorded {names:?}"
    );
    for client in [first, second, silent] {
        client.close().await.unwrap();
    }
}
