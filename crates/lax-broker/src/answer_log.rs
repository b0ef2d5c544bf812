//! Logging of non-OK answers that stays quiet under load.
//!
//! tower-http's default logs every failed call at ERROR: a 15 s NATS outage wrote 45,539 ERROR
//! lines, and a client sending bad input filled the log with its mistakes. Instead:
//!
//! - **expected refusals** (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION,
//!   PERMISSION_DENIED, UNAUTHENTICATED, ALREADY_EXISTS, OUT_OF_RANGE, CANCELLED,
//!   UNIMPLEMENTED) say the broker is fine: each at DEBUG, and at most one INFO summary per
//!   [`SUMMARY_WINDOW`] with the count per code;
//! - **faults** (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL, …) are
//!   states: a WARN when the broker starts answering one, a summary of how many more every
//!   [`SUMMARY_WINDOW`] while it lasts, and the state ends after [`FAULT_QUIET`] without one,
//!   so the next occurrence is news again.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tonic::Code;
use tower_http::{classify::GrpcFailureClass, trace::OnFailure};
use tracing::Span;

/// At most one summary line per kind of answer in this window.
pub(crate) const SUMMARY_WINDOW: Duration = Duration::from_secs(60);
/// A fault not seen for this long is over.
pub(crate) const FAULT_QUIET: Duration = Duration::from_secs(10);

/// What a non-OK answer was: a gRPC code, or a failure of the call itself.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Answer {
    Code(i32),
    CallError,
}

impl Answer {
    fn of(class: &GrpcFailureClass) -> Self {
        match class {
            GrpcFailureClass::Code(code) => Answer::Code(code.get()),
            GrpcFailureClass::Error(_) => Answer::CallError,
        }
    }

    fn is_refusal(&self) -> bool {
        let Answer::Code(code) = self else {
            return false;
        };
        matches!(
            Code::from_i32(*code),
            Code::InvalidArgument
                | Code::NotFound
                | Code::FailedPrecondition
                | Code::PermissionDenied
                | Code::Unauthenticated
                | Code::AlreadyExists
                | Code::OutOfRange
                | Code::Cancelled
                | Code::Unimplemented
        )
    }

    fn name(&self) -> String {
        match self {
            Answer::Code(code) => format!("{:?}", Code::from_i32(*code)),
            Answer::CallError => "call error".to_owned(),
        }
    }
}

/// A line to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Line {
    /// One refusal (DEBUG).
    Refusal(String),
    /// Refusals counted over the last window (INFO).
    RefusalSummary(String),
    /// The broker started answering a fault (WARN).
    FaultBegins(String),
    /// More of an ongoing fault over the last window (WARN).
    FaultContinues(String),
}

#[derive(Debug)]
struct Fault {
    last_seen: Instant,
    summarised_at: Instant,
    unsummarised: u64,
}

#[derive(Debug)]
struct State {
    refusals: BTreeMap<String, u64>,
    refusals_summarised_at: Instant,
    faults: BTreeMap<Answer, Fault>,
}

/// The broker's [`OnFailure`] for tower-http's trace layer; clones share their counts.
#[derive(Debug, Clone)]
pub(crate) struct AnswerLog {
    state: Arc<Mutex<State>>,
}

impl AnswerLog {
    pub(crate) fn new() -> Self {
        AnswerLog {
            state: Arc::new(Mutex::new(State {
                refusals: BTreeMap::new(),
                refusals_summarised_at: Instant::now(),
                faults: BTreeMap::new(),
            })),
        }
    }

    /// The lines one non-OK answer at `now` calls for.
    pub(crate) fn note(&self, answer: &Answer, now: Instant) -> Vec<Line> {
        // Counters only: a panicking holder leaves nothing inconsistent.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let name = answer.name();
        if answer.is_refusal() {
            let mut lines = vec![Line::Refusal(name.clone())];
            *state.refusals.entry(name).or_default() += 1;
            if now.duration_since(state.refusals_summarised_at) >= SUMMARY_WINDOW {
                let counts: Vec<String> = state
                    .refusals
                    .iter()
                    .map(|(name, n)| format!("{name} {n}"))
                    .collect();
                lines.push(Line::RefusalSummary(counts.join(", ")));
                state.refusals.clear();
                state.refusals_summarised_at = now;
            }
            return lines;
        }
        match state.faults.get_mut(answer) {
            Some(fault) if now.duration_since(fault.last_seen) < FAULT_QUIET => {
                fault.last_seen = now;
                fault.unsummarised += 1;
                if now.duration_since(fault.summarised_at) >= SUMMARY_WINDOW {
                    let line = Line::FaultContinues(format!(
                        "{name} answered {} more times in the last {:?}",
                        fault.unsummarised,
                        now.duration_since(fault.summarised_at)
                    ));
                    fault.unsummarised = 0;
                    fault.summarised_at = now;
                    return vec![line];
                }
                Vec::new()
            }
            _ => {
                state.faults.insert(
                    answer.clone(),
                    Fault {
                        last_seen: now,
                        summarised_at: now,
                        unsummarised: 0,
                    },
                );
                vec![Line::FaultBegins(name)]
            }
        }
    }
}

impl OnFailure<GrpcFailureClass> for AnswerLog {
    fn on_failure(&mut self, class: GrpcFailureClass, latency: Duration, _span: &Span) {
        for line in self.note(&Answer::of(&class), Instant::now()) {
            match line {
                Line::Refusal(code) => tracing::debug!(%code, ?latency, "call refused"),
                Line::RefusalSummary(counts) => {
                    tracing::info!(%counts, window = ?SUMMARY_WINDOW, "calls refused (expected refusals; each at debug level)")
                }
                Line::FaultBegins(code) => tracing::warn!(
                    %code, %class,
                    "the broker is answering {code}; further ones are summarised until it stops for {FAULT_QUIET:?}"
                ),
                Line::FaultContinues(summary) => tracing::warn!("{summary}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(code: Code) -> Answer {
        Answer::Code(code as i32)
    }

    #[test]
    fn refusals_log_at_debug_with_one_summary_per_window() {
        let log = AnswerLog::new();
        let start = Instant::now();
        let mut summaries = Vec::new();
        for i in 0..1_000u64 {
            // 1000 refusals over 150 s: 2 summaries, one per full window.
            let now = start + Duration::from_millis(i * 150);
            let answer = if i % 2 == 0 {
                code(Code::InvalidArgument)
            } else {
                code(Code::PermissionDenied)
            };
            let lines = log.note(&answer, now);
            assert!(matches!(lines[0], Line::Refusal(_)));
            summaries.extend(lines.into_iter().skip(1));
        }
        assert_eq!(summaries.len(), 2, "{summaries:?}");
        let Line::RefusalSummary(first) = &summaries[0] else {
            panic!("{summaries:?}");
        };
        assert!(
            first.contains("InvalidArgument") && first.contains("PermissionDenied"),
            "{first}"
        );
    }

    #[test]
    fn a_fault_logs_once_per_state_change_and_summarises_while_it_lasts() {
        let log = AnswerLog::new();
        let start = Instant::now();
        let unavailable = code(Code::Unavailable);
        let mut lines = Vec::new();
        // 15 s outage at 1000 answers a second: one WARN, no summary yet (window 60 s).
        for i in 0..15_000u64 {
            lines.extend(log.note(&unavailable, start + Duration::from_millis(i)));
        }
        assert_eq!(lines, [Line::FaultBegins("Unavailable".into())]);
        // A different fault at the same time is its own state.
        assert_eq!(
            log.note(
                &code(Code::DeadlineExceeded),
                start + Duration::from_secs(15)
            ),
            [Line::FaultBegins("DeadlineExceeded".into())]
        );
        // Quiet for longer than FAULT_QUIET: the next one is news again.
        let later = start + Duration::from_secs(15) + FAULT_QUIET;
        assert_eq!(
            log.note(&unavailable, later),
            [Line::FaultBegins("Unavailable".into())]
        );
        // A long outage is summarised once a window.
        let mut summaries = 0;
        for i in 1..=130u64 {
            let lines = log.note(&unavailable, later + Duration::from_secs(i));
            summaries += lines
                .iter()
                .filter(|l| matches!(l, Line::FaultContinues(_)))
                .count();
        }
        assert_eq!(summaries, 2);
    }

    #[test]
    fn call_errors_are_faults() {
        let log = AnswerLog::new();
        let now = Instant::now();
        let class = GrpcFailureClass::Error("reset".into());
        assert_eq!(
            log.note(&Answer::of(&class), now),
            [Line::FaultBegins("call error".into())]
        );
        assert!(log.note(&Answer::of(&class), now).is_empty());
    }
}
