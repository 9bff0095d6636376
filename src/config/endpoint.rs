//! `[[endpoints]]`: one endpoint's settings as plain data (what the file,
//! the API and the endpoints topic hold), with their serde defaults.
//!
//! Plain data: ranges are checked in [`super::limits`], preparing an
//! endpoint for delivery is [`crate::index`]'s business.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    AuthConfig, HumanDuration, PayloadConfig, RetryConfig, Scope, SignatureScheme, TlsConfig,
    default_true,
};

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

/// `adaptive_concurrency = { initial, decrease_ratio, ewma_alpha,
/// rtt_deviation_scale }`: the endpoint's requests in flight follow what it
/// can take (AIMD on latency and back-pressure answers, see
/// `deliver::adaptive`), between 1 and `max_concurrency`. Present = on;
/// every key has a default (`adaptive_concurrency = {}`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdaptiveConcurrencyConfig {
    /// The limit a new sender starts with.
    pub initial: u32,
    /// What a decrease multiplies the limit by.
    pub decrease_ratio: f64,
    /// Weight of the latest window in the moving average of latency.
    pub ewma_alpha: f64,
    /// How many standard deviations above its moving average a window's
    /// latency may rise before the limit is decreased.
    pub rtt_deviation_scale: f64,
}

impl Default for AdaptiveConcurrencyConfig {
    fn default() -> Self {
        Self {
            initial: 1,
            decrease_ratio: 0.9,
            ewma_alpha: 0.4,
            rtt_deviation_scale: 2.5,
        }
    }
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
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
    /// answered 410 Gone, or failed every attempt for
    /// `delivery.auto_disable.after`); cleared when it is enabled again.
    /// Boxed: most endpoints have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<Box<DisabledBy>>,
    /// Signing secret. Boxed text (16 bytes, not 24), as `name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<Box<str>>,
    /// Environment variable holding the signing secret. Boxed (one pointer: it is rare).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_env: Option<Box<String>>,
    /// The secret a rotation replaced: it keeps signing beside `secret`
    /// until `previous_secret_expires_at`. Boxed text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret: Option<Box<str>>,
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
    /// Requests in flight at once (with `adaptive_concurrency`, the
    /// ceiling of the adaptive limit).
    #[serde(default = "default_concurrency")]
    pub max_concurrency: u32,
    /// Requests in flight follow what the endpoint can take (none: always
    /// `max_concurrency`). Boxed: most endpoints have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive_concurrency: Option<Box<AdaptiveConcurrencyConfig>>,
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
    /// Credentials the receiver asks for (basic, bearer, OAuth2 client
    /// credentials). Boxed: most endpoints have none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Box<AuthConfig>>,
    /// Client certificate and CA of the connection. Boxed, likewise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Box<TlsConfig>>,
    /// Egress proxy (overrides `delivery.proxy`), or `"none"` to go
    /// direct. A thin box (8 bytes): most endpoints have none, and the
    /// three egress settings together had to fit the endpoint's budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<Box<String>>,
}

/// Why and when hookstream disabled an endpoint by itself.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DisabledBy {
    /// What happened (`the endpoint answered 410 Gone`).
    pub reason: String,
    /// RFC 3339 time.
    pub at: String,
    /// What made hookstream disable it; records written before causes
    /// existed were all written after a 410, so `gone` is the default.
    #[serde(default)]
    pub cause: DisableCause,
}

/// What made hookstream disable an endpoint by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DisableCause {
    /// It answered 410 Gone: it wants nothing more, so its pending
    /// deliveries are dead-lettered (`endpoint_disabled`) and no event is
    /// matched to it.
    #[default]
    Gone,
    /// It failed every attempt for `delivery.auto_disable.after`: its
    /// pending deliveries are kept (`[delivery.disabled_backlog]`).
    Failing,
}

impl DisableCause {
    /// The text stored and shown (`gone`, `failing`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Gone => "gone",
            Self::Failing => "failing",
        }
    }
}

fn default_events() -> Vec<String> {
    vec!["*".into()]
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
            adaptive_concurrency: None,
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
            auth: None,
            tls: None,
            proxy: None,
        }
    }

    /// Whether the endpoint is disabled and its deliveries wait for it
    /// (`[delivery.disabled_backlog]`): every disabled endpoint but one
    /// hookstream disabled after a 410 Gone.
    pub fn keeps_backlog(&self) -> bool {
        !self.enabled
            && self
                .disabled
                .as_ref()
                .is_none_or(|d| d.cause != DisableCause::Gone)
    }

    /// Whether events are matched to the endpoint: it is enabled, or it is
    /// disabled and keeps its backlog (the events then wait on a tier).
    pub fn takes_events(&self) -> bool {
        self.enabled || self.keeps_backlog()
    }
}
