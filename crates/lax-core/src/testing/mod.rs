//! Test support: a scriptable in-memory [`Publisher`](crate::Publisher) for unit tests, and the
//! [`conformance`] suite every `Publisher` must pass.

pub mod conformance;
mod scripted;

pub use scripted::{Outcome, ScriptedPublisher};
