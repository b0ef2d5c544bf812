//! The default LAX stack, compiled from a [`StackConfig`] with [`tower::ServiceBuilder`] out of
//! this crate's public layers — the same ones an integrator stacks:
//!
//! ```text
//! metrics → in-flight cap → route ─┬─ direct: breaker → timeout → direct transport
//!                                  └─ broker: retry → breaker → timeout → broker transport
//! ```
//!
//! - **metrics** ([`MetricsLayer`]) on top, so each logical publish counts once, retries or not;
//! - the **in-flight cap** ([`ConcurrencyLimitLayer`]) covers both paths;
//! - **route** ([`Route`]) sends each publish by the LAX table, and a slow broker never holds
//!   back direct publishes (see [`route`](crate::route));
//! - **retry** ([`RetryLayer`]) only on the broker path: a direct publish has no ack to say it
//!   failed, and it is fire-and-forget by design;
//! - one **breaker** ([`CircuitBreakerLayer`]) per path (metric label `path` = `direct` /
//!   `broker`), below retry so that every attempt counts and an open circuit stops the retries;
//! - the **timeout** ([`TimeoutLayer`]) bounds each attempt (the message's own timeout, else
//!   `publish_timeout`), including a wait for the transport to become ready, and ends it at
//!   the request's [deadline](crate::PublishRequest::deadline) at the latest: the one deadline
//!   of the publish, which retry fixes when a broker publish starts (the message's timeout,
//!   else the retry `deadline`) and the transport reads too.
//!
//! A `None` in the config leaves a layer out ([`ServiceBuilder::option_layer`], as tonic's
//! `Endpoint` does). [`StackBuilder::layers`] gives the layers themselves, to read the
//! breakers' and the cap's state or to compose them differently.
//!
//! The transports at the bottom must be cheap to clone, with clones that become ready on
//! their own ([`PublisherService`](crate::PublisherService), a tonic channel, or anything
//! behind a [`tower::buffer::Buffer`]).
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

use std::{sync::Arc, time::Duration};

use tower::{ServiceBuilder, util::Either};

use crate::{
    breaker::{BreakerConfig, BreakerHandle, CircuitBreaker, CircuitBreakerLayer},
    error::Error,
    limit::{ConcurrencyLimit, ConcurrencyLimitLayer, LimitConfig},
    metrics::{DEFAULT_PREFIX, Metrics, MetricsLayer},
    retry::{Retry, RetryConfig, RetryLayer},
    route::Route,
    timeout::{Timeout, TimeoutLayer},
};

/// What the default stack does; `Default` is the wire contract's defaults.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
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

/// Compiles a [`StackConfig`] into the default [`Stack`] over a direct and a broker service.
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

    /// The layers of the stack, made (and their metric handles registered with the recorder
    /// installed now, so install it first). An invalid configuration is a
    /// [`Config`](crate::ErrorKind::Config) error.
    pub fn layers(&self) -> Result<StackLayers, Error> {
        let config = &self.config;
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
        Ok(StackLayers {
            metrics: MetricsLayer::new(prefix),
            limit: config
                .limit
                .map(ConcurrencyLimitLayer::from_config)
                .transpose()?,
            retry: config.retry.map(RetryLayer::new).transpose()?,
            direct_breaker: breaker("direct")?,
            broker_breaker: breaker("broker")?,
            timeout: TimeoutLayer::new(config.publish_timeout),
        })
    }

    /// Builds the stack over `direct` and `broker`: [`layers`](Self::layers), then
    /// [`StackLayers::service`].
    pub fn build<D, B>(self, direct: D, broker: B) -> Result<Stack<D, B>, Error> {
        Ok(self.layers()?.service(direct, broker))
    }
}

/// The layers of the default stack, as a [`StackConfig`] asks for them.
///
/// Each service made by [`service`](Self::service) shares these layers' state: one cap, one
/// breaker per path, one set of metric handles.
#[derive(Debug, Clone)]
pub struct StackLayers {
    /// Publish metrics, on top.
    pub metrics: MetricsLayer,
    /// The in-flight cap over both paths.
    pub limit: Option<ConcurrencyLimitLayer>,
    /// Retries, on the broker path only.
    pub retry: Option<RetryLayer>,
    /// The direct path's breaker.
    pub direct_breaker: Option<CircuitBreakerLayer>,
    /// The broker path's breaker.
    pub broker_breaker: Option<CircuitBreakerLayer>,
    /// The timeout of each attempt, on both paths.
    pub timeout: TimeoutLayer,
}

impl StackLayers {
    /// Composes the stack over `direct` and `broker` with [`tower::ServiceBuilder`].
    pub fn service<D, B>(&self, direct: D, broker: B) -> Stack<D, B> {
        let direct = ServiceBuilder::new()
            .option_layer(self.direct_breaker.clone())
            .layer(self.timeout)
            .service(direct);
        let broker = ServiceBuilder::new()
            .option_layer(self.retry.clone())
            .option_layer(self.broker_breaker.clone())
            .layer(self.timeout)
            .service(broker);
        ServiceBuilder::new()
            .layer(self.metrics.clone())
            .option_layer(self.limit.clone())
            .service(Route::new(direct, broker))
    }

    /// A handle on the direct path's breaker, if the stack has breakers.
    pub fn direct_breaker(&self) -> Option<BreakerHandle> {
        self.direct_breaker
            .as_ref()
            .map(CircuitBreakerLayer::handle)
    }

    /// A handle on the broker path's breaker, if the stack has breakers.
    pub fn broker_breaker(&self) -> Option<BreakerHandle> {
        self.broker_breaker
            .as_ref()
            .map(CircuitBreakerLayer::handle)
    }

    /// Slots of the in-flight cap free right now, if the stack has a cap.
    pub fn available(&self) -> Option<usize> {
        self.limit.as_ref().map(ConcurrencyLimitLayer::available)
    }
}

/// A layer that may be left out: tower's `option_layer` service.
pub type Optional<L, S> = Either<L, S>;

/// The direct path: breaker → timeout → transport.
pub type DirectPath<D> = Optional<CircuitBreaker<Timeout<D>>, Timeout<D>>;

/// The broker path below retry: breaker → timeout → transport.
pub type BrokerAttempt<B> = Optional<CircuitBreaker<Timeout<B>>, Timeout<B>>;

/// The broker path: retry → breaker → timeout → transport.
pub type BrokerPath<B> = Optional<Retry<BrokerAttempt<B>>, BrokerAttempt<B>>;

/// Both paths under the route.
pub type Routed<D, B> = Route<DirectPath<D>, BrokerPath<B>>;

/// The default stack: metrics → in-flight cap → route → the two paths.
pub type Stack<D, B> = Metrics<Optional<ConcurrencyLimit<Routed<D, B>>, Routed<D, B>>>;

#[cfg(test)]
mod tests;
