//! One running `nats-server` child process, its log file and its watchdog.

use std::{
    fs::{File, OpenOptions},
    io::{self, Read as _, Seek as _, SeekFrom},
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// `$1` is the guarded pid, `$2` a directory to remove (or empty). Waits for end-of-file on
/// stdin, kills the process, waits (at most 5 s) until it is gone or a zombie, and removes
/// the directory.
const WATCHDOG_SCRIPT: &str = r#"while read -r _; do :; done
kill -KILL "$1" 2>/dev/null
i=0
while [ "$i" -lt 100 ]; do
  state=
  read -r _ _ state _ 2>/dev/null < "/proc/$1/stat" || break
  case "$state" in Z|X) break ;; esac
  sleep 0.05
  i=$((i + 1))
done
if [ -n "$2" ]; then rm -rf -- "$2"; fi"#;

/// Kills a child process should this process die without stopping it (SIGKILL, an abort,
/// `std::process::exit`), where `Drop` never runs.
///
/// A tiny `/bin/sh` loop whose stdin is a pipe only this process holds: when this process
/// dies the kernel closes the pipe, and the loop SIGKILLs the guarded pid and, if asked,
/// removes a directory. [`dismiss`](Watchdog::dismiss) it (or drop it) *before* stopping the
/// guarded process on purpose, so that it can never hit a recycled pid. It runs in a process
/// group of its own, so a Ctrl-C meant for this process does not end it first.
#[derive(Debug)]
pub struct Watchdog {
    shell: Child,
}

impl Watchdog {
    /// Guards `pid`; `remove_dir` is deleted after the kill (for temporary directories only).
    pub fn spawn(pid: u32, remove_dir: Option<&Path>) -> io::Result<Watchdog> {
        let shell = Command::new("/bin/sh")
            .arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("lax-watchdog")
            .arg(pid.to_string())
            .arg(remove_dir.map(Path::as_os_str).unwrap_or_default())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()?;
        Ok(Watchdog { shell })
    }

    /// Stops watching: the guarded process may now be stopped on purpose.
    pub fn dismiss(self) {}
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let _ = self.shell.kill();
        let _ = self.shell.wait();
    }
}

/// Where a started server's process lives, which decides who a Ctrl-C in the terminal reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProcessGroup {
    /// The caller's group: Ctrl-C (and a test runner's timeout, which signals the group)
    /// reaches the server too. For test servers.
    Inherit,
    /// A group of its own: a Ctrl-C reaches only the caller, which then stops the server in
    /// its own order (as `lax dev` stops the broker first and nats-server second).
    Own,
}

/// A running `nats-server` (or any long-running child): killed and reaped when dropped,
/// guarded by a [`Watchdog`] against the caller dying without dropping it.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    watchdog: Option<Watchdog>,
}

impl ServerProcess {
    /// Starts `binary args...` with stdout and stderr appended to `log_path`, in `group`.
    /// Should this process die without dropping the server, the watchdog kills it and
    /// removes `remove_on_orphan` (for temporary directories only).
    ///
    /// # Errors
    ///
    /// When the log cannot be opened or the binary cannot be run. A missing watchdog is
    /// logged, not an error: the server is still killed on drop.
    pub fn spawn(
        binary: &Path,
        args: &[String],
        log_path: &Path,
        group: ProcessGroup,
        remove_on_orphan: Option<&Path>,
    ) -> io::Result<Self> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log_path)?;
        let mut command = Command::new(binary);
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log));
        if group == ProcessGroup::Own {
            command.process_group(0);
        }
        let child = command.spawn()?;
        let watchdog = match Watchdog::spawn(child.id(), remove_on_orphan) {
            Ok(watchdog) => Some(watchdog),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start the nats-server watchdog; the server is still killed on drop");
                None
            }
        };
        Ok(Self { child, watchdog })
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once the server has exited (and reaps it).
    ///
    /// # Errors
    ///
    /// When the process cannot be waited on.
    pub fn try_exited(&mut self) -> io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Sends `signal` to the server. The watchdog is dismissed first: after a deliberate
    /// SIGTERM or SIGKILL the server ends by itself, and the watchdog must not outlive it.
    ///
    /// # Errors
    ///
    /// When the signal cannot be sent (a server that has already exited is not an error).
    pub fn signal(&mut self, signal: Signal) -> io::Result<()> {
        self.dismiss_watchdog();
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        match kill(Pid::from_raw(self.child.id() as i32), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(io::Error::from(e)),
        }
    }

    /// Polls for the server's exit until `timeout`; `None` if it is still running then.
    ///
    /// # Errors
    ///
    /// When the process cannot be waited on.
    pub async fn wait_exit(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        let mut backoff = Duration::from_millis(1);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(backoff.min(deadline - now)).await;
            backoff = (backoff * 2).min(Duration::from_millis(20));
        }
    }

    /// Completes when the server exits on its own (polled, at most every 100 ms).
    ///
    /// # Errors
    ///
    /// When the process cannot be waited on.
    pub async fn exited(&mut self) -> io::Result<ExitStatus> {
        // A steady 100 ms, not `wait_exit`'s fast backoff: this runs for a server's whole life.
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops the server gracefully: SIGTERM (nats-server finishes its JetStream writes),
    /// then SIGKILL if it has not exited within `timeout`. Returns how it ended.
    ///
    /// # Errors
    ///
    /// When signalling or reaping fails.
    pub async fn stop(&mut self, timeout: Duration) -> io::Result<Stopped> {
        self.signal(Signal::SIGTERM)?;
        if self.wait_exit(timeout).await?.is_some() {
            return Ok(Stopped::Gracefully);
        }
        tracing::warn!(
            pid = self.pid(),
            ?timeout,
            "nats-server ignored SIGTERM; killing it"
        );
        self.kill_now()?;
        Ok(Stopped::Killed)
    }

    /// SIGKILLs and reaps the server, synchronously (used by `Drop` too).
    ///
    /// # Errors
    ///
    /// When killing or reaping fails.
    pub fn kill_now(&mut self) -> io::Result<ExitStatus> {
        self.dismiss_watchdog();
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        match self.child.kill() {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => {}
            Err(e) => return Err(e),
        }
        self.child.wait()
    }

    fn dismiss_watchdog(&mut self) {
        if let Some(watchdog) = self.watchdog.take() {
            watchdog.dismiss();
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Err(e) = self.kill_now() {
            tracing::warn!(pid = self.child.id(), error = %e, "failed to kill nats-server");
        }
    }
}

/// How [`ServerProcess::stop`] ended the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stopped {
    /// It exited after SIGTERM within the timeout.
    Gracefully,
    /// It ignored SIGTERM and was killed.
    Killed,
}

/// The last `lines` lines of the file at `path` (reads at most its last 64 KiB), for quoting
/// a server log in an error.
pub fn tail(path: &Path, lines: usize) -> String {
    const MAX: u64 = 64 * 1024;
    let read = || -> io::Result<String> {
        let mut file = File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(MAX)))?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf)?;
        Ok(String::from_utf8_lossy(&buf).into_owned())
    };
    match read() {
        Ok(text) => {
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}
