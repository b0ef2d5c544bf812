//! Shared pieces of configuration parsing.

/// `serde` helpers for durations in configuration files and environment variables.
///
/// Reads seconds as a number (`5`, `0.25`, as the Python SDK took them) or text with units
/// (`"500ms"`, `"5s"`, `"1m 30s"`); writes seconds. Use with
/// `#[serde(with = "lax_core::config::duration")]`.
///
/// ```
/// # use std::time::Duration;
/// #[derive(serde::Deserialize)]
/// struct Settings {
///     #[serde(with = "lax_core::config::duration")]
///     timeout: Duration,
/// }
/// let a: Settings = serde_json::from_str(r#"{"timeout": 2.5}"#).unwrap();
/// let b: Settings = serde_json::from_str(r#"{"timeout": "2s 500ms"}"#).unwrap();
/// assert_eq!(a.timeout, b.timeout);
/// ```
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    /// Writes `d` as seconds.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    /// Reads seconds or text with units.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Secs(f64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Secs(secs) => Duration::try_from_secs_f64(secs).map_err(D::Error::custom),
            Raw::Text(text) => parse(&text).map_err(D::Error::custom),
        }
    }

    /// Parses seconds (`"1.5"`) or text with units (`"250ms"`, `"2m"`, `"1m 30s"`).
    pub fn parse(text: &str) -> Result<Duration, String> {
        let text = text.trim();
        if let Ok(secs) = text.parse::<f64>() {
            return Duration::try_from_secs_f64(secs).map_err(|e| format!("{text:?}: {e}"));
        }
        humantime::parse_duration(text).map_err(|e| {
            format!("{text:?} is not a duration ({e}); try \"500ms\", \"5s\" or \"2m\"")
        })
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn parses_seconds_and_units() {
            assert_eq!(parse("1.5").unwrap(), Duration::from_millis(1500));
            assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
            assert_eq!(parse("2m").unwrap(), Duration::from_secs(120));
            assert_eq!(parse("1m 30s").unwrap(), Duration::from_secs(90));
            assert!(parse("5 parsecs").is_err());
            assert!(parse("-1").is_err());
            assert!(parse("soon").unwrap_err().contains("not a duration"));
        }
    }
}
