//! Per-endpoint activity: the recent attempts (a bounded ring in memory),
//! counts by outcome and a latency histogram, for the management API's
//! `attempts` and `stats` routes and the demo's table.
//!
//! Pure bookkeeping; no I/O. Bounded whatever the traffic.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Recent attempts kept per endpoint.
pub const RING_CAPACITY: usize = 200;

/// What happened to a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
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
    const ALL: [Outcome; 4] = [
        Self::Delivered,
        Self::RetryScheduled,
        Self::DeadLettered,
        Self::Deferred,
    ];

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

/// One attempt as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct AttemptRecord {
    /// Unix ms of the attempt.
    pub time_ms: i64,
    /// Event id.
    pub event_id: String,
    /// Delivery id sent as `webhook-id`.
    pub webhook_id: String,
    /// Attempt number (1 = first).
    pub attempt: u32,
    /// HTTP status, if a response arrived.
    pub status: Option<u16>,
    /// What followed.
    pub outcome: Outcome,
    /// Duration of the HTTP exchange.
    pub latency_ms: f64,
    /// Error text (empty on success).
    pub error: String,
}

/// Upper bounds (ms) of the latency histogram buckets.
const BUCKETS_MS: [f64; 24] = [
    1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 50.0, 75.0, 100.0, 150.0, 200.0, 300.0, 500.0,
    750.0, 1_000.0, 2_000.0, 5_000.0, 10_000.0, 20_000.0, 30_000.0, 60_000.0,
];

/// Counts and latency percentiles of one endpoint.
#[derive(Debug, Clone, Serialize, PartialEq)]
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
    /// Latency percentiles of the HTTP exchange (bucket upper bounds, ms).
    pub latency_p50_ms: f64,
    /// 90th percentile.
    pub latency_p90_ms: f64,
    /// 99th percentile.
    pub latency_p99_ms: f64,
}

/// Activity of one endpoint.
#[derive(Debug, Default)]
pub struct EndpointActivity {
    ring: Mutex<VecDeque<AttemptRecord>>,
    outcomes: [AtomicU64; 4],
    attempts: AtomicU64,
    latency: [AtomicU64; BUCKETS_MS.len() + 1],
}

impl EndpointActivity {
    /// Records an HTTP attempt and its outcome.
    pub fn record_attempt(&self, record: AttemptRecord) {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        let bucket = BUCKETS_MS
            .iter()
            .position(|b| record.latency_ms <= *b)
            .unwrap_or(BUCKETS_MS.len());
        self.latency[bucket].fetch_add(1, Ordering::Relaxed);
        let mut ring = match self.ring.lock() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        if ring.len() == RING_CAPACITY {
            ring.pop_front();
        } else if ring.len() == ring.capacity() {
            // Grows one record at a time at first: most of 100 000 endpoints
            // see a few attempts, and the ring is per endpoint.
            let len = ring.len();
            ring.reserve_exact(len.clamp(1, RING_CAPACITY - len));
        }
        ring.push_back(record);
    }

    /// Counts `n` deliveries with `outcome`.
    pub fn count(&self, outcome: Outcome, n: u64) {
        self.outcomes[outcome.index()].fetch_add(n, Ordering::Relaxed);
    }

    /// The most recent attempts, newest first.
    pub fn recent(&self, limit: usize) -> Vec<AttemptRecord> {
        let ring = match self.ring.lock() {
            Ok(r) => r,
            Err(poisoned) => poisoned.into_inner(),
        };
        ring.iter().rev().take(limit).cloned().collect()
    }

    /// Counts and percentiles.
    pub fn stats(&self) -> ActivityStats {
        let counts: Vec<u64> = self
            .latency
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
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

    /// Outcome counts, for progress displays.
    pub fn outcome_counts(&self) -> [(Outcome, u64); 4] {
        Outcome::ALL.map(|o| (o, self.outcomes[o.index()].load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: usize, latency_ms: f64) -> AttemptRecord {
        AttemptRecord {
            time_ms: i as i64,
            event_id: format!("e{i}"),
            webhook_id: format!("msg_{i}"),
            attempt: 1,
            status: Some(200),
            outcome: Outcome::Delivered,
            latency_ms,
            error: String::new(),
        }
    }

    #[test]
    fn the_ring_is_bounded_and_newest_first() {
        let a = EndpointActivity::default();
        for i in 0..RING_CAPACITY + 50 {
            a.record_attempt(rec(i, 1.0));
        }
        let recent = a.recent(1000);
        assert_eq!(recent.len(), RING_CAPACITY);
        assert_eq!(recent[0].event_id, format!("e{}", RING_CAPACITY + 49));
        assert_eq!(a.recent(3).len(), 3);
        assert_eq!(a.stats().attempts, (RING_CAPACITY + 50) as u64);
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let a = EndpointActivity::default();
        for _ in 0..90 {
            a.record_attempt(rec(0, 4.0));
        }
        for _ in 0..9 {
            a.record_attempt(rec(0, 120.0));
        }
        a.record_attempt(rec(0, 4_000.0));
        let s = a.stats();
        assert_eq!(s.latency_p50_ms, 5.0);
        assert_eq!(s.latency_p90_ms, 5.0);
        assert_eq!(s.latency_p99_ms, 150.0);
        a.count(Outcome::Delivered, 3);
        a.count(Outcome::Deferred, 1);
        assert_eq!((a.stats().delivered, a.stats().deferred), (3, 1));
    }
}
