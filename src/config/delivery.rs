//! `[delivery]`: how requests are made, retried and given up on, as plain
//! data with its defaults: timeouts, backoff, back-pressure, auto-disable
//! and the backlog of a disabled endpoint.
//!
//! Plain data: ranges are checked in [`super::limits`].

use serde::{Deserialize, Serialize};

use super::HumanDuration;

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
    /// When an endpoint that fails everything is disabled.
    pub auto_disable: AutoDisableConfig,
    /// What happens to the pending deliveries of a disabled endpoint.
    pub disabled_backlog: DisabledBacklogConfig,
    /// Egress proxy of every request (`http://host:port`, or `https://`;
    /// credentials may be given in the URL); an endpoint's `proxy`
    /// overrides it. Empty: none.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub proxy: String,
}

/// `[delivery.auto_disable]`: an endpoint whose every attempt failed for
/// `after` (an unbroken run of failures, measured by each instance from
/// the first failure of the run; any answer resets it) is disabled through
/// the endpoint store, with `disabled = {reason, at, cause = "failing"}`.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AutoDisableConfig {
    /// `false`: failures never disable an endpoint (410 Gone still does).
    pub enabled: bool,
    /// How long an endpoint must have failed every attempt.
    pub after: HumanDuration,
}

impl Default for AutoDisableConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            after: HumanDuration::from_secs(24 * 3600),
        }
    }
}

/// `[delivery.disabled_backlog]`: the deliveries of a disabled endpoint
/// (disabled through the API, in the file, or after failing; not after
/// 410 Gone) wait on a retry tier instead of being dead-lettered.
#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DisabledBacklogConfig {
    /// A kept delivery older than this (since its first attempt, or its
    /// first deferral when it never had one) is dead-lettered as
    /// `endpoint_disabled`.
    pub max_age: HumanDuration,
    /// How often kept deliveries come back to look whether their endpoint
    /// is enabled again: the longest retry tier not longer than this (the
    /// first tier when every tier is longer) holds them.
    pub recheck: HumanDuration,
}

impl Default for DisabledBacklogConfig {
    fn default() -> Self {
        Self {
            max_age: HumanDuration::from_secs(7 * 24 * 3600),
            recheck: HumanDuration::from_secs(600),
        }
    }
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
            auto_disable: AutoDisableConfig::default(),
            disabled_backlog: DisabledBacklogConfig::default(),
            proxy: String::new(),
        }
    }
}
