//! Where the client's metrics go, and (feature `prometheus`) the Prometheus text a `/metrics`
//! route returns.
//!
//! The client records through the [`metrics`] facade under the configured prefix
//! (`lax_client` by default), with the names and label values the Python SDK's dashboards
//! query: `{prefix}_publish_total{tier,status}`,
//! `{prefix}_publish_latency_seconds{tier,method}` (`method` `nats`, `grpc`, `none` or
//! `unknown`; buckets [`LATENCY_BUCKETS`]), `{prefix}_publish_errors_total{tier,error_type}`
//! (`error_type` the Python exception class, or `circuit_open`),
//! `{prefix}_direct_nats_total`, `{prefix}_grpc_total`, `{prefix}_nats_connections`,
//! `{prefix}_grpc_connections`, `{prefix}_connection_errors_total{type}` (`nats` or `grpc`),
//! `{prefix}_circuit_breaker_state` (0 closed, 1 open, 2 half-open: the most restrictive of
//! the two paths), `{prefix}_circuit_breaker_trips_total` and `{prefix}_info{version,language}`.
//! LAX adds finer series beside them, never in their place:
//! `{prefix}_publish_errors_by_kind_total{tier,kind}`,
//! `{prefix}_nats_connection_errors_total{kind}`,
//! `{prefix}_circuit_breaker_path_state{path}` and
//! `{prefix}_circuit_breaker_path_trips_total{path}`.
//!
//! The library installs no global recorder. With `enable_metrics` (the default):
//! - with the `prometheus` feature (on by default), each client records into a Prometheus
//!   registry of its own, rendered by [`LaxClient::render_metrics`](crate::LaxClient::render_metrics)
//!   (and the `axum` feature's `metrics_handler`); a task of the client's folds histogram
//!   samples every few seconds and stops when the client is closed;
//! - without it, or after [`LaxClientBuilder::global_metrics`](crate::LaxClientBuilder::global_metrics),
//!   the client records into the application's global `metrics` recorder, whatever it is.
//!
//! With `enable_metrics: false` the client records nothing.

use std::{future::Future, pin::pin, task::Poll};

/// Latency histogram buckets, in seconds: those of the Python SDK, so that its dashboards'
/// `histogram_quantile` queries read the same buckets.
pub const LATENCY_BUCKETS: &[f64] = &[
    0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
];

/// The content type of [`LaxClient::render_metrics`](crate::LaxClient::render_metrics)'s
/// output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// The `language` label of `{prefix}_info`.
const LANGUAGE: &str = "rust";

/// Where one client records.
#[derive(Debug)]
pub(crate) enum MetricsTarget {
    /// Nowhere: `enable_metrics` is off.
    Off,
    /// The application's global recorder.
    Global,
    /// A Prometheus registry of the client's own.
    #[cfg(feature = "prometheus")]
    Own(own::OwnRegistry),
}

impl MetricsTarget {
    /// The target for a client with `enable_metrics` = `enabled` that did or did not ask for
    /// the global recorder.
    pub(crate) fn new(enabled: bool, global: bool) -> Self {
        match (enabled, global) {
            (false, _) => MetricsTarget::Off,
            (true, true) => MetricsTarget::Global,
            #[cfg(feature = "prometheus")]
            (true, false) => MetricsTarget::Own(own::OwnRegistry::new()),
            #[cfg(not(feature = "prometheus"))]
            (true, false) => MetricsTarget::Global,
        }
    }

    /// Runs `connect` with every metric it registers going to this target, and registers
    /// `{prefix}_info` there. Metric handles bind to the recorder they were registered
    /// with, so the transports and the stack keep recording here afterwards.
    pub(crate) async fn register<F: Future>(&self, prefix: &str, connect: F) -> F::Output {
        let info = || {
            metrics::gauge!(
                format!("{prefix}_info"),
                "version" => env!("CARGO_PKG_VERSION"),
                "language" => LANGUAGE
            )
            .set(1.0);
        };
        match self {
            MetricsTarget::Off => with_recorder(&metrics::NoopRecorder, connect).await,
            MetricsTarget::Global => {
                info();
                connect.await
            }
            #[cfg(feature = "prometheus")]
            MetricsTarget::Own(own) => {
                metrics::with_local_recorder(own.recorder(), info);
                with_recorder(own.recorder(), connect).await
            }
        }
    }

    /// Stops what the target runs in the background.
    pub(crate) fn stop(&self) {
        #[cfg(feature = "prometheus")]
        if let MetricsTarget::Own(own) = self {
            own.stop();
        }
    }
}

/// Polls `future` with `recorder` as the thread's metrics recorder during each poll (tasks
/// it spawns are not covered: register their handles in the future itself).
async fn with_recorder<F: Future>(
    recorder: &(dyn metrics::Recorder + Sync),
    future: F,
) -> F::Output {
    let mut future = pin!(future);
    std::future::poll_fn(|cx| -> Poll<F::Output> {
        let _installed = metrics::set_default_local_recorder(recorder);
        future.as_mut().poll(cx)
    })
    .await
}

#[cfg(feature = "prometheus")]
mod own {
    use std::time::Duration;

    use metrics_exporter_prometheus::{
        Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
    };
    use tokio::task::AbortHandle;

    use super::LATENCY_BUCKETS;

    /// How often recorded histogram samples are folded into their buckets. Without it they
    /// pile up between scrapes (or forever, with no scraper).
    const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

    /// A client's own Prometheus registry and the task that keeps it folded.
    #[derive(Debug)]
    pub(crate) struct OwnRegistry {
        recorder: PrometheusRecorder,
        upkeep: AbortHandle,
    }

    impl OwnRegistry {
        /// A registry with the latency buckets, and its upkeep task on the current runtime.
        pub(crate) fn new() -> Self {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Suffix("_publish_latency_seconds".into()),
                    LATENCY_BUCKETS,
                )
                // Fails only for an empty bucket list, which LATENCY_BUCKETS is not.
                .unwrap_or_else(|_| PrometheusBuilder::new())
                .build_recorder();
            let handle = recorder.handle();
            let upkeep = tokio::spawn(async move {
                let mut ticks = tokio::time::interval(UPKEEP_INTERVAL);
                loop {
                    ticks.tick().await;
                    handle.run_upkeep();
                }
            })
            .abort_handle();
            OwnRegistry { recorder, upkeep }
        }

        pub(crate) fn recorder(&self) -> &PrometheusRecorder {
            &self.recorder
        }

        pub(crate) fn handle(&self) -> PrometheusHandle {
            self.recorder.handle()
        }

        pub(crate) fn stop(&self) {
            self.upkeep.abort();
        }
    }

    impl Drop for OwnRegistry {
        fn drop(&mut self) {
            self.upkeep.abort();
        }
    }
}
