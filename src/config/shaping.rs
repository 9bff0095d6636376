//! Per-endpoint choices about what a receiver gets and when it gets it
//! again: `payload` (the body's shape) and `retry` (the retry policy).
//!
//! Plain data. `deliver::shape` gives `payload` its meaning and
//! `outcome::policy` gives `retry` its; ranges are in [`super::limits`].

use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::HumanDuration;
use super::limits::*;

/// How the event is wrapped in the request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Envelope {
    /// The bytes as they are (the event, or the part a pointer selects).
    #[default]
    Raw,
    /// Standard Webhooks: `{"type", "timestamp", "data"}`.
    StandardWebhooks,
    /// CloudEvents binary mode: the data is the body, attributes go in
    /// `ce-*` headers.
    CloudeventsBinary,
    /// CloudEvents structured mode: `application/cloudevents+json`.
    CloudeventsStructured,
}

impl Envelope {
    /// Every envelope, for error messages and docs.
    pub const ALL: [Envelope; 4] = [
        Self::Raw,
        Self::StandardWebhooks,
        Self::CloudeventsBinary,
        Self::CloudeventsStructured,
    ];

    /// The configuration name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::StandardWebhooks => "standard_webhooks",
            Self::CloudeventsBinary => "cloudevents_binary",
            Self::CloudeventsStructured => "cloudevents_structured",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.name() == name)
    }
}

/// `payload = "raw" | "standard_webhooks" | "cloudevents_binary" |
/// "cloudevents_structured"`, or `payload = { pointer = "/payload",
/// envelope = "raw" }`: which part of the event is sent (a JSON pointer;
/// none = the whole event) and how it is wrapped. An endpoint without
/// `payload` gets its event's preset default (Magistrala `/payload`, CMDB
/// `/object`, the whole event otherwise).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PayloadConfig {
    /// RFC 6901 pointer into the event (`None`: the whole event).
    pub pointer: Option<String>,
    /// The wrapping.
    pub envelope: Envelope,
}

/// In the API document: an envelope name, or `{ pointer, envelope }`.
impl JsonSchema for PayloadConfig {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Payload".into()
    }

    fn json_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let envelope = generator.subschema_for::<Envelope>();
        schemars::json_schema!({
            "oneOf": [
                envelope,
                {
                    "type": "object",
                    "properties": {
                        "pointer": {
                            "type": "string",
                            "maxLength": POINTER_LEN.max,
                            "description": "RFC 6901 pointer into the event (\"\" = the whole event).",
                        },
                        "envelope": envelope,
                    },
                    "additionalProperties": false,
                },
            ],
            "description": "What the body holds: an envelope name (the whole event, wrapped), or which part of the event (a JSON pointer) and its envelope.",
        })
    }
}

impl Serialize for PayloadConfig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.pointer {
            None => s.serialize_str(self.envelope.name()),
            Some(pointer) => {
                let mut map = s.serialize_map(Some(2))?;
                map.serialize_entry("pointer", pointer)?;
                map.serialize_entry("envelope", self.envelope.name())?;
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for PayloadConfig {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(PayloadVisitor)
    }
}

struct PayloadVisitor;

fn envelope_of<E: de::Error>(name: &str) -> Result<Envelope, E> {
    Envelope::parse(name).ok_or_else(|| {
        let names: Vec<&str> = Envelope::ALL.iter().map(|e| e.name()).collect();
        E::custom(format!(
            "`{name}` is not one of {} (or a table {{ pointer, envelope }})",
            names.join(", ")
        ))
    })
}

impl<'de> Visitor<'de> for PayloadVisitor {
    type Value = PayloadConfig;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an envelope name or a table { pointer, envelope }")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<PayloadConfig, E> {
        Ok(PayloadConfig {
            pointer: None,
            envelope: envelope_of(v)?,
        })
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<PayloadConfig, A::Error> {
        let mut out = PayloadConfig::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "pointer" => out.pointer = Some(map.next_value()?),
                "envelope" => out.envelope = envelope_of(&map.next_value::<String>()?)?,
                other => {
                    return Err(de::Error::unknown_field(other, &["pointer", "envelope"]));
                }
            }
        }
        Ok(out)
    }
}

/// A named retry policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RetryPolicyName {
    /// `[delivery]`'s attempts and backoff; 408, 425, 429, 500, 502, 503,
    /// 504 and network failures retried; `Retry-After` honoured (429 and
    /// `Retry-After` answers use no attempt).
    #[default]
    Default,
    /// OpenMDM's webhook manager: 4 attempts (3 retries), 1 s → 2 s → 4 s
    /// (30 s cap, no jitter); 429, every 5xx and network failures retried,
    /// each using an attempt; every other 4xx permanent.
    Openmdm,
}

/// `backoff = { initial, factor, max, jitter }` inside `retry`: each key
/// left out keeps the policy's value.
#[derive(Debug, Clone, Copy, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BackoffOverride {
    /// Delay before the second attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial: Option<HumanDuration>,
    /// Growth per attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = BACKOFF_FACTOR.min, max = BACKOFF_FACTOR.max))]
    pub factor: Option<f64>,
    /// Longest delay (and `Retry-After` honoured).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<HumanDuration>,
    /// Relative jitter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = BACKOFF_JITTER.min, max = BACKOFF_JITTER.max))]
    pub jitter: Option<f64>,
}

/// `retry = { policy, max_attempts, backoff, retry_on, honor_retry_after }`
/// on an endpoint: a named policy and what this endpoint changes in it.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// The policy the other keys change.
    #[serde(default)]
    pub policy: RetryPolicyName,
    /// Attempts in total, the first included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = MAX_ATTEMPTS.min, max = MAX_ATTEMPTS.max))]
    pub max_attempts: Option<u32>,
    /// Backoff between attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<BackoffOverride>,
    /// What is retried: `"network"` (timeouts, refused or broken
    /// connections), a status (`"429"`) or a class (`"4xx"`, `"5xx"`).
    /// Everything else is permanent (410 always disables the endpoint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = RETRY_ON.max))]
    pub retry_on: Option<Vec<String>>,
    /// Whether `Retry-After` is followed (then 429 and `Retry-After`
    /// answers use no attempt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub honor_retry_after: Option<bool>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    struct Holder {
        payload: PayloadConfig,
    }

    #[test]
    fn payload_is_a_name_or_a_table() {
        let h: Holder = toml::from_str(r#"payload = "cloudevents_binary""#).unwrap();
        assert_eq!(h.payload.envelope, Envelope::CloudeventsBinary);
        assert_eq!(h.payload.pointer, None);
        let h: Holder = toml::from_str(r#"payload = { pointer = "/payload" }"#).unwrap();
        assert_eq!(h.payload.pointer.as_deref(), Some("/payload"));
        assert_eq!(h.payload.envelope, Envelope::Raw);
        let e = toml::from_str::<Holder>(r#"payload = "soap""#).unwrap_err();
        assert!(e.to_string().contains("`soap` is not one of raw"), "{e}");
        let e = toml::from_str::<Holder>(r#"payload = { pointr = "/x" }"#).unwrap_err();
        assert!(e.to_string().contains("pointr"), "{e}");
    }

    #[test]
    fn payload_round_trips_through_json() {
        for text in [
            r#"{"payload":"raw"}"#,
            r#"{"payload":{"pointer":"/object","envelope":"standard_webhooks"}}"#,
        ] {
            let h: Holder = serde_json::from_str(text).unwrap();
            assert_eq!(serde_json::to_string(&h).unwrap(), text);
        }
    }
}
