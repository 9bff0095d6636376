//! A per-endpoint circuit breaker: after repeated failures an endpoint is
//! left alone for a while, and what it cannot take is deferred to a retry
//! tier instead of being attempted.
//!
//! Lock-free (atomics): the dispatcher reads it for every delivery, the
//! sender's attempt tasks update it. Pure apart from the clock passed in.
//! The open interval doubles each time the circuit re-opens without a
//! success in between, up to a cap; one success closes it.

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::time::Duration;

/// Consecutive failures that open the circuit.
pub const FAILURE_THRESHOLD: u32 = 5;

/// How long a circuit first stays open, unless the configuration says
/// otherwise (see [`first_open_interval`]): long enough that what was
/// deferred during a short outage comes back once, after the probe, rather
/// than after every failed probe of a one-second rhythm; short enough for a
/// blip. Common breakers use the same (Hystrix's sleep window, Polly's break
/// duration).
pub const FIRST_OPEN_INTERVAL: Duration = Duration::from_secs(5);

/// The first open interval for a pipeline whose first retry tier is
/// `first_tier` and whose backoff is capped at `backoff_max`:
/// [`FIRST_OPEN_INTERVAL`], but not beyond the cap nor below the first tier.
pub fn first_open_interval(first_tier: Duration, backoff_max: Duration) -> Duration {
    FIRST_OPEN_INTERVAL.min(backoff_max).max(first_tier)
}

/// Circuit state of one endpoint.
#[derive(Debug)]
pub struct Circuit {
    consecutive_failures: AtomicU32,
    open_until_ms: AtomicI64,
    /// Length of the current open interval.
    interval_ms: AtomicI64,
    reopened: AtomicU32,
    base: Duration,
    max: Duration,
}

impl Circuit {
    /// A closed circuit that opens for `base`, doubling up to `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            consecutive_failures: AtomicU32::new(0),
            open_until_ms: AtomicI64::new(0),
            interval_ms: AtomicI64::new(0),
            reopened: AtomicU32::new(0),
            base,
            max: max.max(base),
        }
    }

    /// How long the circuit stays open from `now_ms`, or `None` when closed
    /// (or half-open: the next attempt is a probe).
    pub fn open_for(&self, now_ms: i64) -> Option<Duration> {
        let until = self.open_until_ms.load(Ordering::Acquire);
        (until > now_ms).then(|| Duration::from_millis((until - now_ms) as u64))
    }

    /// Whether it is closed with no failure counted: nothing in it is worth
    /// keeping.
    pub fn is_clean(&self) -> bool {
        self.consecutive_failures.load(Ordering::Acquire) == 0
            && self.open_until_ms.load(Ordering::Acquire) == 0
    }

    /// An attempt succeeded: close.
    pub fn record_success(&self) {
        self.consecutive_failures.store(0, Ordering::Release);
        self.reopened.store(0, Ordering::Release);
        self.open_until_ms.store(0, Ordering::Release);
    }

    /// An attempt failed in a way that says the endpoint is unwell (a
    /// transport failure or a 5xx/429). Returns true when this opened the
    /// circuit.
    pub fn record_failure(&self, now_ms: i64) -> bool {
        let failures = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
        if failures < FAILURE_THRESHOLD || self.open_for(now_ms).is_some() {
            return false;
        }
        let times = self.reopened.fetch_add(1, Ordering::AcqRel).min(20);
        let interval = self
            .base
            .saturating_mul(1u32 << times.min(20))
            .min(self.max);
        self.interval_ms
            .store(interval.as_millis() as i64, Ordering::Release);
        self.open_until_ms
            .store(now_ms + interval.as_millis() as i64, Ordering::Release);
        true
    }

    /// How long to defer a delivery while the circuit is open: one open
    /// interval from now, or `None` when the circuit is not open.
    ///
    /// Deliveries deferred during an open interval come back during the next
    /// one, spread as they arrived: a trickle after the probe rather than all
    /// at once (if the probe fails they are deferred again, so the trickle is
    /// what that costs). The delay is not random: due times on a tier
    /// partition then rise in the order records are written, so its gate
    /// releases them as they fall due instead of holding each one behind an
    /// earlier record due later.
    pub fn defer_for(&self, now_ms: i64) -> Option<Duration> {
        self.open_for(now_ms)?;
        let interval = self.interval_ms.load(Ordering::Acquire).max(0);
        Some(Duration::from_millis(interval as u64))
    }

    /// [`Circuit::defer_for`], reading the clock (`now_ms`) only when the
    /// circuit has opened since its last success: a closed circuit, what
    /// the dispatcher finds for nearly every delivery, costs one atomic
    /// load.
    pub fn defer_lazily(&self, now_ms: impl FnOnce() -> i64) -> Option<Duration> {
        if self.open_until_ms.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.defer_for(now_ms())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn circuit() -> Circuit {
        Circuit::new(Duration::from_secs(1), Duration::from_secs(8))
    }

    #[test]
    fn opens_after_the_threshold_and_closes_on_success() {
        let c = circuit();
        for _ in 0..FAILURE_THRESHOLD - 1 {
            assert!(!c.record_failure(0));
        }
        assert_eq!(c.open_for(0), None);
        assert!(c.record_failure(0));
        assert_eq!(c.open_for(0), Some(Duration::from_secs(1)));
        assert_eq!(c.open_for(400), Some(Duration::from_millis(600)));
        assert_eq!(c.open_for(1_000), None, "half-open after the interval");
        c.record_success();
        assert_eq!(c.open_for(0), None);
        assert!(!c.record_failure(2_000), "counting starts over");
    }

    #[test]
    fn a_closed_circuit_defers_nothing_without_reading_the_clock() {
        let c = circuit();
        let clock_read = std::cell::Cell::new(false);
        let now = |ms| {
            clock_read.set(true);
            ms
        };
        assert_eq!(c.defer_lazily(|| now(0)), None);
        for _ in 0..FAILURE_THRESHOLD - 1 {
            c.record_failure(0);
        }
        assert_eq!(c.defer_lazily(|| now(0)), None);
        assert!(!clock_read.get(), "closed: the clock is not read");
        c.record_failure(0);
        assert_eq!(c.defer_lazily(|| now(400)), Some(Duration::from_secs(1)));
        assert!(clock_read.get());
        assert_eq!(c.defer_lazily(|| now(1_000)), None, "half-open");
        c.record_success();
        clock_read.set(false);
        assert_eq!(c.defer_lazily(|| now(1_000)), None);
        assert!(!clock_read.get(), "closed again by a success");
    }

    #[test]
    fn failed_probes_double_the_interval_up_to_the_cap() {
        let c = circuit();
        for _ in 0..FAILURE_THRESHOLD {
            c.record_failure(0);
        }
        let mut now = 0;
        let mut intervals = Vec::new();
        for _ in 0..6 {
            now += c.open_for(now).unwrap().as_millis() as i64;
            assert!(c.record_failure(now), "a failed probe re-opens");
            intervals.push(c.open_for(now).unwrap().as_secs());
        }
        assert_eq!(intervals, [2, 4, 8, 8, 8, 8]);
    }

    #[test]
    fn deferrals_come_back_one_interval_later_in_the_order_they_were_made() {
        let c = circuit();
        assert_eq!(c.defer_for(0), None);
        for _ in 0..FAILURE_THRESHOLD {
            c.record_failure(0);
        }
        let dues: Vec<i64> = [0, 1, 400, 999]
            .iter()
            .map(|&now| now + c.defer_for(now).unwrap().as_millis() as i64)
            .collect();
        assert_eq!(
            dues,
            [1_000, 1_001, 1_400, 1_999],
            "spread over the next interval"
        );
        assert_eq!(c.defer_for(1_000), None, "half-open: nothing deferred");
        assert!(c.record_failure(1_000), "a failed probe re-opens");
        assert_eq!(c.defer_for(1_500), Some(Duration::from_secs(2)));
    }

    #[test]
    fn the_first_interval_stays_within_the_configured_range() {
        let s = Duration::from_secs;
        assert_eq!(first_open_interval(s(1), s(3600)), s(5), "defaults");
        assert_eq!(first_open_interval(Duration::from_millis(100), s(2)), s(2));
        assert_eq!(first_open_interval(s(10), s(3600)), s(10));
    }

    #[test]
    fn only_a_circuit_without_failures_is_clean() {
        let c = circuit();
        assert!(c.is_clean());
        c.record_failure(0);
        assert!(!c.is_clean(), "one failure is counted");
        c.record_success();
        assert!(c.is_clean());
        for _ in 0..FAILURE_THRESHOLD {
            c.record_failure(0);
        }
        assert!(!c.is_clean());
    }

    #[test]
    fn failures_while_open_do_not_extend_it() {
        let c = circuit();
        for _ in 0..FAILURE_THRESHOLD {
            c.record_failure(0);
        }
        assert!(!c.record_failure(500));
        assert_eq!(c.open_for(500), Some(Duration::from_millis(500)));
    }
}
