//! Human durations in configuration: `"250ms"`, `"30s"`, `"1m30s"`, `"1h"`,
//! `"1d"`: what `humantime` reads, in whole milliseconds.
//!
//! Owns parsing and printing of duration strings only; it knows nothing about
//! which keys use them (their ranges are in `limits`).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written in configuration as numbers followed by units
/// (`"1m30s"`, see [`parse_duration`]); `"0"` is zero. Printed in the
/// largest whole unit up to hours (`"90s"`, `"2h"`), as topic names use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    /// Builds a duration from milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }

    /// Builds a duration from seconds.
    pub const fn from_secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }

    /// The wrapped [`Duration`].
    pub const fn get(self) -> Duration {
        self.0
    }
}

/// Parses a duration: one or more `<number><unit>` (`ms`, `s`, `m`, `h`,
/// `d`, and humantime's other units), or `"0"`. The error says what was
/// expected.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if !text.is_empty() && text.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(format!(
            "`{text}` has no unit (use ms, s, m, h or d, e.g. \"30s\" or \"1m30s\")"
        ));
    }
    let duration = humantime::parse_duration(text).map_err(|e| {
        format!("`{text}` is not a duration ({e}; e.g. \"250ms\", \"30s\", \"1m30s\", \"1d\")")
    })?;
    if duration.subsec_nanos() % 1_000_000 != 0 {
        return Err(format!("`{text}` is finer than a millisecond"));
    }
    Ok(duration)
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            write!(f, "0ms")
        } else if ms.is_multiple_of(3_600_000) {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms.is_multiple_of(60_000) {
            write!(f, "{}m", ms / 60_000)
        } else if ms.is_multiple_of(1_000) {
            write!(f, "{}s", ms / 1_000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_duration(&text)
            .map(HumanDuration)
            .map_err(serde::de::Error::custom)
    }
}

/// In the API document: a string with a unit; each field's range is in
/// its description.
impl schemars::JsonSchema for HumanDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration with units, alone or combined: \"250ms\", \"30s\", \"1m30s\", \"1d\".",
        })
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_unit_and_compounds() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1s500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("0ms"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_missing_or_unknown_units() {
        assert!(parse_duration("30").unwrap_err().contains("no unit"));
        assert!(parse_duration("1.5").unwrap_err().contains("no unit"));
        assert!(parse_duration("3x").unwrap_err().contains("not a duration"));
        assert!(parse_duration("s").unwrap_err().contains("not a duration"));
        assert!(parse_duration("").unwrap_err().contains("not a duration"));
        assert!(parse_duration("10us").unwrap_err().contains("millisecond"));
        assert!(parse_duration("99999999999999999999d").is_err());
    }

    #[test]
    fn prints_in_the_largest_whole_unit() {
        assert_eq!(HumanDuration::from_secs(120).to_string(), "2m");
        assert_eq!(HumanDuration::from_millis(1500).to_string(), "1500ms");
        assert_eq!(HumanDuration::from_secs(7200).to_string(), "2h");
        assert_eq!(HumanDuration::from_secs(90).to_string(), "90s");
        assert_eq!(HumanDuration::from_secs(86_400).to_string(), "24h");
    }
}
