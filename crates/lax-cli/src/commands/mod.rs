//! One module per `lax` subcommand.

pub(crate) mod bench;
pub(crate) mod demo;
pub(crate) mod dev;
pub(crate) mod publish;
pub(crate) mod soak;
pub(crate) mod streams;
pub(crate) mod subscribe;
