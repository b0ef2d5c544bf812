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
//!   `publish_timeout`); retry bounds the whole publish by the message's timeout too.
//!
//! The transports at the bottom must be cheap to clone, with clones that become ready on
//! their own ([`PublisherService`](crate::PublisherService), a tonic channel, or anything
//! behind a [`tower::buffer::Buffer`] — a connection [`Pool`](crate::pool::Pool), for one).
//! Optional layers (`None` in the config) are left out, as tonic's `Endpoint` does with
//! [`tower::ServiceBuilder::option_layer`].
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

use std::{
    fmt,
    task::{Context, Poll},
    time::Duration,
};

use tower::{Service, ServiceBuilder, util::Either};

use crate::{
    breaker::{BreakerConfig, BreakerHandle, CircuitBreaker, CircuitBreakerLayer},
    error::{BoxError, Error},
    limit::{ConcurrencyLimit, ConcurrencyLimitLayer, LimitConfig},
    message::{PublishRequest, Receipt},
    metrics::{DEFAULT_PREFIX, Metrics, MetricsLayer},
    retry::{Retry, RetryConfig, RetryLayer},
    route::Route,
    timeout::{Timeout, TimeoutLayer},
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
        let breaker = |path| {
            config
                .breaker
                .map(|breaker| CircuitBreakerLayer::with_metrics_prefix(path, breaker, prefix))
                .transpose()
        };
        let direct_breaker = breaker("direct")?;
        let broker_breaker = breaker("broker")?;
        let retry = config.retry.map(RetryLayer::new).transpose()?;
        let limit = config
            .limit
            .map(ConcurrencyLimitLayer::from_config)
            .transpose()?;
        let timeout = TimeoutLayer::new(config.publish_timeout);

        let direct = ServiceBuilder::new()
            .option_layer(direct_breaker.clone())
            .layer(timeout)
            .service(direct);
        let broker = ServiceBuilder::new()
            .option_layer(retry)
            .option_layer(broker_breaker.clone())
            .layer(timeout)
            .service(broker);
        let inner = ServiceBuilder::new()
            .layer(MetricsLayer::new(prefix))
            .option_layer(limit)
            .service(Route::new(direct, broker));
        Ok(LaxStack {
            inner,
            direct_breaker: direct_breaker.map(|layer| layer.handle()),
            broker_breaker: broker_breaker.map(|layer| layer.handle()),
        })
    }
}

/// The direct path of the default stack: breaker → timeout → transport.
pub type DirectPath<D> = Either<CircuitBreaker<Timeout<D>>, Timeout<D>>;

/// The broker path below retry: breaker → timeout → transport.
pub type BrokerAttempt<B> = Either<CircuitBreaker<Timeout<B>>, Timeout<B>>;

/// The broker path of the default stack: retry → breaker → timeout → transport.
pub type BrokerPath<B> = Either<Retry<BrokerAttempt<B>>, BrokerAttempt<B>>;

/// Both paths, routed by the LAX table.
pub type Routed<D, B> = Route<DirectPath<D>, BrokerPath<B>>;

/// The whole default stack, as layered services.
pub type Layered<D, B> = Metrics<Either<ConcurrencyLimit<Routed<D, B>>, Routed<D, B>>>;

/// The default LAX stack over a direct and a broker service, built by [`StackBuilder`].
///
/// A `Service<PublishRequest>`, cheap to clone; wrap it in
/// [`ServicePublisher`](crate::ServicePublisher) for a [`Publisher`](crate::Publisher).
#[derive(Clone)]
pub struct LaxStack<D, B> {
    inner: Layered<D, B>,
    direct_breaker: Option<BreakerHandle>,
    broker_breaker: Option<BreakerHandle>,
}

impl<D, B> LaxStack<D, B> {
    /// The direct path's breaker, if the stack has breakers.
    pub fn direct_breaker(&self) -> Option<&BreakerHandle> {
        self.direct_breaker.as_ref()
    }

    /// The broker path's breaker, if the stack has breakers.
    pub fn broker_breaker(&self) -> Option<&BreakerHandle> {
        self.broker_breaker.as_ref()
    }

    /// The layered services.
    pub fn get_ref(&self) -> &Layered<D, B> {
        &self.inner
    }

    /// The layered services, mutably.
    pub fn get_mut(&mut self) -> &mut Layered<D, B> {
        &mut self.inner
    }

    /// The layered services.
    pub fn into_inner(self) -> Layered<D, B> {
        self.inner
    }
}

impl<D, B> fmt::Debug for LaxStack<D, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LaxStack")
            .field("direct", &std::any::type_name::<D>())
            .field("broker", &std::any::type_name::<B>())
            .field(
                "direct_breaker",
                &self.direct_breaker.as_ref().map(BreakerHandle::state),
            )
            .field(
                "broker_breaker",
                &self.broker_breaker.as_ref().map(BreakerHandle::state),
            )
            .finish()
    }
}

impl<D, B> Service<PublishRequest> for LaxStack<D, B>
where
    D: Service<PublishRequest, Response = Receipt> + Clone,
    D::Error: Into<BoxError>,
    B: Service<PublishRequest, Response = Receipt> + Clone,
    B::Error: Into<BoxError>,
{
    type Response = Receipt;
    type Error = BoxError;
    type Future = <Layered<D, B> as Service<PublishRequest>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: PublishRequest) -> Self::Future {
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    use super::{StackBuilder, StackConfig};
    use crate::{
        breaker::{BreakerConfig, BreakerState},
        error::{Error, ErrorKind},
        message::{PublishRequest, Route, Tier},
        publisher::{Publisher, PublisherService, ServicePublisher},
        retry::RetryConfig,
        testing::{Outcome, ScriptedPublisher},
    };

    fn publishers() -> (ScriptedPublisher, ScriptedPublisher) {
        (
            ScriptedPublisher::new(Route::Direct),
            ScriptedPublisher::new(Route::Broker),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn the_broker_path_retries_and_the_publish_is_counted_once() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let (direct, broker) = publishers();
        broker.push_n(2, || Outcome::Fail(Error::unavailable("reset")));
        let stack = metrics::with_local_recorder(&recorder, || {
            StackBuilder::new(StackConfig::default())
                .metrics_prefix("t")
                .build(
                    PublisherService::new(direct.clone()),
                    PublisherService::new(broker.clone()),
                )
                .unwrap()
        });
        let publisher = ServicePublisher::new(stack);
        let request = PublishRequest::new("orders.created", "{}").with_tier(Tier::Persistent);
        let id = request.message_id.clone();
        assert_eq!(publisher.publish(request).await.unwrap().message_id, id);
        assert_eq!(broker.calls(), 3);
        assert!(broker.received().iter().all(|r| r.message_id == id));
        assert_eq!(direct.calls(), 0);

        let mut counted = 0;
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            if let DebugValue::Counter(n) = value
                && key.key().name() == "t_publish_total"
            {
                counted += n;
            }
        }
        assert_eq!(counted, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn direct_publishes_are_not_retried_and_each_path_has_its_breaker() {
        let (direct, broker) = publishers();
        let config = StackConfig {
            breaker: Some(BreakerConfig {
                failure_threshold: 2,
                ..BreakerConfig::default()
            }),
            retry: Some(RetryConfig::default()),
            ..StackConfig::default()
        };
        direct.push_n(2, || Outcome::Fail(Error::unavailable("no nats")));
        let stack = StackBuilder::new(config)
            .build(
                PublisherService::new(direct.clone()),
                PublisherService::new(broker.clone()),
            )
            .unwrap();
        let publisher = ServicePublisher::new(stack.clone());
        for _ in 0..2 {
            let err = publisher
                .publish(PublishRequest::new("a.b", "x"))
                .await
                .unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Unavailable);
        }
        assert_eq!(direct.calls(), 2);
        assert_eq!(stack.direct_breaker().unwrap().state(), BreakerState::Open);
        assert_eq!(
            stack.broker_breaker().unwrap().state(),
            BreakerState::Closed
        );
        let err = publisher
            .publish(PublishRequest::new("a.b", "x"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::CircuitOpen);
        // The broker path is unaffected.
        let acked = PublishRequest::new("a.b", "x").with_ack(true);
        assert_eq!(publisher.publish(acked).await.unwrap().route, Route::Broker);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_broker_does_not_stall_direct_publishes_through_the_stack() {
        let (direct, broker) = publishers();
        broker.push(Outcome::Hang);
        let stack = StackBuilder::default()
            .publish_timeout(Duration::from_secs(5))
            .build(
                PublisherService::new(direct.clone()),
                PublisherService::new(broker.clone()),
            )
            .unwrap();
        let publisher = ServicePublisher::new(stack);
        let hung = tokio::spawn({
            let publisher = publisher.clone();
            async move {
                let request = PublishRequest::new("a.b", "x").with_tier(Tier::Persistent);
                publisher.publish(request).await
            }
        });
        for _ in 0..5 {
            publisher
                .publish(PublishRequest::new("a.b", "y"))
                .await
                .unwrap();
        }
        assert_eq!(direct.calls(), 5);
        // The hung attempt times out after 5 s, and the retry succeeds.
        hung.await.unwrap().unwrap();
        assert_eq!(broker.calls(), 2);
    }

    #[test]
    fn invalid_configs_are_refused_and_defaults_match_the_contract() {
        let (direct, broker) = publishers();
        let err = StackBuilder::default()
            .metrics_prefix("")
            .build(PublisherService::new(direct), PublisherService::new(broker))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Config);
        let config = StackConfig::default();
        assert_eq!(config.publish_timeout, Duration::from_secs(5));
        assert_eq!(config.metrics_prefix, "lax_client");
        assert_eq!(config.limit.unwrap().max_in_flight, 1000);
        assert_eq!(config.retry.unwrap().max_attempts, 3);
        assert_eq!(config.breaker.unwrap().failure_threshold, 10);
    }
}
