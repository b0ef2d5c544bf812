//! A pool of interchangeable services — typically gRPC connections to the broker.
//!
//! [`Pool`] keeps `size` members made by a [`MakeService`] and sends each request to the next
//! ready member in turn (round-robin over the ready ones), so a member that is busy or
//! reconnecting is skipped rather than waited on. A member is replaced by a freshly made one
//! when its `poll_ready` fails or one of its calls fails with a connection-level error
//! ([`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable)). The pool is ready when any
//! member is, and not ready while none is.
//!
//! Members are made on the first `poll_ready`. A member whose making fails is made again on a
//! later `poll_ready`; only when no member at all could be made does `poll_ready` fail, with
//! the maker's error.
//!
//! A pool is not `Clone`: share it behind a [`tower::buffer::Buffer`].
//!
//! ```
//! use lax_core::{BoxError, PublishRequest, PublisherService, Route};
//! use lax_core::pool::Pool;
//! use lax_core::testing::ScriptedPublisher;
//! use tower::{Service, ServiceExt};
//!
//! # tokio_test::block_on(async {
//! let connect = tower::service_fn(|_: ()| async {
//!     Ok::<_, BoxError>(PublisherService::new(ScriptedPublisher::new(Route::Broker)))
//! });
//! let mut pool = Pool::new(connect, (), 4)?;
//! let receipt = pool.ready().await.unwrap().call(PublishRequest::new("a.b", "x")).await.unwrap();
//! assert_eq!(receipt.route, Route::Broker);
//! assert_eq!(pool.size(), 4);
//! # Ok::<(), lax_core::Error>(())
//! # }).unwrap();
//! ```

pub mod future;

use std::{
    fmt,
    future::Future,
    marker::PhantomData,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    task::{Context, Poll},
};

use tower::{MakeService, Service};

use crate::error::{BoxError, Error};

/// One slot of the pool.
enum Member<S, F> {
    /// To be made on the next chance.
    Vacant,
    Making(Pin<Box<F>>),
    Live {
        service: S,
        /// Set by a response future whose call failed at the connection level.
        broken: Arc<AtomicBool>,
    },
}

/// `size` services made by a maker, used in turn; see the [module docs](self).
pub struct Pool<M, Target, Req>
where
    M: MakeService<Target, Req>,
{
    maker: M,
    target: Target,
    members: Vec<Member<M::Service, M::Future>>,
    /// Where the next search for a ready member starts.
    cursor: usize,
    /// The member found ready for the next call.
    ready: Option<usize>,
    _request: PhantomData<fn(Req)>,
}

impl<M, Target, Req> Pool<M, Target, Req>
where
    M: MakeService<Target, Req>,
{
    /// A pool of `size` members, each made by `maker` for `target`. A size of 0 is a
    /// [`Config`](crate::ErrorKind::Config) error.
    pub fn new(maker: M, target: Target, size: usize) -> Result<Self, Error> {
        if size == 0 {
            return Err(Error::config("a pool needs at least 1 member"));
        }
        Ok(Pool {
            maker,
            target,
            members: (0..size).map(|_| Member::Vacant).collect(),
            cursor: 0,
            ready: None,
            _request: PhantomData,
        })
    }

    /// Number of members, live or being made.
    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// Members made and not known to be broken.
    pub fn live(&self) -> usize {
        self.members
            .iter()
            .filter(|m| matches!(m, Member::Live { broken, .. } if !broken.load(Ordering::Relaxed)))
            .count()
    }

    /// The maker.
    pub fn get_ref(&self) -> &M {
        &self.maker
    }

    /// The maker, mutably.
    pub fn get_mut(&mut self) -> &mut M {
        &mut self.maker
    }

    /// The maker.
    pub fn into_inner(self) -> M {
        self.maker
    }
}

impl<M, Target, Req> fmt::Debug for Pool<M, Target, Req>
where
    M: MakeService<Target, Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("size", &self.size())
            .field("live", &self.live())
            .field("ready", &self.ready)
            .finish_non_exhaustive()
    }
}

/// What polling one member found.
enum Found<E> {
    Ready,
    NotYet,
    MakeFailed(E),
}

impl<M, Target, Req> Pool<M, Target, Req>
where
    M: MakeService<Target, Req>,
    M::MakeError: Into<BoxError>,
    M::Error: Into<BoxError>,
    Target: Clone,
{
    /// Drives member `index` as far as it goes without waiting: replaces it if broken,
    /// makes it if vacant, and polls it ready once made.
    fn poll_member(
        &mut self,
        index: usize,
        cx: &mut Context<'_>,
    ) -> Result<Found<BoxError>, BoxError> {
        loop {
            match &mut self.members[index] {
                Member::Vacant => match self.maker.poll_ready(cx) {
                    Poll::Ready(Ok(())) => {
                        let making = self.maker.make_service(self.target.clone());
                        self.members[index] = Member::Making(Box::pin(making));
                    }
                    Poll::Ready(Err(e)) => return Err(e.into()),
                    Poll::Pending => return Ok(Found::NotYet),
                },
                Member::Making(making) => match making.as_mut().poll(cx) {
                    Poll::Ready(Ok(service)) => {
                        self.members[index] = Member::Live {
                            service,
                            broken: Arc::default(),
                        };
                    }
                    Poll::Ready(Err(e)) => {
                        let e = e.into();
                        tracing::warn!(member = index, error = %e, "could not make a pool member");
                        // Made again on a later poll, not now: a maker failing at once
                        // would spin here.
                        self.members[index] = Member::Vacant;
                        return Ok(Found::MakeFailed(e));
                    }
                    Poll::Pending => return Ok(Found::NotYet),
                },
                Member::Live { broken, .. } if broken.load(Ordering::Relaxed) => {
                    tracing::warn!(
                        member = index,
                        "pool member lost its connection; replacing it"
                    );
                    self.members[index] = Member::Vacant;
                }
                Member::Live { service, .. } => match service.poll_ready(cx) {
                    Poll::Ready(Ok(())) => return Ok(Found::Ready),
                    Poll::Ready(Err(e)) => {
                        let e: BoxError = e.into();
                        tracing::warn!(
                            member = index,
                            error = %e,
                            "pool member failed; replacing it"
                        );
                        self.members[index] = Member::Vacant;
                    }
                    Poll::Pending => return Ok(Found::NotYet),
                },
            }
        }
    }
}

impl<M, Target, Req> Service<Req> for Pool<M, Target, Req>
where
    M: MakeService<Target, Req>,
    M::MakeError: Into<BoxError>,
    M::Error: Into<BoxError>,
    Target: Clone,
{
    type Response = M::Response;
    type Error = BoxError;
    type Future = future::ResponseFuture<<M::Service as Service<Req>>::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.ready.is_some() {
            return Poll::Ready(Ok(()));
        }
        let size = self.members.len();
        let mut make_failures = 0;
        let mut last_make_error = None;
        for offset in 0..size {
            let index = (self.cursor + offset) % size;
            match self.poll_member(index, cx)? {
                Found::Ready => {
                    self.ready = Some(index);
                    self.cursor = (index + 1) % size;
                    return Poll::Ready(Ok(()));
                }
                Found::NotYet => {}
                Found::MakeFailed(e) => {
                    make_failures += 1;
                    last_make_error = Some(e);
                }
            }
        }
        match last_make_error {
            // Nothing could be made, and nothing else will wake this task.
            Some(e) if make_failures == size => Poll::Ready(Err(e)),
            _ => Poll::Pending,
        }
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let member = self.ready.take().map(|index| &mut self.members[index]);
        match member {
            Some(Member::Live { service, broken }) => {
                future::ResponseFuture::called(service.call(request), Arc::clone(broken))
            }
            _ => future::ResponseFuture::not_ready(),
        }
    }
}

#[cfg(test)]
mod tests;
