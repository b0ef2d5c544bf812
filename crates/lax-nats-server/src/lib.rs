//! Runs `nats-server` as a child process, for `lax dev` and for LAX's test kit: one copy of
//! finding the binary, starting it with its log and a watchdog, waiting until it serves, and
//! stopping it gracefully.
//!
//! ```no_run
//! use std::{net::SocketAddr, time::Duration};
//!
//! use lax_nats_server::{ProcessGroup, Readiness, ServerProcess, nats_server_binary};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = std::env::temp_dir().join("lax-nats-demo");
//! std::fs::create_dir_all(&dir)?;
//! let args: Vec<String> = ["-a", "127.0.0.1", "-p", "4333", "-m", "8333", "-js", "-sd"]
//!     .into_iter()
//!     .map(String::from)
//!     .chain([dir.display().to_string()])
//!     .collect();
//! let mut server = ServerProcess::spawn(
//!     &nats_server_binary()?,
//!     &args,
//!     &dir.join("nats-server.log"),
//!     ProcessGroup::Own,
//!     None,
//! )?;
//! let readiness = Readiness {
//!     client_addr: SocketAddr::from(([127, 0, 0, 1], 4333)),
//!     monitor_url: "http://127.0.0.1:8333".to_owned(),
//!     jetstream: true,
//! };
//! readiness.wait(&mut server, Duration::from_secs(20)).await?;
//! // ... use nats://127.0.0.1:4333 ...
//! server.stop(Duration::from_secs(10)).await?;
//! # Ok(()) }
//! ```
//!
//! # No orphans
//!
//! `unsafe` is forbidden, so a child cannot ask the kernel for `PR_SET_PDEATHSIG` (that needs
//! a `pre_exec` hook). Instead:
//!
//! * dropping a [`ServerProcess`] kills (SIGKILL) and reaps it, which covers normal ends and
//!   panics (unwinding runs `Drop`);
//! * with [`ProcessGroup::Inherit`] the server stays in the caller's process group, so Ctrl-C
//!   and a test runner's timeout reach it; with [`ProcessGroup::Own`] only the caller gets the
//!   Ctrl-C and stops the server in its own order;
//! * a [`Watchdog`]: a tiny `/bin/sh` loop whose stdin is a pipe that only this process holds
//!   open. If this process dies without running `Drop` (SIGKILL, an abort,
//!   `std::process::exit`), the kernel closes the pipe, the loop reads end-of-file and
//!   SIGKILLs the server (and removes its temporary directory, if asked). On a deliberate stop
//!   the watchdog is dismissed first, so it can never hit a recycled pid.

#![forbid(unsafe_code)]

mod discovery;
pub mod monitor;
mod process;
mod ready;

pub use discovery::{
    BinaryLocator, ENV_NATS_SERVER, ENV_TOOLS_DIR, LocateError, SETUP_COMMAND, default_tools_dir,
    nats_server_binary, workspace_root,
};
pub use monitor::{HttpError, HttpResponse};
pub use process::{ProcessGroup, ServerProcess, Stopped, Watchdog, tail as log_tail};
pub use ready::{NotReady, Readiness};
