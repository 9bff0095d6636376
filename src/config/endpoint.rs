//! `[[endpoints]]`: one endpoint's settings as plain data (what the file,
//! the API and the endpoints topic hold), with their serde defaults.
//!
//! Plain data: ranges are checked in [`super::limits`], preparing an
//! endpoint for delivery is [`crate::index`]'s business.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::limits::*;
use super::{
    AuthConfig, HumanDuration, PayloadConfig, RetryConfig, Scope, SignatureScheme, TlsConfig,
    default_true,
};

/// `rate_limit = { per_second, burst }`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Sustained requests per second.
    #[schemars(range(min = RATE_PER_SECOND.min, max = RATE_PER_SECOND.max))]
    pub per_second: f64,
    /// Requests allowed at once above the sustained rate.
    #[serde(default = "default_burst")]
    #[schemars(range(min = RATE_BURST.min, max = RATE_BURST.max))]
    pub burst: u32,
}

fn default_burst() -> u32 {
    1
}

/// `adaptive_concurrency = { initial, decrease_ratio, ewma_alpha,
/// rtt_deviation_scale }`: the endpoint's requests in flight follow what it
/// can take (AIMD on latency and on 429/502/503/504 answers, timeouts and
/// connection failures), between 1 and `max_concurrency`. Present = on;
/// every key has a default (`adaptive_concurrency = {}`); `initial` may
/// not exceed `max_concurrency`.
// The controller is `deliver::adaptive`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct AdaptiveConcurrencyConfig {
    /// The limit a new sender starts with.
    #[schemars(range(min = ADAPTIVE_INITIAL.min, max = ADAPTIVE_INITIAL.max))]
    pub initial: u32,
    /// What a decrease multiplies the limit by.
    #[schemars(range(min = ADAPTIVE_DECREASE_RATIO.min, max = ADAPTIVE_DECREASE_RATIO.max))]
    pub decrease_ratio: f64,
    /// Weight of the latest window in the moving average of latency.
    #[schemars(range(min = ADAPTIVE_EWMA_ALPHA.min, max = ADAPTIVE_EWMA_ALPHA.max))]
    pub ewma_alpha: f64,
    /// How many standard deviations above its moving average a window's
    /// latency may rise before the limit is decreased.
    #[schemars(range(
        min = ADAPTIVE_RTT_DEVIATION_SCALE.min,
        max = ADAPTIVE_RTT_DEVIATION_SCALE.max
    ))]
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
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Events per request (a JSON array of events); 1 = no batching.
    #[schemars(range(min = BATCH_EVENTS.min, max = BATCH_EVENTS.max))]
    pub max_events: u32,
    /// Longest an event waits for a batch to fill (0ms..=1m).
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize, JsonSchema)]
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

/// `ordering`: in what order an endpoint's deliveries may arrive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryOrder {
    /// As fast as the endpoint takes them: a retry does not hold back the
    /// events behind it.
    #[default]
    None,
    /// One device's events (the extracted device, else the record key) in
    /// the order of their input partition, across retries, deferrals,
    /// restarts and rebalances: while one waits for a retry, that device's
    /// later events wait behind it; other devices go on.
    PerDevice,
}

impl DeliveryOrder {
    /// Whether this is the default (left out of answers and files).
    pub fn is_none(&self) -> bool {
        *self == Self::None
    }
}

/// `[[endpoints]]`: one webhook endpoint.
///
/// The same table as the configuration file's, in JSON. Secrets are
/// answered masked (shown in the clear only when created or rotated); a
/// masked value written back keeps the stored one.
// Several fields are boxed (a thin pointer, 8 or 16 bytes, instead of the
// value inline): most endpoints have none, and an index holds one endpoint
// per id (tests/endpoint_memory.rs measures it).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "Endpoint", example = endpoint_example())]
pub struct EndpointConfig {
    /// Unique id (generated when left out on create).
    #[schemars(pattern(r"^[A-Za-z0-9._-]{1,128}$"))]
    pub id: String,
    /// A display name (Mainflux webhooks have one).
    #[serde(default, skip_serializing_if = "str::is_empty")]
    #[schemars(length(max = 254))]
    pub name: Box<str>,
    /// Absolute https URL (http only with `allow_http`).
    #[schemars(length(min = URL_LEN.min, max = URL_LEN.max))]
    pub url: String,
    /// Event types: exact (`device-provisioned`), prefix glob (`device-*`)
    /// or `*`.
    #[serde(default = "default_events")]
    #[schemars(length(min = EVENT_PATTERNS.min, max = EVENT_PATTERNS.max))]
    #[schemars(inner(length(min = ROUTE_NAME_LEN.min, max = ROUTE_NAME_LEN.max)))]
    pub events: Vec<String>,
    /// Only these devices (empty = all).
    #[serde(default)]
    #[schemars(length(max = RESTRICTIONS.max))]
    #[schemars(inner(length(min = ROUTE_NAME_LEN.min, max = ROUTE_NAME_LEN.max)))]
    pub devices: Vec<String>,
    /// Only these groups (empty = all).
    #[serde(default)]
    #[schemars(length(max = RESTRICTIONS.max))]
    #[schemars(inner(length(min = ROUTE_NAME_LEN.min, max = ROUTE_NAME_LEN.max)))]
    pub groups: Vec<String>,
    /// Only this tenant (empty = all).
    #[serde(default)]
    #[schemars(length(max = ROUTE_NAME_LEN.max))]
    pub tenant: Box<str>,
    /// Disabled endpoints receive nothing. `active` (the CMDB's name for
    /// it) is accepted as an alias; answers say `enabled`.
    #[serde(default = "default_true", alias = "active")]
    pub enabled: bool,
    /// Why and when hookstream disabled the endpoint by itself (it
    /// answered 410 Gone, or failed every attempt for
    /// `delivery.auto_disable.after`); cleared when it is enabled again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled: Option<Box<DisabledBy>>,
    /// Signing secret; generated when left out (and shown in the answer).
    /// Answers show it masked (`whsec_****`) but when created or rotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = SECRET_LEN.max))]
    pub secret: Option<Box<str>>,
    /// Environment variable holding the signing secret (configuration file
    /// only; the API keeps but never sets it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = ENV_NAME_LEN.max))]
    pub secret_env: Option<Box<String>>,
    /// The secret a rotation replaced, masked: it keeps signing beside
    /// `secret` until `previous_secret_expires_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = SECRET_LEN.max))]
    pub previous_secret: Option<Box<str>>,
    /// RFC 3339 time at which `previous_secret` stops signing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_secret_expires_at: Option<Box<str>>,
    /// Signature scheme.
    #[serde(default)]
    pub signature: SignatureScheme,
    /// Extra request headers (API keys go here). Answers mask the values
    /// (`****`) except for admins asking with `?reveal=headers` on
    /// `GET /v1/endpoints/{id}`; a masked value written back keeps the
    /// stored one.
    #[serde(default)]
    #[schemars(length(max = HEADERS.max))]
    #[schemars(extend("additionalProperties" = {"type": "string", "maxLength": HEADER_VALUE_LEN.max}))]
    pub headers: BTreeMap<String, String>,
    /// Requests per second (left out: unlimited).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<Box<RateLimitConfig>>,
    /// Requests in flight at once (with `adaptive_concurrency`, the
    /// ceiling of the adaptive limit).
    #[serde(default = "default_concurrency")]
    #[schemars(range(min = MAX_CONCURRENCY.min, max = MAX_CONCURRENCY.max))]
    pub max_concurrency: u32,
    /// Requests in flight follow what the endpoint can take (left out:
    /// always `max_concurrency`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive_concurrency: Option<Box<AdaptiveConcurrencyConfig>>,
    /// Batching.
    #[serde(default)]
    pub batch: BatchConfig,
    /// Per-request timeout (overrides `delivery.timeout`; 1ms..=1h).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<HumanDuration>,
    /// Allow a plain `http://` URL.
    #[serde(default)]
    pub allow_http: bool,
    /// Protocol towards the endpoint.
    #[serde(default)]
    pub http_version: HttpVersion,
    /// `"per_device"`: each device's events arrive in order (through the
    /// `<prefix>.ordered` topic; one delivery per device in flight).
    #[serde(default, skip_serializing_if = "DeliveryOrder::is_none")]
    pub ordering: DeliveryOrder,
    /// Bounded queue of events waiting for this endpoint.
    #[serde(default = "default_queue")]
    #[schemars(range(min = QUEUE_SIZE.min, max = QUEUE_SIZE.max))]
    pub queue_size: u32,
    /// Payload filter on event fields and Kafka record headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "filter_schema")]
    pub filter: Option<Box<serde_json::Value>>,
    /// What the body holds (left out: the event's preset default:
    /// Magistrala `/payload`, CMDB `/object`, else the whole event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Box<PayloadConfig>>,
    /// Retry policy (left out: `[delivery]`'s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Box<RetryConfig>>,
    /// Mender integration scope: only the scope's event types (those of
    /// them `events` matches) are delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Scope>,
    /// Key-value pairs for the client's own use (Mainflux `metadata`),
    /// stored and returned as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Box<serde_json::Map<String, serde_json::Value>>>,
    /// Credentials the receiver asks for: exactly one of basic, bearer,
    /// oauth2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Box<AuthConfig>>,
    /// TLS material of the connection (https URLs only): a client
    /// certificate (mTLS) and extra trusted CAs, each parsed when saved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Box<TlsConfig>>,
    /// Egress proxy (`http://host:port`, no credentials) overriding
    /// `delivery.proxy`, or `"none"` to go direct. The SSRF guard checks
    /// the destination behind it.
    // A thin box (8 bytes): the three egress settings together had to fit
    // the endpoint's budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = URL_LEN.max))]
    pub proxy: Option<Box<String>>,
}

/// The API document's example of an endpoint.
fn endpoint_example() -> serde_json::Value {
    serde_json::json!({
        "id": "analytics",
        "url": "https://analytics.example.com/mdm/events",
        "events": ["device-provisioned", "device-*"],
        "signature": "standard",
    })
}

/// `filter`'s schema: its keys are the event's own fields, so it is
/// described rather than enumerated.
fn filter_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "description": "Payload filter: `body` (dotted paths into the event) and/or `headers` (Kafka record headers), each a table of field = value or { $eq, $neq, $in, $nin, $gt, $gte, $lt, $lte, $exists, $regex }, with $and/$or arrays; at most 64 clauses. A filter that does not compile is a 400 naming its key (filter.body.data.model.$regex).",
        "properties": {"body": {"type": "object"}, "headers": {"type": "object"}},
        "additionalProperties": false,
        "nullable": true,
    })
}

/// Why and when hookstream disabled an endpoint by itself.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DisabledBy {
    /// What happened (`the endpoint answered 410 Gone`).
    pub reason: String,
    /// RFC 3339 time.
    pub at: String,
    /// What made hookstream disable it (absent means `gone`: records
    /// written before causes existed were all written after a 410).
    #[serde(default)]
    pub cause: DisableCause,
}

/// What made hookstream disable an endpoint by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
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
            ordering: DeliveryOrder::None,
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
