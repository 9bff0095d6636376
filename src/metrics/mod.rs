//! Prometheus metrics of SPEC §7: names, pre-registered handles, exporter.
//!
//! Owns metric names and labels. Stages hold the handles built here, so
//! recording on the hot path is an atomic add, never a label lookup or an
//! allocation per event.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// Metric names, in one place for the dashboard and its test.
pub mod names {
    /// Records consumed, by topic.
    pub const EVENTS_CONSUMED: &str = "hookstream_events_consumed_total";
    /// Records that could not be routed, by topic and reason.
    pub const EVENTS_INVALID: &str = "hookstream_events_invalid_total";
    /// Deliveries by endpoint and outcome.
    pub const DELIVERIES: &str = "hookstream_deliveries_total";
    /// HTTP responses by endpoint and status class.
    pub const HTTP_RESPONSES: &str = "hookstream_http_responses_total";
    /// Duration of the HTTP exchange.
    pub const DELIVERY_DURATION: &str = "hookstream_delivery_duration_seconds";
    /// First consume of the event to delivered (retries included; the
    /// event's own time is not used: device clocks drift).
    pub const END_TO_END: &str = "hookstream_end_to_end_seconds";
    /// Events held in memory.
    pub const INFLIGHT: &str = "hookstream_inflight_events";
    /// Deliveries of those events without a durable outcome yet (one per
    /// matched endpoint and deferral batch entry).
    pub const INFLIGHT_DELIVERIES: &str = "hookstream_inflight_deliveries";
    /// Consumer lag by topic and partition.
    pub const CONSUMER_LAG: &str = "hookstream_consumer_lag";
    /// How late retries are sent relative to their due time, by tier.
    pub const RETRY_DUE_LAG: &str = "hookstream_retry_due_lag_seconds";
    /// Dead letters by reason.
    pub const DLQ: &str = "hookstream_dlq_total";
    /// Requests delayed by an endpoint's rate limit.
    pub const RATE_LIMITED: &str = "hookstream_rate_limited_total";
    /// Endpoints by state.
    pub const ENDPOINTS: &str = "hookstream_endpoints";
    /// Partition offsets committed.
    pub const OFFSETS_COMMITTED: &str = "hookstream_offsets_committed_total";
    /// Fetch positions reset because they were out of range (retention
    /// removed records before they were consumed), by topic.
    pub const OFFSET_RESETS: &str = "hookstream_offset_resets_total";
    /// Records the consumer could not read (a batch librdkafka cannot
    /// decode), dead-lettered as `unreadable_record`, by topic.
    pub const UNREADABLE_RECORDS: &str = "hookstream_unreadable_records_total";
    /// Assigned partitions whose gate is open and whose fetch position has
    /// not moved for a while although records wait behind it.
    pub const PARTITIONS_STALLED: &str = "hookstream_partitions_stalled";
    /// Panics in an endpoint's sender (its deliveries in hand are
    /// dead-lettered as `internal_error`), by endpoint.
    pub const SENDER_PANICS: &str = "hookstream_sender_panics_total";
    /// Copies of a delivery found on the retry tiers (the same delivery
    /// written twice, after a partition was read again) and settled
    /// without sending.
    pub const RETRY_COPIES: &str = "hookstream_retry_copies_total";
}

/// Histogram buckets in seconds, 1 ms to 60 s.
pub const SECONDS_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];

/// Starts the `/metrics` HTTP listener.
pub fn install_exporter(listen: &str) -> Result<()> {
    let addr: SocketAddr = listen
        .parse()
        .with_context(|| format!("metrics.listen `{listen}` is not an address"))?;
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
        .context("configuring histogram buckets")?
        .install()
        .with_context(|| format!("starting the metrics listener on {listen}"))?;
    describe();
    Ok(())
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(names::EVENTS_CONSUMED, "Records consumed from input topics");
    describe_counter!(
        names::OFFSET_RESETS,
        "Fetch positions reset because retention removed records before they were consumed"
    );
    describe_counter!(
        names::SENDER_PANICS,
        "Panics in an endpoint's sender; what it held is dead-lettered as internal_error"
    );
    describe_counter!(
        names::UNREADABLE_RECORDS,
        "Records the consumer could not read (undecodable batches), dead-lettered as unreadable_record"
    );
    describe_counter!(
        names::RETRY_COPIES,
        "Copies of a delivery found on the retry tiers and settled without sending"
    );
    describe_gauge!(
        names::PARTITIONS_STALLED,
        "Assigned partitions that should be fetching and are not"
    );
    describe_counter!(
        names::EVENTS_INVALID,
        "Records dead-lettered as invalid_event"
    );
    describe_counter!(names::DELIVERIES, "Delivery outcomes per endpoint");
    describe_counter!(
        names::HTTP_RESPONSES,
        "HTTP responses per endpoint and class"
    );
    describe_histogram!(
        names::DELIVERY_DURATION,
        metrics::Unit::Seconds,
        "HTTP exchange duration"
    );
    describe_histogram!(
        names::END_TO_END,
        metrics::Unit::Seconds,
        "First consume of the event to delivered, retries included"
    );
    describe_gauge!(names::INFLIGHT, "Events held in memory");
    describe_gauge!(
        names::INFLIGHT_DELIVERIES,
        "Deliveries of the events held in memory without a durable outcome yet"
    );
    describe_counter!(names::DLQ, "Dead letters written");
    describe_counter!(names::RATE_LIMITED, "Requests delayed by rate limits");
    describe_counter!(names::OFFSETS_COMMITTED, "Partition offsets committed");
}

/// Per-endpoint handles. With `per_endpoint_labels = false` the endpoint
/// label is `"*"` for all, bounding series at huge endpoint counts.
#[derive(Debug, Clone)]
pub struct EndpointMetrics {
    /// outcome="delivered"
    pub delivered: Counter,
    /// outcome="retry_scheduled"
    pub retry_scheduled: Counter,
    /// outcome="dead_lettered"
    pub dead_lettered: Counter,
    /// outcome="deferred"
    pub deferred: Counter,
    /// class="2xx".."5xx", and "error" for no response
    pub responses: [Counter; 6],
    /// HTTP exchange duration.
    pub duration: Histogram,
    /// Rate-limit delays.
    pub rate_limited: Counter,
    /// End-to-end latency (shared by all endpoints).
    pub end_to_end: Histogram,
    /// Panics of the endpoint's sender.
    pub panics: Counter,
}

impl EndpointMetrics {
    /// Registers the handles of `endpoint_id`.
    pub fn new(endpoint_id: &str, per_endpoint_labels: bool) -> Self {
        let id = if per_endpoint_labels {
            endpoint_id.to_string()
        } else {
            "*".to_string()
        };
        let outcome =
            |o: &'static str| counter!(names::DELIVERIES, "endpoint" => id.clone(), "outcome" => o);
        let class = |c: &'static str| counter!(names::HTTP_RESPONSES, "endpoint" => id.clone(), "class" => c);
        Self {
            delivered: outcome("delivered"),
            retry_scheduled: outcome("retry_scheduled"),
            dead_lettered: outcome("dead_lettered"),
            deferred: outcome("deferred"),
            responses: [
                class("1xx"),
                class("2xx"),
                class("3xx"),
                class("4xx"),
                class("5xx"),
                class("error"),
            ],
            duration: histogram!(names::DELIVERY_DURATION, "endpoint" => id.clone()),
            rate_limited: counter!(names::RATE_LIMITED, "endpoint" => id.clone()),
            end_to_end: histogram!(names::END_TO_END),
            panics: counter!(names::SENDER_PANICS, "endpoint" => id),
        }
    }

    /// Counts a response (or `None` for no response).
    pub fn response(&self, status: Option<u16>) {
        let i = match status {
            Some(s @ 100..=599) => (s / 100 - 1) as usize,
            _ => 5,
        };
        self.responses[i].increment(1);
    }
}

/// Pipeline-wide handles.
#[derive(Debug, Clone)]
pub struct PipelineMetrics {
    /// In-flight events.
    pub inflight: Gauge,
    /// In-flight deliveries.
    pub inflight_deliveries: Gauge,
    /// Offsets committed.
    pub offsets_committed: Counter,
    /// Partitions found stalled at the last check.
    pub stalled: Gauge,
    /// Tier copies settled without sending.
    pub copies_skipped: Counter,
}

impl PipelineMetrics {
    /// Registers the handles.
    pub fn new() -> Self {
        Self {
            inflight: gauge!(names::INFLIGHT),
            inflight_deliveries: gauge!(names::INFLIGHT_DELIVERIES),
            offsets_committed: counter!(names::OFFSETS_COMMITTED),
            stalled: gauge!(names::PARTITIONS_STALLED),
            copies_skipped: counter!(names::RETRY_COPIES),
        }
    }
}

/// How late retries of `tier` are dispatched relative to their due time.
pub fn retry_due_lag(tier: &str) -> Histogram {
    histogram!(names::RETRY_DUE_LAG, "tier" => tier.to_string())
}

impl Default for PipelineMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Per-topic handles.
#[derive(Debug, Clone)]
pub struct TopicMetrics {
    /// Records consumed.
    pub consumed: Counter,
    /// Invalid records.
    pub invalid: Counter,
}

impl TopicMetrics {
    /// Registers the handles of `topic`.
    pub fn new(topic: &str) -> Self {
        Self {
            consumed: counter!(names::EVENTS_CONSUMED, "topic" => topic.to_string()),
            invalid: counter!(names::EVENTS_INVALID, "topic" => topic.to_string(), "reason" => "invalid_event"),
        }
    }
}

/// Counts a dead letter by reason (not per event on the happy path).
pub fn dead_letter(reason: &str) {
    counter!(names::DLQ, "reason" => reason.to_string()).increment(1);
}

/// Sets the endpoint-state gauge.
pub fn endpoints(enabled: usize, disabled: usize) {
    gauge!(names::ENDPOINTS, "state" => "enabled").set(enabled as f64);
    gauge!(names::ENDPOINTS, "state" => "disabled").set(disabled as f64);
}
