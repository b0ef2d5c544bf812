//! The one error type of the testkit.

use std::{error::Error as StdError, fmt, io, path::PathBuf, time::Duration};

use lax_nats_server::{HttpError, LocateError};

/// Everything that can go wrong while finding, starting, probing or stopping a `nats-server`.
///
/// Every variant's message is written to be read in a failed test's output: it says what was
/// tried and, for start-up failures, ends with the last lines of the server's log.
#[derive(Debug)]
#[non_exhaustive]
pub enum TestkitError {
    /// No `nats-server` binary could be chosen (none found, or `LAX_NATS_SERVER` is wrong).
    Locate(LocateError),
    /// An operating-system call failed.
    Io {
        /// What the testkit was doing.
        context: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A server (or cluster) did not become ready, or exited while starting.
    Startup {
        /// What happened.
        message: String,
        /// The server log file(s) to look at.
        log_paths: Vec<PathBuf>,
        /// The last lines of the log(s).
        log_tail: String,
    },
    /// A condition was still false when its deadline passed.
    Timeout {
        /// What was being waited for.
        what: String,
        /// How long was waited.
        after: Duration,
        /// The last thing observed before giving up, if any.
        last_observation: Option<String>,
    },
    /// A monitoring-endpoint request failed or answered something unexpected.
    Http {
        /// The URL requested.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// A monitoring endpoint returned a body that is not the JSON expected.
    Json {
        /// The URL requested.
        url: String,
        /// The parse error.
        source: serde_json::Error,
    },
    /// A NATS or JetStream operation failed (connect, stream create, publish).
    Nats {
        /// What the testkit was doing.
        context: String,
        /// The client's error.
        source: Box<dyn StdError + Send + Sync + 'static>,
    },
    /// The operation needs a running server but this one is stopped.
    NotRunning {
        /// The server's client URL.
        url: String,
    },
    /// Test certificates could not be generated.
    Certificate {
        /// Which certificate or key was being made.
        context: String,
        /// The generator's error.
        source: Box<dyn StdError + Send + Sync + 'static>,
    },
}

impl TestkitError {
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn nats(
        context: impl Into<String>,
        source: impl Into<Box<dyn StdError + Send + Sync + 'static>>,
    ) -> Self {
        Self::Nats {
            context: context.into(),
            source: source.into(),
        }
    }

    /// True when the failure looks like a listening port that was taken between choosing it
    /// and the server binding it (the start functions retry those with fresh ports).
    pub fn is_port_collision(&self) -> bool {
        match self {
            Self::Startup {
                message, log_tail, ..
            } => {
                let hit = |s: &str| {
                    s.contains("address already in use") || s.contains("Address already in use")
                };
                hit(message) || hit(log_tail)
            }
            _ => false,
        }
    }
}

impl From<LocateError> for TestkitError {
    fn from(e: LocateError) -> Self {
        Self::Locate(e)
    }
}

impl From<HttpError> for TestkitError {
    fn from(e: HttpError) -> Self {
        Self::Http {
            url: e.url,
            message: e.message,
        }
    }
}

impl fmt::Display for TestkitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Locate(e) => write!(f, "{e}"),
            Self::Io { context, source } => write!(f, "{context}: {source}"),
            Self::Startup {
                message,
                log_paths,
                log_tail,
            } => {
                write!(f, "{message}")?;
                if !log_paths.is_empty() {
                    let paths: Vec<String> =
                        log_paths.iter().map(|p| p.display().to_string()).collect();
                    write!(f, "\n--- server log ({}) ---", paths.join(", "))?;
                }
                if !log_tail.is_empty() {
                    write!(f, "\n{}", log_tail.trim_end())?;
                }
                Ok(())
            }
            Self::Timeout {
                what,
                after,
                last_observation,
            } => {
                write!(f, "timed out after {after:?} waiting for {what}")?;
                if let Some(last) = last_observation {
                    write!(f, " (last observed: {last})")?;
                }
                Ok(())
            }
            Self::Http { url, message } => write!(f, "GET {url}: {message}"),
            Self::Json { url, source } => write!(f, "GET {url}: invalid JSON: {source}"),
            Self::Nats { context, source } => write!(f, "{context}: {source}"),
            Self::NotRunning { url } => write!(f, "the nats-server at {url} is not running"),
            Self::Certificate { context, source } => write!(f, "{context}: {source}"),
        }
    }
}

impl StdError for TestkitError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        match self {
            Self::Locate(e) => Some(e),
            Self::Io { source, .. } => Some(source),
            Self::Json { source, .. } => Some(source),
            Self::Nats { source, .. } | Self::Certificate { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}
