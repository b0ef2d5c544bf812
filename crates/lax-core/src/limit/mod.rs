//! (filled by the layer work)
pub mod error;
