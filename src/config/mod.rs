//! Configuration: the TOML file of SPEC §3, loaded into typed structs.
//!
//! Owns parsing, `${VAR}` expansion, defaults and validation. Every error names
//! the offending key (`delivery.backoff.jitter`, `endpoints[2].url`). It builds
//! no runtime objects: the stages turn these plain structs into their own.

mod duration;
mod enums;
pub mod limits;
mod resolve;
mod shaping;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

pub use duration::{HumanDuration, parse_duration};
pub use enums::{Preset, Scope, SignatureScheme};
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
    /// `[[endpoints]]`: static endpoints.
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

/// `backoff = { initial, factor, max, jitter }`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackoffConfig {
    /// Delay before the second attempt.
    pub initial: HumanDuration,
    /// Growth per attempt.
    pub factor: f64,
    /// Upper bound of any delay (and of `Retry-After`).
    pub max: HumanDuration,
    /// Relative jitter, 0.0..=1.0.
    pub jitter: f64,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: HumanDuration::from_secs(1),
            factor: 2.0,
            max: HumanDuration::from_secs(3600),
            jitter: 0.2,
        }
    }
}

/// `[delivery]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Default per-request timeout.
    pub timeout: HumanDuration,
    /// Attempts in total, the first included.
    pub max_attempts: u32,
    /// Backoff between attempts.
    pub backoff: BackoffConfig,
    /// Events held in memory across all partitions.
    pub max_in_flight: usize,
    /// Requests in flight to one destination (`scheme://host:port`) across
    /// every endpoint that points there: connections, for HTTP/1.1.
    pub max_connections_per_host: usize,
    /// Larger events are dead-lettered as `invalid_event`.
    pub max_payload_bytes: usize,
    /// Turns the SSRF guard off (development, tests).
    pub allow_private_destinations: bool,
    /// `User-Agent` of every request.
    pub user_agent: String,
    /// How long shutdown and partition revocation wait for in-flight work.
    pub drain_timeout: HumanDuration,
    /// Longest time from the first attempt during which retries are made;
    /// `429`/`Retry-After` do not use attempts but do use this window.
    pub retry_window: HumanDuration,
    /// Give requests for records without a W3C `traceparent` a new one
    /// (derived from the event id); records with one always have it
    /// forwarded.
    pub start_traces: bool,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            timeout: HumanDuration::from_secs(30),
            max_attempts: 8,
            backoff: BackoffConfig::default(),
            max_in_flight: 20_000,
            max_connections_per_host: 256,
            max_payload_bytes: 1_048_576,
            allow_private_destinations: false,
            user_agent: concat!("hookstream/", env!("CARGO_PKG_VERSION")).into(),
            drain_timeout: HumanDuration::from_secs(10),
            retry_window: HumanDuration::from_secs(24 * 3600),
            start_traces: false,
        }
    }
}

/// `[api]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Listen address; empty disables the API.
    pub listen: String,
    /// Bearer tokens.
    pub tokens: Vec<TokenConfig>,
    /// How long the previous secret keeps signing beside the new one after
    /// `POST /v1/endpoints/{id}/rotate-secret`.
    pub rotation_grace: HumanDuration,
    /// Most API connections held at once ([`API_MAX_CONNECTIONS`]). A
    /// connection beyond it closes the one that has waited longest without
    /// a request in progress, or waits up to `header_timeout` for a request
    /// to finish and is closed if none does.
    pub max_connections: usize,
    /// Longest time a connection may take to send a complete request head
    /// (from its accept, or from the first byte after an idle period)
    /// ([`API_TIMEOUTS`]).
    pub header_timeout: HumanDuration,
    /// Longest time a keep-alive connection may stay idle between requests
    /// ([`API_TIMEOUTS`]).
    pub idle_timeout: HumanDuration,
    /// Longest time a request body may take to arrive once its head has
    /// ([`API_TIMEOUTS`]); slower bodies are answered 408.
    pub body_timeout: HumanDuration,
    /// Largest request body accepted ([`API_MAX_BODY_BYTES`]); larger ones
    /// are answered 413.
    pub max_body_bytes: usize,
}

/// The range of `api.max_connections`.
pub const API_MAX_CONNECTIONS: std::ops::RangeInclusive<usize> = 1..=1_000_000;
/// The range of `api.header_timeout`, `api.idle_timeout` and
/// `api.body_timeout`: 100 ms to 1 h.
pub const API_TIMEOUTS: std::ops::RangeInclusive<HumanDuration> =
    HumanDuration::from_millis(100)..=HumanDuration::from_secs(3600);
/// The range of `api.max_body_bytes`: 1 KiB to 256 MiB.
pub const API_MAX_BODY_BYTES: std::ops::RangeInclusive<usize> = 1024..=256 * 1024 * 1024;

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            tokens: vec![
                TokenConfig {
                    token_file: None,
                    token_env: Some("HOOKSTREAM_ADMIN_TOKEN".into()),
                    token: None,
                    role: Role::Admin,
                },
                TokenConfig {
                    token_file: None,
                    token_env: Some("HOOKSTREAM_VIEWER_TOKEN".into()),
                    token: None,
                    role: Role::Viewer,
                },
            ],
            rotation_grace: HumanDuration::from_secs(24 * 3600),
            max_connections: 1024,
            header_timeout: HumanDuration::from_secs(10),
            idle_timeout: HumanDuration::from_secs(60),
            body_timeout: HumanDuration::from_secs(30),
            max_body_bytes: 1024 * 1024,
        }
    }
}

impl ApiConfig {
    /// Checks the grace period and the connection limits, naming the key.
    fn validate_limits(&self) -> Result<(), ConfigError> {
        if self.rotation_grace.get().is_zero() {
            return Err(ConfigError::new("api.rotation_grace", "must be above 0"));
        }
        if !API_MAX_CONNECTIONS.contains(&self.max_connections) {
            return Err(ConfigError::new(
                "api.max_connections",
                format!(
                    "must be from {} to {}",
                    API_MAX_CONNECTIONS.start(),
                    API_MAX_CONNECTIONS.end()
                ),
            ));
        }
        for (key, value) in [
            ("api.header_timeout", self.header_timeout),
            ("api.idle_timeout", self.idle_timeout),
            ("api.body_timeout", self.body_timeout),
        ] {
            if !API_TIMEOUTS.contains(&value) {
                return Err(ConfigError::new(
                    key,
                    format!(
                        "must be from {} to {}",
                        API_TIMEOUTS.start(),
                        API_TIMEOUTS.end()
                    ),
                ));
            }
        }
        if !API_MAX_BODY_BYTES.contains(&self.max_body_bytes) {
            return Err(ConfigError::new(
                "api.max_body_bytes",
                format!(
                    "must be from {} to {} (1 KiB to 256 MiB)",
                    API_MAX_BODY_BYTES.start(),
                    API_MAX_BODY_BYTES.end()
                ),
            ));
        }
        Ok(())
    }
}

/// One API token, from the environment or inline.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Environment variable holding the token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// The token itself (prefer `token_env` or `token_file`).
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding the token (trailing newline dropped), read when the
    /// configuration is loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    /// What the token may do.
    pub role: Role,
}

/// API roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads and writes.
    Admin,
    /// Reads only.
    Viewer,
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

/// `rate_limit = { per_second, burst }`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Requests allowed at once above the sustained rate.
    #[serde(default = "default_burst")]
    pub burst: u32,
}

fn default_burst() -> u32 {
    1
}

/// `batch = { max_events, max_wait }`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Events per request; 1 = no batching.
    pub max_events: u32,
    /// Longest an event waits for a batch to fill.
    pub max_wait: HumanDuration,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_events: 1,
            max_wait: HumanDuration::from_millis(0),
        }
    }
}

/// HTTP protocol used towards an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HttpVersion {
    /// HTTP/2 when TLS negotiates it (ALPN), else HTTP/1.1.
    #[default]
    Auto,
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 always (prior knowledge on plain http).
    Http2,
}

/// `[[endpoints]]`: one webhook endpoint.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointConfig {
    /// Unique id.
    pub id: String,
    /// A display name (Mainflux webhooks have one). Boxed text: an index
    /// holds one endpoint per id.
    #[serde(default, skip_serializing_if = "str::is_empty")]
    pub name: Box<str>,
    /// Absolute http(s) URL.
    pub url: String,
    /// Event types: exact, prefix glob (`device-*`) or `*`.
    #[serde(default = "default_events")]
    pub events: Vec<String>,
    /// Only these devices (empty = all).
    #[serde(default)]
    pub devices: Vec<String>,
    /// Only these groups (empty = all).
    #[serde(default)]
    pub groups: Vec<String>,
    /// Only this tenant (empty = all). Boxed text, as `name`.
    #[serde(default)]
    pub tenant: Box<str>,
    /// Disabled endpoints receive nothing. `active` (the CMDB's name for
    /// it) is accepted as an alias.
    #[serde(default = "default_true", alias = "active")]
    pub enabled: bool,
    /// Why and when hookstream disabled the endpoint by itself (it
    /// answered 410 Gone); cleared when it is enabled again. Boxed: most
    /// endpoints have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<Box<DisabledBy>>,
    /// Signing secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Environment variable holding the signing secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<String>,
    /// The secret a rotation replaced: it keeps signing beside `secret`
    /// until `previous_secret_expires_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret: Option<String>,
    /// RFC 3339 time at which `previous_secret` stops signing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret_expires_at: Option<Box<str>>,
    /// Signature scheme.
    #[serde(default)]
    pub signature: SignatureScheme,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Requests per second (none = unlimited). Boxed: most endpoints have
    /// none, and an index holds one endpoint per id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<Box<RateLimitConfig>>,
    /// Requests in flight at once.
    #[serde(default = "default_concurrency")]
    pub max_concurrency: u32,
    /// Batching.
    #[serde(default)]
    pub batch: BatchConfig,
    /// Per-request timeout (overrides `[delivery].timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// Allow a plain `http://` URL.
    #[serde(default)]
    pub allow_http: bool,
    /// Protocol towards the endpoint.
    #[serde(default)]
    pub http_version: HttpVersion,
    /// Bounded queue of events waiting for this endpoint.
    #[serde(default = "default_queue")]
    pub queue_size: u32,
    /// Payload filter on event fields and record headers
    /// (`{ body = {...}, headers = {...} }`, see `index::filter`); boxed:
    /// most endpoints have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Box<serde_json::Value>>,
    /// What the body holds (none: the event's preset default). Boxed:
    /// most endpoints have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Box<PayloadConfig>>,
    /// Retry policy (none: `[delivery]`'s). Boxed, likewise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Box<RetryConfig>>,
    /// Mender integration scope: only the scope's event types (those of
    /// them `events` matches) are delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
    /// Key-value pairs for the client's own use (Mainflux `metadata`),
    /// stored and returned as given. Boxed: most endpoints have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Box<serde_json::Map<String, serde_json::Value>>>,
}

/// Why and when hookstream disabled an endpoint by itself.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DisabledBy {
    /// What happened (`the endpoint answered 410 Gone`).
    pub reason: String,
    /// RFC 3339 time.
    pub at: String,
}

fn default_events() -> Vec<String> {
    vec!["*".into()]
}
fn default_true() -> bool {
    true
}
fn default_concurrency() -> u32 {
    32
}
fn default_queue() -> u32 {
    1024
}

impl EndpointConfig {
    /// A minimal endpoint for `url` (tests, demo).
    pub fn new(id: impl Into<String>, url: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            name: Box::default(),
            url: url.into(),
            events: default_events(),
            devices: Vec::new(),
            groups: Vec::new(),
            tenant: Box::default(),
            enabled: true,
            disabled: None,
            secret: None,
            secret_env: None,
            previous_secret: None,
            previous_secret_expires_at: None,
            signature: SignatureScheme::None,
            headers: BTreeMap::new(),
            rate_limit: None,
            max_concurrency: default_concurrency(),
            batch: BatchConfig::default(),
            timeout: None,
            allow_http: false,
            http_version: HttpVersion::Auto,
            queue_size: default_queue(),
            filter: None,
            payload: None,
            retry: None,
            scope: None,
            metadata: None,
        }
    }
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
        let mut value: toml::Value = toml::from_str(text).map_err(|e| {
            let at = e.span().map_or(String::new(), |span| {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                format!(" (line {line})")
            });
            ConfigError::new("", format!("invalid TOML{at}: {}", e.message()))
        })?;
        expand_env(&mut value, &mut String::new(), env)?;
        resolve_endpoint_secret_files(&mut value, read)?;
        let mut config: Config = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            let message = e.into_inner().message().to_string();
            ConfigError::new(if key == "." { String::new() } else { key }, message)
        })?;
        config.validate()?;
        resolve_files(&mut config, read)?;
        Ok(config)
    }

    /// Checks what plain data can show by itself: ranges ([`limits`]),
    /// references between keys, names. What needs a stage (extraction
    /// rules, endpoint URLs, destinations and secrets) is checked where the
    /// stages are wired, once: `pipeline::check_config`.
    fn validate(&self) -> Result<(), ConfigError> {
        use limits::*;
        let fail = |key: &str, why: Option<String>| match why {
            Some(message) => Err(ConfigError::new(key, message)),
            None => Ok(()),
        };
        let k = &self.kafka;
        if k.brokers.trim().is_empty() {
            return Err(ConfigError::new("kafka.brokers", "must not be empty"));
        }
        if k.group_id.trim().is_empty() {
            return Err(ConfigError::new("kafka.group_id", "must not be empty"));
        }
        fail("kafka.group_id", bad_length(k.group_id.len(), NAME_LEN))?;
        fail("kafka.topics", bad_count(k.topics.len(), INPUT_TOPICS))?;
        for (i, topic) in k.topics.iter().enumerate() {
            fail(
                &format!("kafka.topics[{i}]"),
                bad_length(topic.len(), NAME_LEN),
            )?;
            if !topic.chars().all(valid_topic_char) {
                return Err(ConfigError::new(
                    format!("kafka.topics[{i}]"),
                    "may use only letters, digits, '.', '_' and '-'",
                ));
            }
        }
        fail(
            "kafka.commit_interval",
            outside_duration(k.commit_interval.get(), COMMIT_INTERVAL),
        )?;
        fail(
            "kafka.embedded_partitions",
            outside(k.embedded_partitions, EMBEDDED_PARTITIONS),
        )?;
        let t = &self.topics;
        if t.prefix.is_empty() || !t.prefix.chars().all(valid_topic_char) {
            return Err(ConfigError::new(
                "topics.prefix",
                "must be non-empty and use only letters, digits, '.', '_' and '-'",
            ));
        }
        fail("topics.prefix", bad_length(t.prefix.len(), NAME_LEN))?;
        fail(
            "topics.retry_tiers",
            bad_count(t.retry_tiers.len(), RETRY_TIERS),
        )?;
        for (i, tier) in t.retry_tiers.iter().enumerate() {
            fail(
                &format!("topics.retry_tiers[{i}]"),
                outside_duration(tier.get(), RETRY_TIER),
            )?;
        }
        for (i, pair) in t.retry_tiers.windows(2).enumerate() {
            if pair[0] >= pair[1] {
                return Err(ConfigError::new(
                    format!("topics.retry_tiers[{}]", i + 1),
                    "tiers must be strictly increasing",
                ));
            }
        }
        fail("topics.partitions", outside(t.partitions, TOPIC_PARTITIONS))?;
        fail(
            "topics.attempts_retention",
            outside_duration(t.attempts_retention.get(), ATTEMPTS_RETENTION),
        )?;
        if t.replication_factor != -1 {
            fail(
                "topics.replication_factor",
                outside(t.replication_factor, REPLICATION_FACTOR)
                    .map(|why| format!("{why}; or -1 for the broker's default")),
            )?;
        }
        let d = &self.delivery;
        fail(
            "delivery.timeout",
            outside_duration(d.timeout.get(), REQUEST_TIMEOUT),
        )?;
        fail(
            "delivery.max_attempts",
            outside(d.max_attempts, MAX_ATTEMPTS),
        )?;
        fail(
            "delivery.backoff.initial",
            outside_duration(d.backoff.initial.get(), BACKOFF_INITIAL),
        )?;
        fail(
            "delivery.backoff.max",
            outside_duration(d.backoff.max.get(), BACKOFF_MAX),
        )?;
        fail(
            "delivery.backoff.factor",
            outside(d.backoff.factor, BACKOFF_FACTOR),
        )?;
        fail(
            "delivery.backoff.jitter",
            outside(d.backoff.jitter, BACKOFF_JITTER),
        )?;
        if d.backoff.initial > d.backoff.max {
            return Err(ConfigError::new(
                "delivery.backoff.initial",
                "must not exceed delivery.backoff.max",
            ));
        }
        fail(
            "delivery.retry_window",
            outside_duration(d.retry_window.get(), RETRY_WINDOW),
        )?;
        fail(
            "delivery.max_in_flight",
            outside(d.max_in_flight, MAX_IN_FLIGHT),
        )?;
        fail(
            "delivery.max_connections_per_host",
            outside(d.max_connections_per_host, CONNECTIONS_PER_HOST),
        )?;
        fail(
            "delivery.max_payload_bytes",
            outside(d.max_payload_bytes, MAX_PAYLOAD_BYTES),
        )?;
        fail(
            "delivery.drain_timeout",
            outside_duration(d.drain_timeout.get(), DRAIN_TIMEOUT),
        )?;
        fail(
            "delivery.user_agent",
            bad_length(d.user_agent.len(), USER_AGENT_LEN),
        )?;
        if http::HeaderValue::from_str(&d.user_agent).is_err() {
            return Err(ConfigError::new(
                "delivery.user_agent",
                "has characters a header cannot carry",
            ));
        }
        fail(
            "api.rotation_grace",
            outside_duration(self.api.rotation_grace.get(), ROTATION_GRACE),
        )?;
        self.api.validate_limits()?;
        fail(
            "metrics.max_endpoint_series",
            outside(self.metrics.max_endpoint_series, MAX_ENDPOINT_SERIES),
        )?;
        for (i, token) in self.api.tokens.iter().enumerate() {
            let given = [
                token.token.is_some(),
                token.token_env.is_some(),
                token.token_file.is_some(),
            ];
            match given.iter().filter(|g| **g).count() {
                0 => {
                    return Err(ConfigError::new(
                        format!("api.tokens[{i}]"),
                        "needs `token_env`, `token_file` or `token`",
                    ));
                }
                1 => {}
                _ => {
                    return Err(ConfigError::new(
                        format!("api.tokens[{i}]"),
                        "takes only one of `token_env`, `token_file` and `token`",
                    ));
                }
            }
        }
        for (i, source) in self.sources.iter().enumerate() {
            if !k.topics.contains(&source.topic) {
                return Err(ConfigError::new(
                    format!("sources[{i}].topic"),
                    format!("`{}` is not one of kafka.topics", source.topic),
                ));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for (i, endpoint) in self.endpoints.iter().enumerate() {
            if !seen.insert(endpoint.id.as_str()) {
                return Err(ConfigError::new(
                    format!("endpoints[{i}].id"),
                    format!("`{}` is used twice", endpoint.id),
                ));
            }
            limits::check_endpoint(endpoint)
                .map_err(|e| ConfigError::new(format!("endpoints[{i}].{}", e.field), e.message))?;
        }
        Ok(())
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

fn valid_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn empty_file_gives_spec_defaults() {
        let c = Config::from_toml_with_env("", &no_env).unwrap();
        assert_eq!(c.kafka.brokers, "127.0.0.1:9092");
        assert_eq!(c.kafka.group_id, "hookstream");
        assert_eq!(c.topics.retry_tiers.len(), 6);
        assert_eq!(
            c.topics.retry_topic(c.topics.retry_tiers[3]),
            "hookstream.retry.2m"
        );
        assert_eq!(c.topics.dlq_topic(), "hookstream.dlq");
        assert_eq!(c.delivery.max_attempts, 8);
        assert_eq!(c.delivery.max_in_flight, 20_000);
        assert_eq!(c.delivery.backoff.max.get().as_secs(), 3600);
        assert!(c.delivery.user_agent.starts_with("hookstream/"));
    }

    #[test]
    fn unknown_key_is_named() {
        let err = Config::from_toml_with_env("[delivery]\ntimeuot = \"1s\"", &no_env).unwrap_err();
        assert_eq!(err.key, "delivery.timeuot");
        assert!(err.message.contains("unknown field"), "{err}");
    }

    #[test]
    fn bad_duration_is_named() {
        let err = Config::from_toml_with_env("[delivery]\ntimeout = \"30\"", &no_env).unwrap_err();
        assert_eq!(err.key, "delivery.timeout");
        assert!(err.to_string().contains("no unit"));
    }

    #[test]
    fn bad_nested_value_is_named() {
        let err = Config::from_toml_with_env(
            "[delivery]\nbackoff = { initial = \"1s\", jitter = 2.0 }",
            &no_env,
        )
        .unwrap_err();
        assert_eq!(err.key, "delivery.backoff.jitter");
    }

    #[test]
    fn endpoint_errors_name_the_index() {
        let text = r#"
[delivery]
allow_private_destinations = true
[[endpoints]]
id = "a"
url = "http://127.0.0.1:1/"
signature = "none"
[[endpoints]]
id = "b"
url = "http://127.0.0.1:1/"
signature = "none"
max_concurrency = 0
"#;
        let err = Config::from_toml_with_env(text, &no_env).unwrap_err();
        assert_eq!(err.key, "endpoints[1].max_concurrency");
    }

    #[test]
    fn env_references_expand_and_unset_ones_are_named() {
        let env = |name: &str| (name == "GROUP").then(|| "fleet".to_string());
        let c = Config::from_toml_with_env("[kafka]\ngroup_id = \"${GROUP}-hs\"", &env).unwrap();
        assert_eq!(c.kafka.group_id, "fleet-hs");
        let err = Config::from_toml_with_env("[kafka]\nbrokers = \"${NOPE}\"", &env).unwrap_err();
        assert_eq!(err.key, "kafka.brokers");
        assert!(err.message.contains("NOPE"));
    }

    #[test]
    fn properties_accept_numbers_and_strings() {
        let c = Config::from_toml_with_env(
            "[kafka.properties]\n\"session.timeout.ms\" = 10000\n\"x\" = \"y\"",
            &no_env,
        )
        .unwrap();
        assert_eq!(
            c.kafka.properties["session.timeout.ms"].to_string(),
            "10000"
        );
    }

    #[test]
    fn source_topic_must_be_consumed() {
        let err = Config::from_toml_with_env(
            "[[sources]]\ntopic = \"other\"\npreset = \"mender\"",
            &no_env,
        )
        .unwrap_err();
        assert_eq!(err.key, "sources[0].topic");
    }

    #[test]
    fn api_limits_have_defaults_and_ranges_named_by_key() {
        let c = Config::from_toml_with_env("", &no_env).unwrap();
        assert_eq!(c.api.max_connections, 1024);
        assert_eq!(c.api.header_timeout.get().as_secs(), 10);
        assert_eq!(c.api.idle_timeout.get().as_secs(), 60);
        assert_eq!(c.api.body_timeout.get().as_secs(), 30);
        assert_eq!(c.api.max_body_bytes, 1_048_576);
        let c = Config::from_toml_with_env(
            "[api]\nmax_connections = 1\nheader_timeout = \"100ms\"\nidle_timeout = \"1h\"\nmax_body_bytes = 1024",
            &no_env,
        )
        .unwrap();
        assert_eq!(c.api.max_connections, 1);
        assert_eq!(c.api.header_timeout.get().as_millis(), 100);
        for (text, key) in [
            ("max_connections = 0", "api.max_connections"),
            ("max_connections = 1000001", "api.max_connections"),
            ("max_connections = -1", "api.max_connections"),
            ("header_timeout = \"0\"", "api.header_timeout"),
            ("header_timeout = \"99ms\"", "api.header_timeout"),
            ("idle_timeout = \"2h\"", "api.idle_timeout"),
            ("body_timeout = \"50ms\"", "api.body_timeout"),
            ("body_timeout = \"5\"", "api.body_timeout"),
            ("max_body_bytes = 1023", "api.max_body_bytes"),
            ("max_body_bytes = 268435457", "api.max_body_bytes"),
        ] {
            let err = Config::from_toml_with_env(&format!("[api]\n{text}"), &no_env).unwrap_err();
            assert_eq!(err.key, key, "{text}: {err}");
        }
    }

    #[test]
    fn the_shipped_example_config_is_valid() {
        let text = include_str!("../../config/hookstream.toml");
        let env = |_: &str| Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string());
        Config::from_toml_with_env(text, &env).unwrap();
    }
}
