//! The circuit shared by every clone of one breaker.
//!
//! The closed state, where nearly every request runs, costs an atomic load to admit and, on
//! success, a relaxed load (and a store only after a failure) to settle. Transitions and
//! the open and half-open states go through a mutex: they are rare, and fail fast anyway.

use std::{
    fmt,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering},
    },
};

use metrics::{Counter, Gauge};
use tokio::time::Instant;

use super::{BreakerConfig, gauge::OverallState};
use crate::error::{Error, ErrorKind};

/// The state of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BreakerState {
    /// Requests pass; failures are counted.
    Closed,
    /// Requests fail fast.
    Open,
    /// A few trial requests pass to test the path.
    HalfOpen,
}

impl BreakerState {
    /// The value of the `circuit_breaker_state` gauge: 0 closed, 1 open, 2 half-open.
    pub const fn as_gauge(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::Open => 1.0,
            BreakerState::HalfOpen => 2.0,
        }
    }

    /// `closed`, `open` or `half-open`.
    pub const fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }

    const fn from_u8(value: u8) -> Self {
        match value {
            CLOSED => BreakerState::Closed,
            OPEN => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    const fn to_u8(self) -> u8 {
        match self {
            BreakerState::Closed => CLOSED,
            BreakerState::Open => OPEN,
            BreakerState::HalfOpen => HALF_OPEN,
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const CLOSED: u8 = 0;
const OPEN: u8 = 1;
const HALF_OPEN: u8 = 2;

/// What a request was let through as.
#[derive(Debug)]
pub(crate) enum Admission {
    /// An ordinary request through a closed breaker.
    Closed,
    /// One of the half-open trials.
    Trial(Trial),
    /// Refused: the circuit is open, or every trial slot is taken.
    Rejected,
}

/// A half-open trial slot. Dropped without a verdict (the caller gave up, or the request
/// neither proved nor disproved the path), it goes back so another request can be the trial.
#[derive(Debug)]
pub(crate) struct Trial {
    shared: Arc<Shared>,
    generation: u64,
    settled: bool,
}

impl Drop for Trial {
    fn drop(&mut self) {
        if !self.settled {
            self.shared.return_trial(self.generation);
        }
    }
}

/// What a finished request says about the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The path answered.
    Healthy,
    /// The path did not answer: counts towards opening.
    Failed,
    /// The path answered that a passing state behind it (an election) kept it from
    /// finishing: counts only once such answers have gone on for the transient grace.
    Transient,
    /// Says nothing about the path (invalid input, a closed publisher, another breaker).
    Neutral,
}

impl Verdict {
    /// What an answer says of the path's health.
    pub(crate) fn of_result<T>(result: &Result<T, crate::error::BoxError>) -> Self {
        match result {
            Ok(_) => Verdict::Healthy,
            Err(e) => Verdict::of_error(e.as_ref()),
        }
    }

    /// Failed when the error [trips the breaker](ErrorKind::trips_breaker) (transient when
    /// the server reported it [transient](Error::is_transient)); healthy when the server
    /// answered with a refusal or "full"; otherwise neutral.
    fn of_error(error: &(dyn std::error::Error + 'static)) -> Self {
        let (kind, _) = Error::classify(error);
        let transient = error
            .downcast_ref::<Error>()
            .is_some_and(Error::is_transient);
        if kind.trips_breaker() && transient {
            Verdict::Transient
        } else if kind.trips_breaker() {
            Verdict::Failed
        } else if matches!(kind, ErrorKind::Rejected | ErrorKind::Overloaded) {
            Verdict::Healthy
        } else {
            Verdict::Neutral
        }
    }
}

#[derive(Debug)]
struct Cold {
    opened_at: Instant,
    trials_left: u32,
    trials_passed: u32,
    /// Bumped on every transition, so a trial from an earlier half-open spell counts for
    /// nothing in a later one.
    generation: u64,
    /// When the current run of transient failures (no success since) began.
    transient_since: Option<Instant>,
}

pub(crate) struct Shared {
    name: &'static str,
    config: BreakerConfig,
    state: AtomicU8,
    consecutive_failures: AtomicU32,
    /// Whether `cold.transient_since` is set: a success checks this, not the lock.
    transient_run: AtomicBool,
    cold: Mutex<Cold>,
    state_gauge: Gauge,
    trips: Counter,
    /// The unlabelled series shared with the stack's other breakers, and this one's slot.
    overall: (Arc<OverallState>, usize),
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("name", &self.name)
            .field("config", &self.config)
            .field(
                "state",
                &BreakerState::from_u8(self.state.load(Ordering::Relaxed)),
            )
            .field(
                "consecutive_failures",
                &self.consecutive_failures.load(Ordering::Relaxed),
            )
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(
        name: &'static str,
        config: BreakerConfig,
        prefix: &str,
        overall: Arc<OverallState>,
    ) -> Self {
        let state_gauge =
            metrics::gauge!(format!("{prefix}_circuit_breaker_path_state"), "path" => name);
        let trips = metrics::counter!(
            format!("{prefix}_circuit_breaker_path_trips_total"),
            "path" => name
        );
        state_gauge.set(BreakerState::Closed.as_gauge());
        let slot = overall.join();
        Shared {
            name,
            config,
            state: AtomicU8::new(CLOSED),
            consecutive_failures: AtomicU32::new(0),
            transient_run: AtomicBool::new(false),
            cold: Mutex::new(Cold {
                opened_at: Instant::now(),
                trials_left: 0,
                trials_passed: 0,
                generation: 0,
                transient_since: None,
            }),
            state_gauge,
            trips,
            overall: (overall, slot),
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        self.name
    }

    fn cold(&self) -> MutexGuard<'_, Cold> {
        // A panic elsewhere while holding the lock leaves plain counters behind, still usable.
        self.cold
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Decides whether a request may pass.
    #[inline]
    pub(crate) fn admit(self: &Arc<Self>) -> Admission {
        if self.state.load(Ordering::Acquire) == CLOSED {
            return Admission::Closed;
        }
        self.admit_when_not_closed()
    }

    fn admit_when_not_closed(self: &Arc<Self>) -> Admission {
        let mut cold = self.cold();
        match self.state.load(Ordering::Acquire) {
            CLOSED => Admission::Closed,
            OPEN if cold.opened_at.elapsed() < self.config.open_timeout => Admission::Rejected,
            OPEN => {
                self.transition(&mut cold, BreakerState::HalfOpen);
                self.take_trial(&mut cold)
            }
            _ => self.take_trial(&mut cold),
        }
    }

    fn take_trial(self: &Arc<Self>, cold: &mut Cold) -> Admission {
        if cold.trials_left == 0 {
            return Admission::Rejected;
        }
        cold.trials_left -= 1;
        Admission::Trial(Trial {
            shared: Arc::clone(self),
            generation: cold.generation,
            settled: false,
        })
    }

    fn return_trial(&self, generation: u64) {
        let mut cold = self.cold();
        if cold.generation == generation {
            cold.trials_left += 1;
        }
    }

    /// Records how a request admitted as `admission` ended.
    #[inline]
    pub(crate) fn settle(&self, admission: Admission, verdict: Verdict) {
        match admission {
            Admission::Closed => self.settle_closed(verdict),
            Admission::Trial(mut trial) => {
                if verdict == Verdict::Neutral {
                    return; // dropping the trial hands its slot back
                }
                trial.settled = true;
                self.settle_trial(trial.generation, verdict);
            }
            Admission::Rejected => {}
        }
    }

    #[inline]
    fn settle_closed(&self, verdict: Verdict) {
        match verdict {
            Verdict::Healthy => {
                // Hot path: read first so a healthy path never writes the shared line.
                if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
                    self.consecutive_failures.store(0, Ordering::Relaxed);
                }
                if self.transient_run.load(Ordering::Relaxed) {
                    self.end_transient_run(&mut self.cold());
                }
            }
            Verdict::Failed => self.count_failure(),
            Verdict::Transient => {
                if self.transient_run_outlasted_grace() {
                    self.count_failure();
                }
            }
            Verdict::Neutral => {}
        }
    }

    fn count_failure(&self) {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        if failures >= self.config.failure_threshold {
            let mut cold = self.cold();
            // Another request may have opened it already.
            if self.state.load(Ordering::Acquire) == CLOSED {
                self.transition(&mut cold, BreakerState::Open);
            }
        }
    }

    /// Notes a transient failure; true once the run of them (no success since the first)
    /// has lasted longer than the grace, when they count like any failure.
    fn transient_run_outlasted_grace(&self) -> bool {
        let mut cold = self.cold();
        let since = *cold.transient_since.get_or_insert_with(Instant::now);
        self.transient_run.store(true, Ordering::Relaxed);
        since.elapsed() >= self.config.transient_grace
    }

    fn end_transient_run(&self, cold: &mut Cold) {
        cold.transient_since = None;
        self.transient_run.store(false, Ordering::Relaxed);
    }

    fn settle_trial(&self, generation: u64, verdict: Verdict) {
        let mut cold = self.cold();
        if cold.generation != generation {
            return;
        }
        // A trial tests whether the path recovered: a transient answer says it has not.
        if matches!(verdict, Verdict::Failed | Verdict::Transient) {
            self.transition(&mut cold, BreakerState::Open);
            return;
        }
        cold.trials_passed += 1;
        if cold.trials_passed >= self.config.half_open_trials {
            self.transition(&mut cold, BreakerState::Closed);
        }
    }

    /// Moves to `to`; the caller holds the lock.
    fn transition(&self, cold: &mut Cold, to: BreakerState) {
        let from = BreakerState::from_u8(self.state.load(Ordering::Acquire));
        cold.generation += 1;
        match to {
            BreakerState::Open => {
                cold.opened_at = Instant::now();
                self.trips.increment(1);
                tracing::warn!(
                    path = self.name,
                    %from,
                    open_for = ?self.config.open_timeout,
                    "circuit breaker opened"
                );
            }
            BreakerState::HalfOpen => {
                cold.trials_left = self.config.half_open_trials;
                cold.trials_passed = 0;
                tracing::info!(
                    path = self.name,
                    trials = self.config.half_open_trials,
                    "circuit breaker half-open"
                );
            }
            BreakerState::Closed => {
                self.consecutive_failures.store(0, Ordering::Relaxed);
                self.end_transient_run(cold);
                tracing::info!(path = self.name, "circuit breaker closed");
            }
        }
        self.state.store(to.to_u8(), Ordering::Release);
        self.state_gauge.set(to.as_gauge());
        self.overall.0.set(self.overall.1, to);
    }
}

/// Reads the state of a circuit breaker; cheap to clone.
#[derive(Debug, Clone)]
pub struct BreakerHandle {
    shared: Arc<Shared>,
}

impl BreakerHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        BreakerHandle { shared }
    }

    /// The current state. An open breaker reports [`BreakerState::Open`] until a request
    /// arrives after the open timeout and turns it half-open.
    pub fn state(&self) -> BreakerState {
        BreakerState::from_u8(self.shared.state.load(Ordering::Acquire))
    }

    /// Counted failures in a row while closed.
    pub fn consecutive_failures(&self) -> u32 {
        self.shared.consecutive_failures.load(Ordering::Relaxed)
    }

    /// The breaker's path name.
    pub fn path(&self) -> &'static str {
        self.shared.name
    }

    /// The breaker's configuration.
    pub fn config(&self) -> BreakerConfig {
        self.shared.config
    }
}
