//! One endpoint as the pipeline uses it: validated configuration, parsed URL,
//! prepared signer, restriction sets.
//!
//! Owns validation of endpoint settings (the same rules for the config file
//! and, later, the API). Does no I/O. Its `Debug` never prints the secret.
//!
//! Why this file is long: one endpoint's validated settings and their
//! accessors, the type every stage reads; its destination and its tests
//! are already files of their own.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use reqwest::Url;

use super::egress::{self, Egress};
use super::filter::Filter;
use crate::config::EndpointConfig;
pub use crate::config::FieldError;
use crate::sign::{SignatureScheme, Signer};

mod destination;

pub(crate) use destination::literal_ip;
use destination::{Target, check_url};

/// Headers an endpoint may not set: hop-by-hop and framing headers (the
/// HTTP client owns them). `Content-Type` and `User-Agent` may be set.
const RESERVED_HEADERS: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
];

/// Headers the signers write (every scheme's, so changing the scheme
/// never lets a custom header pose as a signature), and the CloudEvents
/// attributes of binary mode.
fn is_signature_header(lower: &str) -> bool {
    lower.starts_with("webhook-")
        || lower.starts_with("x-men-")
        || lower.starts_with("x-openmdm-")
        || lower.starts_with("x-github-")
        || lower == "x-hub-signature-256"
        || lower.starts_with("ce-")
}

/// A ready-to-use endpoint.
///
/// Kept within 432 bytes (448 with its `Arc` counts, one allocator size
/// class): an index holds one per endpoint, and 100 000 of them must fit.
/// What most endpoints do not have sits behind one box, and the parsed
/// destination is made when the endpoint is first sent to (an idle
/// endpoint never is).
pub struct Endpoint {
    /// The settings it was built from (secret included: never print it).
    pub config: EndpointConfig,
    /// Parsed destination, made on first use from `config.url` (which
    /// [`Endpoint::build`] parsed and checked).
    target: OnceLock<Box<Target>>,
    /// Keyed signer.
    pub signer: Signer,
    /// Per-request timeout in milliseconds.
    timeout_ms: u32,
    /// Rotation deadline, custom headers, restriction sets.
    uncommon: Option<Box<Uncommon>>,
}

/// The parts of an [`Endpoint`] that most endpoints leave empty.
#[derive(Default)]
struct Uncommon {
    /// Until when the previous secret of a rotation signs too.
    previous_secret_until: Option<SystemTime>,
    /// The endpoint's custom headers, parsed once.
    extra_headers: Vec<(reqwest::header::HeaderName, reqwest::header::HeaderValue)>,
    /// `config.devices` as a set, when it is long enough to need one.
    devices: Option<HashSet<String>>,
    /// `config.groups` as a set, likewise.
    groups: Option<HashSet<String>>,
    /// The payload filter, compiled.
    filter: Option<Filter>,
    /// The event types of `config.scope` that `config.events` matches:
    /// what the index files the endpoint under instead of `events`.
    scoped_events: Option<Vec<String>>,
    /// Auth, TLS material and proxy choice, prepared.
    egress: Option<Egress>,
}

impl Uncommon {
    fn is_empty(&self) -> bool {
        self.previous_secret_until.is_none()
            && self.extra_headers.is_empty()
            && self.devices.is_none()
            && self.groups.is_none()
            && self.filter.is_none()
            && self.scoped_events.is_none()
            && self.egress.is_none()
    }
}

/// Restriction lists up to this long are scanned; longer ones get a set
/// (most endpoints name one device or group, and 100 000 of them must fit).
const SCAN_UP_TO: usize = 8;

fn set_of(names: &[String]) -> Option<HashSet<String>> {
    (names.len() > SCAN_UP_TO).then(|| names.iter().cloned().collect())
}

/// Whether `value` is admitted by a restriction list (empty: no
/// restriction) and its set.
fn admitted(names: &[String], set: Option<&HashSet<String>>, value: Option<&str>) -> bool {
    if names.is_empty() {
        return true;
    }
    let Some(value) = value else {
        return false;
    };
    match set {
        Some(set) => set.contains(value),
        None => names.iter().any(|n| n == value),
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("id", &self.config.id)
            .field("url", &self.config.url)
            .field("events", &self.config.events)
            .field("enabled", &self.config.enabled)
            .field("signature", &self.config.signature)
            .finish_non_exhaustive()
    }
}

/// What the index needs to know about an event.
#[derive(Debug, Clone, Copy, Default)]
pub struct RouteKey<'a> {
    /// Event type.
    pub event_type: &'a str,
    /// Device id.
    pub device: Option<&'a str>,
    /// Device group.
    pub group: Option<&'a str>,
    /// Tenant.
    pub tenant: Option<&'a str>,
}

impl Endpoint {
    /// Validates `config` and prepares it. `env` resolves `secret_env`.
    pub fn build(
        mut config: EndpointConfig,
        allow_private: bool,
        default_timeout: Duration,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, FieldError> {
        let checked = check(&config, allow_private, env)?;
        // Lists read from JSON grew as they were read (a one-item list
        // holds room for four): kept for the endpoint's life, 100 000
        // endpoints carried ~14 MiB of that room.
        config.events.shrink_to_fit();
        config.devices.shrink_to_fit();
        config.groups.shrink_to_fit();

        let extra_headers = config
            .headers
            .iter()
            .filter_map(|(k, v)| {
                let name = reqwest::header::HeaderName::from_bytes(k.as_bytes()).ok()?;
                let value = reqwest::header::HeaderValue::from_str(v).ok()?;
                Some((name, value))
            })
            .collect();
        let uncommon = Uncommon {
            previous_secret_until: checked.previous_until,
            extra_headers,
            devices: set_of(&config.devices),
            groups: set_of(&config.groups),
            filter: checked.filter,
            scoped_events: scoped_events(&config)?,
            egress: checked.egress,
        };
        let timeout = config.timeout.map(|t| t.get()).unwrap_or(default_timeout);
        Ok(Self {
            timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
            uncommon: (!uncommon.is_empty()).then(|| Box::new(uncommon)),
            target: OnceLock::new(),
            signer: checked.signer,
            config,
        })
    }

    /// The endpoint's id.
    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// Per-request timeout.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(u64::from(self.timeout_ms))
    }

    /// The parsed destination.
    pub fn url(&self) -> &Url {
        &self.target().url
    }

    /// The destination as the lean HTTP/1.1 client takes it (`None`: no
    /// valid request target).
    pub fn uri(&self) -> Option<&http::Uri> {
        self.target().uri.as_ref()
    }

    /// The fixed part of the request head the lean client sends to this
    /// endpoint: `build` writes it on first use, and it is kept.
    pub fn fixed_head(&self, build: impl FnOnce() -> Vec<u8>) -> &[u8] {
        self.target()
            .fixed_head
            .get_or_init(|| build().into_boxed_slice())
    }

    fn target(&self) -> &Target {
        self.target
            .get_or_init(|| Box::new(Target::of(&self.config.url)))
    }

    /// The literal IP of the URL, checked by the SSRF guard per request.
    pub fn literal_ip(&self) -> Option<IpAddr> {
        literal_ip(self.url())
    }

    /// Until when the previous secret of a rotation signs too (`None` when
    /// only the current secret signs). Past it the endpoint is rebuilt.
    pub fn previous_secret_until(&self) -> Option<SystemTime> {
        self.uncommon.as_ref().and_then(|u| u.previous_secret_until)
    }

    /// The endpoint's payload filter (`None`: every matching event).
    pub fn filter(&self) -> Option<&Filter> {
        self.uncommon.as_ref().and_then(|u| u.filter.as_ref())
    }

    /// The endpoint's auth, TLS material and proxy choice (`None`: none
    /// of them set).
    pub fn egress(&self) -> Option<&Egress> {
        self.uncommon.as_ref().and_then(|u| u.egress.as_ref())
    }

    /// The endpoint's custom headers, parsed once.
    pub fn extra_headers(&self) -> &[(reqwest::header::HeaderName, reqwest::header::HeaderValue)] {
        self.uncommon
            .as_ref()
            .map_or(&[], |u| u.extra_headers.as_slice())
    }

    /// Whether the device/group/tenant restrictions admit the event. The
    /// event type is the index's business.
    pub fn admits(&self, key: &RouteKey<'_>) -> bool {
        let u = self.uncommon.as_deref();
        admitted(
            &self.config.devices,
            u.and_then(|u| u.devices.as_ref()),
            key.device,
        ) && admitted(
            &self.config.groups,
            u.and_then(|u| u.groups.as_ref()),
            key.group,
        ) && (self.config.tenant.is_empty() || key.tenant == Some(&*self.config.tenant))
    }

    /// The event patterns the index files the endpoint under: `events`,
    /// or with a `scope`, the scope's types that `events` matches.
    pub fn patterns(&self) -> &[String] {
        match self
            .uncommon
            .as_deref()
            .and_then(|u| u.scoped_events.as_ref())
        {
            Some(scoped) => scoped,
            None => &self.config.events,
        }
    }

    /// Whether an event type matches one of the patterns (used by tests and
    /// by the index builder's cross-check).
    pub fn matches_type(&self, event_type: &str) -> bool {
        self.patterns()
            .iter()
            .any(|p| pattern_matches(p, event_type))
    }
}

/// The event types of `config.scope` that its `events` match (`None`
/// without a scope); none is an error naming `scope`.
fn scoped_events(config: &EndpointConfig) -> Result<Option<Vec<String>>, FieldError> {
    let Some(scope) = config.scope else {
        return Ok(None);
    };
    let types: Vec<String> = scope
        .event_types()
        .iter()
        .filter(|t| config.events.iter().any(|p| pattern_matches(p, t)))
        .map(|t| t.to_string())
        .collect();
    if types.is_empty() {
        return Err(FieldError::new(
            "scope",
            format!(
                "none of the `{}` event types ({}) matches `events`",
                scope.name(),
                scope.event_types().join(", ")
            ),
        ));
    }
    Ok(Some(types))
}

/// `*`, `prefix*`, or an exact type.
pub fn pattern_matches(pattern: &str, event_type: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => event_type.starts_with(prefix),
        None => pattern == event_type,
    }
}

struct Checked {
    signer: Signer,
    previous_until: Option<SystemTime>,
    filter: Option<Filter>,
    egress: Option<Egress>,
}

/// Longest display name.
const MAX_NAME_LEN: usize = 254;

/// Validates an endpoint without building it; used by config loading.
pub fn validate(
    config: &EndpointConfig,
    allow_private: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), FieldError> {
    check(config, allow_private, env).map(|_| ())
}

fn check(
    config: &EndpointConfig,
    allow_private: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Checked, FieldError> {
    check_names(config)?;
    crate::config::limits::check_endpoint(config)?;
    let url = check_url(config, allow_private)?;
    check_events(config)?;
    scoped_events(config)?;
    check_headers(config)?;
    check_payload_and_retry(config)?;
    let (signer, previous_until) = signer_of(config, env)?;
    let filter = config.filter.as_deref().map(Filter::compile).transpose()?;
    let egress = egress::prepare(config, &url, allow_private, env)?;
    Ok(Checked {
        signer,
        previous_until,
        filter,
        egress,
    })
}

/// `id`: 1-128 characters of a safe alphabet; `name`: bounded.
fn check_names(config: &EndpointConfig) -> Result<(), FieldError> {
    if config.id.is_empty()
        || config.id.len() > 128
        || !config
            .id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(FieldError::new(
            "id",
            "must be 1-128 characters of letters, digits, '.', '_' or '-'",
        ));
    }
    if config.name.len() > MAX_NAME_LEN {
        return Err(FieldError::new(
            "name",
            format!("must be at most {MAX_NAME_LEN} bytes"),
        ));
    }
    Ok(())
}

/// `events`: at least one pattern, each an exact type, a prefix glob or `*`.
fn check_events(config: &EndpointConfig) -> Result<(), FieldError> {
    if config.events.is_empty() {
        return Err(FieldError::new(
            "events",
            "needs at least one pattern (\"*\" for all)",
        ));
    }
    for (i, pattern) in config.events.iter().enumerate() {
        let body = pattern.strip_suffix('*').unwrap_or(pattern);
        if pattern.is_empty() || body.contains('*') || pattern.chars().any(char::is_whitespace) {
            return Err(FieldError::new(
                format!("events[{i}]"),
                format!(
                    "`{pattern}` is not an exact type, a prefix glob like \"device-*\", or \"*\""
                ),
            ));
        }
    }
    Ok(())
}

/// `headers`: valid names and values, none that the client or hookstream
/// sets itself.
fn check_headers(config: &EndpointConfig) -> Result<(), FieldError> {
    for (name, value) in &config.headers {
        let field = format!("headers.{name}");
        let parsed = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| FieldError::new(field.clone(), "is not a valid header name"))?;
        let lower = parsed.as_str();
        if RESERVED_HEADERS.contains(&lower) {
            return Err(FieldError::new(
                field,
                "is a hop-by-hop or framing header, which the HTTP client sets",
            ));
        }
        if is_signature_header(lower) {
            return Err(FieldError::new(
                field,
                "is a signature or CloudEvents header, which hookstream sets",
            ));
        }
        reqwest::header::HeaderValue::from_str(value)
            .map_err(|_| FieldError::new(field, "value has characters a header cannot carry"))?;
    }
    Ok(())
}

/// The signer of `secret` or `secret_env` (and the previous secret while
/// its rotation lasts), and until when the previous one signs; errors name
/// the key at fault.
fn signer_of(
    config: &EndpointConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Signer, Option<SystemTime>), FieldError> {
    let secret = match (&config.secret, &config.secret_env) {
        (Some(_), Some(_)) => {
            return Err(FieldError::new(
                "secret_env",
                "set either `secret` or `secret_env`, not both",
            ));
        }
        (Some(s), None) => Some(s.to_string()),
        (None, Some(var)) => Some(env(var).ok_or_else(|| {
            FieldError::new(
                "secret_env",
                format!("environment variable `{var}` is not set"),
            )
        })?),
        (None, None) => None,
    };
    let previous_until = previous_secret_until(config)?;
    let previous = previous_until.and(config.previous_secret.as_deref());
    let signer = Signer::new(config.signature, secret.as_deref(), None).map_err(|e| {
        let field = if secret.is_none() && config.signature != SignatureScheme::None {
            "secret"
        } else if config.secret_env.is_some() {
            "secret_env"
        } else {
            "secret"
        };
        FieldError::new(field, e.to_string())
    })?;
    // The previous secret is checked on its own so that an error names it.
    let signer = match previous {
        None => signer,
        Some(previous) => Signer::new(config.signature, secret.as_deref(), Some(previous))
            .map_err(|e| FieldError::new("previous_secret", e.to_string()))?,
    };
    Ok((signer, previous_until))
}

/// `payload`: a pointer is RFC 6901 (empty, or starting with `/`);
/// CloudEvents binary mode carries one event per request. `retry`: what
/// `outcome::policy` accepts.
fn check_payload_and_retry(config: &EndpointConfig) -> Result<(), FieldError> {
    if let Some(payload) = &config.payload {
        if let Some(p) = &payload.pointer
            && !(p.is_empty() || p.starts_with('/'))
        {
            return Err(FieldError::new(
                "payload.pointer",
                format!("`{p}` is not a JSON pointer (\"/payload\", or \"\" for the whole event)"),
            ));
        }
        if payload.envelope == crate::config::Envelope::CloudeventsBinary
            && config.batch.max_events > 1
        {
            return Err(FieldError::new(
                "payload",
                "`cloudevents_binary` sends one event per request: batch.max_events must be 1",
            ));
        }
    }
    if let Some(retry) = &config.retry {
        let defaults = crate::outcome::policy::RetryPolicy {
            backoff: crate::outcome::backoff::Backoff::new(&Default::default()),
            max_attempts: 1,
            retry_window: Duration::ZERO,
            rules: crate::outcome::policy::RetryRules::DEFAULT,
            local_failure_delay: Duration::ZERO,
            disabled: crate::outcome::policy::DisabledPolicy::default(),
        };
        defaults
            .for_endpoint(Some(retry))
            .map_err(|(key, why)| FieldError::new(key, why))?;
    }
    Ok(())
}

/// `localhost`, `*.localhost` (RFC 6761), with or without the root dot.
pub fn is_localhost_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// When the previous secret of a rotation stops signing: `None` when there
/// is none or its grace period is over.
fn previous_secret_until(config: &EndpointConfig) -> Result<Option<SystemTime>, FieldError> {
    let until = match (&config.previous_secret, &config.previous_secret_expires_at) {
        (None, None) => return Ok(None),
        (Some(_), None) => {
            return Err(FieldError::new(
                "previous_secret_expires_at",
                "is required with `previous_secret`",
            ));
        }
        (None, Some(_)) => {
            return Err(FieldError::new(
                "previous_secret",
                "is required with `previous_secret_expires_at`",
            ));
        }
        (Some(_), Some(at)) => humantime::parse_rfc3339_weak(at).map_err(|_| {
            FieldError::new(
                "previous_secret_expires_at",
                "is not an RFC 3339 time like \"2030-01-01T00:00:00Z\"",
            )
        })?,
    };
    Ok((until > SystemTime::now()).then_some(until))
}

#[cfg(test)]
mod tests;
