//! The one decision about a delivery after an attempt: delivered, retried
//! on a tier after which delay, deferred without using an attempt,
//! dead-lettered with which [`Reason`], or dead-lettered and the endpoint
//! disabled. A pure function of the attempt's [`Verdict`], the delivery's
//! history, the endpoint's [`RetryPolicy`], the time and a jitter draw;
//! the sender carries the decision out (writes, acks, metrics) and decides
//! nothing itself.
//!
//! What happens *instead* of an attempt (refused endpoint, open circuit) is
//! decided before sending by [`crate::deliver::refusal`] and the circuit;
//! the tier a delay lands on is the writer's choice (`RetryTiers::for_delay`).

use std::time::Duration;

use super::backoff::Backoff;
use super::classify::Verdict;
use crate::core::Reason;

/// When a failed delivery is tried again (the endpoint's policy).
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Backoff between attempts (its max also caps `Retry-After`).
    pub backoff: Backoff,
    /// Attempts in total, the first included.
    pub max_attempts: u32,
    /// Longest time from the first attempt during which retries are made.
    pub retry_window: Duration,
    /// How long a delivery waits when this process could not make the
    /// attempt (the first circuit interval).
    pub local_failure_delay: Duration,
}

/// What a delivery had behind it when this attempt was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tried {
    /// Attempts counted before this one.
    pub attempt: u32,
    /// Unix ms of the first attempt.
    pub first_ms: i64,
}

/// What to do with one delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Done: settle it.
    Delivered,
    /// Write it to a retry tier, due after `delay`; `attempt` attempts are
    /// counted now.
    Retry {
        /// Attempts counted, this one included when it counts.
        attempt: u32,
        /// How long until it is due.
        delay: Duration,
    },
    /// Write it to a retry tier without using an attempt (this process
    /// could not make the attempt).
    Defer {
        /// How long until it is due.
        delay: Duration,
    },
    /// Write it to the DLQ with `reason`.
    DeadLetter {
        /// Attempts counted, this one included.
        attempt: u32,
        /// Why.
        reason: Reason,
    },
    /// 410 Gone: disable the endpoint, then dead-letter it (`gone`).
    Disable {
        /// Attempts counted, this one included.
        attempt: u32,
    },
}

impl Decision {
    /// Attempts counted after this decision (unchanged for a deferral).
    pub fn attempt(&self, tried: Tried) -> u32 {
        match *self {
            Self::Delivered => tried.attempt.saturating_add(1),
            Self::Defer { .. } => tried.attempt,
            Self::Retry { attempt, .. }
            | Self::DeadLetter { attempt, .. }
            | Self::Disable { attempt } => attempt,
        }
    }
}

/// Decides what follows an attempt. `now_ms` is the wall clock in Unix ms;
/// `jitter` a uniform draw in [0, 1) for the backoff.
pub fn after_attempt(
    verdict: &Verdict,
    tried: Tried,
    policy: &RetryPolicy,
    now_ms: i64,
    jitter: f64,
) -> Decision {
    let counted = tried.attempt.saturating_add(1);
    match verdict {
        Verdict::Delivered => Decision::Delivered,
        Verdict::Defer => Decision::Defer {
            delay: policy.local_failure_delay,
        },
        Verdict::Gone => Decision::Disable { attempt: counted },
        Verdict::DeadLetter(reason) => Decision::DeadLetter {
            attempt: counted,
            reason: *reason,
        },
        Verdict::Retry {
            after,
            counts_attempt,
        } => {
            let attempt = if *counts_attempt {
                counted
            } else {
                tried.attempt
            };
            let age_ms = now_ms.saturating_sub(tried.first_ms).max(0);
            let age = Duration::from_millis(u64::try_from(age_ms).unwrap_or(0));
            if attempt >= policy.max_attempts || age >= policy.retry_window {
                return Decision::DeadLetter {
                    attempt,
                    reason: Reason::Exhausted,
                };
            }
            let delay = after.unwrap_or_else(|| policy.backoff.delay(attempt.max(1), jitter));
            Decision::Retry { attempt, delay }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackoffConfig;
    use crate::config::HumanDuration;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            backoff: Backoff::new(&BackoffConfig {
                initial: HumanDuration(Duration::from_secs(1)),
                max: HumanDuration(Duration::from_secs(60)),
                factor: 2.0,
                jitter: 0.0,
            }),
            max_attempts: 3,
            retry_window: Duration::from_secs(3600),
            local_failure_delay: Duration::from_secs(5),
        }
    }

    const NOW: i64 = 1_800_000_000_000;

    fn retry(after: Option<u64>, counts_attempt: bool) -> Verdict {
        Verdict::Retry {
            after: after.map(Duration::from_secs),
            counts_attempt,
        }
    }

    #[test]
    fn every_verdict_and_history_decides_as_the_table_says() {
        let fresh = Tried {
            attempt: 0,
            first_ms: NOW,
        };
        let second = Tried {
            attempt: 1,
            first_ms: NOW - 1_000,
        };
        let last = Tried {
            attempt: 2,
            first_ms: NOW - 3_000,
        };
        let old = Tried {
            attempt: 1,
            first_ms: NOW - 3_600_000,
        };
        let secs = Duration::from_secs;
        #[rustfmt::skip]
        let table: Vec<(Verdict, Tried, Decision)> = vec![
            (Verdict::Delivered, fresh, Decision::Delivered),
            (Verdict::Delivered, last, Decision::Delivered),
            // Backoff: 1 s after the first attempt, 2 s after the second.
            (retry(None, true), fresh, Decision::Retry { attempt: 1, delay: secs(1) }),
            (retry(None, true), second, Decision::Retry { attempt: 2, delay: secs(2) }),
            // The third attempt was the last one allowed.
            (retry(None, true), last, Decision::DeadLetter { attempt: 3, reason: Reason::Exhausted }),
            // Past the retry window, whatever the attempts.
            (retry(None, true), old, Decision::DeadLetter { attempt: 2, reason: Reason::Exhausted }),
            // Retry-After is the delay and uses no attempt (429, or any
            // retried status that names one).
            (retry(Some(30), false), last, Decision::Retry { attempt: 2, delay: secs(30) }),
            (retry(None, false), fresh, Decision::Retry { attempt: 0, delay: secs(1) }),
            (retry(Some(30), false), old, Decision::DeadLetter { attempt: 1, reason: Reason::Exhausted }),
            // A local failure never uses an attempt and never dead-letters.
            (Verdict::Defer, last, Decision::Defer { delay: secs(5) }),
            (Verdict::Defer, old, Decision::Defer { delay: secs(5) }),
            (Verdict::Gone, second, Decision::Disable { attempt: 2 }),
            (Verdict::DeadLetter(Reason::Http(404)), fresh, Decision::DeadLetter { attempt: 1, reason: Reason::Http(404) }),
            (Verdict::DeadLetter(Reason::DestinationRefused), second, Decision::DeadLetter { attempt: 2, reason: Reason::DestinationRefused }),
        ];
        for (verdict, tried, want) in table {
            let got = after_attempt(&verdict, tried, &policy(), NOW, 0.5);
            assert_eq!(got, want, "{verdict:?} after {tried:?}");
        }
    }

    #[test]
    fn the_attempt_count_after_a_decision_never_goes_back() {
        let tried = Tried {
            attempt: 2,
            first_ms: NOW,
        };
        for verdict in [
            Verdict::Delivered,
            Verdict::Defer,
            Verdict::Gone,
            retry(None, true),
            retry(Some(1), false),
            Verdict::DeadLetter(Reason::Http(400)),
        ] {
            let d = after_attempt(&verdict, tried, &policy(), NOW, 0.0);
            assert!(d.attempt(tried) >= tried.attempt, "{verdict:?}");
        }
        let max = Tried {
            attempt: u32::MAX,
            first_ms: i64::MIN,
        };
        let d = after_attempt(&retry(None, true), max, &policy(), i64::MAX, 1.0);
        assert_eq!(
            d,
            Decision::DeadLetter {
                attempt: u32::MAX,
                reason: Reason::Exhausted
            }
        );
    }
}
