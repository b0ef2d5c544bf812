//! Errors of the in-flight limit.

use std::fmt;

/// Too many publishes were in flight and the limit was set to fail fast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overloaded {
    max: usize,
}

impl Overloaded {
    /// The cap of `max` in-flight requests was reached.
    pub fn new(max: usize) -> Self {
        Overloaded { max }
    }

    /// The cap that was reached.
    pub fn max(&self) -> usize {
        self.max
    }
}

impl fmt::Display for Overloaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} publishes already in flight", self.max)
    }
}

impl std::error::Error for Overloaded {}
