use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use metrics::{Counter, Gauge};
use tokio::{
    sync::{mpsc, oneshot},
    time::Instant,
};
use tokio_test::{assert_pending, assert_ready_err, assert_ready_ok};
use tower::{Service, ServiceExt};
use tower_test::mock;

use super::{
    Connect, Connected, Pool, PoolService,
    choice::{choose, next_repair_delay},
};
use crate::{
    error::{Error, ErrorKind},
    message::{PublishRequest, Receipt},
};

const FILL: usize = 128;

/// `choose` over members given as `(healthy, target, in flight)`.
fn pick(members: &[(bool, usize, usize)], targets: usize, start: usize) -> Option<usize> {
    choose(members.len(), targets, start, FILL, |i| {
        let (healthy, target, load) = members[i];
        healthy.then_some((target, load))
    })
}

#[test]
fn members_fill_in_order_then_the_least_busy_takes_the_next() {
    assert_eq!(pick(&[(true, 0, 0), (true, 0, 0)], 1, 1), Some(0));
    assert_eq!(pick(&[(true, 0, FILL - 1), (true, 0, 0)], 1, 0), Some(0));
    assert_eq!(pick(&[(true, 0, FILL), (true, 0, 3)], 1, 0), Some(1));
    assert_eq!(
        pick(&[(false, 0, 0), (true, 0, 5)], 1, 0),
        Some(1),
        "skips broken members"
    );
    let busy = [
        (true, 0, FILL + 9),
        (true, 0, FILL + 2),
        (true, 0, FILL + 2),
    ];
    assert_eq!(pick(&busy, 1, 0), Some(1));
    assert_eq!(pick(&busy, 1, 2), Some(2), "ties go round");
    assert_eq!(pick(&[(false, 0, 0), (false, 0, 0)], 1, 0), None);
}

#[test]
fn requests_take_the_targets_in_turn_and_skip_one_without_members() {
    // Members 0 and 2 on target 0, 1 and 3 on target 1, as a pool of 4 over 2 targets.
    let mut members = [(true, 0, 0), (true, 1, 0), (true, 0, 0), (true, 1, 0)];
    assert_eq!(pick(&members, 2, 0), Some(0));
    assert_eq!(pick(&members, 2, 1), Some(1));
    assert_eq!(pick(&members, 2, 2), Some(0));
    // Target 1 died and member 3 moved to target 0: every request goes there.
    members[1].0 = false;
    members[3].1 = 0;
    assert_eq!(pick(&members, 2, 1), Some(0));
    members[0].2 = FILL;
    assert_eq!(
        pick(&members, 2, 1),
        Some(2),
        "fills the next member of target 0"
    );
    // Target 1 is back on member 3: it takes its turn again.
    members[3].1 = 1;
    assert_eq!(pick(&members, 2, 1), Some(3));
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

/// One member of the [`Fake`] connector: where it connected, and its kill switch.
#[derive(Debug)]
struct Member {
    target: &'static str,
    /// Dropping the member completes its end future, as a dropped stream ends its reader.
    _alive: oneshot::Sender<()>,
}

/// A connector whose targets go up and down, and whose members die on command.
#[derive(Clone, Default)]
struct Fake {
    state: Arc<FakeState>,
}

#[derive(Default)]
struct FakeState {
    down: Mutex<HashSet<&'static str>>,
    /// Every attempt: when, and to which target.
    attempts: Mutex<Vec<(Instant, &'static str)>>,
    /// Kills of the members made, in order.
    kills: Mutex<Vec<oneshot::Sender<String>>>,
    /// Members end as soon as they are made (a peer that drops every connection).
    die_at_once: std::sync::atomic::AtomicBool,
    /// End futures that finished after their member was dropped.
    ended_on_drop: AtomicUsize,
}

impl Fake {
    fn set_down(&self, target: &'static str, down: bool) {
        let mut set = self.state.down.lock().unwrap();
        if down {
            set.insert(target);
        } else {
            set.remove(target);
        }
    }

    fn attempts(&self) -> Vec<(Instant, &'static str)> {
        self.state.attempts.lock().unwrap().clone()
    }

    fn kill(&self, member: usize) {
        let kill = std::mem::replace(
            &mut self.state.kills.lock().unwrap()[member],
            oneshot::channel().0,
        );
        kill.send("killed by the test".into()).unwrap();
    }
}

impl Connect for Fake {
    type Target = &'static str;
    type Member = Member;

    async fn connect(&self, target: &&'static str) -> Result<Connected<Member>, Error> {
        let target = *target;
        self.state
            .attempts
            .lock()
            .unwrap()
            .push((Instant::now(), target));
        if self.state.down.lock().unwrap().contains(target) {
            return Err(Error::unavailable(format!("{target} refused")));
        }
        let (alive, dropped) = oneshot::channel::<()>();
        let (kill, killed) = oneshot::channel::<String>();
        self.state.kills.lock().unwrap().push(kill);
        let die_at_once = self.state.die_at_once.load(Ordering::SeqCst);
        let state = Arc::clone(&self.state);
        Ok(Connected::new(Member {
            target,
            _alive: alive,
        })
        .ends_when(async move {
            if die_at_once {
                return "dropped at once".to_owned();
            }
            tokio::select! {
                reason = killed => reason.unwrap_or_else(|_| "kill switch dropped".into()),
                _ = dropped => {
                    state.ended_on_drop.fetch_add(1, Ordering::SeqCst);
                    "member dropped".into()
                }
            }
        }))
    }
}

/// Waits (on the paused clock, which jumps ahead while every task idles) until `done`.
async fn wait_until(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(Instant::now() < deadline, "condition not met in time");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// The gaps between consecutive attempts, in ms.
fn gaps(attempts: &[(Instant, &'static str)]) -> Vec<u128> {
    attempts
        .windows(2)
        .map(|pair| (pair[1].0 - pair[0].0).as_millis())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn connect_fails_when_no_member_can_be_made_and_lazy_keeps_trying_with_backoff() {
    let fake = Fake::default();
    fake.set_down("a", true);
    let error = Pool::builder(fake.clone(), vec!["a"])
        .size(2)
        .connect()
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable);

    let fake = Fake::default();
    fake.set_down("a", true);
    let errors = Arc::new(AtomicU64::new(0));
    let pool = Pool::builder(fake.clone(), vec!["a"])
        .backoff(Duration::from_millis(100), Duration::from_millis(500))
        .metrics(Gauge::noop(), Counter::from_arc(Arc::clone(&errors)))
        .connect_lazy()
        .await
        .unwrap();
    assert_eq!(pool.healthy(), 0);
    let error = pool.lease().unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable);
    assert!(!error.may_be_stored(), "{error:?}");

    wait_until(|| fake.attempts().len() == 6).await;
    fake.set_down("a", false);
    wait_until(|| pool.healthy() == 1).await;
    assert_eq!(gaps(&fake.attempts()), [100, 200, 400, 500, 500, 500]);
    assert_eq!(
        errors.load(Ordering::SeqCst),
        6,
        "every failed attempt counts"
    );
}

#[tokio::test(start_paused = true)]
async fn a_dead_member_moves_to_another_target_and_back_home_when_it_answers() {
    let fake = Fake::default();
    let healthy = Arc::new(AtomicU64::new(0));
    let pool = Pool::builder(fake.clone(), vec!["a", "b"])
        .metrics(Gauge::from_arc(Arc::clone(&healthy)), Counter::noop())
        .connect()
        .await
        .unwrap();
    let gauge = || f64::from_bits(healthy.load(Ordering::SeqCst));
    assert_eq!(gauge(), 2.0);
    // Requests take the targets in turn.
    let first = pool.lease().unwrap();
    let second = pool.lease().unwrap();
    assert_eq!((first.member().target, second.member().target), ("a", "b"));
    drop((first, second));

    // Target b dies: its member's end fires, b refuses, the member moves to a.
    fake.set_down("b", true);
    fake.kill(1);
    wait_until(|| pool.healthy() == 1).await;
    assert_eq!(gauge(), 1.0);
    wait_until(|| pool.healthy() == 2).await;
    for _ in 0..4 {
        assert_eq!(pool.lease().unwrap().member().target, "a");
    }
    // b comes back: the member goes home within the backoff.
    let back = Instant::now();
    fake.set_down("b", false);
    wait_until(|| {
        let mut seen = HashSet::new();
        for _ in 0..2 {
            seen.insert(pool.lease().unwrap().member().target);
        }
        seen.len() == 2
    })
    .await;
    assert!(back.elapsed() <= Duration::from_secs(5));
    assert_eq!(gauge(), 2.0);
    let targets: Vec<_> = fake.attempts().iter().map(|(_, t)| *t).collect();
    assert_eq!(targets[..4], ["a", "b", "a", "b"], "{targets:?}");
}

#[tokio::test(start_paused = true)]
async fn members_that_die_young_are_rebuilt_ever_more_slowly() {
    let fake = Fake::default();
    fake.state.die_at_once.store(true, Ordering::SeqCst);
    let _pool = Pool::builder(fake.clone(), vec!["a"])
        .backoff(Duration::from_millis(100), Duration::from_secs(1))
        .connect()
        .await
        .unwrap();
    wait_until(|| fake.attempts().len() == 7).await;
    assert_eq!(gaps(&fake.attempts()), [100, 200, 400, 800, 1000, 1000]);
}

#[tokio::test(start_paused = true)]
async fn leases_fill_a_member_then_the_next_and_skip_unusable_ones() {
    let fake = Fake::default();
    let pool = Pool::builder(fake.clone(), vec!["a"])
        .size(3)
        .fill(2)
        .connect()
        .await
        .unwrap();
    let index = |lease: &super::Lease<Fake>| format!("{lease:?}");
    let leases: Vec<_> = (0..5).map(|_| pool.lease().unwrap()).collect();
    let members: Vec<_> = leases.iter().map(index).collect();
    assert_eq!(members[0], members[1]);
    assert_ne!(members[1], members[2]);
    assert_eq!(members[2], members[3]);
    assert!(!members[..4].contains(&members[4]));
    drop(leases);
    // Only member 0 is ever usable here.
    let first = pool.lease().unwrap();
    let usable = |member: &Member| std::ptr::eq(member, first.member());
    for _ in 0..4 {
        let lease = pool.lease_where(usable).unwrap();
        assert_eq!(index(&lease), index(&first));
    }
    let error = pool.lease_where(|_| false).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable);
}

#[tokio::test(start_paused = true)]
async fn a_late_report_about_a_replaced_member_does_not_break_its_replacement() {
    let fake = Fake::default();
    let pool = Pool::builder(fake.clone(), vec!["a"])
        .connect()
        .await
        .unwrap();
    let old = pool.lease().unwrap();
    old.broken("reset by peer");
    assert_eq!(pool.healthy(), 0);
    wait_until(|| pool.healthy() == 1).await;
    old.broken("the same reset, reported again");
    assert_eq!(pool.healthy(), 1);
    assert_eq!(fake.attempts().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn shutdown_drops_the_members_and_waits_for_their_end() {
    let fake = Fake::default();
    let pool = Pool::builder(fake.clone(), vec!["a", "b"])
        .size(3)
        .connect()
        .await
        .unwrap();
    let in_flight = pool.lease().unwrap();
    let shutdown = tokio::spawn({
        let pool = pool.clone();
        async move { pool.shutdown(Duration::from_secs(5)).await }
    });
    // Two members end as they are dropped; the leased one lives until its lease is done.
    wait_until(|| fake.state.ended_on_drop.load(Ordering::SeqCst) == 2).await;
    assert!(!shutdown.is_finished());
    assert!(pool.is_closed());
    assert_eq!(pool.healthy(), 0);
    assert_eq!(pool.lease().unwrap_err().kind(), ErrorKind::Unavailable);
    drop(in_flight);
    shutdown.await.unwrap();
    assert_eq!(fake.state.ended_on_drop.load(Ordering::SeqCst), 3);
    // A report from a request that ends after shutdown starts no repair.
    assert_eq!(fake.attempts().len(), 3);
}

#[tokio::test(start_paused = true)]
async fn shutdown_gives_up_on_members_that_do_not_end_in_time() {
    let fake = Fake::default();
    let pool = Pool::builder(fake.clone(), vec!["a"])
        .connect()
        .await
        .unwrap();
    let held = pool.lease().unwrap();
    let started = Instant::now();
    pool.shutdown(Duration::from_secs(2)).await;
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    drop(held);
}

#[tokio::test]
async fn a_bad_configuration_is_a_config_error() {
    let config = |builder: super::PoolBuilder<Fake>| async move {
        builder.connect().await.unwrap_err().kind()
    };
    let fake = Fake::default;
    assert_eq!(
        config(Pool::builder(fake(), vec![])).await,
        ErrorKind::Config
    );
    assert_eq!(
        config(Pool::builder(fake(), vec!["a"]).size(0)).await,
        ErrorKind::Config
    );
    assert_eq!(
        config(Pool::builder(fake(), vec!["a"]).fill(0)).await,
        ErrorKind::Config
    );
    assert_eq!(
        config(
            Pool::builder(fake(), vec!["a"])
                .backoff(Duration::from_secs(2), Duration::from_secs(1))
        )
        .await,
        ErrorKind::Config
    );
    assert!(fake().attempts().is_empty());
}

type Handle = mock::Handle<PublishRequest, Receipt>;
type MockMember = mock::Mock<PublishRequest, Receipt>;

/// Makes tower-test mocks as members; each member's handle goes down the channel.
#[derive(Clone)]
struct Mocks {
    handles: mpsc::UnboundedSender<Handle>,
    made: Arc<AtomicUsize>,
    down: Arc<std::sync::atomic::AtomicBool>,
}

impl Connect for Mocks {
    type Target = &'static str;
    type Member = MockMember;

    async fn connect(&self, _: &&'static str) -> Result<Connected<MockMember>, Error> {
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::unavailable("refused"));
        }
        self.made.fetch_add(1, Ordering::SeqCst);
        let (member, handle) = mock::pair();
        let _ = self.handles.send(handle);
        Ok(Connected::new(member))
    }
}

async fn mock_pool(
    size: usize,
    fill: usize,
) -> (Pool<Mocks>, Mocks, mpsc::UnboundedReceiver<Handle>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mocks = Mocks {
        handles: tx,
        made: Arc::default(),
        down: Arc::default(),
    };
    let pool = Pool::builder(mocks.clone(), vec!["a"])
        .size(size)
        .fill(fill)
        .backoff(Duration::from_millis(10), Duration::from_millis(100))
        .connect()
        .await
        .unwrap();
    (pool, mocks, rx)
}

async fn answer(handle: &mut Handle) {
    let (request, respond) = handle.next_request().await.unwrap();
    respond.send_response(Receipt::direct(request.message_id));
}

#[tokio::test]
async fn the_service_spreads_requests_by_the_pools_choice() {
    // A fill of 1: each request in flight goes to the least busy member.
    let (pool, mocks, mut handles) = mock_pool(3, 1).await;
    let mut service = mock::Spawn::new(PoolService::new(pool.clone()));
    let mut responses = Vec::new();
    for i in 0..6 {
        assert_ready_ok!(service.poll_ready());
        responses.push(service.call(PublishRequest::new("a", format!("{i}"))));
    }
    assert_eq!(mocks.made.load(Ordering::SeqCst), 3);
    for _ in 0..3 {
        let mut handle = handles.recv().await.unwrap();
        // Each member got exactly two of the six.
        answer(&mut handle).await;
        answer(&mut handle).await;
        assert_pending!(handle.poll_request());
    }
    for response in responses {
        response.await.unwrap();
    }
    assert_eq!(service.get_ref().get_ref().healthy(), 3);
}

#[tokio::test]
async fn the_service_reports_a_member_whose_connection_fails_and_it_is_replaced() {
    let (pool, mocks, mut handles) = mock_pool(1, FILL).await;
    let mut first = handles.recv().await.unwrap();
    let mut service = mock::Spawn::new(PoolService::new(pool.clone()));

    // A refusal is not a broken connection: the member stays.
    assert_ready_ok!(service.poll_ready());
    let refused = service.call(PublishRequest::new("a", "1"));
    let (_, respond) = first.next_request().await.unwrap();
    respond.send_error(Error::rejected("no stream"));
    refused.await.unwrap_err();
    assert_eq!(pool.healthy(), 1);

    assert_ready_ok!(service.poll_ready());
    let failing = service.call(PublishRequest::new("a", "2"));
    let (_, respond) = first.next_request().await.unwrap();
    respond.send_error(Error::unavailable("connection reset"));
    failing.await.unwrap_err();
    assert_eq!(pool.healthy(), 0);

    // Pending while no member is up, woken when the replacement is.
    assert_pending!(service.poll_ready());
    let mut replacement = handles.recv().await.unwrap();
    wait_woken(&mut service).await;
    assert_ready_ok!(service.poll_ready());
    assert_eq!(mocks.made.load(Ordering::SeqCst), 2);
    let served = service.call(PublishRequest::new("a", "3"));
    answer(&mut replacement).await;
    served.await.unwrap();
}

/// Waits for the pool to wake `service`, on a real clock with a deadline.
async fn wait_woken(service: &mut mock::Spawn<PoolService<Mocks>>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !service.is_woken() {
        assert!(Instant::now() < deadline, "never woken");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test]
async fn the_service_replaces_a_member_whose_poll_ready_fails() {
    let (pool, _mocks, mut handles) = mock_pool(1, FILL).await;
    let mut first = handles.recv().await.unwrap();
    first.send_error(Error::unavailable("gone"));
    let mut service = mock::Spawn::new(PoolService::new(pool.clone()));
    assert_pending!(service.poll_ready());
    assert_eq!(pool.healthy(), 0);
    let mut replacement = handles.recv().await.unwrap();
    wait_woken(&mut service).await;
    assert_ready_ok!(service.poll_ready());
    let response = service.call(PublishRequest::new("a", "1"));
    answer(&mut replacement).await;
    response.await.unwrap();
}

#[tokio::test]
async fn the_service_waits_for_a_busy_member_and_fails_once_the_pool_is_shut_down() {
    let (pool, _mocks, mut handles) = mock_pool(1, FILL).await;
    let mut member = handles.recv().await.unwrap();
    member.allow(0);
    let mut service = mock::Spawn::new(PoolService::new(pool.clone()));
    assert_pending!(service.poll_ready());
    member.allow(1);
    assert!(service.is_woken());
    assert_ready_ok!(service.poll_ready());

    pool.shutdown(Duration::from_secs(1)).await;
    let mut other = mock::Spawn::new(PoolService::new(pool.clone()));
    let error = assert_ready_err!(other.poll_ready());
    assert_eq!(Error::from_boxed(error).kind(), ErrorKind::Closed);
}

#[tokio::test]
async fn the_service_works_through_service_ext_and_refuses_a_call_before_ready() {
    let (pool, _mocks, mut handles) = mock_pool(2, FILL).await;
    let mut service = PoolService::new(pool);
    let early = service
        .call(PublishRequest::new("a", "0"))
        .await
        .unwrap_err();
    assert!(early.to_string().contains("PoolService"), "{early}");
    let publish = tokio::spawn(service.oneshot(PublishRequest::new("a", "1")));
    answer(&mut handles.recv().await.unwrap()).await;
    publish.await.unwrap().unwrap();
}
