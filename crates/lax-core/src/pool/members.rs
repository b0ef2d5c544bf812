//! [`Pool`]: the members, their choice, and their repair.

use std::{
    fmt,
    sync::{
        Arc, Mutex, MutexGuard, Weak,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::Waker,
    time::Duration,
};

use metrics::{Counter, Gauge};
use tokio::{task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{
    Connect, Connected,
    choice::{choose, next_repair_delay},
};
use crate::error::Error;

/// Requests in flight a member takes before the next member of its target gets any, unless
/// [`PoolBuilder::fill`] says otherwise.
///
/// Measured on the broker route (`docs/PERFORMANCE.md`): spread over 10 connections, 256
/// publishes in flight cost the broker about a third more CPU per message than on 2.
const DEFAULT_FILL: usize = 128;

/// Configures and connects a [`Pool`]; from [`Pool::builder`].
#[must_use = "a builder does nothing until connected"]
pub struct PoolBuilder<C: Connect> {
    connector: C,
    targets: Vec<C::Target>,
    size: usize,
    fill: usize,
    initial_backoff: Duration,
    max_backoff: Duration,
    healthy_gauge: Gauge,
    connection_errors: Counter,
}

impl<C: Connect> fmt::Debug for PoolBuilder<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuilder")
            .field("targets", &self.targets.len())
            .field("size", &self.size)
            .field("fill", &self.fill)
            .field("initial_backoff", &self.initial_backoff)
            .field("max_backoff", &self.max_backoff)
            .finish_non_exhaustive()
    }
}

impl<C: Connect> PoolBuilder<C> {
    /// Number of members; default one per target.
    pub fn size(mut self, size: usize) -> Self {
        self.size = size;
        self
    }

    /// Requests in flight a member takes before the next one gets any; default 128. `1`
    /// spreads requests over every member (least busy first).
    pub fn fill(mut self, fill: usize) -> Self {
        self.fill = fill;
        self
    }

    /// The first and the longest delay before a member is rebuilt; default 100 ms and 5 s.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max;
        self
    }

    /// Records the number of healthy members in `healthy` and counts every failed
    /// connection attempt and every member's death in `connection_errors`.
    pub fn metrics(mut self, healthy: Gauge, connection_errors: Counter) -> Self {
        self.healthy_gauge = healthy;
        self.connection_errors = connection_errors;
        self
    }

    /// Makes every member on its home target. Succeeds when at least one is made (the others
    /// are rebuilt in the background); fails with the first member's error when none is, and
    /// with [`Config`](crate::ErrorKind::Config) for a bad configuration.
    pub async fn connect(self) -> Result<Pool<C>, Error> {
        self.open(true).await
    }

    /// Like [`connect`](Self::connect), but succeeds when no member could be made yet: they
    /// keep trying in the background, and [`Pool::lease`] fails until one is up.
    pub async fn connect_lazy(self) -> Result<Pool<C>, Error> {
        self.open(false).await
    }

    async fn open(self, require_one: bool) -> Result<Pool<C>, Error> {
        if self.targets.is_empty() {
            return Err(Error::config("a pool needs at least 1 target"));
        }
        if self.size == 0 {
            return Err(Error::config("a pool needs at least 1 member"));
        }
        if self.fill == 0 {
            return Err(Error::config("a pool member's fill must be at least 1"));
        }
        if self.initial_backoff.is_zero() || self.initial_backoff > self.max_backoff {
            return Err(Error::config(
                "a pool's initial backoff must be above zero and at most its maximum",
            ));
        }
        let shared = Arc::new(Shared {
            members: (0..self.size).map(|_| Slot::default()).collect(),
            connector: self.connector,
            targets: self.targets.into_boxed_slice(),
            fill: self.fill,
            initial_backoff: self.initial_backoff,
            max_backoff: self.max_backoff,
            healthy_gauge: self.healthy_gauge,
            connection_errors: self.connection_errors,
            next: AtomicUsize::new(0),
            shutdown: CancellationToken::new(),
            waiting: Mutex::default(),
        });
        let attempts = (0..shared.members.len()).map(|index| {
            let shared = &shared;
            async move { shared.establish(index, shared.home(index)).await }
        });
        let results = futures::future::join_all(attempts).await;
        let mut first_error = None;
        let mut failed = Vec::new();
        for (index, result) in results.into_iter().enumerate() {
            if let Err(error) = result {
                shared.connection_errors.increment(1);
                tracing::warn!(member = index, %error, "connection failed; retrying in the background");
                first_error.get_or_insert(error);
                failed.push(index);
            }
        }
        if require_one && failed.len() == shared.members.len() {
            shared.shutdown.cancel();
            return Err(first_error.unwrap_or_else(|| Error::unavailable("no connection")));
        }
        for index in failed {
            shared.spawn_repair(index);
        }
        Ok(Pool { shared })
    }
}

/// Members made by a [`Connect`]or, chosen per request and rebuilt when they die; see the
/// [module docs](super). Cheap to clone: clones share the members. The members are ended
/// when the last clone and the last [`Lease`] are dropped, or by [`shutdown`](Self::shutdown).
pub struct Pool<C: Connect> {
    shared: Arc<Shared<C>>,
}

impl<C: Connect> Clone for Pool<C> {
    fn clone(&self) -> Self {
        Pool {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<C: Connect> fmt::Debug for Pool<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("size", &self.size())
            .field("healthy", &self.healthy())
            .field("targets", &self.shared.targets.len())
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

impl<C: Connect> Pool<C> {
    /// A pool of members made by `connector`, spread over `targets` (one member per target
    /// unless [`size`](PoolBuilder::size) says otherwise).
    pub fn builder(connector: C, targets: Vec<C::Target>) -> PoolBuilder<C> {
        PoolBuilder {
            connector,
            size: targets.len(),
            targets,
            fill: DEFAULT_FILL,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            healthy_gauge: Gauge::noop(),
            connection_errors: Counter::noop(),
        }
    }

    /// The connector.
    pub fn connector(&self) -> &C {
        &self.shared.connector
    }

    /// The targets, in the order members are assigned to them.
    pub fn targets(&self) -> &[C::Target] {
        &self.shared.targets
    }

    /// Number of members, healthy or not.
    pub fn size(&self) -> usize {
        self.shared.members.len()
    }

    /// Number of members in rotation.
    pub fn healthy(&self) -> usize {
        self.shared.healthy()
    }

    /// True once [`shutdown`](Self::shutdown) has begun.
    pub fn is_closed(&self) -> bool {
        self.shared.shutdown.is_cancelled()
    }

    /// A healthy member for one request, or `Unavailable` (nothing sent) when none is.
    pub fn lease(&self) -> Result<Lease<C>, Error> {
        self.lease_where(|_| true)
    }

    /// Like [`lease`](Self::lease), among the healthy members `usable` accepts (e.g. those
    /// whose stream is still open).
    pub fn lease_where(&self, usable: impl Fn(&C::Member) -> bool) -> Result<Lease<C>, Error> {
        let shared = &self.shared;
        for _ in 0..shared.members.len() {
            let Some(index) = shared.pick() else { break };
            let slot = &shared.members[index];
            let state = slot.lock();
            let Some(member) = state.member.as_ref().filter(|member| usable(member)) else {
                continue; // broke since it was picked, or not usable
            };
            slot.in_flight.fetch_add(1, Ordering::Relaxed);
            return Ok(Lease {
                member: Arc::clone(member),
                shared: Arc::clone(shared),
                index,
                target: slot.target.load(Ordering::Relaxed),
                generation: state.generation,
            });
        }
        Err(Error::unavailable(if shared.shutdown.is_cancelled() {
            "the connection pool is shut down".to_owned()
        } else {
            format!(
                "no healthy connection ({} of {} reconnecting)",
                shared.members.len() - shared.healthy(),
                shared.members.len()
            )
        }))
    }

    /// Ends every member: stops repairs, drops the members (leases in flight keep theirs)
    /// and waits up to `timeout` for their end futures, then drops those.
    pub async fn shutdown(&self, timeout: Duration) {
        let shared = &self.shared;
        shared.shutdown.cancel();
        let mut watchers = Vec::new();
        for slot in shared.members.iter() {
            let mut state = slot.lock();
            state.member = None;
            watchers.extend(state.watcher.take());
            if slot.healthy.swap(false, Ordering::SeqCst) {
                shared.healthy_gauge.decrement(1.0);
            }
        }
        shared.wake_waiting();
        let ended = futures::future::join_all(watchers.iter_mut());
        if tokio::time::timeout(timeout, ended).await.is_err() {
            tracing::warn!(?timeout, "pool members did not end in time; dropping them");
            for watcher in &watchers {
                watcher.abort();
            }
        }
    }

    /// Registers `waker` to be woken when a member turns healthy or the pool shuts down.
    pub(super) fn wake_when_healthy(&self, waker: &Waker) {
        let mut waiting = self
            .shared
            .waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if !waiting.iter().any(|w| w.will_wake(waker)) {
            waiting.push(waker.clone());
        }
    }
}

/// One request's use of a member; counts as in flight on it until dropped.
pub struct Lease<C: Connect> {
    member: Arc<C::Member>,
    shared: Arc<Shared<C>>,
    index: usize,
    target: usize,
    generation: u64,
}

impl<C: Connect> fmt::Debug for Lease<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("member", &self.index)
            .field("target", &self.target().to_string())
            .finish_non_exhaustive()
    }
}

impl<C: Connect> Lease<C> {
    /// The member.
    pub fn member(&self) -> &C::Member {
        &self.member
    }

    /// The target the member is connected to.
    pub fn target(&self) -> &C::Target {
        &self.shared.targets[self.target]
    }

    /// Reports that the member's connection failed under this request: unless it was
    /// already replaced, it is taken out of rotation and rebuilt.
    pub fn broken(&self, reason: &str) {
        self.shared.mark_broken(self.index, self.generation, reason);
    }
}

impl<C: Connect> Drop for Lease<C> {
    fn drop(&mut self) {
        self.shared.members[self.index]
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
    }
}

struct Shared<C: Connect> {
    connector: C,
    targets: Box<[C::Target]>,
    members: Box<[Slot<C::Member>]>,
    fill: usize,
    initial_backoff: Duration,
    max_backoff: Duration,
    healthy_gauge: Gauge,
    connection_errors: Counter,
    /// Turns the choice of target and of the least busy member.
    next: AtomicUsize,
    shutdown: CancellationToken,
    /// [`PoolService`](super::PoolService)s waiting for a healthy member.
    waiting: Mutex<Vec<Waker>>,
}

/// One member's place in the pool.
struct Slot<M> {
    healthy: AtomicBool,
    in_flight: AtomicUsize,
    /// The index of the target the member is connected to (while healthy).
    target: AtomicUsize,
    /// A background task is rebuilding this member, or bringing it back to its home.
    repairing: AtomicBool,
    state: Mutex<SlotState<M>>,
}

impl<M> Default for Slot<M> {
    fn default() -> Self {
        Slot {
            healthy: AtomicBool::default(),
            in_flight: AtomicUsize::default(),
            target: AtomicUsize::default(),
            repairing: AtomicBool::default(),
            state: Mutex::new(SlotState {
                generation: 0,
                member: None,
                watcher: None,
                established: None,
                repair_delay: Duration::ZERO,
            }),
        }
    }
}

struct SlotState<M> {
    /// Counts the members this slot has had, so that a late report about an old one does not
    /// break its replacement.
    generation: u64,
    /// `None` while broken.
    member: Option<Arc<M>>,
    /// The task running the member's end future.
    watcher: Option<JoinHandle<()>>,
    /// When the current member was made.
    established: Option<Instant>,
    /// The delay the next repair starts with; see [`next_repair_delay`].
    repair_delay: Duration,
}

impl<M> Slot<M> {
    fn lock(&self) -> MutexGuard<'_, SlotState<M>> {
        // Every change under this lock is a plain field assignment: poisoning is harmless.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl<C: Connect> Shared<C> {
    /// The target member `index` belongs to.
    fn home(&self, index: usize) -> usize {
        index % self.targets.len()
    }

    fn healthy(&self) -> usize {
        self.members
            .iter()
            .filter(|slot| slot.healthy.load(Ordering::Relaxed))
            .count()
    }

    /// The member for the next request; see [`choose`].
    fn pick(&self) -> Option<usize> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        choose(
            self.members.len(),
            self.targets.len(),
            start,
            self.fill,
            |index| {
                let slot = &self.members[index];
                slot.healthy.load(Ordering::Relaxed).then(|| {
                    (
                        slot.target.load(Ordering::Relaxed),
                        slot.in_flight.load(Ordering::Relaxed),
                    )
                })
            },
        )
    }

    /// Makes member `index` on target `target` and puts it in rotation, in place of its
    /// current one if it has one.
    async fn establish(self: &Arc<Self>, index: usize, target: usize) -> Result<(), Error> {
        let connected = self.connector.connect(&self.targets[target]).await?;
        self.install(index, target, connected)
    }

    fn install(
        self: &Arc<Self>,
        index: usize,
        target: usize,
        connected: Connected<C::Member>,
    ) -> Result<(), Error> {
        let slot = &self.members[index];
        let mut state = slot.lock();
        if self.shutdown.is_cancelled() {
            return Err(Error::closed());
        }
        state.generation += 1;
        // A replaced member's requests in flight finish on it: their leases hold it, and its
        // end future runs on.
        state.member = Some(Arc::new(connected.member));
        state.established = Some(Instant::now());
        state.watcher = connected.ended.map(|ended| {
            let pool = Arc::downgrade(self);
            let generation = state.generation;
            tokio::spawn(async move {
                let reason = ended.await;
                if let Some(pool) = pool.upgrade() {
                    pool.mark_broken(index, generation, &reason);
                }
            })
        });
        slot.target.store(target, Ordering::Relaxed);
        // Cleared before the member turns healthy, so a failure from now on starts a repair;
        // away from home, the repair task stays on to bring the member back.
        if target == self.home(index) {
            slot.repairing.store(false, Ordering::SeqCst);
        }
        if !slot.healthy.swap(true, Ordering::SeqCst) {
            self.healthy_gauge.increment(1.0);
        }
        drop(state);
        self.wake_waiting();
        Ok(())
    }

    fn wake_waiting(&self) {
        let waiting = std::mem::take(
            &mut *self
                .waiting
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        );
        for waker in waiting {
            waker.wake();
        }
    }

    /// Takes member `index` out of rotation if it still is generation `generation`, and
    /// starts rebuilding it.
    fn mark_broken(self: &Arc<Self>, index: usize, generation: u64, reason: &str) {
        if self.shutdown.is_cancelled() {
            return;
        }
        let slot = &self.members[index];
        {
            let mut state = slot.lock();
            if state.generation != generation || state.member.is_none() {
                return;
            }
            state.member = None;
            state.watcher = None;
            state.repair_delay = next_repair_delay(
                state.repair_delay,
                state.established.map(|at| at.elapsed()),
                self.initial_backoff,
                self.max_backoff,
            );
            if slot.healthy.swap(false, Ordering::SeqCst) {
                self.healthy_gauge.decrement(1.0);
            }
        }
        self.connection_errors.increment(1);
        tracing::warn!(
            member = index,
            target = %self.targets[slot.target.load(Ordering::Relaxed)],
            reason,
            "connection broken; reconnecting"
        );
        self.spawn_repair(index);
    }

    fn spawn_repair(self: &Arc<Self>, index: usize) {
        if self.members[index].repairing.swap(true, Ordering::SeqCst) {
            return;
        }
        tokio::spawn(repair(Arc::downgrade(self), index, self.shutdown.clone()));
    }
}

impl<C: Connect> Drop for Shared<C> {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let healthy = self.healthy();
        if healthy > 0 {
            self.healthy_gauge.decrement(healthy as f64);
        }
    }
}

/// Rebuilds member `index` until it is on its home target, or the pool is shut down or
/// dropped. While the member is broken, each attempt tries the next target; once it is up
/// elsewhere, each attempt tries its home. Attempts come after a delay that doubles up to the
/// maximum (and starts again at the initial one after a move).
async fn repair<C: Connect>(pool: Weak<Shared<C>>, index: usize, shutdown: CancellationToken) {
    let Some((mut delay, max_delay)) = pool.upgrade().map(|pool| {
        let first = pool.members[index]
            .lock()
            .repair_delay
            .max(pool.initial_backoff);
        (first, pool.max_backoff)
    }) else {
        return;
    };
    for attempt in 1usize.. {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        let Some(pool) = pool.upgrade() else { return };
        let home = pool.home(index);
        let away = pool.members[index].healthy.load(Ordering::SeqCst);
        let target = if away {
            home
        } else {
            (index + attempt) % pool.targets.len()
        };
        match pool.establish(index, target).await {
            Ok(()) if target == home => {
                tracing::info!(member = index, target = %pool.targets[target], "connection restored");
                return;
            }
            Ok(()) => {
                tracing::info!(
                    member = index,
                    target = %pool.targets[target],
                    home = %pool.targets[home],
                    "connection moved to another target until its own answers again"
                );
                delay = pool.initial_backoff;
                continue;
            }
            Err(error) => {
                if shutdown.is_cancelled() {
                    return;
                }
                pool.connection_errors.increment(1);
                tracing::debug!(member = index, %error, attempt, "reconnection failed");
            }
        }
        delay = delay.saturating_mul(2).min(max_delay);
    }
}
