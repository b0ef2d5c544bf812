//! Publish metrics, under the names and label values existing LAX dashboards (built on the
//! Python SDK `lax-nats-client`) query.
//!
//! [`Metrics`] sits at the top of a stack, so each logical publish is counted once, whatever
//! retries happen below it. It records, through the [`metrics`] facade (install any recorder,
//! e.g. `metrics-exporter-prometheus`), with a configurable prefix (default `lax_client`):
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `{prefix}_publish_total` | counter | `tier`, `status` (`success` or `error`) |
//! | `{prefix}_publish_latency_seconds` | histogram | `tier`, `method` ([`method`]: `nats`, `grpc`, `none`, `unknown`) |
//! | `{prefix}_publish_errors_total` | counter | `tier`, `error_type` ([`error_type`]: `PublishError`, `ConnectionError`, …) |
//! | `{prefix}_publish_errors_by_kind_total` | counter | `tier`, `kind` ([`ErrorKind::as_str`]) |
//! | `{prefix}_direct_nats_total` | counter | |
//! | `{prefix}_grpc_total` | counter | |
//!
//! The first three carry the Python SDK's label values, so its dashboards work unchanged: a
//! successful publish's `method` is the route its receipt reports (`nats` direct, `grpc`
//! through the broker), a publish the breaker refused is `none` and any other failure
//! `unknown`. `_by_kind_total` is LAX's own, finer classification of the same errors. Which
//! of the two route counters moves is the receipt's route, or for a failure the route the
//! default LAX table gives its request. Latency is recorded for every finished publish,
//! failed ones included. A publish whose future is dropped before it finishes is not counted.
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

/// The `method` label values, by [`method`]'s index.
const METHODS: [&str; 4] = ["nats", "grpc", "none", "unknown"];

/// The `method` label of a finished publish, as the Python SDK set it: the route taken on
/// success (`nats` direct, `grpc` broker), `none` when the breaker refused it before any path
/// was tried, `unknown` for any other failure.
pub fn method(outcome: Result<Route, ErrorKind>) -> &'static str {
    METHODS[method_index(outcome)]
}

const fn method_index(outcome: Result<Route, ErrorKind>) -> usize {
    match outcome {
        Ok(Route::Direct) => 0,
        Ok(Route::Broker) => 1,
        Err(ErrorKind::CircuitOpen) => 2,
        Err(_) => 3,
    }
}

/// The `error_type` label values, by [`error_type`]'s index.
const ERROR_TYPES: [&str; 5] = [
    "circuit_open",
    "TimeoutError",
    "ConnectionError",
    "ValueError",
    "PublishError",
];

/// The `error_type` label of a failure: the Python SDK's exception class for it, or
/// `circuit_open` when a breaker refused it.
///
/// | kind | `error_type` |
/// |---|---|
/// | circuit open | `circuit_open` |
/// | timed out | `TimeoutError` |
/// | unavailable, closed | `ConnectionError` |
/// | invalid input, config | `ValueError` |
/// | rejected, overloaded, internal | `PublishError` |
pub fn error_type(kind: ErrorKind) -> &'static str {
    ERROR_TYPES[error_type_index(kind)]
}

const fn error_type_index(kind: ErrorKind) -> usize {
    match kind {
        ErrorKind::CircuitOpen => 0,
        ErrorKind::TimedOut => 1,
        ErrorKind::Unavailable | ErrorKind::Closed => 2,
        ErrorKind::InvalidInput | ErrorKind::Config => 3,
        _ => 4,
    }
}

/// Pre-registered handles, indexed by [`Tier::index`], status, method, error type, error kind
/// and route, and the clock latency is measured with.
#[derive(Debug)]
pub(crate) struct Handles {
    /// A TSC clock where the CPU has a stable one: reading it costs a fraction of
    /// `Instant::now()`, and a publish reads it twice.
    clock: quanta::Clock,
    published: [[Counter; 2]; 3],
    latency: [[Histogram; METHODS.len()]; 3],
    errors: [[Counter; ERROR_TYPES.len()]; 3],
    errors_by_kind: [[Counter; ErrorKind::ALL.len()]; 3],
    by_route: [Counter; 2],
}

impl Handles {
    pub(crate) fn register(prefix: &str, clock: quanta::Clock) -> Self {
        let published = format!("{prefix}_publish_total");
        let latency = format!("{prefix}_publish_latency_seconds");
        let errors = format!("{prefix}_publish_errors_total");
        let errors_by_kind = format!("{prefix}_publish_errors_by_kind_total");
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
                METHODS.map(|method| {
                    metrics::histogram!(
                        latency.clone(),
                        "tier" => tier.as_str(),
                        "method" => method
                    )
                })
            }),
            errors: Tier::ALL.map(|tier| {
                ERROR_TYPES.map(|error_type| {
                    metrics::counter!(
                        errors.clone(),
                        "tier" => tier.as_str(),
                        "error_type" => error_type
                    )
                })
            }),
            errors_by_kind: Tier::ALL.map(|tier| {
                ErrorKind::ALL.map(|kind| {
                    metrics::counter!(
                        errors_by_kind.clone(),
                        "tier" => tier.as_str(),
                        "kind" => kind.as_str()
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
        let (route, method) = match result {
            Ok(receipt) => {
                self.published[tier][SUCCESS].increment(1);
                (receipt.route, method_index(Ok(receipt.route)))
            }
            Err(e) => {
                let kind = Error::classify(e.as_ref()).0;
                self.published[tier][ERROR].increment(1);
                self.errors[tier][error_type_index(kind)].increment(1);
                self.errors_by_kind[tier][kind.index()].increment(1);
                (measurement.default_route, method_index(Err(kind)))
            }
        };
        let latency = self.clock.delta(measurement.started, self.clock.raw());
        self.latency[tier][method].record(latency.as_secs_f64());
        self.by_route[route.index()].increment(1);
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
