//! A steady publish load for the fault tests, counted by message id: a few tasks publish
//! through one `LaxClient` until stopped, each message with a unique id; a failed message is
//! sent again with the same id until it is accepted, as an application that must not lose it
//! would. Every publish is timed, so a test can check that no deadline was overrun.
//!
//! Shared by lax-client's `cluster` and `faults` tests and lax-cli's `broker_faults` (which
//! drives a real `lax broker` process), through `#[path]`.

#![allow(dead_code, reason = "each test file uses a different part")]

use std::{
    collections::{BTreeMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use lax_client::{Error, ErrorKind, LaxClient, PublishOptions, Tier};
use lax_testkit::wait_until;

/// The pause after a failed publish before the same id is sent again: an open breaker
/// answers at once, and an application backs off rather than spin.
const RESEND_PAUSE: Duration = Duration::from_millis(50);

/// What to publish.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoadSpec {
    /// Tasks publishing side by side.
    pub(crate) publishers: usize,
    /// The tier of every message.
    pub(crate) tier: Tier,
    /// Publisher `p` sends to `{subject_prefix}.{p}`.
    pub(crate) subject_prefix: &'static str,
    /// The deadline of each publish, retries included; `None` leaves it to the client's
    /// options.
    pub(crate) timeout: Option<Duration>,
}

/// A publish that failed: how, and after how long.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) kind: ErrorKind,
    pub(crate) text: String,
    pub(crate) took: Duration,
}

/// What a load run saw.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// Ids the client accepted (acked, on the broker path).
    pub(crate) acked: HashSet<String>,
    pub(crate) errors: Vec<Failure>,
    /// The longest any publish took, accepted or failed.
    pub(crate) slowest: Duration,
}

impl Tally {
    /// Failures by kind, for the printed figures.
    pub(crate) fn errors_by_kind(&self) -> BTreeMap<String, usize> {
        let mut kinds = BTreeMap::new();
        for failure in &self.errors {
            *kinds.entry(format!("{:?}", failure.kind)).or_insert(0) += 1;
        }
        kinds
    }

    /// Panics unless every failure is one of `kinds` and came back within `deadline`.
    pub(crate) fn assert_failures_within(&self, kinds: &[ErrorKind], deadline: Duration) {
        for failure in &self.errors {
            assert!(
                kinds.contains(&failure.kind),
                "a failure of an unexpected kind: {}",
                failure.text
            );
            assert!(
                failure.took <= deadline,
                "a publish failed after {:?}, past {deadline:?}: {}",
                failure.took,
                failure.text
            );
        }
        assert!(
            self.slowest <= deadline,
            "a publish took {:?}, past {deadline:?}",
            self.slowest
        );
    }
}

/// The running load; see the [module docs](self).
pub(crate) struct Load {
    tally: Arc<Mutex<Tally>>,
    acks: Arc<AtomicUsize>,
    errors: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The longest any wait of this load may take.
    wait: Duration,
}

impl Load {
    /// Starts publishing; every wait on the load gives up after `wait`.
    pub(crate) fn start(client: &LaxClient, spec: LoadSpec, wait: Duration) -> Load {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let acks = Arc::new(AtomicUsize::new(0));
        let errors = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..spec.publishers)
            .map(|p| {
                let (client, tally, acks, errors, stop) = (
                    client.clone(),
                    tally.clone(),
                    acks.clone(),
                    errors.clone(),
                    stop.clone(),
                );
                tokio::spawn(async move {
                    let mut n = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let id = format!("p{p}-{n}");
                        let mut options = PublishOptions::tier(spec.tier).message_id(&id);
                        if let Some(timeout) = spec.timeout {
                            options = options.timeout(timeout);
                        }
                        let started = Instant::now();
                        let result = client
                            .publish_with(
                                format!("{}.{p}", spec.subject_prefix),
                                id.clone(),
                                options,
                            )
                            .await;
                        let took = started.elapsed();
                        let failed = {
                            let mut tally = tally.lock().unwrap();
                            tally.slowest = tally.slowest.max(took);
                            match result {
                                Ok(_) => {
                                    tally.acked.insert(id);
                                    acks.fetch_add(1, Ordering::Relaxed);
                                    n += 1;
                                    false
                                }
                                Err(e) => {
                                    tally.errors.push(Failure {
                                        kind: e.kind(),
                                        text: describe(&e),
                                        took,
                                    });
                                    errors.fetch_add(1, Ordering::Relaxed);
                                    true
                                }
                            }
                        };
                        if failed {
                            tokio::time::sleep(RESEND_PAUSE).await;
                        } else if spec.tier == Tier::Memory {
                            // A direct publish returns at once: let the connection's writer and
                            // the other tasks run.
                            tokio::task::yield_now().await;
                        }
                    }
                })
            })
            .collect();
        Load {
            tally,
            acks,
            errors,
            stop,
            tasks,
            wait,
        }
    }

    /// Publishes accepted so far.
    pub(crate) fn acks(&self) -> usize {
        self.acks.load(Ordering::Relaxed)
    }

    /// Publishes failed so far.
    pub(crate) fn errors(&self) -> usize {
        self.errors.load(Ordering::Relaxed)
    }

    /// Waits for `more` acks than now.
    pub(crate) async fn wait_for_acks(&self, more: usize) {
        let target = self.acks() + more;
        wait_until(self.wait, || async { self.acks() >= target })
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{target} acks within {:?}; got {} (failures so far: {:?})",
                    self.wait,
                    self.acks(),
                    self.tally.lock().unwrap().errors_by_kind()
                )
            });
    }

    /// Waits for `more` failures than now.
    pub(crate) async fn wait_for_errors(&self, more: usize) {
        let target = self.errors() + more;
        wait_until(self.wait, || async { self.errors() >= target })
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{target} failures within {:?}; got {}",
                    self.wait,
                    self.errors()
                )
            });
    }

    /// Stops the publishers; each must come back within the load's wait, or a publish hung.
    pub(crate) async fn stop(self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            tokio::time::timeout(self.wait, task)
                .await
                .unwrap_or_else(|_| {
                    panic!("a publish still running {:?} after the stop", self.wait)
                })
                .expect("publisher task");
        }
        Arc::try_unwrap(self.tally)
            .expect("tasks are done")
            .into_inner()
            .unwrap()
    }
}

fn describe(error: &Error) -> String {
    format!("{:?} ({:?}): {}", error.kind(), error.delivery(), error)
}
