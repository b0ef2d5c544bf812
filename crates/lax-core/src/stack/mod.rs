//! The default LAX stack, compiled from a [`StackConfig`].
//!
//! ```text
//! metrics → in-flight cap → route ─┬─ direct: breaker → timeout → direct transport
//!                                  └─ broker: retry → breaker → timeout → broker transport
//! ```
//!
//! - **metrics** on top, so each logical publish counts once, retries or not;
//! - the **in-flight cap** covers both paths;
//! - **route** sends each publish by the LAX table, and a slow broker never holds back
//!   direct publishes (see [`route`](crate::route));
//! - **retry** only on the broker path: a direct publish has no ack to say it failed, and it
//!   is fire-and-forget by design;
//! - one **breaker** per path (metric label `path` = `direct` / `broker`), below retry so that
//!   every attempt counts and an open circuit stops the retries;
//! - the **timeout** bounds each attempt (the message's own timeout, else
//!   `publish_timeout`); retry bounds the whole publish by the message's timeout too. On the
//!   direct path it also bounds a wait for the transport to become ready.
//!
//! The broker path is the layers themselves, stacked with
//! [`tower::ServiceBuilder::option_layer`] as tonic's `Endpoint` does (a `None` in the config
//! leaves a layer out). Everything above it — metrics, cap, route, and the direct path's
//! breaker and timeout — is one service with one response future. It runs the same parts as
//! the [`metrics`](crate::metrics), [`limit`](crate::limit), [`route`](crate::route),
//! [`breaker`](crate::breaker) and [`timeout`](crate::timeout) layers, but a direct publish
//! pays for one shared `Arc` and one future instead of five nested ones. Over a no-op
//! transport, stacked as layers, those parts added about 250 ns per direct publish; fused,
//! about 130 ns, of which the Prometheus recorder's own work is about 50 ns and the two clock
//! reads of the latency about 25 ns (`cargo bench -p lax-core --bench stack`). An
//! integrator who wants a different order stacks the layers themselves.
//!
//! The transports at the bottom must be cheap to clone, with clones that become ready on
//! their own ([`PublisherService`](crate::PublisherService), a tonic channel, or anything
//! behind a [`tower::buffer::Buffer`] — a connection [`Pool`](crate::pool::Pool), for one).
//!
//! ```
//! use lax_core::{Publisher, PublishRequest, PublisherService, Route, ServicePublisher, Tier};
//! use lax_core::stack::{StackBuilder, StackConfig};
//! use lax_core::testing::ScriptedPublisher;
//!
//! # tokio_test::block_on(async {
//! let direct = ScriptedPublisher::new(Route::Direct);
//! let broker = ScriptedPublisher::new(Route::Broker);
//! let stack = StackBuilder::new(StackConfig::default())
//!     .build(PublisherService::new(direct.clone()), PublisherService::new(broker.clone()))?;
//! let publisher = ServicePublisher::new(stack);
//! publisher.publish(PublishRequest::new("events.clicked", "{}")).await?;
//! let acked = PublishRequest::new("orders.created", "{}").with_tier(Tier::Replicated);
//! assert_eq!(publisher.publish(acked).await?.route, Route::Broker);
//! assert_eq!((direct.calls(), broker.calls()), (1, 1));
//! # Ok::<(), lax_core::Error>(())
//! # }).unwrap();
//! ```

pub mod future;

use std::{
    fmt,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use tower::{Service, ServiceBuilder, ServiceExt, util::Either};

use crate::{
    breaker::{
        Admission, BreakerConfig, BreakerHandle, CircuitBreaker, CircuitBreakerLayer,
        error::CircuitOpen,
    },
    error::{BoxError, Error},
    limit::{InFlight, LimitConfig, SlotWaiter, error::Overloaded},
    message::{PublishRequest, Receipt, Route},
    metrics::{DEFAULT_PREFIX, Handles},
    retry::{Retry, RetryConfig, RetryLayer},
    route::{Called, call_when_ready},
    timeout::{RequestTimeout, Timeout, TimeoutLayer},
};

/// What the default stack does; `Default` is the wire contract's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct StackConfig {
    /// Retries on the broker path; `None` for none.
    pub retry: Option<RetryConfig>,
    /// One circuit breaker per path; `None` for none.
    pub breaker: Option<BreakerConfig>,
    /// The in-flight cap over both paths; `None` for no cap.
    pub limit: Option<LimitConfig>,
    /// The timeout of one attempt when the message carries none (the contract's
    /// `publish_timeout`, 5 s).
    pub publish_timeout: Duration,
    /// Metric names are `{metrics_prefix}_…` (default `lax_client`).
    pub metrics_prefix: String,
}

impl StackConfig {
    /// The contract's `publish_timeout`: 5 s.
    pub const DEFAULT_PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

    /// Checks every part; the first problem is a [`Config`](crate::ErrorKind::Config) error.
    pub fn validate(&self) -> Result<(), Error> {
        if let Some(retry) = &self.retry {
            retry.validate()?;
        }
        if let Some(breaker) = &self.breaker {
            breaker.validate()?;
        }
        if self.publish_timeout.is_zero() {
            return Err(Error::config("publish_timeout must be greater than zero"));
        }
        if self.metrics_prefix.is_empty() {
            return Err(Error::config("the metrics prefix must not be empty"));
        }
        Ok(())
    }
}

impl Default for StackConfig {
    fn default() -> Self {
        StackConfig {
            retry: Some(RetryConfig::default()),
            breaker: Some(BreakerConfig::default()),
            limit: Some(LimitConfig::default()),
            publish_timeout: Self::DEFAULT_PUBLISH_TIMEOUT,
            metrics_prefix: DEFAULT_PREFIX.to_owned(),
        }
    }
}

/// Compiles a [`StackConfig`] into a [`LaxStack`] over a direct and a broker service.
#[derive(Debug, Clone, Default)]
pub struct StackBuilder {
    config: StackConfig,
}

impl StackBuilder {
    /// A builder starting from `config`.
    pub fn new(config: StackConfig) -> Self {
        StackBuilder { config }
    }

    /// Sets the broker path's retries (`None` for none).
    pub fn retry(mut self, retry: Option<RetryConfig>) -> Self {
        self.config.retry = retry;
        self
    }

    /// Sets the breakers (`None` for none).
    pub fn breaker(mut self, breaker: Option<BreakerConfig>) -> Self {
        self.config.breaker = breaker;
        self
    }

    /// Sets the in-flight cap (`None` for none).
    pub fn limit(mut self, limit: Option<LimitConfig>) -> Self {
        self.config.limit = limit;
        self
    }

    /// Sets the timeout of an attempt whose message carries none.
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.config.publish_timeout = timeout;
        self
    }

    /// Sets the metric name prefix.
    pub fn metrics_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.config.metrics_prefix = prefix.into();
        self
    }

    /// The configuration so far.
    pub fn config(&self) -> &StackConfig {
        &self.config
    }

    /// Builds the stack over `direct` and `broker`. Metric handles are registered with the
    /// recorder installed now, so install it first. An invalid configuration is a
    /// [`Config`](crate::ErrorKind::Config) error.
    pub fn build<D, B>(self, direct: D, broker: B) -> Result<LaxStack<D, B>, Error> {
        let config = self.config;
        config.validate()?;
        let prefix = config.metrics_prefix.as_str();
        // One unlabelled breaker state for both paths, as dashboards built for one expect.
        let overall = config
            .breaker
            .map(|_| Arc::new(crate::breaker::gauge::OverallState::new(prefix)));
        let breaker = |path| {
            config
                .breaker
                .zip(overall.clone())
                .map(|(breaker, overall)| {
                    CircuitBreakerLayer::sharing_overall_state(path, breaker, prefix, overall)
                })
                .transpose()
        };
        let direct_breaker = breaker("direct")?;
        let broker_breaker = breaker("broker")?;
        let in_flight = config
            .limit
            .map(|limit| InFlight::new(limit.max_in_flight, limit.mode))
            .transpose()?;
        let broker = ServiceBuilder::new()
            .option_layer(config.retry.map(RetryLayer::new).transpose()?)
            .option_layer(broker_breaker.clone())
            .layer(TimeoutLayer::new(config.publish_timeout))
            .service(broker);
        let shared = Shared {
            metrics: Handles::register(prefix, quanta::Clock::new()),
            in_flight,
            direct_breaker: direct_breaker.map(|layer| layer.handle()),
            broker_breaker: broker_breaker.map(|layer| layer.handle()),
            publish_timeout: config.publish_timeout,
        };
        Ok(LaxStack {
            direct,
            broker: Arc::new(broker),
            shared: Arc::new(shared),
            reserved: Reserved::Nothing,
            waiter: None,
        })
    }
}

/// The broker path below retry: breaker → timeout → transport.
pub type BrokerAttempt<B> = Either<CircuitBreaker<Timeout<B>>, Timeout<B>>;

/// The broker path of the default stack: retry → breaker → timeout → transport.
pub type BrokerPath<B> = Either<Retry<BrokerAttempt<B>>, BrokerAttempt<B>>;

/// What every clone of one stack shares; each publish future holds it too.
#[derive(Debug)]
pub(crate) struct Shared {
    metrics: Handles,
    in_flight: Option<InFlight>,
    direct_breaker: Option<BreakerHandle>,
    broker_breaker: Option<BreakerHandle>,
    publish_timeout: Duration,
}

impl Shared {
    #[inline]
    fn give_back_slot(&self) {
        if let Some(slots) = &self.in_flight {
            slots.give_back();
        }
    }
}

/// What `poll_ready` secured for the next `call`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reserved {
    Nothing,
    Slot,
    /// Fail-fast mode found the cap reached.
    Refused,
}

/// The default LAX stack over a direct and a broker service, built by [`StackBuilder`].
///
/// A `Service<PublishRequest>`, cheap to clone; wrap it in
/// [`ServicePublisher`](crate::ServicePublisher) for a [`Publisher`](crate::Publisher). Always
/// ready unless the in-flight cap is reached (and waits in that mode): a path that is not
/// ready waits in the publish's own future.
pub struct LaxStack<D, B> {
    direct: D,
    // Shared, and cloned only for a broker publish: cloning the stack (once per publish, under
    // `ServicePublisher`) then costs the direct path nothing for it.
    broker: Arc<BrokerPath<B>>,
    shared: Arc<Shared>,
    reserved: Reserved,
    waiter: SlotWaiter,
}

impl<D, B> LaxStack<D, B> {
    /// The direct path's breaker, if the stack has breakers.
    pub fn direct_breaker(&self) -> Option<&BreakerHandle> {
        self.shared.direct_breaker.as_ref()
    }

    /// The broker path's breaker, if the stack has breakers.
    pub fn broker_breaker(&self) -> Option<&BreakerHandle> {
        self.shared.broker_breaker.as_ref()
    }

    /// Slots of the in-flight cap free right now, if the stack has a cap.
    pub fn available(&self) -> Option<usize> {
        self.shared.in_flight.as_ref().map(InFlight::available)
    }

    /// The direct transport.
    pub fn direct(&self) -> &D {
        &self.direct
    }

    /// The direct transport, mutably.
    pub fn direct_mut(&mut self) -> &mut D {
        &mut self.direct
    }

    /// The broker path: the layers over the broker transport. Each broker publish goes
    /// through a clone of it.
    pub fn broker(&self) -> &BrokerPath<B> {
        &self.broker
    }
}

impl<D: Clone, B> Clone for LaxStack<D, B> {
    /// A clone shares the cap, breakers and metrics, but not a slot this one holds.
    fn clone(&self) -> Self {
        LaxStack {
            direct: self.direct.clone(),
            broker: Arc::clone(&self.broker),
            shared: Arc::clone(&self.shared),
            reserved: Reserved::Nothing,
            waiter: None,
        }
    }
}

impl<D, B> Drop for LaxStack<D, B> {
    fn drop(&mut self) {
        if self.reserved == Reserved::Slot {
            self.shared.give_back_slot();
        }
    }
}

impl<D, B> fmt::Debug for LaxStack<D, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LaxStack")
            .field("direct", &std::any::type_name::<D>())
            .field("broker", &std::any::type_name::<B>())
            .field("available", &self.available())
            .field(
                "direct_breaker",
                &self.direct_breaker().map(BreakerHandle::state),
            )
            .field(
                "broker_breaker",
                &self.broker_breaker().map(BreakerHandle::state),
            )
            .finish()
    }
}

impl<D, B> Service<PublishRequest> for LaxStack<D, B>
where
    D: Service<PublishRequest, Response = Receipt> + Clone,
    D::Error: Into<BoxError>,
    B: Service<PublishRequest, Response = Receipt> + Clone + Send + 'static,
    B::Error: Into<BoxError>,
    B::Future: Send,
{
    type Response = Receipt;
    type Error = BoxError;
    type Future = future::ResponseFuture<D>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if let Some(slots) = &self.shared.in_flight
            && self.reserved == Reserved::Nothing
        {
            self.reserved = if ready!(slots.poll_reserve(&mut self.waiter, cx)) {
                Reserved::Slot
            } else {
                Reserved::Refused
            };
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: PublishRequest) -> Self::Future {
        let shared = Arc::clone(&self.shared);
        let measurement = shared.metrics.start(&request);
        let reserved = std::mem::replace(&mut self.reserved, Reserved::Nothing);
        let (path, admission) = match (reserved, &shared.in_flight) {
            (Reserved::Refused, Some(slots)) => (
                future::Path::failed(Overloaded::new(slots.max()).into()),
                None,
            ),
            (Reserved::Nothing, Some(_)) | (Reserved::Refused, None) => {
                let error = Error::called_before_ready("LaxStack");
                (future::Path::failed(error.into()), None)
            }
            _ => match measurement.default_route {
                Route::Direct => self.direct_path(&shared, request),
                Route::Broker => {
                    let broker = BrokerPath::clone(&self.broker);
                    let path = future::Path::broker(broker.oneshot(request));
                    (path, None)
                }
            },
        };
        let holds_slot = reserved == Reserved::Slot;
        future::ResponseFuture::new(path, shared, measurement, admission, holds_slot)
    }
}

impl<D, B> LaxStack<D, B>
where
    D: Service<PublishRequest, Response = Receipt> + Clone,
    D::Error: Into<BoxError>,
{
    /// The direct path: the breaker's admission, then the transport, called at once when it
    /// is ready, under the timeout.
    #[inline]
    fn direct_path(
        &mut self,
        shared: &Shared,
        request: PublishRequest,
    ) -> (future::Path<D>, Option<Admission>) {
        let admission = match &shared.direct_breaker {
            None => None,
            Some(breaker) => match breaker.shared().admit() {
                Admission::Rejected => {
                    let error = CircuitOpen::new(breaker.path()).into();
                    return (future::Path::failed(error), None);
                }
                admission => Some(admission),
            },
        };
        let after = request.timeout().unwrap_or(shared.publish_timeout);
        match call_when_ready(&mut self.direct, request) {
            Called::Now(future) => (future::Path::direct(future, after), admission),
            Called::Waiting(oneshot) => (future::Path::direct_waiting(oneshot, after), admission),
            // Dropped unsettled, a trial admission goes back to the breaker.
            Called::Failed(e) => (future::Path::failed(e.into()), None),
        }
    }
}

#[cfg(test)]
mod tests;
