//! A pool of long-lived connections ("members") to one or more peers ("targets"), shared by
//! every request: it picks the member for each request, watches members die and rebuilds them
//! in the background. The gRPC transport's lanes to the broker are this pool's members.
//!
//! A transport implements [`Connect`]: how to make a member for a target, and (with
//! [`Connected::ends_when`]) how to tell that it died. The pool does the rest:
//!
//! - **Homes.** Member `i` belongs to target `i % targets` (its home), and requests take the
//!   targets in turn.
//! - **Fill, then least busy.** On the target whose turn it is, a request goes to the first
//!   healthy member (in member order) with fewer than [`fill`](PoolBuilder::fill) requests in
//!   flight; when every one is that busy, to the least busy one (ties go round). Filling before
//!   spreading keeps requests together: every frame, write and wake-up on a connection carries
//!   as many of them as are in flight on it.
//! - **Repair.** A member that dies (its [`Connected::ends_when`] future completes, or a
//!   request reports it with [`Lease::broken`]) is taken out of rotation and rebuilt in a
//!   background task with exponential [backoff](PoolBuilder::backoff), trying the next target
//!   in turn, while the others carry on. The first delay doubles while connections keep dying
//!   young (a peer that accepts them and drops them at once), and starts over after one that
//!   stayed up.
//! - **Going home.** A member rebuilt away from its home keeps trying its home with the same
//!   backoff, and moves back as soon as it answers: a peer that comes back gets its share again.
//! - **Metrics.** An optional gauge of healthy members and a counter of failed connections and
//!   deaths ([`PoolBuilder::metrics`]).
//! - **Shutdown.** [`Pool::shutdown`] stops the repairs, drops the members and waits (up to a
//!   timeout) for their end futures: a transport that half-closes a stream on drop gets the
//!   peer's last answers.
//!
//! A [`Pool`] is cheap to clone and is used through `&self`: [`Pool::lease`] picks a member
//! for one request, which counts as in flight on it until the [`Lease`] is dropped. For custom
//! tower stacks, [`PoolService`] is the same pool as a [`tower::Service`] whose members are
//! services themselves.
//!
//! ```
//! use std::{fmt, time::Duration};
//! use lax_core::{Error, PublishRequest, PublisherService, Route};
//! use lax_core::pool::{Connect, Connected, Pool, PoolService};
//! use lax_core::testing::ScriptedPublisher;
//! use tower::ServiceExt;
//!
//! /// Makes in-memory members; a real transport opens a connection to `target` here.
//! struct Scripted;
//!
//! impl Connect for Scripted {
//!     type Target = &'static str;
//!     type Member = PublisherService<ScriptedPublisher>;
//!
//!     async fn connect(&self, target: &&'static str) -> Result<Connected<Self::Member>, Error> {
//!         let member = PublisherService::new(ScriptedPublisher::new(Route::Broker));
//!         // A real member also says when it dies, e.g. when its connection's reader ends:
//!         // `Connected::new(member).ends_when(async { reader.await; "stream ended".into() })`.
//!         Ok(Connected::new(member))
//!     }
//! }
//!
//! # tokio_test::block_on(async {
//! let pool = Pool::builder(Scripted, vec!["broker-a:50051", "broker-b:50051"])
//!     .size(4)
//!     .backoff(Duration::from_millis(100), Duration::from_secs(5))
//!     .connect()
//!     .await?;
//! assert_eq!((pool.size(), pool.healthy()), (4, 4));
//!
//! // Through `&self`: a lease is one request's use of a member.
//! let lease = pool.lease()?;
//! assert_eq!(lease.target(), &"broker-a:50051");
//! drop(lease);
//!
//! // As a tower `Service` over members that are services.
//! let receipt = PoolService::new(pool.clone())
//!     .oneshot(PublishRequest::new("orders.created", "{}"))
//!     .await
//!     .map_err(Error::from_boxed)?;
//! assert_eq!(receipt.route, Route::Broker);
//!
//! pool.shutdown(Duration::from_secs(5)).await;
//! assert_eq!(pool.healthy(), 0);
//! # Ok::<(), Error>(())
//! # }).unwrap();
//! ```

mod choice;
pub mod future;
mod members;
mod service;

use std::{fmt, future::Future, pin::Pin};

use crate::error::Error;

pub use members::{Lease, Pool, PoolBuilder};
pub use service::PoolService;

/// Makes the members of a [`Pool`]: a transport's connection to one target.
///
/// The pool calls [`connect`](Connect::connect) for each member at the start and again
/// whenever one is rebuilt, from tasks of its own (so the connector lives as long as the pool,
/// shared by them).
pub trait Connect: Send + Sync + 'static {
    /// Where a member connects to, e.g. a broker address; shown in logs.
    type Target: fmt::Display + Send + Sync + 'static;
    /// One member: a connection and whatever rides on it. Dropped when the member is replaced
    /// and the last [`Lease`] on it is gone.
    type Member: Send + Sync + 'static;

    /// Makes a member connected to `target`. An error leaves the member to be rebuilt later
    /// (with backoff), or fails [`PoolBuilder::connect`] when no member could be made.
    fn connect(
        &self,
        target: &Self::Target,
    ) -> impl Future<Output = Result<Connected<Self::Member>, Error>> + Send;
}

/// A member just made by [`Connect::connect`], and optionally what tells its end.
pub struct Connected<M> {
    member: M,
    ended: Option<Pin<Box<dyn Future<Output = String> + Send>>>,
}

impl<M> Connected<M> {
    /// A member that does not report its own death; requests report it with
    /// [`Lease::broken`].
    pub fn new(member: M) -> Self {
        Connected {
            member,
            ended: None,
        }
    }

    /// `ended` completes, with the reason, when the member dies (e.g. a stream's reader that
    /// ends). The pool runs it in a task of its own, then takes the member out of rotation
    /// and rebuilds it; [`Pool::shutdown`] waits for it after dropping the member.
    pub fn ends_when(mut self, ended: impl Future<Output = String> + Send + 'static) -> Self {
        self.ended = Some(Box::pin(ended));
        self
    }

    /// The member.
    pub fn get_ref(&self) -> &M {
        &self.member
    }

    /// The member, without its end.
    pub fn into_inner(self) -> M {
        self.member
    }
}

impl<M: fmt::Debug> fmt::Debug for Connected<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connected")
            .field("member", &self.member)
            .field("reports_its_end", &self.ended.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests;
