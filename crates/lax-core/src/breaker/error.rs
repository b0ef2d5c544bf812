//! Errors of the circuit breaker.

use std::fmt;

/// The circuit is open: the path failed too often and the breaker refused the request without
/// calling it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitOpen {
    name: &'static str,
}

impl CircuitOpen {
    /// The open circuit of the breaker named `name`.
    pub fn new(name: &'static str) -> Self {
        CircuitOpen { name }
    }

    /// The breaker's name (e.g. `direct` or `broker`).
    pub fn name(&self) -> &'static str {
        self.name
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the {} circuit breaker is open", self.name)
    }
}

impl std::error::Error for CircuitOpen {}
