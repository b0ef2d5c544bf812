//! Errors of the timeout layer.

use std::{fmt, time::Duration};

/// The request took longer than its timeout. A publish that timed out may still have been
/// stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elapsed {
    after: Duration,
}

impl Elapsed {
    /// Timed out after `after`.
    pub fn new(after: Duration) -> Self {
        Elapsed { after }
    }

    /// The timeout that elapsed.
    pub fn after(&self) -> Duration {
        self.after
    }
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no answer within {:?}", self.after)
    }
}

impl std::error::Error for Elapsed {}
