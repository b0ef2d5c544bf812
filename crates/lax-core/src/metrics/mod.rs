//! Publish metrics, under the names existing LAX dashboards expect.
//!
//! [`Metrics`] sits at the top of a stack, so each logical publish is counted once, whatever
//! retries happen below it. It records, through the [`metrics`] facade (install any recorder,
//! e.g. `metrics-exporter-prometheus`), with a configurable prefix (default `lax_client`):
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `{prefix}_publish_total` | counter | `tier`, `status` (`success` or `error`) |
//! | `{prefix}_publish_latency_seconds` | histogram | `tier`, `method` (`direct` or `broker`) |
//! | `{prefix}_publish_errors_total` | counter | `tier`, `error_type` ([`ErrorKind::as_str`]) |
//! | `{prefix}_direct_nats_total` | counter | |
//! | `{prefix}_grpc_total` | counter | |
//!
//! The route of a publish (`method`, and which of the last two counters moves) is the one its
//! receipt reports; a failed publish has no receipt and counts under the route the default
//! LAX table gives its request. Latency is recorded for every finished publish, failed ones
//! included. A publish whose future is dropped before it finishes is not counted.
//!
//! Every handle is registered when the layer is built (with the recorder installed at that
//! moment), so recording a publish formats no strings and looks nothing up.
//!
//! ```
//! use lax_core::{PublishRequest, PublisherService, Route};
//! use lax_core::metrics::MetricsLayer;
//! use lax_core::testing::ScriptedPublisher;
//! use tower::{Layer, ServiceExt};
//!
//! # tokio_test::block_on(async {
//! let service = MetricsLayer::new("my_app")
//!     .layer(PublisherService::new(ScriptedPublisher::new(Route::Direct)));
//! service.oneshot(PublishRequest::new("a.b", "x")).await.unwrap();
//! # });
//! ```

pub mod future;
mod layer;

use std::{
    sync::Arc,
    task::{Context, Poll},
};

use metrics::{Counter, Histogram};
use tower::Service;

pub use self::layer::MetricsLayer;
use crate::{
    error::{BoxError, Error, ErrorKind},
    message::{PublishRequest, Receipt, Route, Tier},
};

/// The metric name prefix existing LAX clients use.
pub const DEFAULT_PREFIX: &str = "lax_client";

const SUCCESS: usize = 0;
const ERROR: usize = 1;

/// Pre-registered handles, indexed by [`Tier::index`], status, route and error kind, and the
/// clock latency is measured with.
#[derive(Debug)]
pub(crate) struct Handles {
    /// A TSC clock where the CPU has a stable one: reading it costs a fraction of
    /// `Instant::now()`, and a publish reads it twice.
    clock: quanta::Clock,
    published: [[Counter; 2]; 3],
    latency: [[Histogram; 2]; 3],
    errors: [[Counter; ErrorKind::ALL.len()]; 3],
    by_route: [Counter; 2],
}

impl Handles {
    pub(crate) fn register(prefix: &str, clock: quanta::Clock) -> Self {
        let published = format!("{prefix}_publish_total");
        let latency = format!("{prefix}_publish_latency_seconds");
        let errors = format!("{prefix}_publish_errors_total");
        Handles {
            clock,
            published: Tier::ALL.map(|tier| {
                ["success", "error"].map(|status| {
                    metrics::counter!(
                        published.clone(),
                        "tier" => tier.as_str(),
                        "status" => status
                    )
                })
            }),
            latency: Tier::ALL.map(|tier| {
                Route::ALL.map(|route| {
                    metrics::histogram!(
                        latency.clone(),
                        "tier" => tier.as_str(),
                        "method" => route.as_str()
                    )
                })
            }),
            errors: Tier::ALL.map(|tier| {
                ErrorKind::ALL.map(|kind| {
                    metrics::counter!(
                        errors.clone(),
                        "tier" => tier.as_str(),
                        "error_type" => kind.as_str()
                    )
                })
            }),
            by_route: [
                metrics::counter!(format!("{prefix}_direct_nats_total")),
                metrics::counter!(format!("{prefix}_grpc_total")),
            ],
        }
    }

    /// Starts measuring the publish of `request`.
    #[inline]
    pub(crate) fn start(&self, request: &PublishRequest) -> Measurement {
        Measurement {
            tier: request.options.tier,
            default_route: request.default_route(),
            started: self.clock.raw(),
        }
    }

    /// Records a finished publish: under the route its receipt reports, or for an error under
    /// the route the LAX table gives its request.
    #[inline]
    pub(crate) fn finish(&self, measurement: Measurement, result: &Result<Receipt, BoxError>) {
        let tier = measurement.tier.index();
        let route = match result {
            Ok(receipt) => {
                self.published[tier][SUCCESS].increment(1);
                receipt.route.index()
            }
            Err(e) => {
                let kind = Error::classify(e.as_ref()).0;
                self.published[tier][ERROR].increment(1);
                self.errors[tier][kind.index()].increment(1);
                measurement.default_route.index()
            }
        };
        let latency = self.clock.delta(measurement.started, self.clock.raw());
        self.latency[tier][route].record(latency.as_secs_f64());
        self.by_route[route].increment(1);
    }
}

/// A publish being measured: what [`Handles::finish`] needs besides the outcome.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Measurement {
    tier: Tier,
    /// The route the LAX table gives the request: the `route` of the metric when it fails.
    pub(crate) default_route: Route,
    started: u64,
}

/// Records every publish through it; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Metrics<S> {
    inner: S,
    handles: Arc<Handles>,
}

impl<S> Metrics<S> {
    /// Records the publishes through `inner` under `prefix`, registering every handle with
    /// the recorder installed now.
    pub fn new(inner: S, prefix: &str) -> Self {
        let handles = Handles::register(prefix, quanta::Clock::new());
        Metrics::with_handles(inner, Arc::new(handles))
    }

    pub(crate) fn with_handles(inner: S, handles: Arc<Handles>) -> Self {
        Metrics { inner, handles }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> Service<PublishRequest> for Metrics<S>
where
    S: Service<PublishRequest, Response = Receipt>,
    S::Error: Into<BoxError>,
{
    type Response = Receipt;
    type Error = BoxError;
    type Future = future::ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: PublishRequest) -> Self::Future {
        let measurement = self.handles.start(&request);
        future::ResponseFuture::new(
            self.inner.call(request),
            Arc::clone(&self.handles),
            measurement,
        )
    }
}

#[cfg(test)]
pub(crate) mod recorded;
#[cfg(test)]
mod tests;
