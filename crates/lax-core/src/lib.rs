//! # lax-core
//!
//! The heart of LAX: the [`Publisher`] trait that transports implement, the message model
//! ([`PublishRequest`], [`Receipt`], [`Tier`], [`Route`]), one [`Error`] type whose
//! classification every layer reads, input [`validate`]ion, and the resilience layers — route,
//! retry, circuit breaker, pool, limits, timeouts, metrics — as [`tower::Layer`]s.
#![forbid(unsafe_code)]

pub mod breaker;
pub mod error;
pub mod limit;
pub mod message;
pub mod publisher;
pub mod testing;
pub mod timeout;
pub mod validate;

pub use error::{BoxError, Delivery, Error, ErrorKind};
pub use message::{
    Ack, Headers, MESSAGE_ID_HEADER, NATS_MSG_ID_HEADER, PublishOptions, PublishRequest, Receipt,
    Route, TRACE_ID_HEADER, Tier, new_message_id,
};
pub use publisher::{Lifecycle, Publisher, PublisherService, ServicePublisher};
pub use validate::Limits;
