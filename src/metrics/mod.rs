//! Prometheus metrics: names, pre-registered handles, the `/metrics`
//! exporter. Every metric is listed in `docs/metrics.md`.
//!
//! Owns metric names and labels. Stages hold the handles built here, so
//! recording on the hot path is an atomic add, never a label lookup or an
//! allocation per event. Pipeline-wide and per-topic metrics go through the
//! `metrics` recorder; per-endpoint series ([`endpoint`]), consumer lag
//! ([`consumer_lag`]), process metrics and build info ([`process`]) are
//! kept and rendered here, so that they can be bounded and removed
//! ([`exposition`] serves both).

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Result;
use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

pub mod consumer_lag;
pub mod endpoint;
pub mod exposition;
pub mod process;
pub mod text;

pub use exposition::render;

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
    /// Deliveries held in device lines (`ordering = "per_device"`).
    pub const DEVICE_LINE_DELIVERIES: &str = "hookstream_device_line_deliveries";
    /// Device lines with a delivery under way or waiting.
    pub const DEVICE_LINES: &str = "hookstream_device_lines";
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
    /// Endpoints this instance disabled after they failed every attempt
    /// for `delivery.auto_disable.after`, by endpoint.
    pub const AUTO_DISABLED: &str = "hookstream_endpoint_auto_disabled_total";
    /// Requests an endpoint with `adaptive_concurrency` may have in flight
    /// now (the sum over the endpoints that share an `_other` or `*`
    /// series), by endpoint.
    pub const ENDPOINT_CONCURRENCY_LIMIT: &str = "hookstream_endpoint_concurrency_limit";
    /// Copies of a delivery found on the retry tiers (the same delivery
    /// written twice, after a partition was read again) and settled
    /// without sending.
    pub const RETRY_COPIES: &str = "hookstream_retry_copies_total";
    /// Records of the durable activity log (`<prefix>.attempts`) dropped:
    /// its buffer was full or the broker refused them.
    pub const ATTEMPTS_LOG_DROPPED: &str = "hookstream_attempts_log_dropped_total";
    /// Always 1; labels `version`, `librdkafka`, `arch`, `os`.
    pub const BUILD_INFO: &str = "hookstream_build_info";
    /// User and system CPU time of the process.
    pub const PROCESS_CPU: &str = "process_cpu_seconds_total";
    /// Resident memory of the process.
    pub const PROCESS_RESIDENT_MEMORY: &str = "process_resident_memory_bytes";
    /// Virtual memory of the process.
    pub const PROCESS_VIRTUAL_MEMORY: &str = "process_virtual_memory_bytes";
    /// Open file descriptors.
    pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
    /// Limit on open file descriptors.
    pub const PROCESS_MAX_FDS: &str = "process_max_fds";
    /// Start of the process, Unix seconds.
    pub const PROCESS_START_TIME: &str = "process_start_time_seconds";

    /// Every name above.
    pub const ALL: [&str; 31] = [
        EVENTS_CONSUMED,
        EVENTS_INVALID,
        DELIVERIES,
        HTTP_RESPONSES,
        DELIVERY_DURATION,
        END_TO_END,
        INFLIGHT,
        INFLIGHT_DELIVERIES,
        DEVICE_LINE_DELIVERIES,
        DEVICE_LINES,
        CONSUMER_LAG,
        RETRY_DUE_LAG,
        DLQ,
        RATE_LIMITED,
        ENDPOINTS,
        OFFSETS_COMMITTED,
        OFFSET_RESETS,
        UNREADABLE_RECORDS,
        PARTITIONS_STALLED,
        SENDER_PANICS,
        AUTO_DISABLED,
        ENDPOINT_CONCURRENCY_LIMIT,
        RETRY_COPIES,
        ATTEMPTS_LOG_DROPPED,
        BUILD_INFO,
        PROCESS_CPU,
        PROCESS_RESIDENT_MEMORY,
        PROCESS_VIRTUAL_MEMORY,
        PROCESS_OPEN_FDS,
        PROCESS_MAX_FDS,
        PROCESS_START_TIME,
    ];
}

/// Histogram buckets in seconds, 1 ms to 60 s.
pub const SECONDS_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
];

/// Dead-letter reasons with a fixed name, whose counters exist (at 0)
/// from the start so that alerts see their first increase. Responses
/// dead-lettered at once add `http_<status>` as they come.
pub const DLQ_REASONS: [&str; 8] = [
    "exhausted",
    "gone",
    "invalid_event",
    "unreadable_record",
    "internal_error",
    "endpoint_deleted",
    "endpoint_disabled",
    "destination_refused",
];

/// Starts the `/metrics` HTTP listener on `listen`, with at most 1000
/// endpoints labelled on their own (`[metrics] max_endpoint_series`'s
/// default). Returns the bound address.
pub fn install_exporter(listen: &str) -> Result<SocketAddr> {
    exposition::install(
        listen,
        crate::config::MetricsConfig::default().max_endpoint_series,
    )
}

/// Starts the `/metrics` HTTP listener as `[metrics]` says (`listen`,
/// `max_endpoint_series`). Returns the bound address.
pub fn install(config: &crate::config::MetricsConfig) -> Result<SocketAddr> {
    exposition::install(&config.listen, config.max_endpoint_series)
}

/// Help texts of the families the `metrics` recorder renders (the others
/// carry theirs where they are rendered), and their series that exist
/// before anything happened.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        names::EVENTS_CONSUMED,
        "Records consumed from input topics, by topic"
    );
    describe_counter!(
        names::EVENTS_INVALID,
        "Records dead-lettered as invalid_event, by topic"
    );
    describe_histogram!(
        names::END_TO_END,
        metrics::Unit::Seconds,
        "First consume of the event to delivered, retries included, in seconds"
    );
    describe_histogram!(
        names::RETRY_DUE_LAG,
        metrics::Unit::Seconds,
        "How late retries are dispatched after their due time, by retry tier, in seconds"
    );
    describe_gauge!(names::INFLIGHT, "Events held in memory");
    describe_gauge!(
        names::INFLIGHT_DELIVERIES,
        "Deliveries of the events held in memory without a durable outcome yet"
    );
    describe_gauge!(
        names::DEVICE_LINE_DELIVERIES,
        "Deliveries of per-device ordered endpoints held in device lines (under way or waiting)"
    );
    describe_gauge!(
        names::DEVICE_LINES,
        "Devices with a delivery under way or waiting in a line"
    );
    describe_counter!(names::DLQ, "Dead letters written, by reason");
    describe_gauge!(
        names::ENDPOINTS,
        "Endpoints in this instance's index, by state (enabled, disabled)"
    );
    describe_counter!(
        names::OFFSETS_COMMITTED,
        "Partition offsets committed (one per partition per commit)"
    );
    describe_counter!(
        names::OFFSET_RESETS,
        "Fetch positions reset because retention removed records before they were consumed, by topic"
    );
    describe_counter!(
        names::UNREADABLE_RECORDS,
        "Records the consumer could not read (undecodable batches), dead-lettered as unreadable_record, by topic"
    );
    describe_gauge!(
        names::PARTITIONS_STALLED,
        "Assigned partitions that should be fetching and are not"
    );
    describe_counter!(
        names::RETRY_COPIES,
        "Copies of a delivery found on the retry tiers and settled without sending"
    );
    describe_counter!(
        names::ATTEMPTS_LOG_DROPPED,
        "Records of the durable activity log dropped (buffer full or refused by the broker)"
    );
    for reason in DLQ_REASONS {
        counter!(names::DLQ, "reason" => reason).increment(0);
    }
}

/// Removes the per-endpoint series of deleted endpoints (see
/// [`endpoint::EndpointSeriesTable::forget`]).
pub fn forget_endpoints(ids: &[&str]) {
    if let Some(e) = exposition::installed() {
        e.endpoints.forget(ids);
    }
}

/// Per-endpoint handles. With `per_endpoint_labels = false` the endpoint
/// label is `"*"` for all, bounding series at huge endpoint counts; with
/// it, endpoints beyond `[metrics] max_endpoint_series` share the
/// `endpoint="_other"` series ([`endpoint::OTHER`]). Before the exporter is
/// installed the handles record nothing.
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
    /// class="1xx".."5xx", and "error" for no response
    pub responses: [Counter; 6],
    /// HTTP exchange duration.
    pub duration: Histogram,
    /// Rate-limit delays.
    pub rate_limited: Counter,
    /// End-to-end latency (shared by all endpoints).
    pub end_to_end: Histogram,
    /// Panics of the endpoint's sender.
    pub panics: Counter,
    /// Times this instance disabled the endpoint after it failed for
    /// `delivery.auto_disable.after`.
    pub auto_disabled: Counter,
    /// The series' adaptive concurrency gauge, and the flag that puts it
    /// in the exposition (see [`adaptive_limit`](Self::adaptive_limit)).
    concurrency_limit: Option<(Gauge, Arc<std::sync::atomic::AtomicBool>)>,
}

impl EndpointMetrics {
    /// The handles of `endpoint_id` (registered on first use).
    pub fn new(endpoint_id: &str, per_endpoint_labels: bool) -> Self {
        let Some(exposition) = exposition::installed() else {
            return Self {
                delivered: Counter::noop(),
                retry_scheduled: Counter::noop(),
                dead_lettered: Counter::noop(),
                deferred: Counter::noop(),
                responses: std::array::from_fn(|_| Counter::noop()),
                duration: Histogram::noop(),
                rate_limited: Counter::noop(),
                end_to_end: Histogram::noop(),
                panics: Counter::noop(),
                auto_disabled: Counter::noop(),
                concurrency_limit: None,
            };
        };
        let label = if per_endpoint_labels {
            endpoint_id
        } else {
            "*"
        };
        let s = exposition.endpoints.series(label);
        let c = |a: &Arc<std::sync::atomic::AtomicU64>| Counter::from_arc(Arc::clone(a));
        Self {
            delivered: c(&s.outcomes[0]),
            retry_scheduled: c(&s.outcomes[1]),
            dead_lettered: c(&s.outcomes[2]),
            deferred: c(&s.outcomes[3]),
            responses: std::array::from_fn(|i| c(&s.classes[i])),
            duration: Histogram::from_arc(Arc::clone(&s.duration)),
            rate_limited: c(&s.rate_limited),
            end_to_end: histogram!(names::END_TO_END),
            panics: c(&s.panics),
            auto_disabled: c(&s.auto_disabled),
            concurrency_limit: Some((
                Gauge::from_arc(Arc::clone(&s.concurrency_limit)),
                Arc::clone(&s.adaptive),
            )),
        }
    }

    /// The `hookstream_endpoint_concurrency_limit` gauge of an endpoint
    /// with adaptive concurrency: its sender adds its limit's changes (and
    /// takes its limit back when it is dropped), so a series shared by
    /// several endpoints shows their sum. Asking for it puts the series in
    /// the exposition; endpoints with a fixed limit never do.
    pub fn adaptive_limit(&self) -> Gauge {
        match &self.concurrency_limit {
            Some((gauge, shown)) => {
                shown.store(true, std::sync::atomic::Ordering::Relaxed);
                gauge.clone()
            }
            None => Gauge::noop(),
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
    /// Deliveries held in device lines.
    pub line_deliveries: Gauge,
    /// Device lines.
    pub lines: Gauge,
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
            line_deliveries: gauge!(names::DEVICE_LINE_DELIVERIES),
            lines: gauge!(names::DEVICE_LINES),
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
    /// Registers the handles of `topic` (input topics and retry tiers).
    pub fn new(topic: &str) -> Self {
        // Counted elsewhere (librdkafka's callbacks, the unreadable-record
        // path); registered here at 0 so that alerts see their first
        // increase.
        counter!(names::OFFSET_RESETS, "topic" => topic.to_string()).increment(0);
        counter!(names::UNREADABLE_RECORDS, "topic" => topic.to_string()).increment(0);
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
