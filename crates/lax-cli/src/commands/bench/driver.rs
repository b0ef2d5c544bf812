//! Runs a workload: `concurrency` tasks publish `msgs` messages between them, optionally paced,
//! recording each publish's latency in an HDR histogram (and, paced, the pacer's lateness).

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use tokio::{task::JoinSet, time::Instant};

use super::pacer::{Pacer, Schedule};
use crate::failure::Failure;

/// Longest latency the histograms hold; longer ones are recorded as this.
const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// How many messages, how many in flight, how fast.
#[derive(Debug, Clone, Copy)]
pub(super) struct Plan {
    pub(super) msgs: u64,
    pub(super) concurrency: usize,
    /// Messages per second; `None` publishes as fast as the in-flight cap allows.
    pub(super) rate: Option<u64>,
}

/// What a run measured.
#[derive(Debug)]
pub(super) struct Run<E> {
    /// Publish latencies in nanoseconds.
    pub(super) latencies: Histogram<u64>,
    /// Paced runs: how late each publish started after its due time, in nanoseconds. This is
    /// part of the latencies; it is the bench's own error, not the publisher's.
    pub(super) lateness: Option<Histogram<u64>>,
    /// CPU ticks of the pacer thread (none unpaced).
    pub(super) pacer_ticks: u64,
    /// When the first message was due.
    pub(super) started: Instant,
    /// The first failure, and how many publishes failed; a failure stops the run.
    pub(super) failure: Option<(E, u64)>,
}

/// A histogram for nanosecond latencies up to a minute, at 3 significant digits.
pub(super) fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3)
        .expect("static bounds are valid: 1 <= low, high >= 2 * low, sigfig <= 5")
}

/// Publishes `plan.msgs` messages with `publish(index)` from `plan.concurrency` tasks.
///
/// With a rate, message `i` is due at `start + i / rate` and its latency counts from when it
/// was due, not from when a task got to it, so a stall shows in the latencies of the
/// messages it delayed (no coordinated omission). Without one, latency counts from the call.
pub(super) async fn drive<P, F, E>(
    plan: Plan,
    progress: &ProgressBar,
    publish: P,
) -> Result<Run<E>, Failure>
where
    P: Fn(u64) -> F + Clone + Send + 'static,
    F: Future<Output = Result<(), E>> + Send,
    E: Send + 'static,
{
    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let pacing = match plan.rate {
        Some(rate) => {
            let schedule = Schedule::new(started, rate);
            let pacer = Pacer::start(schedule, plan.msgs, plan.concurrency, Arc::clone(&stop))
                .map_err(|e| Failure::runtime(format!("cannot start the pacer thread: {e}")))?;
            Some((schedule, pacer))
        }
        None => None,
    };
    let mut tasks = JoinSet::new();
    for _ in 0..plan.concurrency {
        let (next, stop, publish, progress, pacing) = (
            Arc::clone(&next),
            Arc::clone(&stop),
            publish.clone(),
            progress.clone(),
            pacing.clone(),
        );
        tasks.spawn(async move {
            let mut latencies = latency_histogram();
            let mut lateness = pacing.as_ref().map(|_| latency_histogram());
            let mut failure: Option<(E, u64)> = None;
            loop {
                if let Some((_, pacer)) = &pacing {
                    pacer.next_due().await;
                }
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= plan.msgs {
                    break;
                }
                let due = match &pacing {
                    Some((schedule, _)) => {
                        let due = schedule.due(index);
                        if let Some(lateness) = &mut lateness {
                            lateness.saturating_record(nanos_since(due));
                        }
                        due
                    }
                    None => Instant::now(),
                };
                match publish(index).await {
                    Ok(()) => {
                        latencies.saturating_record(nanos_since(due).max(1));
                        progress.inc(1);
                    }
                    Err(error) => {
                        stop.store(true, Ordering::Relaxed);
                        match &mut failure {
                            Some((_, count)) => *count += 1,
                            None => failure = Some((error, 1)),
                        }
                    }
                }
            }
            (latencies, lateness, failure)
        });
    }
    let mut latencies = latency_histogram();
    let mut lateness = pacing.as_ref().map(|_| latency_histogram());
    let mut failure: Option<(E, u64)> = None;
    while let Some(joined) = tasks.join_next().await {
        let (task_latencies, task_lateness, task_failure) =
            joined.map_err(|e| Failure::runtime(format!("a benchmark task failed: {e}")))?;
        latencies
            .add(&task_latencies)
            .map_err(|e| Failure::runtime(format!("merging latency histograms: {e:?}")))?;
        if let (Some(all), Some(task)) = (&mut lateness, &task_lateness) {
            all.add(task)
                .map_err(|e| Failure::runtime(format!("merging lateness histograms: {e:?}")))?;
        }
        failure = match (failure, task_failure) {
            (Some((first, a)), Some((_, b))) => Some((first, a + b)),
            (first, other) => first.or(other),
        };
    }
    Ok(Run {
        latencies,
        lateness,
        pacer_ticks: pacing.map_or(0, |(_, pacer)| pacer.ticks()),
        started,
        failure,
    })
}

/// Nanoseconds from `then` to now (0 if `then` is in the future).
fn nanos_since(then: Instant) -> u64 {
    u64::try_from(then.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives `plan` with a publish that only records its index; returns the run and the
    /// indices published, sorted.
    async fn drive_recording(plan: Plan) -> (Run<String>, Vec<u64>) {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let recorder = Arc::clone(&seen);
        let run = drive(plan, &ProgressBar::hidden(), move |index| {
            let recorder = Arc::clone(&recorder);
            async move {
                recorder.lock().unwrap().push(index);
                Ok::<(), String>(())
            }
        })
        .await
        .unwrap();
        let mut seen = seen.lock().unwrap().clone();
        seen.sort_unstable();
        (run, seen)
    }

    #[tokio::test]
    async fn every_message_is_published_once_and_recorded() {
        let (run, seen) = drive_recording(Plan {
            msgs: 1000,
            concurrency: 8,
            rate: None,
        })
        .await;
        assert!(run.failure.is_none());
        assert_eq!(run.latencies.len(), 1000);
        assert_eq!(seen, (0..1000).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_failure_stops_the_run_and_is_reported() {
        let plan = Plan {
            msgs: 10_000,
            concurrency: 4,
            rate: None,
        };
        let run = drive(plan, &ProgressBar::hidden(), |index| async move {
            if index == 10 {
                Err(format!("boom at {index}"))
            } else {
                Ok(())
            }
        })
        .await
        .unwrap();
        let (first, count) = run.failure.unwrap();
        assert_eq!(first, "boom at 10");
        assert_eq!(count, 1);
        assert!(run.latencies.len() < 10_000);
    }

    #[tokio::test]
    async fn a_paced_run_publishes_every_message_once_and_records_the_lateness() {
        // Every message is due at once; this checks the bookkeeping, not the timing.
        let (run, seen) = drive_recording(Plan {
            msgs: 500,
            concurrency: 7,
            rate: Some(u64::MAX),
        })
        .await;
        assert_eq!(run.latencies.len(), 500);
        assert_eq!(run.lateness.map(|l| l.len()), Some(500));
        assert_eq!(seen, (0..500).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn a_failure_stops_a_paced_run() {
        let plan = Plan {
            msgs: 1_000_000,
            concurrency: 3,
            rate: Some(1_000_000),
        };
        let run = drive(plan, &ProgressBar::hidden(), |index| async move {
            if index == 5 { Err("boom") } else { Ok(()) }
        })
        .await
        .unwrap();
        assert_eq!(run.failure, Some(("boom", 1)));
        assert!(run.latencies.len() < 1_000_000);
    }
}
