//! Routing: each publish goes to the direct or the broker path.
//!
//! [`Route`] asks its [`RoutePolicy`] which path a request takes — by default the LAX table
//! ([`DefaultRoute`]: tier memory without ack goes direct, everything else through the
//! broker) — and hands the request to that path only.
//!
//! # A slow path never stalls the other
//!
//! tower's `steer` is ready only when every inner service is, so a broker that is down or
//! full would hold back direct publishes too. [`Route`] is instead always ready, and a path
//! that is not ready is waited for inside the response future of the request that needs it
//! ([`tower::ServiceExt::oneshot`]), never in `poll_ready`: waiting for the broker holds only
//! the broker publishes. A broker call always goes through a clone of the broker path, boxed;
//! the direct path is checked for readiness in `call` and, being ready nearly always, called in
//! place ([`call_when_ready`]) — only when it is not does the
//! waiting instance move into the response future, and the route keep a clone.
//!
//! This is why the default stack puts no [`Buffer`] in front of its paths, as tower's `steer`
//! would need: a buffer hands every request to a worker task through a channel and answers
//! through a oneshot, which costs a direct publish more than the publish itself.
//!
//! Each path must therefore be cheap to clone, with clones that become ready on their own —
//! true of every layer in this crate, of `PublisherService`, and of a tonic `Channel`. A path
//! that is not (one connection that must not be shared, a service that is not `Clone`) goes
//! behind a [`tower::buffer::Buffer`]: [`Route::buffered`] does that for both paths. The
//! direct path is not buffered in the default stack, because a buffer's hand-off to its
//! worker task costs far more than the direct publish itself.
//!
//! ```
//! use lax_core::{PublishRequest, PublisherService, Route as Path, Tier};
//! use lax_core::route::Route;
//! use lax_core::testing::ScriptedPublisher;
//! use tower::ServiceExt;
//!
//! # tokio_test::block_on(async {
//! let direct = ScriptedPublisher::new(Path::Direct);
//! let broker = ScriptedPublisher::new(Path::Broker);
//! let route = Route::new(
//!     PublisherService::new(direct.clone()),
//!     PublisherService::new(broker.clone()),
//! );
//! let receipt = route.clone().oneshot(PublishRequest::new("a.b", "x")).await.unwrap();
//! assert_eq!(receipt.route, Path::Direct);
//! let request = PublishRequest::new("a.b", "y").with_tier(Tier::Persistent);
//! assert_eq!(route.oneshot(request).await.unwrap().route, Path::Broker);
//! assert_eq!((direct.calls(), broker.calls()), (1, 1));
//! # });
//! ```

pub mod future;

use std::task::{Context, Poll};

use tower::{Service, ServiceExt, buffer::Buffer};

use crate::{
    error::{BoxError, Error},
    message::{self, PublishRequest},
    ready::call_when_ready,
};

/// Decides the path of a request. Any `Fn(&Req) -> lax_core::Route` is one.
pub trait RoutePolicy<Req> {
    /// The path `request` takes.
    fn route(&self, request: &Req) -> message::Route;
}

impl<Req, F> RoutePolicy<Req> for F
where
    F: Fn(&Req) -> message::Route,
{
    fn route(&self, request: &Req) -> message::Route {
        self(request)
    }
}

/// The LAX routing table: [`PublishRequest::default_route`].
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultRoute;

impl RoutePolicy<PublishRequest> for DefaultRoute {
    fn route(&self, request: &PublishRequest) -> message::Route {
        request.default_route()
    }
}

/// Sends each request to the direct or the broker service; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Route<D, B, P = DefaultRoute> {
    direct: D,
    broker: B,
    policy: P,
}

impl<D, B> Route<D, B> {
    /// Routes by the LAX table.
    pub fn new(direct: D, broker: B) -> Self {
        Route::with_policy(direct, broker, DefaultRoute)
    }
}

impl<D, B, P> Route<D, B, P> {
    /// Routes by `policy`.
    pub fn with_policy(direct: D, broker: B, policy: P) -> Self {
        Route {
            direct,
            broker,
            policy,
        }
    }

    /// Routes by `policy`, with each path behind its own [`Buffer`] of `bound` requests, for
    /// paths whose clones cannot become ready on their own. Needs a tokio runtime (the buffers
    /// spawn their workers); without one, or with a bound of 0, it is a
    /// [`Config`](crate::ErrorKind::Config) error.
    #[allow(clippy::type_complexity)]
    pub fn buffered<Req>(
        direct: D,
        broker: B,
        policy: P,
        bound: usize,
    ) -> Result<Route<Buffer<Req, D::Future>, Buffer<Req, B::Future>, P>, Error>
    where
        D: Service<Req> + Send + 'static,
        D::Future: Send,
        D::Error: Into<BoxError> + Send + Sync,
        B: Service<Req> + Send + 'static,
        B::Future: Send,
        B::Error: Into<BoxError> + Send + Sync,
        Req: Send + 'static,
    {
        if bound == 0 {
            return Err(Error::config(
                "a route buffer needs room for at least 1 request",
            ));
        }
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(Error::config(
                "a buffered route must be built inside a tokio runtime",
            ));
        }
        Ok(Route::with_policy(
            Buffer::new(direct, bound),
            Buffer::new(broker, bound),
            policy,
        ))
    }

    /// The direct path.
    pub fn direct(&self) -> &D {
        &self.direct
    }

    /// The broker path.
    pub fn broker(&self) -> &B {
        &self.broker
    }

    /// The direct path, mutably.
    pub fn direct_mut(&mut self) -> &mut D {
        &mut self.direct
    }

    /// The broker path, mutably.
    pub fn broker_mut(&mut self) -> &mut B {
        &mut self.broker
    }

    /// The routing policy.
    pub fn policy(&self) -> &P {
        &self.policy
    }

    /// The direct path, the broker path and the policy.
    pub fn into_parts(self) -> (D, B, P) {
        (self.direct, self.broker, self.policy)
    }
}

impl<D, B, P, Req> Service<Req> for Route<D, B, P>
where
    D: Service<Req> + Clone,
    D::Error: Into<BoxError>,
    B: Service<Req, Response = D::Response> + Clone,
    B::Error: Into<BoxError>,
    P: RoutePolicy<Req>,
{
    type Response = D::Response;
    type Error = BoxError;
    type Future = future::ResponseFuture<D, B, Req>;

    /// Always ready: readiness is awaited per path, inside each response future.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Req) -> Self::Future {
        match self.policy.route(&request) {
            message::Route::Direct => {
                future::ResponseFuture::direct(call_when_ready(&mut self.direct, request))
            }
            message::Route::Broker => {
                future::ResponseFuture::broker(self.broker.clone().oneshot(request))
            }
        }
    }
}

#[cfg(test)]
mod tests;
