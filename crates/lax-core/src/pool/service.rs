//! [`PoolService`]: a [`Pool`] of services as one [`Service`].

use std::{
    fmt,
    task::{Context, Poll},
};

use tower::Service;

use super::{Connect, Lease, Pool, future::ResponseFuture};
use crate::error::{BoxError, Error};

/// A [`Pool`] whose members are services, as one [`Service`] for a custom tower stack: each
/// request goes to the member the pool picks (see the [module docs](super)), through a clone of
/// it.
///
/// `poll_ready` leases a member and waits for its clone to be ready; while no member is
/// healthy it is pending (woken when one comes back), so put a timeout or load-shed layer
/// above it if callers must not wait. It fails once the pool is shut down. A member whose
/// `poll_ready` fails, or whose call fails with a connection-level error
/// ([`ErrorKind::Unavailable`](crate::ErrorKind::Unavailable)), is reported broken and rebuilt
/// by the pool. Cloning shares the pool.
pub struct PoolService<C: Connect> {
    pool: Pool<C>,
    /// The member leased for the next call, and its clone, once ready.
    ready: Option<(Lease<C>, C::Member)>,
}

impl<C: Connect> PoolService<C> {
    /// `pool` as a service.
    pub fn new(pool: Pool<C>) -> Self {
        PoolService { pool, ready: None }
    }

    /// The pool.
    pub fn get_ref(&self) -> &Pool<C> {
        &self.pool
    }

    /// The pool, mutably.
    pub fn get_mut(&mut self) -> &mut Pool<C> {
        &mut self.pool
    }

    /// The pool.
    pub fn into_inner(self) -> Pool<C> {
        self.pool
    }
}

impl<C: Connect> Clone for PoolService<C> {
    fn clone(&self) -> Self {
        // A clone leases its own member: a lease is one request's.
        PoolService::new(self.pool.clone())
    }
}

impl<C: Connect> fmt::Debug for PoolService<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolService")
            .field("pool", &self.pool)
            .field("ready", &self.ready.as_ref().map(|(lease, _)| lease))
            .finish()
    }
}

impl<C, Req> Service<Req> for PoolService<C>
where
    C: Connect,
    C::Member: Service<Req> + Clone,
    <C::Member as Service<Req>>::Error: Into<BoxError>,
{
    type Response = <C::Member as Service<Req>>::Response;
    type Error = BoxError;
    type Future = ResponseFuture<<C::Member as Service<Req>>::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        loop {
            if let Some((lease, member)) = &mut self.ready {
                match member.poll_ready(cx) {
                    Poll::Ready(Ok(())) => return Poll::Ready(Ok(())),
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Err(error)) => {
                        let error: BoxError = error.into();
                        lease.broken(&format!("not ready: {error}"));
                        self.ready = None;
                    }
                }
            }
            let lease = match self.pool.lease() {
                Ok(lease) => lease,
                // A pool that is shut down has no member left.
                Err(_) if self.pool.is_closed() => {
                    return Poll::Ready(Err(Error::closed().into()));
                }
                Err(_) => {
                    // Registered before looking again, so a member that comes up in between
                    // is not missed.
                    self.pool.wake_when_healthy(cx.waker());
                    match self.pool.lease() {
                        Ok(lease) => lease,
                        Err(_) if self.pool.is_closed() => {
                            return Poll::Ready(Err(Error::closed().into()));
                        }
                        Err(_) => return Poll::Pending,
                    }
                }
            };
            let member = lease.member().clone();
            self.ready = Some((lease, member));
        }
    }

    fn call(&mut self, request: Req) -> Self::Future {
        match self.ready.take() {
            Some((lease, mut member)) => ResponseFuture::called(member.call(request), lease),
            None => ResponseFuture::not_ready(),
        }
    }
}
