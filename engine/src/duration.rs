//! Durations written the way people write them in DAG files: `30s`, `5m`, `1h30m`, `250ms`.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Parses a human duration such as `30s`, `5m`, `1h 30m` or `250ms`.
///
/// A bare number is refused on purpose: `retry_delay = 10` could mean seconds or milliseconds,
/// and a DAG file should never leave that to guesswork.
pub fn parse(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("empty duration; write it like `30s`, `5m` or `1h`".to_owned());
    }
    if trimmed.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "duration `{trimmed}` has no unit; write it like `{trimmed}s` or `{trimmed}m`"
        ));
    }
    humantime::parse_duration(trimmed).map_err(|error| {
        format!("invalid duration `{trimmed}` ({error}); write it like `30s`, `5m` or `1h`")
    })
}

/// Formats a duration in the same notation [`parse`] reads, so a stored DAG round-trips.
pub fn format(duration: Duration) -> String {
    humantime::format_duration(duration)
        .to_string()
        .replace(' ', "")
}

/// Serde adapter for `Duration` fields written as human durations.
pub mod serde_human {
    use super::*;

    /// Serializes as a human duration string.
    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format(*value))
    }

    /// Deserializes from a human duration string.
    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Serde adapter for `Option<Duration>` fields written as human durations.
pub mod serde_human_option {
    use super::*;

    /// Serializes as a human duration string, or nothing.
    pub fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(duration) => serializer.serialize_some(&format(*duration)),
            None => serializer.serialize_none(),
        }
    }

    /// Deserializes from an optional human duration string.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        let text = Option::<String>::deserialize(deserializer)?;
        text.map(|text| parse(&text).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_common_notations() {
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("250ms"), Ok(Duration::from_millis(250)));
    }

    #[test]
    fn refuses_bare_numbers_and_garbage() {
        assert!(parse("10").unwrap_err().contains("no unit"));
        assert!(parse("").unwrap_err().contains("empty"));
        assert!(
            parse("ten seconds")
                .unwrap_err()
                .contains("invalid duration")
        );
    }

    #[test]
    fn format_round_trips() {
        for text in ["30s", "5m", "1h30m", "250ms", "2days"] {
            let duration = parse(text).unwrap();
            assert_eq!(parse(&format(duration)), Ok(duration));
        }
    }
}
