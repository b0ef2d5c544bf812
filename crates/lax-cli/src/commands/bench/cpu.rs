//! CPU time of processes and threads from `/proc/<pid>/stat`, to report CPU per message: on a
//! shared machine it is far steadier than wall-clock throughput. Beside it, the time their
//! threads were ready to run but waited for a CPU (`/proc/<pid>/task/*/schedstat`): when that
//! is as large as the CPU time, the machine is the bottleneck and latency tails are queueing
//! for a core, not work.

use std::{fs, io, path::Path};

/// Microseconds per clock tick: `/proc` counts in USER_HZ, which the kernel ABI fixes at 100.
const MICROS_PER_TICK: f64 = 10_000.0;

/// User plus system CPU time, in clock ticks, from the text of a `/proc/.../stat` file.
pub(super) fn parse_stat_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces and parentheses; the fields after its closing
    // parenthesis start with field 3, so utime and stime (14 and 15) are the 12th and 13th.
    let (_, after_name) = stat.rsplit_once(')')?;
    let mut fields = after_name.split_whitespace().skip(11);
    let user: u64 = fields.next()?.parse().ok()?;
    let system: u64 = fields.next()?.parse().ok()?;
    Some(user + system)
}

/// The CPU ticks in the stat file at `path`.
pub(super) fn ticks_at(path: &Path) -> io::Result<u64> {
    let stat = fs::read_to_string(path)?;
    parse_stat_ticks(&stat).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unreadable {}", path.display()),
        )
    })
}

/// Nanoseconds the threads of process `pid` (`"self"` for this one) have spent runnable but
/// waiting for a CPU: the second field of each `/proc/<pid>/task/<tid>/schedstat`. Threads that
/// have exited are not counted, so measure processes whose threads live through a run.
pub(super) fn run_queue_wait_ns(pid: &str) -> Option<u64> {
    let tasks = fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut waited = 0;
    for task in tasks.flatten() {
        // A thread may exit between listing and reading: it counts as nothing.
        if let Ok(schedstat) = fs::read_to_string(task.path().join("schedstat")) {
            waited += parse_schedstat_wait(&schedstat).unwrap_or(0);
        }
    }
    Some(waited)
}

/// The run-queue wait (second field) of a `schedstat` line: `<on cpu ns> <waiting ns> <slices>`.
pub(super) fn parse_schedstat_wait(schedstat: &str) -> Option<u64> {
    schedstat.split_whitespace().nth(1)?.parse().ok()
}

/// The CPU ticks of the calling thread.
pub(super) fn this_thread_ticks() -> u64 {
    ticks_at(Path::new("/proc/thread-self/stat")).unwrap_or(0)
}

/// A process whose CPU time is measured around each run.
#[derive(Debug, Clone)]
pub(super) struct Process {
    pub(super) pid: u32,
}

impl Process {
    /// The process, if `/proc/<pid>/stat` can be read and its command name starts with one of
    /// `expected` (a stale pid file must not make the bench measure an unrelated process).
    pub(super) fn check(pid: u32, expected: &[&str]) -> Result<Self, String> {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_err(|e| format!("cannot read /proc/{pid}/stat: {e}"))?;
        let name = stat
            .split_once('(')
            .and_then(|(_, rest)| rest.rsplit_once(')'))
            .map(|(name, _)| name)
            .unwrap_or_default();
        if !expected.is_empty() && !expected.iter().any(|e| name.starts_with(e)) {
            return Err(format!(
                "process {pid} is `{name}`, not {}",
                expected.join(" or ")
            ));
        }
        Ok(Process { pid })
    }

    pub(super) fn ticks(&self) -> Option<u64> {
        ticks_at(Path::new(&format!("/proc/{}/stat", self.pid))).ok()
    }

    fn run_queue_wait_ns(&self) -> Option<u64> {
        run_queue_wait_ns(&self.pid.to_string())
    }
}

/// CPU ticks read before a run, to subtract from those read after it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Snapshot {
    client: u64,
    broker: Option<u64>,
    server: Option<u64>,
    /// Run-queue waits in nanoseconds.
    client_wait: Option<u64>,
    broker_wait: Option<u64>,
    server_wait: Option<u64>,
}

/// The processes measured: this one, and the broker and nats-server when known.
#[derive(Debug, Clone, Default)]
pub(super) struct Meter {
    pub(super) broker: Option<Process>,
    pub(super) server: Option<Process>,
}

/// CPU microseconds per message of each process, over one run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct CpuPerMsg {
    pub(super) client: f64,
    pub(super) broker: Option<f64>,
    pub(super) server: Option<f64>,
    /// How long each process's threads waited for a CPU, per message.
    pub(super) waiting: WaitPerMsg,
}

/// Microseconds per message that a process's threads were runnable but not running (the
/// client's include the bench's own threads).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub(super) struct WaitPerMsg {
    pub(super) client: Option<f64>,
    pub(super) broker: Option<f64>,
    pub(super) server: Option<f64>,
}

impl Meter {
    pub(super) fn snapshot(&self) -> Snapshot {
        Snapshot {
            client: ticks_at(Path::new("/proc/self/stat")).unwrap_or(0),
            broker: self.broker.as_ref().and_then(Process::ticks),
            server: self.server.as_ref().and_then(Process::ticks),
            client_wait: run_queue_wait_ns("self"),
            broker_wait: self.broker.as_ref().and_then(Process::run_queue_wait_ns),
            server_wait: self.server.as_ref().and_then(Process::run_queue_wait_ns),
        }
    }

    /// CPU per message since `before`. `bench_ticks` are this process's ticks spent on the
    /// bench's own threads (pacer, end-to-end subscriber), which are not the client's.
    pub(super) fn per_msg(&self, before: Snapshot, msgs: u64, bench_ticks: u64) -> CpuPerMsg {
        before.per_msg(self.snapshot(), msgs, bench_ticks)
    }
}

impl Snapshot {
    fn per_msg(self, after: Snapshot, msgs: u64, bench_ticks: u64) -> CpuPerMsg {
        let before = self;
        let per_msg = |ticks: u64| ticks as f64 * MICROS_PER_TICK / msgs.max(1) as f64;
        let delta = |before: Option<u64>, after: Option<u64>| {
            before.zip(after).map(|(b, a)| per_msg(a.saturating_sub(b)))
        };
        let waited = |before: Option<u64>, after: Option<u64>| {
            before
                .zip(after)
                .map(|(b, a)| a.saturating_sub(b) as f64 / 1e3 / msgs.max(1) as f64)
        };
        CpuPerMsg {
            client: per_msg(
                after
                    .client
                    .saturating_sub(before.client)
                    .saturating_sub(bench_ticks),
            ),
            broker: delta(before.broker, after.broker),
            server: delta(before.server, after.server),
            waiting: WaitPerMsg {
                client: waited(before.client_wait, after.client_wait),
                broker: waited(before.broker_wait, after.broker_wait),
                server: waited(before.server_wait, after.server_wait),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utime_and_stime_are_read_after_the_command_name() {
        // A real line of /proc/<pid>/stat, with a command name holding a space and a ')'.
        let stat = "4242 (nats server) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    731 269 0 0 20 0 12 0 100 1000 100 18446744073709551615";
        assert_eq!(parse_stat_ticks(stat), Some(731 + 269));
        let odd = "7 (a) b) R 1 7 7 0 -1 0 0 0 0 0 5 6 0 0 20 0 1 0 1 1 1 1";
        assert_eq!(parse_stat_ticks(odd), Some(11));
        assert_eq!(parse_stat_ticks("7 (short) R 1"), None);
    }

    #[test]
    fn this_process_is_measured_and_named() {
        assert!(ticks_at(Path::new("/proc/self/stat")).is_ok());
        let me = Process::check(std::process::id(), &[]).unwrap();
        assert!(me.ticks().is_some());
        let wrong = Process::check(std::process::id(), &["nats-server"]).unwrap_err();
        assert!(wrong.contains("not nats-server"), "{wrong}");
    }

    #[test]
    fn ticks_become_microseconds_per_message_without_the_bench_threads() {
        let before = Snapshot {
            client: 100,
            broker: Some(50),
            server: None,
            client_wait: Some(1_000_000),
            broker_wait: Some(0),
            server_wait: None,
        };
        let after = Snapshot {
            client: 180,
            broker: Some(90),
            server: Some(7),
            client_wait: Some(301_000_000),
            broker_wait: Some(50_000_000),
            server_wait: Some(9),
        };
        // 80 ticks of 10 ms, 20 of them the bench's own, over 100,000 messages.
        let cpu = before.per_msg(after, 100_000, 20);
        assert_eq!(cpu.client, 6.0);
        assert_eq!(cpu.broker, Some(4.0));
        assert_eq!(cpu.server, None, "unknown before the run");
        // 300 ms and 50 ms of waiting for a CPU over 100,000 messages.
        assert_eq!(cpu.waiting.client, Some(3.0));
        assert_eq!(cpu.waiting.broker, Some(0.5));
        assert_eq!(cpu.waiting.server, None);
    }

    #[test]
    fn run_queue_waits_are_read_from_schedstat() {
        assert_eq!(
            parse_schedstat_wait("2531460 1200345 37\n"),
            Some(1_200_345)
        );
        assert_eq!(parse_schedstat_wait("2531460"), None);
        // This process's threads: the main thread at least has a schedstat.
        assert!(run_queue_wait_ns("self").is_some());
        assert!(run_queue_wait_ns("4294967295").is_none(), "no such process");
    }
}
