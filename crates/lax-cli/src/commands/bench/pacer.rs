//! A pacer precise to a few microseconds: tokio's timer wakes on 1 ms ticks, which would add up
//! to a millisecond to every paced latency, so a dedicated thread sleeps until just before each
//! message is due and spins the rest of the way, then releases one permit per due message.
//!
//! Workers take a permit, then the next message index: the k-th permit is released when message
//! k is due, so a worker never starts a message before its time, and a worker that gets to it
//! late counts that lateness (the latency counts from when the message was due).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::Duration,
};

use tokio::{sync::Semaphore, time::Instant};

use super::cpu::this_thread_ticks;

/// How long before a message is due the pacer thread stops sleeping and spins. The thread asks
/// the kernel for 1 ns timer slack, so a sleep overshoots by the scheduler's wake-up time (tens
/// of microseconds on a busy machine); spinning costs CPU, so the margin stays small.
const SPIN_MARGIN: Duration = Duration::from_micros(20);

/// When message `index` is due.
#[derive(Debug, Clone, Copy)]
pub(super) struct Schedule {
    pub(super) start: Instant,
    pub(super) interval: Duration,
}

impl Schedule {
    /// A schedule of `rate` messages per second from `start`.
    pub(super) fn new(start: Instant, rate: u64) -> Self {
        Schedule {
            start,
            interval: Duration::from_secs_f64(1.0 / rate.max(1) as f64),
        }
    }

    pub(super) fn due(&self, index: u64) -> Instant {
        self.start + self.interval.mul_f64(index as f64)
    }
}

/// What the pacer does next for a message due at `due`, seen at `now`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Step {
    /// Far from due: sleep this long, then look again.
    Sleep(Duration),
    /// Within the spin margin: look again at once.
    Spin,
    /// Due (or late): release it.
    Release,
}

pub(super) fn step(now: Instant, due: Instant) -> Step {
    match due.checked_duration_since(now) {
        None => Step::Release,
        Some(left) if left.is_zero() => Step::Release,
        Some(left) if left > SPIN_MARGIN => Step::Sleep(left - SPIN_MARGIN),
        Some(_) => Step::Spin,
    }
}

/// The permits of one paced run.
#[derive(Debug, Clone)]
pub(super) struct Pacer {
    permits: Arc<Semaphore>,
    /// The pacer thread's CPU ticks, set when it has released every message.
    ticks: Arc<AtomicU64>,
}

impl Pacer {
    /// Starts the pacer thread: it releases `msgs` permits on `schedule`, then `workers` more so
    /// that every worker wakes up, finds no message left and stops. Setting `stop` ends it early
    /// (and releases the workers too).
    pub(super) fn start(
        schedule: Schedule,
        msgs: u64,
        workers: usize,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<Self> {
        let permits = Arc::new(Semaphore::new(0));
        let released = Arc::clone(&permits);
        let ticks = Arc::new(AtomicU64::new(0));
        let spent = Arc::clone(&ticks);
        let finish = {
            let released = Arc::clone(&released);
            move || {
                spent.store(this_thread_ticks(), Ordering::Release);
                released.add_permits(workers);
            }
        };
        thread::Builder::new()
            .name("lax-bench-pacer".into())
            .spawn(move || {
                // Best effort: without it sleeps overshoot by up to 50 µs and the spin covers less.
                let _ = nix::sys::prctl::set_timerslack(1);
                for index in 0..msgs {
                    let due = schedule.due(index);
                    loop {
                        if stop.load(Ordering::Relaxed) {
                            finish();
                            return;
                        }
                        match step(Instant::now(), due) {
                            Step::Release => break,
                            Step::Sleep(time) => thread::sleep(time),
                            Step::Spin => std::hint::spin_loop(),
                        }
                    }
                    released.add_permits(1);
                }
                finish();
            })?;
        Ok(Pacer { permits, ticks })
    }

    /// CPU ticks the pacer thread spent (the bench's cost, not the publisher's); complete once
    /// every worker has been released.
    pub(super) fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Acquire)
    }

    /// Waits until the next message is due.
    pub(super) async fn next_due(&self) {
        // The semaphore is never closed, so acquiring cannot fail.
        if let Ok(permit) = self.permits.acquire().await {
            permit.forget();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_spaces_messages_by_the_rate() {
        let start = Instant::now();
        let schedule = Schedule::new(start, 5_000);
        assert_eq!(schedule.due(0), start);
        assert_eq!(schedule.due(1) - start, Duration::from_micros(200));
        assert_eq!(schedule.due(5_000) - start, Duration::from_secs(1));
    }

    #[test]
    fn the_pacer_sleeps_when_far_spins_when_near_and_releases_when_due() {
        let now = Instant::now();
        assert_eq!(
            step(now, now + Duration::from_millis(3)),
            Step::Sleep(Duration::from_millis(3) - SPIN_MARGIN)
        );
        assert_eq!(step(now, now + SPIN_MARGIN), Step::Spin);
        assert_eq!(step(now, now + Duration::from_micros(1)), Step::Spin);
        assert_eq!(step(now, now), Step::Release);
        assert_eq!(step(now + Duration::from_millis(1), now), Step::Release);
    }

    #[tokio::test]
    async fn the_pacer_releases_one_permit_per_message_then_one_per_worker() {
        let stop = Arc::new(AtomicBool::new(false));
        // A rate so high that every message is due at once: this checks counts, not timing.
        let schedule = Schedule::new(Instant::now(), u64::MAX);
        let pacer = Pacer::start(schedule, 100, 3, stop).unwrap();
        for _ in 0..103 {
            pacer.next_due().await;
        }
        assert_eq!(pacer.permits.available_permits(), 0);
    }

    #[tokio::test]
    async fn a_stopped_pacer_releases_the_workers() {
        let stop = Arc::new(AtomicBool::new(true));
        let schedule = Schedule::new(Instant::now() + Duration::from_secs(3600), 1);
        let pacer = Pacer::start(schedule, 10, 4, stop).unwrap();
        for _ in 0..4 {
            pacer.next_due().await;
        }
    }
}
