//! Whole-configuration checks run once at load: every key's range (through
//! [`super::limits`]), names of topics and endpoints, references between
//! sections. Errors name the offending key.

use super::limits::*;
use super::*;

impl Config {
    /// Checks what plain data can show by itself: ranges ([`limits`]),
    /// references between keys, names. What needs a stage (extraction
    /// rules, endpoint URLs, destinations and secrets) is checked where the
    /// stages are wired, once: `pipeline::check_config`.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        check_kafka(&self.kafka)?;
        check_topics(&self.topics)?;
        check_delivery(&self.delivery)?;
        check_api_and_metrics(self)?;
        self.check_references()
    }

    /// Sources name consumed topics; endpoint ids are unique, and each
    /// endpoint's ranges hold.
    fn check_references(&self) -> Result<(), ConfigError> {
        for (i, source) in self.sources.iter().enumerate() {
            if !self.kafka.topics.contains(&source.topic) {
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
}

/// `[kafka]`: brokers, group, input topics and their names, intervals.
fn check_kafka(k: &KafkaConfig) -> Result<(), ConfigError> {
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
    Ok(())
}

/// `[topics]`: prefix, retry tiers (strictly increasing), partitions.
fn check_topics(t: &TopicsConfig) -> Result<(), ConfigError> {
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
    Ok(())
}

/// `[delivery]`: timeouts, backoff, windows, back-pressure, proxy, user agent.
fn check_delivery(d: &DeliveryConfig) -> Result<(), ConfigError> {
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
        "delivery.auto_disable.after",
        outside_duration(d.auto_disable.after.get(), AUTO_DISABLE_AFTER),
    )?;
    fail(
        "delivery.disabled_backlog.max_age",
        outside_duration(d.disabled_backlog.max_age.get(), BACKLOG_MAX_AGE),
    )?;
    fail(
        "delivery.disabled_backlog.recheck",
        outside_duration(d.disabled_backlog.recheck.get(), BACKLOG_RECHECK),
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
    if !d.proxy.is_empty() {
        fail("delivery.proxy", bad_length(d.proxy.len(), URL_LEN))?;
        fail("delivery.proxy", egress::proxy_url_problem(&d.proxy, true))?;
    }
    if http::HeaderValue::from_str(&d.user_agent).is_err() {
        return Err(ConfigError::new(
            "delivery.user_agent",
            "has characters a header cannot carry",
        ));
    }
    Ok(())
}

/// `[api]` and `[metrics]`: limits, rotation grace, one source per token.
fn check_api_and_metrics(config: &Config) -> Result<(), ConfigError> {
    fail(
        "api.rotation_grace",
        outside_duration(config.api.rotation_grace.get(), ROTATION_GRACE),
    )?;
    config.api.validate_limits()?;
    fail(
        "metrics.max_endpoint_series",
        outside(config.metrics.max_endpoint_series, MAX_ENDPOINT_SERIES),
    )?;
    for (i, token) in config.api.tokens.iter().enumerate() {
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
    Ok(())
}

/// `why` a key's value is refused, if it is, as the error naming `key`.
fn fail(key: &str, why: Option<String>) -> Result<(), ConfigError> {
    match why {
        Some(message) => Err(ConfigError::new(key, message)),
        None => Ok(()),
    }
}

fn valid_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}
