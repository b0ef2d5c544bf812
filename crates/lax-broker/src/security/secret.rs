//! A string that never shows up in `Debug` output or logs.

use std::{convert::Infallible, fmt, str::FromStr};

/// A secret (a token or a password) from the command line, the environment or a file.
///
/// `Debug` prints `<redacted>`, so a logged [`BrokerConfig`](crate::BrokerConfig) does not
/// leak it; [`Self::expose`] hands out the value where it is needed.
///
/// ```
/// use lax_broker::SecretString;
///
/// let token: SecretString = "s3cret".parse().unwrap();
/// assert_eq!(token.expose(), "s3cret");
/// assert_eq!(format!("{token:?}"), "SecretString(<redacted>)");
/// ```
#[derive(Clone, Default)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps `secret`.
    pub fn new(secret: impl Into<String>) -> Self {
        SecretString(secret.into())
    }

    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretString(<redacted>)")
    }
}

impl From<String> for SecretString {
    fn from(secret: String) -> Self {
        SecretString(secret)
    }
}

impl From<&str> for SecretString {
    fn from(secret: &str) -> Self {
        SecretString(secret.to_owned())
    }
}

impl FromStr for SecretString {
    type Err = Infallible;

    fn from_str(secret: &str) -> Result<Self, Self::Err> {
        Ok(secret.into())
    }
}

/// Read from a plain string (a config file's value); never serialized back.
impl<'de> serde::Deserialize<'de> for SecretString {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(SecretString)
    }
}
