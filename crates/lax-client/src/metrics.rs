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

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs LAX's Prometheus recorder as the global `metrics` recorder, once; later calls
/// return the same handle. `None` when another recorder was installed first (the
/// application's own, which then receives LAX's metrics).
pub fn install_prometheus_recorder() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            match metrics::set_global_recorder(recorder) {
                Ok(()) => Some(handle),
                Err(_) => {
                    tracing::debug!("a metrics recorder is already installed; LAX records into it");
                    None
                }
            }
        })
        .clone()
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
