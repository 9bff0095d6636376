//! Configuration: the TOML file of SPEC §3, loaded into typed structs.
//!
//! Owns parsing, `${VAR}` expansion, defaults and validation. Every error names
//! the offending key (`delivery.backoff.jitter`, `endpoints[2].url`). It builds
//! no runtime objects: the stages turn these plain structs into their own.

mod api;
mod chunked;
mod delivery;
mod duration;
mod egress;
mod endpoint;
mod enums;
pub mod limits;
mod print;
mod resolve;
mod shaping;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use api::{
    API_MAX_BODY_BYTES, API_MAX_CONNECTIONS, API_TIMEOUTS, ApiConfig, Role, TokenConfig,
};
pub use delivery::{AutoDisableConfig, BackoffConfig, DeliveryConfig, DisabledBacklogConfig};
pub use duration::{HumanDuration, parse_duration};
pub use egress::{
    AuthConfig, BasicAuth, BearerAuth, ClientAuth, NO_PROXY, OAuth2Config, TlsConfig, masked_proxy,
    proxy_url_problem,
};
pub use endpoint::{
    AdaptiveConcurrencyConfig, BatchConfig, DeliveryOrder, DisableCause, DisabledBy,
    EndpointConfig, HttpVersion, RateLimitConfig,
};
pub use enums::{Preset, Scope, SignatureScheme};
pub use print::{to_toml, to_toml_lean};
pub use resolve::{SECRET_MASK, masked};
use resolve::{expand_env, resolve_endpoint_secret_files, resolve_files};
pub use shaping::{BackoffOverride, Envelope, PayloadConfig, RetryConfig, RetryPolicyName};

/// The value `kafka.brokers` takes to run librdkafka's in-process mock cluster.
pub const EMBEDDED_BROKERS: &str = "embedded";

/// A configuration problem, naming the key it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the offending key, e.g. `endpoints[0].url`.
    pub key: String,
    /// What is wrong with it.
    pub message: String,
}

impl ConfigError {
    /// A new error about `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "configuration error: {}", self.message)
        } else {
            write!(f, "configuration error: `{}`: {}", self.key, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// The whole configuration file.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[kafka]`: where events come from.
    pub kafka: KafkaConfig,
    /// `[topics]`: the topics hookstream owns.
    pub topics: TopicsConfig,
    /// `[delivery]`: defaults for every endpoint.
    pub delivery: DeliveryConfig,
    /// `[api]`: the management API.
    pub api: ApiConfig,
    /// `[metrics]`: the Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// `[[sources]]`: how events on each input topic are read.
    pub sources: Vec<SourceConfig>,
    /// `[[endpoints]]`: static endpoints. (Not written when empty, so that
    /// [`to_toml`] can write them one table at a time after the rest.)
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub endpoints: Vec<EndpointConfig>,
}

/// `[kafka]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, or `"embedded"`.
    pub brokers: String,
    /// Consumer group of the input (and retry) consumers.
    pub group_id: String,
    /// Input topics.
    pub topics: Vec<String>,
    /// Passed to librdkafka verbatim, for every client.
    pub properties: BTreeMap<String, PropertyValue>,
    /// Passed to the consumers (input, retry tiers, endpoint store, `dlq`
    /// readers) on top of `properties`.
    pub consumer: BTreeMap<String, PropertyValue>,
    /// Passed to the producers (retry, DLQ, endpoints, replays) on top of
    /// `properties`.
    pub producer: BTreeMap<String, PropertyValue>,
    /// How often settled offsets are committed.
    pub commit_interval: HumanDuration,
    /// Partitions of the input topics created on the embedded broker.
    pub embedded_partitions: i32,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            group_id: "hookstream".into(),
            topics: vec!["device-events".into()],
            properties: BTreeMap::new(),
            consumer: BTreeMap::new(),
            producer: BTreeMap::new(),
            commit_interval: HumanDuration::from_secs(1),
            embedded_partitions: 6,
        }
    }
}

impl KafkaConfig {
    /// True when `brokers = "embedded"`.
    pub fn is_embedded(&self) -> bool {
        self.brokers == EMBEDDED_BROKERS
    }
}

/// A librdkafka property value: TOML strings, integers and booleans are all
/// passed on as their text.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum PropertyValue {
    /// `"10000"`
    Text(String),
    /// `10000`
    Integer(i64),
    /// `true`
    Bool(bool),
}

impl fmt::Display for PropertyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text(s) => f.write_str(s),
            Self::Integer(i) => write!(f, "{i}"),
            Self::Bool(b) => write!(f, "{b}"),
        }
    }
}

/// `[topics]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    /// Prefix of the owned topics.
    pub prefix: String,
    /// Delay tiers, shortest first.
    pub retry_tiers: Vec<HumanDuration>,
    /// Create owned topics at start-up when missing.
    pub create: bool,
    /// Partitions of created owned topics.
    pub partitions: i32,
    /// Replication factor of created owned topics (-1 = broker default).
    pub replication_factor: i32,
    /// Write every delivery attempt to `<prefix>.attempts` (the durable
    /// activity log the API's `attempts` route reads).
    pub attempts_log: bool,
    /// Retention (`retention.ms`) of `<prefix>.attempts` when created.
    pub attempts_retention: HumanDuration,
    /// Compacted `<prefix>.devices` (device → group, tenant): learned from
    /// the events and followed by every instance.
    pub devices_log: bool,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        Self {
            prefix: "hookstream".into(),
            retry_tiers: ["1s", "5s", "30s", "2m", "10m", "1h"]
                .iter()
                .filter_map(|t| parse_duration(t).ok().map(HumanDuration))
                .collect(),
            create: true,
            partitions: 6,
            replication_factor: -1,
            attempts_log: true,
            attempts_retention: HumanDuration(std::time::Duration::from_secs(7 * 24 * 3600)),
            devices_log: true,
        }
    }
}

impl TopicsConfig {
    /// `<prefix>.dlq`
    pub fn dlq_topic(&self) -> String {
        format!("{}.dlq", self.prefix)
    }

    /// `<prefix>.retry.<tier>`
    pub fn retry_topic(&self, tier: HumanDuration) -> String {
        format!("{}.retry.{}", self.prefix, tier)
    }

    /// `<prefix>.ordered`: the lane of `ordering = "per_device"` endpoints.
    pub fn ordered_topic(&self) -> String {
        format!("{}.ordered", self.prefix)
    }

    /// `<prefix>.dlq.replays`: the compacted ledger of replayed letters.
    pub fn replay_ledger_topic(&self) -> String {
        format!("{}.replays", self.dlq_topic())
    }

    /// `<prefix>.endpoints`
    pub fn endpoints_topic(&self) -> String {
        format!("{}.endpoints", self.prefix)
    }

    /// `<prefix>.attempts`: the durable activity log.
    pub fn attempts_topic(&self) -> String {
        format!("{}.attempts", self.prefix)
    }

    /// `<prefix>.devices`: the compacted device directory.
    pub fn devices_topic(&self) -> String {
        format!("{}.devices", self.prefix)
    }
}

/// `[metrics]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Listen address of `/metrics`; empty disables it.
    pub listen: String,
    /// Label per-endpoint series with the endpoint id.
    pub per_endpoint_labels: bool,
    /// Endpoints with series of their own; the others share
    /// `endpoint="_other"`.
    pub max_endpoint_series: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9464".into(),
            per_endpoint_labels: true,
            max_endpoint_series: 1000,
        }
    }
}

/// `[[sources]]`: extraction rules for one input topic.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// The input topic.
    pub topic: String,
    /// Field layout preset.
    #[serde(default)]
    pub preset: Preset,
    /// JSON pointer or `header:<name>` of the event id.
    #[serde(default)]
    pub id: Option<String>,
    /// ... of the event type.
    #[serde(default, rename = "type")]
    pub event_type: Option<String>,
    /// ... of the device id.
    #[serde(default)]
    pub device: Option<String>,
    /// ... of the device group.
    #[serde(default)]
    pub group: Option<String>,
    /// ... of the tenant.
    #[serde(default)]
    pub tenant: Option<String>,
    /// ... of the event time.
    #[serde(default)]
    pub time: Option<String>,
}

impl SourceConfig {
    /// Rules for `topic` read with `preset` and no overrides.
    pub fn for_preset(topic: impl Into<String>, preset: Preset) -> Self {
        Self {
            topic: topic.into(),
            preset,
            id: None,
            event_type: None,
            device: None,
            group: None,
            tenant: None,
            time: None,
        }
    }
}

pub(super) fn default_true() -> bool {
    true
}

impl Config {
    /// Reads, expands and validates a configuration file, then reads the
    /// secrets its `*_file` keys name.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new("", format!("cannot read {}: {e}", path.display())))?;
        Self::from_toml(&text)
    }

    /// Parses configuration text, expanding `${VAR}` from the environment.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::from_toml_with_env(text, &|name| std::env::var(name).ok())
    }

    /// Parses configuration text with a given environment lookup; `*_file`
    /// secrets are read from the file system.
    pub fn from_toml_with_env(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        Self::from_toml_resolving(text, env, &|file: &str| std::fs::read_to_string(file))
    }

    /// Parses configuration text with a given environment lookup and file
    /// reader (for `*_file` secrets).
    pub fn from_toml_resolving(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
        read: &dyn Fn(&str) -> std::io::Result<String>,
    ) -> Result<Self, ConfigError> {
        let split = chunked::split(text, chunked::ENDPOINTS_PER_SLICE);
        let mut config = match split.and_then(|s| Self::from_split(&s, env, read)) {
            Some(config) => config?,
            None => Self::from_whole(text, env, read)?,
        };
        config.validate()?;
        resolve_files(&mut config, read)?;
        Ok(config)
    }

    /// Parses the whole text at once.
    fn from_whole(
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
        read: &dyn Fn(&str) -> std::io::Result<String>,
    ) -> Result<Self, ConfigError> {
        let value: toml::Value = toml::from_str(text).map_err(|e| {
            let at = e.span().map_or(String::new(), |span| {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                format!(" (line {line})")
            });
            ConfigError::new("", format!("invalid TOML{at}: {}", e.message()))
        })?;
        resolved(value, env, read)
    }

    /// Parses the head and the endpoint slices of a split text one at a
    /// time; `None` when a part is not valid TOML on its own (the whole
    /// text then gives the error, with its line).
    fn from_split(
        split: &chunked::Split,
        env: &dyn Fn(&str) -> Option<String>,
        read: &dyn Fn(&str) -> std::io::Result<String>,
    ) -> Option<Result<Self, ConfigError>> {
        let head: toml::Value = toml::from_str(&split.head).ok()?;
        if head.get("endpoints").is_some() {
            return None;
        }
        let mut endpoints = Vec::new();
        for slice in &split.slices {
            let value: toml::Value = toml::from_str(&slice.text).ok()?;
            match resolved::<EndpointsOnly>(value, env, read) {
                Ok(only) if only.endpoints.len() == slice.len => endpoints.extend(only.endpoints),
                Ok(_) => return None,
                Err(e) => {
                    let key = chunked::shift_endpoint_index(&e.key, slice.first);
                    return Some(Err(ConfigError { key, ..e }));
                }
            }
        }
        let config = resolved::<Config>(head, env, read).map(|config| Config {
            endpoints,
            ..config
        });
        Some(config)
    }

    /// The extraction rules of `topic` (the `mender` preset when none is set).
    pub fn source_for(&self, topic: &str) -> SourceConfig {
        self.sources
            .iter()
            .find(|s| s.topic == topic)
            .cloned()
            .unwrap_or_else(|| SourceConfig::for_preset(topic, Preset::default()))
    }
}

/// A slice of a configuration's endpoints, alone.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EndpointsOnly {
    endpoints: Vec<EndpointConfig>,
}

/// Parsed TOML as a `T` (the whole file, its head, or a slice of its
/// endpoints): `${VAR}`s expanded, endpoint `*_file` secrets read, an error
/// naming the key that does not fit.
fn resolved<T: serde::de::DeserializeOwned>(
    mut value: toml::Value,
    env: &dyn Fn(&str) -> Option<String>,
    read: &dyn Fn(&str) -> std::io::Result<String>,
) -> Result<T, ConfigError> {
    expand_env(&mut value, &mut String::new(), env)?;
    resolve_endpoint_secret_files(&mut value, read)?;
    serde_path_to_error::deserialize(value).map_err(|e| {
        let key = e.path().to_string();
        let message = e.into_inner().message().to_string();
        ConfigError::new(if key == "." { String::new() } else { key }, message)
    })
}

/// A validation failure on one endpoint field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Field name (`url`, `events[1]`, `headers.X-Foo`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "`{}`: {}", self.field, self.message)
    }
}

#[cfg(test)]
mod tests;
