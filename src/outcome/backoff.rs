//! When to try again: exponential backoff with jitter, the retry window, and
//! which delay tier a wanted delay goes to.
//!
//! Pure arithmetic; randomness comes in as a number so tests are exact.

use std::time::Duration;

use crate::config::{BackoffConfig, BackoffOverride, HumanDuration};

/// Backoff policy of `[delivery]`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    initial: Duration,
    factor: f64,
    max: Duration,
    jitter: f64,
}

impl Backoff {
    /// The policy of `config`.
    pub fn new(config: &BackoffConfig) -> Self {
        Self {
            initial: config.initial.get(),
            factor: config.factor,
            max: config.max.get(),
            jitter: config.jitter,
        }
    }

    /// Delay after `attempts` counted attempts (1 = after the first failure),
    /// with `unit` in `0.0..1.0` choosing the jitter (0.5 = none).
    pub fn delay(&self, attempts: u32, unit: f64) -> Duration {
        let exponent = attempts.saturating_sub(1).min(64) as i32;
        let base = self.initial.as_secs_f64() * self.factor.powi(exponent);
        let capped = base.min(self.max.as_secs_f64());
        let spread = 1.0 + self.jitter * (unit.clamp(0.0, 1.0) * 2.0 - 1.0);
        let seconds = (capped * spread).clamp(0.0, self.max.as_secs_f64());
        Duration::try_from_secs_f64(seconds).unwrap_or(self.max)
    }

    /// The cap of any delay, `Retry-After` included.
    pub fn max(&self) -> Duration {
        self.max
    }

    /// The delay before the second attempt.
    pub fn initial(&self) -> Duration {
        self.initial
    }

    /// This policy with what `o` sets replaced.
    pub fn overridden(&self, o: &BackoffOverride) -> Self {
        Self {
            initial: o.initial.map_or(self.initial, |d| d.get()),
            factor: o.factor.unwrap_or(self.factor),
            max: o.max.map_or(self.max, |d| d.get()),
            jitter: o.jitter.unwrap_or(self.jitter),
        }
    }
}

/// The configured delay tiers, shortest first, and after them (when there
/// is one) the ordered lane: the topic of `ordering = "per_device"`
/// deliveries, due at once and never picked for a delay.
#[derive(Debug, Clone)]
pub struct RetryTiers {
    tiers: Vec<(Duration, String)>,
    /// How many of `tiers` are delay tiers (the lane follows them).
    delays: usize,
}

impl RetryTiers {
    /// Tiers with their topic names.
    pub fn new(tiers: &[HumanDuration], topic: impl Fn(HumanDuration) -> String) -> Self {
        Self {
            tiers: tiers.iter().map(|t| (t.get(), topic(*t))).collect(),
            delays: tiers.len(),
        }
    }

    /// The same tiers with the ordered lane `topic` after them.
    pub fn with_lane(mut self, topic: String) -> Self {
        self.tiers.truncate(self.delays);
        self.tiers.push((Duration::ZERO, topic));
        self
    }

    /// Index of the ordered lane, if there is one.
    pub fn lane(&self) -> Option<usize> {
        (self.tiers.len() > self.delays).then_some(self.delays)
    }

    /// Index of the largest tier not longer than `delay` (the first tier when
    /// `delay` is shorter than every tier); never the lane.
    pub fn tier_for(&self, delay: Duration) -> usize {
        self.tiers[..self.delays]
            .iter()
            .rposition(|(d, _)| *d <= delay)
            .unwrap_or(0)
    }

    /// Topic of tier `index`.
    pub fn topic(&self, index: usize) -> &str {
        &self.tiers[index].1
    }

    /// Delay of tier `index`.
    pub fn delay(&self, index: usize) -> Duration {
        self.tiers[index].0
    }

    /// All tier topics (the lane's last).
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.tiers.iter().map(|(_, t)| t.as_str())
    }

    /// Number of tiers, the lane included.
    pub fn len(&self) -> usize {
        self.tiers.len()
    }

    /// True when there are no tiers.
    pub fn is_empty(&self) -> bool {
        self.tiers.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff(jitter: f64) -> Backoff {
        Backoff::new(&BackoffConfig {
            initial: HumanDuration::from_secs(1),
            factor: 2.0,
            max: HumanDuration::from_secs(3600),
            jitter,
        })
    }

    #[test]
    fn grows_exponentially_and_caps() {
        let b = backoff(0.0);
        assert_eq!(b.delay(1, 0.5), Duration::from_secs(1));
        assert_eq!(b.delay(2, 0.5), Duration::from_secs(2));
        assert_eq!(b.delay(5, 0.5), Duration::from_secs(16));
        assert_eq!(b.delay(30, 0.5), Duration::from_secs(3600));
        assert_eq!(b.delay(u32::MAX, 0.5), Duration::from_secs(3600));
    }

    #[test]
    fn jitter_spreads_symmetrically_within_bounds() {
        let b = backoff(0.2);
        assert_eq!(b.delay(4, 0.0), Duration::from_secs_f64(6.4));
        assert_eq!(b.delay(4, 0.5), Duration::from_secs(8));
        assert_eq!(b.delay(4, 1.0), Duration::from_secs_f64(9.6));
        assert!(
            b.delay(40, 1.0) <= Duration::from_secs(3600),
            "never above max"
        );
    }

    #[test]
    fn the_largest_tier_not_longer_than_the_delay() {
        let tiers = RetryTiers::new(
            &["1s", "5s", "30s", "2m"]
                .map(|t| HumanDuration(crate::config::parse_duration(t).unwrap())),
            |t| format!("hs.retry.{t}"),
        );
        assert_eq!(
            tiers.tier_for(Duration::from_millis(10)),
            0,
            "shorter than all: first tier"
        );
        assert_eq!(tiers.tier_for(Duration::from_secs(1)), 0);
        assert_eq!(tiers.tier_for(Duration::from_secs(4)), 0);
        assert_eq!(tiers.tier_for(Duration::from_secs(5)), 1);
        assert_eq!(tiers.tier_for(Duration::from_secs(29)), 1);
        assert_eq!(tiers.tier_for(Duration::from_secs(3600)), 3);
        assert_eq!(tiers.topic(2), "hs.retry.30s");
        assert_eq!(tiers.lane(), None);
        let laned = tiers.with_lane("hs.ordered".into());
        assert_eq!(laned.lane(), Some(4));
        assert_eq!(laned.len(), 5);
        assert_eq!(laned.topic(4), "hs.ordered");
        assert_eq!(
            laned.tier_for(Duration::from_secs(3600)),
            3,
            "the lane is never a delay's tier"
        );
        assert_eq!(laned.tier_for(Duration::ZERO), 0);
    }
}
