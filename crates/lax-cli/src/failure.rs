//! Why a command failed, which decides the exit code: 2 for bad usage, 1 for a failure while
//! running.

use std::{fmt, process::ExitCode};

use lax_client::{ClientOptions, Error, ErrorKind};

/// Exit code for a failure while running.
const EXIT_RUNTIME: u8 = 1;
/// Exit code for bad usage (clap's own code too).
pub(crate) const EXIT_USAGE: u8 = 2;

/// A failed command; its message names the cause and, where there is one, the fix.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The command line or a configuration value is wrong.
    Usage(String),
    /// Running failed.
    Runtime(String),
}

impl Failure {
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Failure::Usage(message.into())
    }

    pub(crate) fn runtime(message: impl Into<String>) -> Self {
        Failure::Runtime(message.into())
    }

    pub(crate) fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Failure::Usage(_) => EXIT_USAGE,
            Failure::Runtime(_) => EXIT_RUNTIME,
        })
    }

    /// A client error from talking to the broker, with the fix for an unreachable one.
    pub(crate) fn from_broker(error: Error, options: &ClientOptions) -> Self {
        match error.kind() {
            ErrorKind::Unavailable | ErrorKind::CircuitOpen | ErrorKind::TimedOut => {
                Failure::Runtime(format!(
                    "no LAX broker answering at {} ({error}) — start one with `lax dev` (or \
                     `lax broker`), or point --broker-addr / LAX_BROKER_ADDR at yours",
                    options.broker_addrs.join(",")
                ))
            }
            _ => error.into(),
        }
    }

    /// A client error from connecting to NATS, with the fix for an unreachable server.
    pub(crate) fn from_nats(error: Error, options: &ClientOptions) -> Self {
        match error.kind() {
            ErrorKind::Unavailable | ErrorKind::TimedOut => Failure::Runtime(format!(
                "no nats-server at {} ({error}) — start one with `lax dev`, or point --nats-url \
                 / LAX_NATS_URLS at yours",
                options.nats_urls.join(",")
            )),
            _ => error.into(),
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Usage(message) | Failure::Runtime(message) => f.write_str(message),
        }
    }
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        match error.kind() {
            ErrorKind::InvalidInput | ErrorKind::Config => Failure::Usage(error.to_string()),
            _ => Failure::Runtime(error.to_string()),
        }
    }
}

impl From<lax_broker::BrokerError> for Failure {
    fn from(error: lax_broker::BrokerError) -> Self {
        match error {
            lax_broker::BrokerError::Config(_) => Failure::Usage(error.to_string()),
            other => Failure::Runtime(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_errors_are_usage_errors_and_outages_name_the_fix() {
        let options = ClientOptions::default();
        assert!(matches!(
            Failure::from(Error::invalid_input("bad subject")),
            Failure::Usage(_)
        ));
        let nats = Failure::from_nats(Error::unavailable("connection refused"), &options);
        assert!(
            matches!(&nats, Failure::Runtime(m) if m.contains("lax dev") && m.contains("nats://localhost:4222"))
        );
        let broker = Failure::from_broker(Error::unavailable("refused"), &options);
        assert!(
            matches!(&broker, Failure::Runtime(m) if m.contains("--broker-addr") && m.contains("localhost:50051"))
        );
        let rejected = Failure::from_broker(Error::rejected("stream too weak"), &options);
        assert!(matches!(&rejected, Failure::Runtime(m) if !m.contains("lax dev")));
    }
}
