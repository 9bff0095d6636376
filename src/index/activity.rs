//! Per-endpoint activity: the recent attempts (a bounded ring in memory),
//! counts by outcome and a latency histogram, for the management API's
//! `attempts` and `stats` routes and the demo's table.
//!
//! Pure bookkeeping; no I/O. Bounded whatever the traffic and however many
//! endpoints: each ring keeps its newest [`RING_FLOOR`] attempts, and grows
//! towards [`RING_CAPACITY`] only while the records kept by all endpoints
//! sharing a [`RecordBudget`] stay within it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::core::SourceRef;

/// Most recent attempts kept per endpoint.
pub const RING_CAPACITY: usize = 200;

/// Recent attempts every endpoint keeps, whatever the budget.
pub const RING_FLOOR: usize = 5;

/// Attempt records kept across all endpoints of a registry before rings
/// stop growing past [`RING_FLOOR`]: about 9 MiB (a record takes ~370
/// bytes with its text; 100 000 of them were a tenth of the service's
/// memory in bench (i)). 200 records for each of 100 000 endpoints would
/// be 7 GiB. The durable activity log keeps every attempt.
pub const RETAINED_RECORDS: usize = 25_000;

/// How many attempt records the rings sharing it may keep in total.
#[derive(Debug)]
pub struct RecordBudget {
    retained: AtomicUsize,
    limit: usize,
}

impl RecordBudget {
    /// A budget of `limit` records.
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            retained: AtomicUsize::new(0),
            limit,
        })
    }

    /// Records kept now.
    pub fn retained(&self) -> usize {
        self.retained.load(Ordering::Relaxed)
    }

    /// Takes room for one more record if the budget has it.
    fn try_take(&self) -> bool {
        self.retained
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .is_ok()
    }
}

/// What happened to a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// 2xx.
    Delivered,
    /// Will be tried again from a retry tier.
    RetryScheduled,
    /// Written to the DLQ.
    DeadLettered,
    /// Moved to a retry tier without an attempt.
    Deferred,
}

impl Outcome {
    fn index(self) -> usize {
        self as usize
    }

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::RetryScheduled => "retry_scheduled",
            Self::DeadLettered => "dead_lettered",
            Self::Deferred => "deferred",
        }
    }
}

/// One attempt as the API shows it, and as the durable activity log
/// (`<prefix>.attempts`, one JSON record per delivery attempted) stores it.
/// Written as its [`AttemptLine`], so the JSON has one shape.
#[derive(Debug, Clone, Deserialize, PartialEq, JsonSchema)]
pub struct AttemptRecord {
    /// Unix ms of the attempt.
    pub time_ms: i64,
    /// Endpoint id.
    #[serde(default)]
    pub endpoint: String,
    /// Event id (ids joined by `,` for a batch in this instance's ring).
    pub event_id: String,
    /// Event type (`batch` for a batch of several types).
    #[serde(default)]
    pub event_type: String,
    /// Delivery id sent as `webhook-id`.
    pub webhook_id: String,
    /// Attempt number (1 = first).
    pub attempt: u32,
    /// HTTP status, if a response arrived.
    pub status: Option<u16>,
    /// What followed: `dead_lettered` with reason `exhausted` for the last
    /// attempt of a delivery out of attempts or retry window.
    pub outcome: Outcome,
    /// Why it was dead-lettered (`exhausted`, `client_error`, `gone`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Duration of the HTTP exchange.
    pub latency_ms: f64,
    /// Error text (empty on success).
    pub error: String,
    /// Where the event was first consumed, `topic/partition/offset` (read
    /// again for `?payload=true`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub source: String,
}

/// An [`AttemptRecord`] borrowed, as the durable activity log and the API
/// write it (the record's JSON is this) and the ring takes it: without
/// copying the attempt's text for each delivery of a batch (that copy was a
/// fifth of the delivery workers' CPU in bench (b)), nor into new strings
/// for the ring on every attempt.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct AttemptLine<'a> {
    /// Unix ms of the attempt.
    pub time_ms: i64,
    /// Endpoint id.
    pub endpoint: &'a str,
    /// Event id.
    pub event_id: &'a str,
    /// Event type.
    pub event_type: &'a str,
    /// Delivery id sent as `webhook-id`.
    pub webhook_id: &'a str,
    /// Attempt number (1 = first).
    pub attempt: u32,
    /// HTTP status, if a response arrived.
    pub status: Option<u16>,
    /// What followed.
    pub outcome: Outcome,
    /// Why it was dead-lettered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    /// Duration of the HTTP exchange.
    pub latency_ms: f64,
    /// Error text (empty on success).
    pub error: &'a str,
    /// Where the event was first consumed, written `topic/partition/offset`
    /// (a kept header as it is).
    #[serde(
        skip_serializing_if = "SourceRef::is_empty",
        serialize_with = "source_as_text"
    )]
    pub source: SourceRef<'a>,
}

/// Serialises a source as its text (see [`SourceRef::write_text`]).
fn source_as_text<S: serde::Serializer>(
    source: &SourceRef<'_>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&source.text())
}

impl Serialize for AttemptRecord {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        AttemptLine::from(self).serialize(serializer)
    }
}

impl From<&AttemptLine<'_>> for AttemptRecord {
    fn from(l: &AttemptLine<'_>) -> Self {
        Self {
            time_ms: l.time_ms,
            endpoint: l.endpoint.to_string(),
            event_id: l.event_id.to_string(),
            event_type: l.event_type.to_string(),
            webhook_id: l.webhook_id.to_string(),
            attempt: l.attempt,
            status: l.status,
            outcome: l.outcome,
            reason: l.reason.map(str::to_string),
            latency_ms: l.latency_ms,
            error: l.error.to_string(),
            source: l.source.text(),
        }
    }
}

impl AttemptRecord {
    /// Becomes `l`, reusing this record's texts' memory.
    fn overwrite(&mut self, l: &AttemptLine<'_>) {
        self.time_ms = l.time_ms;
        overwrite(&mut self.endpoint, l.endpoint);
        overwrite(&mut self.event_id, l.event_id);
        overwrite(&mut self.event_type, l.event_type);
        overwrite(&mut self.webhook_id, l.webhook_id);
        self.attempt = l.attempt;
        self.status = l.status;
        self.outcome = l.outcome;
        match (&mut self.reason, l.reason) {
            (Some(kept), Some(reason)) => overwrite(kept, reason),
            (kept, reason) => *kept = reason.map(str::to_string),
        }
        self.latency_ms = l.latency_ms;
        overwrite(&mut self.error, l.error);
        refill(&mut self.source, |kept| l.source.write_text(kept));
    }
}

/// Makes `kept` hold `text` (see [`refill`]).
fn overwrite(kept: &mut String, text: &str) {
    refill(kept, |kept| kept.push_str(text));
}

/// Makes `kept` hold what `write` appends, in its own memory; memory over
/// four times what the text needs (a batch's ids, a long error) is given
/// back, kept no longer than the record that needed it.
fn refill(kept: &mut String, write: impl FnOnce(&mut String)) {
    kept.clear();
    write(kept);
    let enough = kept.len().max(64);
    if kept.capacity() > enough * 4 {
        kept.shrink_to(enough);
    }
}

impl<'a> From<&'a AttemptRecord> for AttemptLine<'a> {
    fn from(r: &'a AttemptRecord) -> Self {
        Self {
            time_ms: r.time_ms,
            endpoint: &r.endpoint,
            event_id: &r.event_id,
            event_type: &r.event_type,
            webhook_id: &r.webhook_id,
            attempt: r.attempt,
            status: r.status,
            outcome: r.outcome,
            reason: r.reason.as_deref(),
            latency_ms: r.latency_ms,
            error: &r.error,
            source: SourceRef::Kept(r.source.as_bytes()),
        }
    }
}

/// Upper bounds (ms) of the latency histogram buckets.
const BUCKETS_MS: [f64; 24] = [
    1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0,
    750.0, 1_000.0, 2_000.0, 5_000.0, 10_000.0, 20_000.0, 30_000.0, 60_000.0,
];

/// Counts and latency percentiles of one endpoint.
#[derive(Debug, Clone, Serialize, PartialEq, JsonSchema)]
pub struct ActivityStats {
    /// HTTP attempts made.
    pub attempts: u64,
    /// Deliveries by outcome.
    pub delivered: u64,
    /// Retries scheduled.
    pub retry_scheduled: u64,
    /// Dead letters.
    pub dead_lettered: u64,
    /// Deferrals.
    pub deferred: u64,
    /// Latency percentiles of the HTTP exchange (bucket upper bounds, ms;
    /// null before the first answer).
    #[schemars(extend("nullable" = true))]
    pub latency_p50_ms: f64,
    /// 90th percentile.
    #[schemars(extend("nullable" = true))]
    pub latency_p90_ms: f64,
    /// 99th percentile.
    #[schemars(extend("nullable" = true))]
    pub latency_p99_ms: f64,
}

/// Activity of one endpoint.
#[derive(Debug)]
pub struct EndpointActivity {
    ring: Mutex<VecDeque<AttemptRecord>>,
    /// Shared with the other endpoints' rings.
    budget: Arc<RecordBudget>,
    outcomes: [AtomicU64; 4],
    attempts: AtomicU64,
    /// 32-bit counts (one per endpoint, 100 000 endpoints), halved
    /// together before any overflows: percentiles need only proportions.
    latency: [AtomicU32; BUCKETS_MS.len() + 1],
}

/// A latency bucket at this count halves them all.
const HALVE_AT: u32 = 1 << 31;

impl Default for EndpointActivity {
    /// Activity with a budget of its own of [`RETAINED_RECORDS`].
    fn default() -> Self {
        Self::new(RecordBudget::new(RETAINED_RECORDS))
    }
}

impl Drop for EndpointActivity {
    fn drop(&mut self) {
        let kept = match self.ring.get_mut() {
            Ok(r) => r.len(),
            Err(poisoned) => poisoned.into_inner().len(),
        };
        self.budget.retained.fetch_sub(kept, Ordering::Relaxed);
    }
}

impl EndpointActivity {
    /// Activity whose ring grows past [`RING_FLOOR`] within `budget`.
    pub fn new(budget: Arc<RecordBudget>) -> Self {
        Self {
            ring: Mutex::new(VecDeque::new()),
            budget,
            outcomes: Default::default(),
            attempts: AtomicU64::new(0),
            latency: Default::default(),
        }
    }

    /// Records an HTTP attempt and its outcome. Once the ring is full, the
    /// record it lets go of is written over (its texts' memory reused), so
    /// a busy endpoint's attempt allocates nothing here.
    pub fn record_attempt(&self, record: &AttemptLine<'_>) {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        let bucket = BUCKETS_MS
            .iter()
            .position(|b| record.latency_ms <= *b)
            .unwrap_or(BUCKETS_MS.len());
        if self.latency[bucket].fetch_add(1, Ordering::Relaxed) >= HALVE_AT {
            self.halve_latency_counts();
        }
        let mut ring = crate::core::lock(&self.ring);
        let grow = if ring.len() < RING_FLOOR {
            self.budget.retained.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            ring.len() < RING_CAPACITY && self.budget.try_take()
        };
        if !grow && let Some(oldest) = ring.front_mut() {
            // Written in place, then made the newest: one record moved
            // (onto itself once the ring is at its capacity), not two.
            oldest.overwrite(record);
            ring.rotate_left(1);
            return;
        }
        if ring.len() == ring.capacity() {
            // Grows one record at a time at first: most of 100 000 endpoints
            // see a few attempts, and the ring is per endpoint.
            let len = ring.len();
            ring.reserve_exact(len.clamp(1, RING_CAPACITY - len));
        }
        ring.push_back(AttemptRecord::from(record));
    }

    /// Halves every latency count, keeping their proportions. A count
    /// racing with it may lose an increment; one in two billion.
    fn halve_latency_counts(&self) {
        for count in &self.latency {
            let _ = count.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| Some(n / 2));
        }
    }

    /// Counts `n` deliveries with `outcome`.
    pub fn count(&self, outcome: Outcome, n: u64) {
        self.outcomes[outcome.index()].fetch_add(n, Ordering::Relaxed);
    }

    /// The most recent attempts, newest first.
    pub fn recent(&self, limit: usize) -> Vec<AttemptRecord> {
        let ring = crate::core::lock(&self.ring);
        ring.iter().rev().take(limit).cloned().collect()
    }

    /// Counts and percentiles.
    pub fn stats(&self) -> ActivityStats {
        let counts: Vec<u64> = self
            .latency
            .iter()
            .map(|c| u64::from(c.load(Ordering::Relaxed)))
            .collect();
        let total: u64 = counts.iter().sum();
        let pct = |p: f64| -> f64 {
            if total == 0 {
                return 0.0;
            }
            let target = (total as f64 * p).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (i, c) in counts.iter().enumerate() {
                seen += c;
                if seen >= target {
                    return BUCKETS_MS.get(i).copied().unwrap_or(f64::INFINITY);
                }
            }
            f64::INFINITY
        };
        let outcome = |o: Outcome| self.outcomes[o.index()].load(Ordering::Relaxed);
        ActivityStats {
            attempts: self.attempts.load(Ordering::Relaxed),
            delivered: outcome(Outcome::Delivered),
            retry_scheduled: outcome(Outcome::RetryScheduled),
            dead_lettered: outcome(Outcome::DeadLettered),
            deferred: outcome(Outcome::Deferred),
            latency_p50_ms: pct(0.50),
            latency_p90_ms: pct(0.90),
            latency_p99_ms: pct(0.99),
        }
    }
}

#[cfg(test)]
mod tests;
