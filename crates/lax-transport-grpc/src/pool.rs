//! The connection pool: N lanes, each one HTTP/2 connection (a tonic [`Channel`]) and, in
//! stream mode, one long-lived `StreamPublish` stream on it.
//!
//! With several broker addresses, lane `i` belongs to address `i % addresses` (its home), and
//! publishes take the brokers in turn. For one broker, publishes fill the first healthy lane
//! up to [`LANE_FILL`] in flight, then the next; when every lane is that busy they go to the
//! one with the fewest (ties broken round-robin).
//!
//! A lane whose stream or connection fails is taken out of rotation and rebuilt in the
//! background — a new connection, to the next broker address, with exponential backoff —
//! while the other lanes carry on. A lane rebuilt away from its home (its broker died) keeps
//! trying its home with the same backoff, and moves back as soon as it answers: a broker
//! that comes back gets its share of the load again.

use std::{
    sync::{
        Arc, Mutex, MutexGuard, Weak,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use lax_core::Error;
use lax_proto::broker::v1::broker_service_client::BrokerServiceClient;
use metrics::{Counter, Gauge};
use tokio::{task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;
use tonic::{
    service::interceptor::InterceptedService,
    transport::{Channel, Endpoint},
};

use crate::{
    auth::BearerAuth,
    options::{GrpcOptions, PublishMode},
    session::{AckReader, Session, SessionEnd},
    status::status_to_error,
};

/// A `BrokerService` client on a pooled connection that sends the bearer token; see
/// [`GrpcPublisher::broker_client`](crate::GrpcPublisher::broker_client).
pub type BrokerClient = BrokerServiceClient<InterceptedService<Channel, BearerAuth>>;

/// The transport's metric handles.
#[derive(Debug)]
struct Metrics {
    /// `{prefix}_grpc_connections`: healthy lanes.
    connections: Gauge,
    /// `{prefix}_connection_errors_total{type="grpc"}`.
    connection_errors: Counter,
}

impl Metrics {
    fn new(prefix: &str) -> Self {
        Metrics {
            connections: metrics::gauge!(format!("{prefix}_grpc_connections")),
            connection_errors: metrics::counter!(
                format!("{prefix}_connection_errors_total"),
                "type" => "grpc"
            ),
        }
    }
}

/// What a publish needs from its lane.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    /// The lane's `StreamPublish` stream.
    Stream,
    /// The connection, for a unary call.
    Call,
}

/// Publishes in flight a lane takes before the next lane gets any; see [`Pool::pick`].
const LANE_FILL: usize = 128;

#[derive(Debug, Default)]
struct Lane {
    healthy: AtomicBool,
    in_flight: AtomicUsize,
    /// The index of the broker address the lane is connected to (while healthy).
    endpoint: AtomicUsize,
    /// A background task is rebuilding this lane, or bringing it back to its home address.
    repairing: AtomicBool,
    conn: Mutex<Conn>,
}

/// A lane's connection; `channel` is `None` while the lane is broken.
#[derive(Debug, Default)]
struct Conn {
    /// Counts the connections this lane has had, so that a late failure report about an old
    /// one does not break its replacement.
    generation: u64,
    channel: Option<Channel>,
    session: Option<Arc<Session>>,
    reader: Option<JoinHandle<()>>,
    /// When the current connection came up.
    established: Option<Instant>,
    /// The delay the next repair starts with; doubles while connections keep breaking soon
    /// after they come up (a broker that accepts streams and ends them at once), so such a
    /// lane backs off instead of reconnecting at the initial rate forever.
    repair_delay: Duration,
}

impl Lane {
    fn lock(&self) -> MutexGuard<'_, Conn> {
        // Every change under this lock is a plain field assignment: poisoning is harmless.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The pool of lanes.
#[derive(Debug)]
pub(crate) struct Pool {
    lanes: Box<[Lane]>,
    endpoints: Box<[Endpoint]>,
    auth: BearerAuth,
    options: GrpcOptions,
    next: AtomicUsize,
    metrics: Metrics,
    shutdown: CancellationToken,
}

/// One publish's use of a lane; counts as in flight on the lane until dropped.
#[derive(Debug)]
pub(crate) struct Lease {
    pool: Arc<Pool>,
    index: usize,
    generation: u64,
    channel: Channel,
    session: Option<Arc<Session>>,
}

impl Lease {
    /// A client on the lane's connection.
    pub(crate) fn client(&self) -> BrokerClient {
        BrokerServiceClient::with_interceptor(self.channel.clone(), self.pool.auth.clone())
    }

    /// The lane's connection, for other services' clients.
    pub(crate) fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The lane's stream (leased with [`Purpose::Stream`]).
    pub(crate) fn session(&self) -> Option<&Session> {
        self.session.as_deref()
    }

    /// Reports that the connection failed under this publish: the lane is rebuilt.
    pub(crate) fn broken(&self, reason: &str) {
        self.pool.mark_broken(self.index, self.generation, reason);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool.lanes[self.index]
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
    }
}

impl Pool {
    /// Opens every lane. Succeeds when at least one connects; the others are rebuilt in the
    /// background. Fails (with the first lane's error) when none does.
    /// Opens every lane. With `require_one`, fails when no lane comes up; without, lanes
    /// that failed keep connecting in the background either way.
    pub(crate) async fn connect(
        options: GrpcOptions,
        require_one: bool,
    ) -> Result<Arc<Pool>, Error> {
        let endpoints = options.endpoints()?.into_boxed_slice();
        let pool = Arc::new(Pool {
            lanes: (0..options.connection_pool_size)
                .map(|_| Lane::default())
                .collect(),
            endpoints,
            auth: BearerAuth::new(options.auth_token.as_deref())?,
            metrics: Metrics::new(&options.metrics_prefix),
            options,
            next: AtomicUsize::new(0),
            shutdown: CancellationToken::new(),
        });
        let attempts = (0..pool.lanes.len()).map(|index| pool.establish(index, pool.home(index)));
        let results = futures::future::join_all(attempts).await;
        let mut first_error = None;
        let mut failed = Vec::new();
        for (index, result) in results.into_iter().enumerate() {
            if let Err(error) = result {
                pool.metrics.connection_errors.increment(1);
                tracing::warn!(lane = index, %error, "broker connection failed; retrying in the background");
                first_error.get_or_insert(error);
                failed.push(index);
            }
        }
        if require_one && failed.len() == pool.lanes.len() {
            pool.shutdown.cancel();
            return Err(first_error.unwrap_or_else(|| Error::unavailable("no broker connection")));
        }
        for index in failed {
            pool.spawn_repair(index);
        }
        Ok(pool)
    }

    pub(crate) fn auth(&self) -> &BearerAuth {
        &self.auth
    }

    pub(crate) fn options(&self) -> &GrpcOptions {
        &self.options
    }

    /// The broker address lane `index` belongs to.
    fn home(&self, index: usize) -> usize {
        index % self.endpoints.len()
    }

    /// Number of lanes.
    pub(crate) fn size(&self) -> usize {
        self.lanes.len()
    }

    /// Number of healthy lanes.
    pub(crate) fn healthy(&self) -> usize {
        self.lanes
            .iter()
            .filter(|lane| lane.healthy.load(Ordering::Relaxed))
            .count()
    }

    /// A healthy lane for one publish, or `Unavailable` (nothing sent) when none is.
    pub(crate) fn lease(self: &Arc<Self>, purpose: Purpose) -> Result<Lease, Error> {
        for _ in 0..self.lanes.len() {
            let Some(index) = self.pick() else { break };
            let lane = &self.lanes[index];
            let conn = lane.lock();
            let Some(channel) = conn.channel.clone() else {
                continue; // broke since it was picked
            };
            let session = match purpose {
                Purpose::Stream => match &conn.session {
                    Some(session) if !session.is_closed() => Some(Arc::clone(session)),
                    _ => continue,
                },
                Purpose::Call => None,
            };
            lane.in_flight.fetch_add(1, Ordering::Relaxed);
            return Ok(Lease {
                pool: Arc::clone(self),
                index,
                generation: conn.generation,
                channel,
                session,
            });
        }
        Err(Error::unavailable(format!(
            "no healthy connection to the broker ({} reconnecting)",
            self.lanes.len()
        )))
    }

    /// The lane for the next publish: on the next broker in turn that has a healthy lane, the
    /// first healthy lane (in lane order) with fewer than [`LANE_FILL`] publishes in flight,
    /// else its healthy lane with the fewest, the search starting at the next lane in turn so
    /// that ties spread round-robin.
    ///
    /// Filling lanes before spreading keeps messages together: every frame, write and wake-up
    /// on the HTTP/2 connection, in the broker's stream task and on its NATS connection
    /// carries as many messages as are in flight on the lane. Spread over 10 lanes, 256
    /// publishes in flight cost the broker about a third more CPU per message (and
    /// nats-server as much), and the throughput fell by as much.
    fn pick(&self) -> Option<usize> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        choose_lane(&self.lanes, self.endpoints.len(), start)
    }

    /// Connects lane `index` to broker address `target` (and opens its stream in stream mode),
    /// then puts it in rotation, in place of its current connection if it has one.
    async fn establish(self: &Arc<Self>, index: usize, target: usize) -> Result<(), Error> {
        let endpoint = &self.endpoints[target];
        let channel = endpoint.connect().await.map_err(|e| {
            Error::unavailable(format!(
                "cannot connect to the broker at {}: {e}",
                endpoint.uri()
            ))
            .with_source(e)
        })?;
        let generation = self.lanes[index].lock().generation + 1;
        let stream = match self.options.mode {
            PublishMode::Unary => None,
            PublishMode::Stream => {
                let mut client =
                    BrokerServiceClient::with_interceptor(channel.clone(), self.auth.clone());
                let opened = tokio::time::timeout(
                    self.options.connect_timeout,
                    Session::open(&mut client, self.options.stream_buffer),
                )
                .await
                .map_err(|_| {
                    Error::unavailable(format!(
                        "the broker at {} did not open a publish stream within {:?}",
                        endpoint.uri(),
                        self.options.connect_timeout
                    ))
                })?
                .map_err(|status| status_to_error(&status, false))?;
                Some(opened)
            }
        };
        self.install(index, target, generation, channel, stream)
    }

    fn install(
        self: &Arc<Self>,
        index: usize,
        target: usize,
        generation: u64,
        channel: Channel,
        stream: Option<(Session, AckReader)>,
    ) -> Result<(), Error> {
        let lane = &self.lanes[index];
        let mut conn = lane.lock();
        if self.shutdown.is_cancelled() {
            return Err(Error::closed());
        }
        conn.generation = generation;
        // A replaced connection's publishes in flight finish on it: their leases hold its
        // session, whose reader runs on; dropping the last of them half-closes its stream.
        conn.channel = Some(channel);
        conn.established = Some(Instant::now());
        if let Some((session, reader)) = stream {
            conn.session = Some(Arc::new(session));
            conn.reader = Some(tokio::spawn(watch(
                Arc::downgrade(self),
                index,
                generation,
                reader,
            )));
        }
        lane.endpoint.store(target, Ordering::Relaxed);
        // Cleared before the lane turns healthy, so a failure from now on starts a repair;
        // away from home, the repair task stays on to bring the lane back.
        if target == self.home(index) {
            lane.repairing.store(false, Ordering::SeqCst);
        }
        if !lane.healthy.swap(true, Ordering::SeqCst) {
            self.metrics.connections.increment(1.0);
        }
        Ok(())
    }

    /// Takes lane `index` out of rotation if it still has connection `generation`, and
    /// starts rebuilding it.
    fn mark_broken(self: &Arc<Self>, index: usize, generation: u64, reason: &str) {
        if self.shutdown.is_cancelled() {
            return;
        }
        let lane = &self.lanes[index];
        {
            let mut conn = lane.lock();
            if conn.generation != generation || conn.channel.is_none() {
                return;
            }
            conn.channel = None;
            conn.session = None;
            conn.reader = None;
            conn.repair_delay = next_repair_delay(
                conn.repair_delay,
                conn.established.map(|at| at.elapsed()),
                self.options.reconnect_initial_backoff,
                self.options.reconnect_max_backoff,
            );
            if lane.healthy.swap(false, Ordering::SeqCst) {
                self.metrics.connections.decrement(1.0);
            }
        }
        self.metrics.connection_errors.increment(1);
        tracing::warn!(
            lane = index,
            reason,
            "broker connection broken; reconnecting"
        );
        self.spawn_repair(index);
    }

    fn spawn_repair(self: &Arc<Self>, index: usize) {
        if self.lanes[index].repairing.swap(true, Ordering::SeqCst) {
            return;
        }
        tokio::spawn(repair(Arc::downgrade(self), index, self.shutdown.clone()));
    }

    /// Ends every lane: stops repairs, half-closes the streams and waits up to
    /// `close_timeout` for the broker to end them.
    pub(crate) async fn shutdown(&self) {
        self.shutdown.cancel();
        let mut readers = Vec::new();
        for lane in self.lanes.iter() {
            let mut conn = lane.lock();
            conn.channel = None;
            // Dropping the session drops the request queue's sender: the stream half-closes.
            conn.session = None;
            readers.extend(conn.reader.take());
            if lane.healthy.swap(false, Ordering::SeqCst) {
                self.metrics.connections.decrement(1.0);
            }
        }
        let ended = futures::future::join_all(readers.iter_mut());
        if tokio::time::timeout(self.options.close_timeout, ended)
            .await
            .is_err()
        {
            tracing::warn!(
                timeout = ?self.options.close_timeout,
                "the broker did not end the publish streams in time; dropping them"
            );
            for reader in &readers {
                reader.abort();
            }
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.shutdown.cancel();
        let healthy = self.healthy();
        if healthy > 0 {
            self.metrics.connections.decrement(healthy as f64);
        }
    }
}

/// Runs a lane's ack reader; when the stream ends on its own, the lane is rebuilt.
async fn watch(pool: Weak<Pool>, index: usize, generation: u64, reader: AckReader) {
    let reason = match reader.run().await {
        SessionEnd::Finished => "the broker ended the publish stream".to_owned(),
        SessionEnd::Failed(status) => format!("publish stream failed: {status}"),
    };
    if let Some(pool) = pool.upgrade() {
        pool.mark_broken(index, generation, &reason);
    }
}

/// The delay a lane's next repair starts with, after a connection that lived `lived`: the
/// initial backoff after a connection that stayed up at least `max`, else double the last
/// one (a broker that ends every stream at once gets reconnected ever more slowly).
fn next_repair_delay(
    last: Duration,
    lived: Option<Duration>,
    initial: Duration,
    max: Duration,
) -> Duration {
    match lived {
        Some(lived) if lived >= max => initial,
        _ => last.saturating_mul(2).clamp(initial, max),
    }
}

/// Rebuilds lane `index` until it is connected to its home address, the pool is shut down or
/// dropped. While the lane is broken, each attempt tries the next broker address; once it is
/// connected elsewhere, each attempt tries its home. Attempts come after a delay that doubles
/// up to the configured maximum (and starts again at the initial one after a move).
async fn repair(pool: Weak<Pool>, index: usize, shutdown: CancellationToken) {
    let Some((mut delay, max_delay)) = pool.upgrade().map(|pool| {
        let initial = pool.options.reconnect_initial_backoff;
        let first = pool.lanes[index].lock().repair_delay.max(initial);
        (first, pool.options.reconnect_max_backoff)
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
        let away = pool.lanes[index].healthy.load(Ordering::SeqCst);
        let target = if away {
            home
        } else {
            (index + attempt) % pool.endpoints.len()
        };
        let broker = pool.endpoints[target].uri().clone();
        match pool.establish(index, target).await {
            Ok(()) if target == home => {
                tracing::info!(lane = index, %broker, "broker connection restored");
                return;
            }
            Ok(()) => {
                tracing::info!(lane = index, %broker, home = %pool.endpoints[home].uri(), "broker connection moved to another broker until its own answers again");
                delay = pool.options.reconnect_initial_backoff;
                continue;
            }
            Err(error) => {
                if shutdown.is_cancelled() {
                    return;
                }
                pool.metrics.connection_errors.increment(1);
                tracing::debug!(lane = index, %error, attempt, "broker reconnection failed");
            }
        }
        delay = delay.saturating_mul(2).min(max_delay);
    }
}

/// [`Pool::pick`]'s choice among `lanes` connected to `endpoints` broker addresses; `start`
/// turns the choice of broker and the search for the least busy lane.
fn choose_lane(lanes: &[Lane], endpoints: usize, start: usize) -> Option<usize> {
    let up = |lane: &Lane| lane.healthy.load(Ordering::Relaxed);
    let endpoint = (0..endpoints)
        .map(|turn| (start + turn) % endpoints)
        .find(|&e| {
            lanes
                .iter()
                .any(|l| up(l) && l.endpoint.load(Ordering::Relaxed) == e)
        })?;
    let healthy = |lane: &Lane| up(lane) && lane.endpoint.load(Ordering::Relaxed) == endpoint;
    let load = |lane: &Lane| lane.in_flight.load(Ordering::Relaxed);
    if let Some(index) = lanes
        .iter()
        .position(|lane| healthy(lane) && load(lane) < LANE_FILL)
    {
        return Some(index);
    }
    let n = lanes.len();
    let mut best: Option<(usize, usize)> = None;
    for offset in 0..n {
        let index = (start + offset) % n;
        let lane = &lanes[index];
        if healthy(lane) && best.is_none_or(|(_, least)| load(lane) < least) {
            best = Some((index, load(lane)));
        }
    }
    best.map(|(index, _)| index)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn lanes(state: &[(bool, usize)]) -> Vec<Lane> {
        state
            .iter()
            .map(|&(healthy, in_flight)| Lane {
                healthy: AtomicBool::new(healthy),
                in_flight: AtomicUsize::new(in_flight),
                ..Lane::default()
            })
            .collect()
    }

    #[test]
    fn lanes_fill_in_order_then_the_least_busy_takes_the_next() {
        let fill = LANE_FILL;
        assert_eq!(choose_lane(&lanes(&[(true, 0), (true, 0)]), 1, 1), Some(0));
        assert_eq!(
            choose_lane(&lanes(&[(true, fill - 1), (true, 0)]), 1, 0),
            Some(0)
        );
        assert_eq!(
            choose_lane(&lanes(&[(true, fill), (true, 3)]), 1, 0),
            Some(1)
        );
        assert_eq!(
            choose_lane(&lanes(&[(false, 0), (true, 5)]), 1, 0),
            Some(1),
            "skips broken lanes"
        );
        let busy = lanes(&[(true, fill + 9), (true, fill + 2), (true, fill + 2)]);
        assert_eq!(choose_lane(&busy, 1, 0), Some(1));
        assert_eq!(choose_lane(&busy, 1, 2), Some(2), "ties go round");
        assert_eq!(choose_lane(&lanes(&[(false, 0), (false, 0)]), 1, 0), None);
    }

    #[test]
    fn publishes_take_the_brokers_in_turn_and_skip_one_without_lanes() {
        // Lanes 0 and 2 on broker 0, 1 and 3 on broker 1, as a pool of 4 over 2 addresses.
        let pool = lanes(&[(true, 0), (true, 0), (true, 0), (true, 0)]);
        for (index, lane) in pool.iter().enumerate() {
            lane.endpoint.store(index % 2, Ordering::Relaxed);
        }
        assert_eq!(choose_lane(&pool, 2, 0), Some(0));
        assert_eq!(choose_lane(&pool, 2, 1), Some(1));
        assert_eq!(choose_lane(&pool, 2, 2), Some(0));
        // Broker 1 died and its lanes moved to broker 0: every publish goes there.
        pool[1].healthy.store(false, Ordering::Relaxed);
        pool[3].endpoint.store(0, Ordering::Relaxed);
        assert_eq!(choose_lane(&pool, 2, 1), Some(0));
        pool[0].in_flight.store(LANE_FILL, Ordering::Relaxed);
        assert_eq!(
            choose_lane(&pool, 2, 1),
            Some(2),
            "fills the next lane of broker 0"
        );
        // Broker 1 is back on lane 3: it takes its turn again.
        pool[3].endpoint.store(1, Ordering::Relaxed);
        assert_eq!(choose_lane(&pool, 2, 1), Some(3));
    }

    #[test]
    fn repairs_back_off_while_connections_die_young() {
        let (initial, max) = (Duration::from_millis(100), Duration::from_secs(5));
        let young = Some(Duration::from_millis(10));
        let mut delay = Duration::ZERO;
        let mut seen = Vec::new();
        for _ in 0..8 {
            delay = next_repair_delay(delay, young, initial, max);
            seen.push(delay.as_millis());
        }
        assert_eq!(seen, [100, 200, 400, 800, 1600, 3200, 5000, 5000]);
        // A connection that stayed up resets the schedule.
        assert_eq!(next_repair_delay(delay, Some(max), initial, max), initial);
    }
}
