//! Support shared by the integration tests. Each test binary uses a different part of it.
#![allow(dead_code)]

pub(crate) mod broker;
pub(crate) mod fake;
