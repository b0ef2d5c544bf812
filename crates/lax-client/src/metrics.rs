//! Prometheus metrics: install a recorder and render the text a `/metrics` route returns.
//!
//! The client records through the [`metrics`] facade under the configured prefix
//! (`lax_client` by default): `{prefix}_publish_total{tier,status}`,
//! `{prefix}_publish_latency_seconds{tier,method}`, `{prefix}_publish_errors_total{tier,error_type}`,
//! `{prefix}_direct_nats_total`, `{prefix}_grpc_total`, `{prefix}_nats_connections`,
//! `{prefix}_grpc_connections`, `{prefix}_connection_errors_total{type}`,
//! `{prefix}_circuit_breaker_state` and `{prefix}_circuit_breaker_trips_total`.
//!
//! [`LaxClient::connect`](crate::LaxClient::connect) with `enable_metrics` installs the
//! Prometheus recorder below unless the application installed a recorder of its own first;
//! metric handles bind to the recorder present when the client connects.

use std::{sync::OnceLock, time::Duration};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Latency buckets, in seconds: the Python client's defaults (`prometheus_client`), with finer
/// ones below 5 ms where direct publishes land.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1,
    0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// How often recorded histogram samples are folded into their buckets. Without it they pile
/// up between scrapes (or forever, with no scraper).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs LAX's Prometheus recorder as the global `metrics` recorder, once; later calls
/// return the same handle. `None` when another recorder was installed first (the
/// application's own, which then receives LAX's metrics).
pub fn install_prometheus_recorder() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            // Fails only for an empty bucket list, which LATENCY_BUCKETS is not.
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_latency_seconds".into()), LATENCY_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new())
                .build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => {
                    spawn_upkeep(handle.clone());
                    Some(handle)
                }
                Err(_) => {
                    tracing::debug!("a metrics recorder is already installed; LAX records into it");
                    None
                }
            }
        })
        .clone()
}

/// Drains histogram samples into their buckets every [`UPKEEP_INTERVAL`], for the life of
/// the process (the recorder is global and never uninstalled).
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("lax-metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                handle.run_upkeep();
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "cannot start the metrics upkeep thread; samples are folded only when rendered");
    }
}

/// The Prometheus text exposition of every metric, for a `/metrics` route. Empty when LAX's
/// recorder is not the installed one.
pub fn render() -> String {
    install_prometheus_recorder()
        .map(|handle| handle.render())
        .unwrap_or_default()
}

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";
