//! # lax-core
//!
//! The heart of LAX: the [`Publisher`] trait that transports implement, the message model
//! ([`PublishRequest`], [`Receipt`], [`Tier`], [`Route`]), one [`Error`] type whose
//! classification every layer reads, input [`validate`]ion, and the resilience layers as
//! [`tower::Layer`]s:
//!
//! | module | layer | does |
//! |---|---|---|
//! | [`route`] | [`route::Route`] | sends each publish direct or through the broker |
//! | [`retry`] | [`retry::RetryLayer`] | exponential backoff with jitter, same message id |
//! | [`breaker`] | [`breaker::CircuitBreakerLayer`] | fails fast while a path keeps failing |
//! | [`pool`] | [`pool::Pool`], [`pool::PoolService`] | spreads requests over N connections to one or more targets, rebuilds broken ones in the background |
//! | [`limit`] | [`limit::ConcurrencyLimitLayer`] | caps publishes in flight (wait or fail fast) |
//! | [`timeout`] | [`timeout::TimeoutLayer`] | per-message timeout, else a default |
//! | [`metrics`] | [`metrics::MetricsLayer`] | the `lax_client_*` metrics dashboards expect |
//!
//! Every layer's errors are small types (`CircuitOpen`, `Overloaded`, `Elapsed`) boxed as
//! [`BoxError`], and [`Error::from_boxed`] classifies them.
//!
//! [`trace`] carries W3C trace context (`traceparent`, `tracestate`) in message headers and
//! gives LAX's `tracing` spans (`lax.publish`, `lax.broker.publish`, `lax.broker.deliver`,
//! `lax.process`) their W3C identity, so one trace runs from publish to processing.
//!
//! There are three ways in.
//!
//! ## 1. The default stack
//!
//! [`stack::StackBuilder`] compiles a [`stack::StackConfig`] (the wire contract's defaults)
//! with [`tower::ServiceBuilder`] into metrics → in-flight cap → route → (direct: breaker →
//! timeout | broker: retry → breaker → timeout), over a direct and a broker service — the
//! layers below, nothing else (see [`stack`]):
//!
//! ```
//! use lax_core::{Publisher, PublishRequest, PublisherService, Route, ServicePublisher, Tier};
//! use lax_core::stack::{StackBuilder, StackConfig};
//! use lax_core::testing::ScriptedPublisher;
//!
//! # tokio_test::block_on(async {
//! let direct = PublisherService::new(ScriptedPublisher::new(Route::Direct));
//! let broker = PublisherService::new(ScriptedPublisher::new(Route::Broker));
//! let stack = StackBuilder::new(StackConfig::default()).build(direct, broker)?;
//! let publisher = ServicePublisher::new(stack);
//!
//! let receipt = publisher.publish(PublishRequest::new("events.clicked", "{}")).await?;
//! assert_eq!(receipt.route, Route::Direct);
//! let order = PublishRequest::new("orders.created", "{}").with_tier(Tier::Persistent);
//! assert_eq!(publisher.publish(order).await?.route, Route::Broker);
//! # Ok::<(), lax_core::Error>(())
//! # }).unwrap();
//! ```
//!
//! ## 2. One layer on its own
//!
//! Each layer wraps any `Service`, e.g. a retry around one publisher:
//!
//! ```
//! use lax_core::{Error, PublishRequest, PublisherService, Route};
//! use lax_core::retry::{RetryConfig, RetryLayer};
//! use lax_core::testing::{Outcome, ScriptedPublisher};
//! use tower::{Layer, ServiceExt};
//!
//! # tokio_test::block_on(async {
//! let publisher = ScriptedPublisher::new(Route::Broker);
//! publisher.push(Outcome::Fail(Error::timed_out("no ack")));
//! let retrying = RetryLayer::new(RetryConfig::default())?
//!     .layer(PublisherService::new(publisher.clone()));
//! retrying.oneshot(PublishRequest::new("a.b", "x")).await.unwrap();
//! assert_eq!(publisher.calls(), 2);
//! # Ok::<(), Error>(())
//! # }).unwrap();
//! ```
//!
//! ## 3. A custom stack
//!
//! Compose the layers with [`tower::ServiceBuilder`], with a routing policy of your own:
//!
//! ```
//! use std::time::Duration;
//! use lax_core::{Publisher, PublishRequest, PublisherService, Route as Path, ServicePublisher};
//! use lax_core::breaker::{BreakerConfig, CircuitBreakerLayer};
//! use lax_core::limit::{ConcurrencyLimitLayer, LimitMode};
//! use lax_core::metrics::MetricsLayer;
//! use lax_core::route::Route;
//! use lax_core::testing::ScriptedPublisher;
//! use lax_core::timeout::TimeoutLayer;
//! use tower::ServiceBuilder;
//!
//! # tokio_test::block_on(async {
//! let direct = ScriptedPublisher::new(Path::Direct);
//! let broker = ScriptedPublisher::new(Path::Broker);
//! let broker_path = ServiceBuilder::new()
//!     .layer(CircuitBreakerLayer::new("broker", BreakerConfig::default())?)
//!     .layer(TimeoutLayer::new(Duration::from_secs(2)))
//!     .service(PublisherService::new(broker.clone()));
//! // Audit events always go through the broker, whatever their tier.
//! let policy = |request: &PublishRequest| {
//!     if request.subject.starts_with("audit.") { Path::Broker } else { request.default_route() }
//! };
//! let stack = ServiceBuilder::new()
//!     .layer(MetricsLayer::new("my_app"))
//!     .layer(ConcurrencyLimitLayer::new(100, LimitMode::FailFast)?)
//!     .service(Route::with_policy(PublisherService::new(direct.clone()), broker_path, policy));
//! let publisher = ServicePublisher::new(stack);
//!
//! publisher.publish(PublishRequest::new("audit.login", "{}")).await?;
//! publisher.publish(PublishRequest::new("events.clicked", "{}")).await?;
//! assert_eq!((direct.calls(), broker.calls()), (1, 1));
//! # Ok::<(), lax_core::Error>(())
//! # }).unwrap();
//! ```
//!
//! # Features
//!
//! - `testing` (off): the `testing` module, with `ScriptedPublisher` (a scriptable
//!   in-memory [`Publisher`] for unit tests, used by the examples above) and the conformance
//!   suite every [`Publisher`] must pass. Enable it from `[dev-dependencies]`, as tower keeps
//!   its mocks in tower-test.
#![forbid(unsafe_code)]

pub mod breaker;
pub mod config;
pub mod drain;
pub mod error;
pub mod limit;
pub mod message;
pub mod metrics;
pub mod pool;
pub mod publisher;
pub mod ready;
pub mod retry;
pub mod route;
pub mod stack;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod timeout;
pub mod trace;
pub mod validate;

pub use error::{BoxError, Delivery, Error, ErrorKind};
pub use message::{
    Ack, Headers, MESSAGE_ID_HEADER, NATS_MSG_ID_HEADER, PublishOptions, PublishRequest, Receipt,
    Route, SmolStr, TRACE_ID_HEADER, Tier, new_message_id,
};
pub use publisher::{
    Lifecycle, Publisher, PublisherService, ServicePublishFuture, ServicePublisher,
};
pub use validate::Limits;
