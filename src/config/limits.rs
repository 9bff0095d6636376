//! The accepted range of every number and length hookstream takes from its
//! configuration file, the management API and the command line.
//!
//! One table, so the file (exit 2), the API (400) and the CLI (exit 2) refuse
//! the same values with the same words, and nothing accepted can overflow
//! the arithmetic downstream (a rate of 1e-20 per second once made a rate
//! limiter's period overflow and crashed the process on the first event).
//! Pure data and checks: no I/O.
//!
//! Why this file is long: it is the one table of every accepted range and the
//! checks that apply them, so that a limit is looked up in one place (the
//! docs and the OpenAPI schema take their numbers from here).

use super::{EndpointConfig, FieldError};

use std::fmt;
use std::time::Duration;

/// An inclusive range a value must fall in.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range<T> {
    /// Smallest accepted value.
    pub min: T,
    /// Largest accepted value.
    pub max: T,
}

impl<T: PartialOrd + Copy> Range<T> {
    /// Whether `value` is within the range (NaN never is).
    pub fn contains(&self, value: T) -> bool {
        value >= self.min && value <= self.max
    }
}

impl<T: fmt::Display> fmt::Display for Range<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..={}", self.min, self.max)
    }
}

/// A range of durations, shown in human units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DurationRange {
    /// Shortest accepted duration.
    pub min: Duration,
    /// Longest accepted duration.
    pub max: Duration,
}

impl DurationRange {
    /// Whether `value` is within the range.
    pub fn contains(&self, value: Duration) -> bool {
        value >= self.min && value <= self.max
    }
}

impl fmt::Display for DurationRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |d: Duration| crate::config::HumanDuration(d).to_string();
        write!(f, "{}..={}", show(self.min), show(self.max))
    }
}

const fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

/// `kafka.commit_interval`.
pub const COMMIT_INTERVAL: DurationRange = DurationRange {
    min: ms(10),
    max: secs(HOUR),
};
/// `kafka.embedded_partitions`.
pub const EMBEDDED_PARTITIONS: Range<i32> = Range { min: 1, max: 1024 };
/// `kafka.topics` (how many).
pub const INPUT_TOPICS: Range<usize> = Range { min: 1, max: 100 };
/// Length of a Kafka topic name, group id or topic prefix.
pub const NAME_LEN: Range<usize> = Range { min: 1, max: 200 };
/// `topics.retry_tiers` (how many).
pub const RETRY_TIERS: Range<usize> = Range { min: 1, max: 16 };
/// Each of `topics.retry_tiers` (the tier topics' retention must be longer
/// than the longest tier).
pub const RETRY_TIER: DurationRange = DurationRange {
    min: ms(10),
    max: secs(7 * DAY),
};
/// `topics.attempts_retention` (retention of the durable activity log).
pub const ATTEMPTS_RETENTION: DurationRange = DurationRange {
    min: secs(60),
    max: secs(365 * DAY),
};
/// `topics.partitions`.
pub const TOPIC_PARTITIONS: Range<i32> = Range {
    min: 1,
    max: 10_000,
};
/// `topics.replication_factor` (or -1 for the broker's default).
pub const REPLICATION_FACTOR: Range<i32> = Range { min: 1, max: 100 };
/// `delivery.timeout` and an endpoint's `timeout`.
pub const REQUEST_TIMEOUT: DurationRange = DurationRange {
    min: ms(1),
    max: secs(HOUR),
};
/// `delivery.max_attempts`.
pub const MAX_ATTEMPTS: Range<u32> = Range {
    min: 1,
    max: 10_000,
};
/// `delivery.backoff.initial`.
pub const BACKOFF_INITIAL: DurationRange = DurationRange {
    min: ms(1),
    max: secs(DAY),
};
/// `delivery.backoff.max` (also the longest circuit-open interval and
/// `Retry-After` honoured).
pub const BACKOFF_MAX: DurationRange = DurationRange {
    min: ms(1),
    max: secs(7 * DAY),
};
/// `delivery.backoff.factor`.
pub const BACKOFF_FACTOR: Range<f64> = Range {
    min: 1.0,
    max: 100.0,
};
/// `delivery.backoff.jitter`.
pub const BACKOFF_JITTER: Range<f64> = Range { min: 0.0, max: 1.0 };
/// `delivery.max_in_flight`.
pub const MAX_IN_FLIGHT: Range<usize> = Range {
    min: 1,
    max: 10_000_000,
};
/// `delivery.max_connections_per_host`.
pub const CONNECTIONS_PER_HOST: Range<usize> = Range {
    min: 1,
    max: 100_000,
};
/// `delivery.max_payload_bytes`.
pub const MAX_PAYLOAD_BYTES: Range<usize> = Range {
    min: 1,
    max: 64 * 1024 * 1024,
};
/// `delivery.drain_timeout`.
pub const DRAIN_TIMEOUT: DurationRange = DurationRange {
    min: ms(0),
    max: secs(HOUR),
};
/// `delivery.retry_window`.
pub const RETRY_WINDOW: DurationRange = DurationRange {
    min: secs(1),
    max: secs(365 * DAY),
};
/// `delivery.auto_disable.after` (how long an endpoint fails every
/// attempt before it is disabled).
pub const AUTO_DISABLE_AFTER: DurationRange = DurationRange {
    min: secs(1),
    max: secs(365 * DAY),
};
/// `delivery.disabled_backlog.max_age` (a disabled endpoint's delivery
/// kept longer is dead-lettered).
pub const BACKLOG_MAX_AGE: DurationRange = DurationRange {
    min: secs(1),
    max: secs(365 * DAY),
};
/// `delivery.disabled_backlog.recheck` (resolved to the longest retry tier
/// not longer than it).
pub const BACKLOG_RECHECK: DurationRange = DurationRange {
    min: ms(10),
    max: secs(7 * DAY),
};
/// Length of `delivery.user_agent`.
pub const USER_AGENT_LEN: Range<usize> = Range { min: 1, max: 512 };
/// `api.rotation_grace`.
pub const ROTATION_GRACE: DurationRange = DurationRange {
    min: secs(1),
    max: secs(365 * DAY),
};
/// `metrics.max_endpoint_series`.
pub const MAX_ENDPOINT_SERIES: Range<usize> = Range {
    min: 1,
    max: 100_000,
};

/// Length of an endpoint's `url`.
pub const URL_LEN: Range<usize> = Range { min: 1, max: 2048 };
/// An endpoint's `events` (how many).
pub const EVENT_PATTERNS: Range<usize> = Range { min: 1, max: 256 };
/// An endpoint's `devices` or `groups` (how many).
pub const RESTRICTIONS: Range<usize> = Range {
    min: 0,
    max: 10_000,
};
/// Length of one event pattern, device, group or tenant name.
pub const ROUTE_NAME_LEN: Range<usize> = Range { min: 1, max: 256 };
/// An endpoint's `headers` (how many).
pub const HEADERS: Range<usize> = Range { min: 0, max: 64 };
/// Length of one header name.
pub const HEADER_NAME_LEN: Range<usize> = Range { min: 1, max: 256 };
/// Length of one header value.
pub const HEADER_VALUE_LEN: Range<usize> = Range { min: 0, max: 8192 };
/// Length of a signing secret.
pub const SECRET_LEN: Range<usize> = Range { min: 1, max: 1024 };
/// Length of `auth.basic.username` and `auth.oauth2.client_id`.
pub const AUTH_NAME_LEN: Range<usize> = Range { min: 1, max: 256 };
/// Length of `auth.bearer.token`.
pub const BEARER_TOKEN_LEN: Range<usize> = Range { min: 1, max: 8192 };
/// Length of `auth.oauth2.scope` and `auth.oauth2.audience`.
pub const OAUTH_PARAM_LEN: Range<usize> = Range { min: 1, max: 2048 };
/// Length of the name of an environment variable holding a secret
/// (`secret_env`, `auth.*.*_env`).
pub const ENV_NAME_LEN: Range<usize> = Range { min: 1, max: 256 };
/// Length of one PEM text of `tls` (`client_cert`, `client_key`, `ca`).
pub const PEM_LEN: Range<usize> = Range {
    min: 1,
    max: 64 * 1024,
};
/// `rate_limit.per_second`.
pub const RATE_PER_SECOND: Range<f64> = Range {
    min: 0.001,
    max: 1_000_000.0,
};
/// `rate_limit.burst`.
pub const RATE_BURST: Range<u32> = Range {
    min: 1,
    max: 100_000,
};
/// `max_concurrency`.
pub const MAX_CONCURRENCY: Range<u32> = Range {
    min: 1,
    max: 10_000,
};
/// `adaptive_concurrency.initial` (and at most `max_concurrency`).
pub const ADAPTIVE_INITIAL: Range<u32> = Range {
    min: 1,
    max: 10_000,
};
/// `adaptive_concurrency.decrease_ratio`.
pub const ADAPTIVE_DECREASE_RATIO: Range<f64> = Range {
    min: 0.1,
    max: 0.99,
};
/// `adaptive_concurrency.ewma_alpha`.
pub const ADAPTIVE_EWMA_ALPHA: Range<f64> = Range {
    min: 0.01,
    max: 1.0,
};
/// `adaptive_concurrency.rtt_deviation_scale`.
pub const ADAPTIVE_RTT_DEVIATION_SCALE: Range<f64> = Range {
    min: 0.0,
    max: 100.0,
};
/// `queue_size`.
pub const QUEUE_SIZE: Range<u32> = Range {
    min: 1,
    max: 1_000_000,
};
/// `batch.max_events`.
pub const BATCH_EVENTS: Range<u32> = Range {
    min: 1,
    max: 10_000,
};
/// `batch.max_wait`.
pub const BATCH_WAIT: DurationRange = DurationRange {
    min: ms(0),
    max: secs(60),
};
/// Length of an endpoint's `payload.pointer`.
pub const POINTER_LEN: Range<usize> = Range { min: 0, max: 1024 };
/// Entries of an endpoint's `retry.retry_on`.
pub const RETRY_ON: Range<usize> = Range { min: 0, max: 64 };

/// `--rate` of `dlq replay` and `demo` (events per second; 0 means
/// unthrottled and is checked apart).
pub const CLI_RATE: Range<f64> = Range {
    min: 0.001,
    max: 10_000_000.0,
};
/// `--events` of `demo`.
pub const CLI_EVENTS: Range<u64> = Range {
    min: 1,
    max: 100_000_000,
};
/// `--events` of `bench` (rates are taken from the first arrival to the
/// last: a handful of events gives no rate).
pub const BENCH_EVENTS: Range<u64> = Range {
    min: 1_000,
    max: 100_000_000,
};

/// `--rounds` of `bench` (each round measures the baselines and the
/// scenarios anew).
pub const BENCH_ROUNDS: Range<u32> = Range { min: 1, max: 50 };

/// Why `value` is refused by `range` (`None` when it is accepted).
pub fn outside<T: PartialOrd + Copy + fmt::Display>(value: T, range: Range<T>) -> Option<String> {
    (!range.contains(value)).then(|| format!("must be within {range} (got {})", shown(value)))
}

/// `value` as the user could have typed it: a float too small or too large
/// for a short decimal (`1e-300` prints 300 digits) in scientific notation.
fn shown<T: fmt::Display>(value: T) -> String {
    let text = value.to_string();
    if text.len() <= 24 {
        return text;
    }
    text.parse::<f64>().map_or(text, |v| format!("{v:e}"))
}

/// Why `value` is refused by `range` (`None` when it is accepted).
pub fn outside_duration(value: Duration, range: DurationRange) -> Option<String> {
    (!range.contains(value)).then(|| {
        format!(
            "must be within {range} (got {})",
            crate::config::HumanDuration(value)
        )
    })
}

/// Why a text of `len` bytes is refused by `range`.
pub fn bad_length(len: usize, range: Range<usize>) -> Option<String> {
    (!range.contains(len)).then(|| format!("must be {range} bytes long (got {len})"))
}

/// Why a list of `len` items is refused by `range`.
pub fn bad_count(len: usize, range: Range<usize>) -> Option<String> {
    (!range.contains(len)).then(|| format!("must have {range} entries (got {len})"))
}

/// The ranges of [`crate::config::limits`]: every number and length of an
/// endpoint, checked before anything is parsed (a 1 MB URL is refused for
/// its length, not sent to the broker to be refused there).
///
/// Long on purpose: one check per key, in the order of the struct, so a
/// new key's range is added where a reader looks for it.
pub fn check_endpoint(config: &EndpointConfig) -> Result<(), FieldError> {
    let fail = |field: String, why: Option<String>| match why {
        Some(message) => Err(FieldError::new(field, message)),
        None => Ok(()),
    };
    fail("url".into(), bad_length(config.url.len(), URL_LEN))?;
    fail(
        "events".into(),
        bad_count(config.events.len(), EVENT_PATTERNS),
    )?;
    for (i, pattern) in config.events.iter().enumerate() {
        fail(
            format!("events[{i}]"),
            bad_length(pattern.len(), ROUTE_NAME_LEN),
        )?;
    }
    for (field, names) in [("devices", &config.devices), ("groups", &config.groups)] {
        fail(field.into(), bad_count(names.len(), RESTRICTIONS))?;
        for (i, name) in names.iter().enumerate() {
            fail(
                format!("{field}[{i}]"),
                bad_length(name.len(), ROUTE_NAME_LEN),
            )?;
        }
    }
    if !config.tenant.is_empty() {
        fail(
            "tenant".into(),
            bad_length(config.tenant.len(), ROUTE_NAME_LEN),
        )?;
    }
    fail("headers".into(), bad_count(config.headers.len(), HEADERS))?;
    for (name, value) in &config.headers {
        fail(
            format!("headers.{name}"),
            bad_length(name.len(), HEADER_NAME_LEN),
        )?;
        fail(
            format!("headers.{name}"),
            bad_length(value.len(), HEADER_VALUE_LEN),
        )?;
    }
    for (field, secret) in [
        ("secret", &config.secret),
        ("previous_secret", &config.previous_secret),
    ] {
        if let Some(secret) = secret {
            fail(field.into(), bad_length(secret.len(), SECRET_LEN))?;
        }
    }
    if let Some(var) = &config.secret_env {
        fail("secret_env".into(), bad_length(var.len(), ENV_NAME_LEN))?;
    }
    if let Some(auth) = &config.auth {
        check_auth(auth)?;
    }
    if let Some(tls) = &config.tls {
        for (field, pem) in [
            ("tls.client_cert", &tls.client_cert),
            ("tls.client_key", &tls.client_key),
            ("tls.ca", &tls.ca),
        ] {
            if let Some(pem) = pem {
                fail(field.into(), bad_length(pem.len(), PEM_LEN))?;
            }
        }
    }
    if let Some(proxy) = &config.proxy {
        fail("proxy".into(), bad_length(proxy.len(), URL_LEN))?;
    }
    if let Some(rl) = &config.rate_limit {
        fail(
            "rate_limit.per_second".into(),
            outside(rl.per_second, RATE_PER_SECOND),
        )?;
        fail("rate_limit.burst".into(), outside(rl.burst, RATE_BURST))?;
    }
    fail(
        "max_concurrency".into(),
        outside(config.max_concurrency, MAX_CONCURRENCY),
    )?;
    if let Some(adaptive) = &config.adaptive_concurrency {
        check_adaptive(adaptive, config.max_concurrency)?;
    }
    fail("queue_size".into(), outside(config.queue_size, QUEUE_SIZE))?;
    fail(
        "batch.max_events".into(),
        outside(config.batch.max_events, BATCH_EVENTS),
    )?;
    fail(
        "batch.max_wait".into(),
        outside_duration(config.batch.max_wait.get(), BATCH_WAIT),
    )?;
    if let Some(t) = config.timeout {
        fail("timeout".into(), outside_duration(t.get(), REQUEST_TIMEOUT))?;
    }
    if let Some(pointer) = config.payload.as_ref().and_then(|p| p.pointer.as_ref()) {
        fail(
            "payload.pointer".into(),
            bad_length(pointer.len(), POINTER_LEN),
        )?;
    }
    if let Some(retry) = &config.retry {
        check_retry(retry)?;
    }
    Ok(())
}

/// The lengths of an endpoint's `auth`.
fn check_auth(auth: &super::AuthConfig) -> Result<(), FieldError> {
    let optional = |field: &str, value: &Option<String>, range: Range<usize>| match value {
        Some(v) => fail(field, bad_length(v.len(), range)),
        None => Ok(()),
    };
    if let Some(b) = &auth.basic {
        fail(
            "auth.basic.username",
            bad_length(b.username.len(), AUTH_NAME_LEN),
        )?;
        optional("auth.basic.password", &b.password, SECRET_LEN)?;
        optional("auth.basic.password_env", &b.password_env, ENV_NAME_LEN)?;
    }
    if let Some(b) = &auth.bearer {
        optional("auth.bearer.token", &b.token, BEARER_TOKEN_LEN)?;
        optional("auth.bearer.token_env", &b.token_env, ENV_NAME_LEN)?;
    }
    if let Some(o) = &auth.oauth2 {
        fail(
            "auth.oauth2.token_url",
            bad_length(o.token_url.len(), URL_LEN),
        )?;
        fail(
            "auth.oauth2.client_id",
            bad_length(o.client_id.len(), AUTH_NAME_LEN),
        )?;
        optional("auth.oauth2.client_secret", &o.client_secret, SECRET_LEN)?;
        optional(
            "auth.oauth2.client_secret_env",
            &o.client_secret_env,
            ENV_NAME_LEN,
        )?;
        optional("auth.oauth2.scope", &o.scope, OAUTH_PARAM_LEN)?;
        optional("auth.oauth2.audience", &o.audience, OAUTH_PARAM_LEN)?;
    }
    Ok(())
}

/// The ranges of an endpoint's `adaptive_concurrency`; its `initial` is
/// at most `max_concurrency` (the ceiling).
fn check_adaptive(
    adaptive: &super::AdaptiveConcurrencyConfig,
    max_concurrency: u32,
) -> Result<(), FieldError> {
    fail(
        "adaptive_concurrency.initial",
        outside(adaptive.initial, ADAPTIVE_INITIAL),
    )?;
    if adaptive.initial > max_concurrency {
        return Err(FieldError::new(
            "adaptive_concurrency.initial",
            format!(
                "must not exceed max_concurrency ({max_concurrency}), the ceiling of the adaptive limit (got {})",
                adaptive.initial
            ),
        ));
    }
    fail(
        "adaptive_concurrency.decrease_ratio",
        outside(adaptive.decrease_ratio, ADAPTIVE_DECREASE_RATIO),
    )?;
    fail(
        "adaptive_concurrency.ewma_alpha",
        outside(adaptive.ewma_alpha, ADAPTIVE_EWMA_ALPHA),
    )?;
    fail(
        "adaptive_concurrency.rtt_deviation_scale",
        outside(adaptive.rtt_deviation_scale, ADAPTIVE_RTT_DEVIATION_SCALE),
    )
}

/// The ranges of an endpoint's `retry` (the same as `[delivery]`'s).
fn check_retry(retry: &super::RetryConfig) -> Result<(), FieldError> {
    if let Some(n) = retry.max_attempts {
        fail("retry.max_attempts", outside(n, MAX_ATTEMPTS))?;
    }
    if let Some(b) = &retry.backoff {
        if let Some(d) = b.initial {
            fail(
                "retry.backoff.initial",
                outside_duration(d.get(), BACKOFF_INITIAL),
            )?;
        }
        if let Some(d) = b.max {
            fail("retry.backoff.max", outside_duration(d.get(), BACKOFF_MAX))?;
        }
        if let Some(f) = b.factor {
            fail("retry.backoff.factor", outside(f, BACKOFF_FACTOR))?;
        }
        if let Some(j) = b.jitter {
            fail("retry.backoff.jitter", outside(j, BACKOFF_JITTER))?;
        }
    }
    if let Some(list) = &retry.retry_on {
        fail("retry.retry_on", bad_count(list.len(), RETRY_ON))?;
    }
    Ok(())
}

/// `why` a field's value is refused, if it is, as the error naming `field`.
fn fail(field: &str, why: Option<String>) -> Result<(), FieldError> {
    match why {
        Some(message) => Err(FieldError::new(field, message)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_inclusive_and_refuse_nan() {
        assert!(RATE_PER_SECOND.contains(0.001));
        assert!(RATE_PER_SECOND.contains(1_000_000.0));
        assert!(!RATE_PER_SECOND.contains(1e-20));
        assert!(!RATE_PER_SECOND.contains(f64::NAN));
        assert!(!RATE_PER_SECOND.contains(f64::INFINITY));
        assert_eq!(outside(5u32, MAX_CONCURRENCY), None);
        assert_eq!(
            outside(0u32, MAX_CONCURRENCY).as_deref(),
            Some("must be within 1..=10000 (got 0)")
        );
    }

    #[test]
    fn durations_are_shown_in_human_units() {
        assert_eq!(
            outside_duration(Duration::from_secs(8 * DAY), RETRY_TIER).as_deref(),
            Some("must be within 10ms..=168h (got 192h)")
        );
        assert_eq!(outside_duration(Duration::from_secs(1), RETRY_TIER), None);
    }

    #[test]
    fn lengths_and_counts_read_as_such() {
        assert_eq!(
            bad_length(1_048_576, URL_LEN).as_deref(),
            Some("must be 1..=2048 bytes long (got 1048576)")
        );
        assert_eq!(
            bad_count(0, EVENT_PATTERNS).as_deref(),
            Some("must have 1..=256 entries (got 0)")
        );
    }

    #[test]
    fn absurd_floats_are_shown_as_typed() {
        assert_eq!(
            outside(1e-300, CLI_RATE).as_deref(),
            Some("must be within 0.001..=10000000 (got 1e-300)")
        );
        assert_eq!(
            outside(1e300, CLI_RATE).as_deref(),
            Some("must be within 0.001..=10000000 (got 1e300)")
        );
        assert_eq!(
            outside(0.0001, CLI_RATE).as_deref(),
            Some("must be within 0.001..=10000000 (got 0.0001)")
        );
    }
}
