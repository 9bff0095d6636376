//! Retry policies and the one decision after an attempt.
//!
//! Which failures are tried again, whether a retry uses an attempt, and how
//! many attempts and how much backoff a delivery gets ([`RetryRules`],
//! [`RetryPolicy`]: an endpoint's `retry` settings and `[delivery]`'s
//! defaults in, a policy out; an attempt's result in, a [`Verdict`] out);
//! then what follows the attempt ([`after_attempt`]: delivered, retried on a
//! tier after which delay, deferred without using an attempt,
//! dead-lettered with which [`Reason`], or dead-lettered and the endpoint
//! disabled), a pure function of the verdict, the delivery's history, the
//! policy, the time and a jitter draw. The sender carries the decision out
//! (writes, acks, metrics) and decides nothing itself. What happens
//! *instead* of an attempt (refused endpoint, open circuit) is decided
//! before sending by [`crate::deliver::refusal`] and the circuit.
//!
//! Pure. The
//! default policy is the table of [`super::classify`]; `openmdm` is
//! OpenMDM's webhook manager (4xx except 429 permanent; 429, 5xx and
//! network failures retried, each using an attempt; 1 s → 2 s → 4 s, 30 s
//! cap, 3 retries).

use std::time::{Duration, SystemTime};

use super::backoff::Backoff;
use super::classify::{AttemptResult, TransportFailure, Verdict, parse_retry_after};
use crate::config::{BackoffConfig, HumanDuration, RetryConfig, RetryPolicyName};
use crate::core::Reason;

/// Statuses 400..=655 as bits (every status a policy may retry is 4xx/5xx).
const FIRST: u16 = 400;

/// Which failures are retried and how `Retry-After` is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryRules {
    statuses: [u64; 4],
    network: bool,
    honor_retry_after: bool,
}

impl RetryRules {
    /// hookstream's default: network failures, 408, 425, 429, 500, 502,
    /// 503, 504; `Retry-After` honoured.
    pub const DEFAULT: Self = Self::of(&[408, 425, 429, 500, 502, 503, 504], true, true);

    /// OpenMDM: network failures, 429, every 5xx; each retry uses an
    /// attempt and follows the backoff (no `Retry-After`).
    pub fn openmdm() -> Self {
        let mut rules = Self::of(&[429], true, false);
        rules.add_range(500, 599);
        rules
    }

    const fn of(statuses: &[u16], network: bool, honor_retry_after: bool) -> Self {
        let mut bits = [0u64; 4];
        let mut i = 0;
        while i < statuses.len() {
            let n = (statuses[i] - FIRST) as usize;
            bits[n / 64] |= 1 << (n % 64);
            i += 1;
        }
        Self {
            statuses: bits,
            network,
            honor_retry_after,
        }
    }

    fn add_range(&mut self, from: u16, to: u16) {
        for status in from..=to {
            let n = usize::from(status - FIRST);
            self.statuses[n / 64] |= 1 << (n % 64);
        }
    }

    /// The rules `retry_on` names (`"network"`, `"429"`, `"4xx"`, `"5xx"`);
    /// the error gives the index of the entry that is none of these.
    pub fn parse(retry_on: &[String], honor_retry_after: bool) -> Result<Self, (usize, String)> {
        let mut rules = Self::of(&[], false, honor_retry_after);
        for (i, entry) in retry_on.iter().enumerate() {
            match entry.as_str() {
                "network" => rules.network = true,
                "4xx" => rules.add_range(400, 499),
                "5xx" => rules.add_range(500, 599),
                code => match code.parse::<u16>() {
                    Ok(status @ 400..=599) if status != 410 => rules.add_range(status, status),
                    _ => {
                        return Err((
                            i,
                            format!(
                                "`{entry}` is not \"network\", \"4xx\", \"5xx\" or a status 400-599 other than 410"
                            ),
                        ));
                    }
                },
            }
        }
        Ok(rules)
    }

    /// Whether a response with `status` is tried again.
    pub fn retries_status(&self, status: u16) -> bool {
        if !(FIRST..=599).contains(&status) {
            return false;
        }
        let n = usize::from(status - FIRST);
        self.statuses[n / 64] & (1 << (n % 64)) != 0
    }

    /// Whether transport failures (timeout, refused or broken connection)
    /// are tried again.
    pub fn retries_network(&self) -> bool {
        self.network
    }

    /// What to do after an attempt. `cap` bounds any `Retry-After`; `now`
    /// resolves HTTP-date values. 2xx delivers, 410 is `Gone`, a failure of
    /// this process defers and an SSRF refusal dead-letters whatever the
    /// rules say; the rest is theirs.
    pub fn verdict(&self, result: AttemptResult<'_>, cap: Duration, now: SystemTime) -> Verdict {
        match result {
            AttemptResult::Transport(TransportFailure::Refused) => {
                Verdict::DeadLetter(Reason::DestinationRefused)
            }
            AttemptResult::Transport(TransportFailure::Local) => Verdict::Defer,
            AttemptResult::Transport(_) if self.network => Verdict::Retry {
                after: None,
                counts_attempt: true,
            },
            AttemptResult::Transport(_) => Verdict::DeadLetter(Reason::Exhausted),
            AttemptResult::Response { status, .. } if (200..=299).contains(&status) => {
                Verdict::Delivered
            }
            AttemptResult::Response { status: 410, .. } => Verdict::Gone,
            AttemptResult::Response {
                status,
                retry_after,
            } if self.retries_status(status) => {
                let after = retry_after
                    .filter(|_| self.honor_retry_after)
                    .and_then(|v| parse_retry_after(v, now))
                    .map(|d| d.min(cap));
                let free = self.honor_retry_after && (status == 429 || after.is_some());
                Verdict::Retry {
                    after,
                    counts_attempt: !free,
                }
            }
            AttemptResult::Response { status, .. } => Verdict::DeadLetter(Reason::Http(status)),
        }
    }
}

/// When a failed delivery is tried again.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Backoff between attempts (its max also caps `Retry-After`).
    pub backoff: Backoff,
    /// Attempts in total, the first included.
    pub max_attempts: u32,
    /// Longest time from the first attempt during which retries are made.
    pub retry_window: Duration,
    /// What is retried.
    pub rules: RetryRules,
    /// How long a delivery waits when this process could not make the
    /// attempt (the first circuit interval).
    pub local_failure_delay: Duration,
}

impl RetryPolicy {
    /// The policy of an endpoint whose settings are `retry` (none: this
    /// one). The error names the offending key under `retry`.
    pub fn for_endpoint(&self, retry: Option<&RetryConfig>) -> Result<Self, (String, String)> {
        let Some(retry) = retry else {
            return Ok(*self);
        };
        let mut policy = match retry.policy {
            RetryPolicyName::Default => *self,
            RetryPolicyName::Openmdm => Self {
                backoff: Backoff::new(&BackoffConfig {
                    initial: HumanDuration::from_secs(1),
                    factor: 2.0,
                    max: HumanDuration::from_secs(30),
                    jitter: 0.0,
                }),
                max_attempts: 4,
                retry_window: self.retry_window,
                rules: RetryRules::openmdm(),
                local_failure_delay: self.local_failure_delay,
            },
        };
        if let Some(n) = retry.max_attempts {
            policy.max_attempts = n;
        }
        if let Some(b) = &retry.backoff {
            policy.backoff = policy.backoff.overridden(b);
            if policy.backoff.initial() > policy.backoff.max() {
                return Err((
                    "retry.backoff.initial".into(),
                    "must not exceed the backoff's max".into(),
                ));
            }
        }
        let honor = retry
            .honor_retry_after
            .unwrap_or(policy.rules.honor_retry_after);
        policy.rules.honor_retry_after = honor;
        if let Some(list) = &retry.retry_on {
            policy.rules = RetryRules::parse(list, honor)
                .map_err(|(i, why)| (format!("retry.retry_on[{i}]"), why))?;
        }
        Ok(policy)
    }
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

    const CAP: Duration = Duration::from_secs(3600);

    fn at() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000)
    }

    fn response(rules: &RetryRules, status: u16, retry_after: Option<&str>) -> Verdict {
        rules.verdict(
            AttemptResult::Response {
                status,
                retry_after,
            },
            CAP,
            at(),
        )
    }

    const RETRY: Verdict = Verdict::Retry {
        after: None,
        counts_attempt: true,
    };

    fn dead(status: u16) -> Verdict {
        Verdict::DeadLetter(Reason::Http(status))
    }

    #[test]
    fn the_default_rules_are_the_classification_table() {
        let rules = RetryRules::DEFAULT;
        for status in [
            200, 201, 204, 299, 400, 401, 404, 408, 410, 425, 429, 500, 501, 503, 505,
        ] {
            for retry_after in [None, Some("7")] {
                let result = AttemptResult::Response {
                    status,
                    retry_after,
                };
                assert_eq!(
                    rules.verdict(result, CAP, at()),
                    super::super::classify::classify(result, CAP, at()),
                    "{status} {retry_after:?}"
                );
            }
        }
        for kind in [
            TransportFailure::Timeout,
            TransportFailure::Connect,
            TransportFailure::Reset,
            TransportFailure::Refused,
            TransportFailure::Local,
        ] {
            let result = AttemptResult::Transport(kind);
            assert_eq!(
                rules.verdict(result, CAP, at()),
                super::super::classify::classify(result, CAP, at())
            );
        }
    }

    #[test]
    fn openmdm_retries_429_5xx_and_network_and_nothing_else() {
        let rules = RetryRules::openmdm();
        // (status, expected) as OpenMDM's recipe tabulates them.
        let table: [(u16, Verdict); 14] = [
            (200, Verdict::Delivered),
            (202, Verdict::Delivered),
            (400, dead(400)),
            (401, dead(401)),
            (404, dead(404)),
            (408, dead(408)),
            (410, Verdict::Gone),
            (425, dead(425)),
            (429, RETRY),
            (500, RETRY),
            (501, RETRY),
            (503, RETRY),
            (505, RETRY),
            (599, RETRY),
        ];
        for (status, expected) in table {
            assert_eq!(response(&rules, status, None), expected, "{status}");
        }
        // Retry-After is not followed, and a 429 uses an attempt.
        assert_eq!(response(&rules, 429, Some("120")), RETRY);
        assert_eq!(response(&rules, 503, Some("120")), RETRY);
        for kind in [
            TransportFailure::Timeout,
            TransportFailure::Connect,
            TransportFailure::Reset,
        ] {
            assert_eq!(
                rules.verdict(AttemptResult::Transport(kind), CAP, at()),
                RETRY
            );
        }
    }

    fn defaults() -> RetryPolicy {
        RetryPolicy {
            backoff: Backoff::new(&BackoffConfig::default()),
            max_attempts: 8,
            retry_window: Duration::from_secs(86_400),
            rules: RetryRules::DEFAULT,
            local_failure_delay: Duration::from_secs(5),
        }
    }

    #[test]
    fn the_openmdm_policy_replays_the_documented_timeline() {
        let config = RetryConfig {
            policy: RetryPolicyName::Openmdm,
            ..RetryConfig::default()
        };
        let policy = defaults().for_endpoint(Some(&config)).unwrap();
        assert_eq!(policy.max_attempts, 4, "3 retries");
        // attempt 1 at 0 s; then 1 s, 2 s, 4 s: attempts at 0, 1, 3, 7 s.
        let mut t = Duration::ZERO;
        let mut times = vec![t];
        for attempt in 1..policy.max_attempts {
            t += policy.backoff.delay(attempt, 0.0);
            times.push(t);
        }
        assert_eq!(times, [0, 1, 3, 7].map(Duration::from_secs));
        // ... capped at 30 s.
        assert_eq!(policy.backoff.delay(10, 1.0), Duration::from_secs(30));
    }

    #[test]
    fn endpoint_settings_override_the_policy_and_errors_name_the_key() {
        let config = RetryConfig {
            policy: RetryPolicyName::Openmdm,
            max_attempts: Some(6),
            retry_on: Some(vec!["network".into(), "503".into()]),
            ..RetryConfig::default()
        };
        let policy = defaults().for_endpoint(Some(&config)).unwrap();
        assert_eq!(policy.max_attempts, 6);
        assert!(policy.rules.retries_status(503));
        assert!(!policy.rules.retries_status(500));
        assert!(policy.rules.retries_network());
        let bad = RetryConfig {
            retry_on: Some(vec!["5xx".into(), "410".into()]),
            ..RetryConfig::default()
        };
        let (key, why) = defaults().for_endpoint(Some(&bad)).unwrap_err();
        assert_eq!(key, "retry.retry_on[1]");
        assert!(why.contains("`410`"), "{why}");
        let unchanged = defaults().for_endpoint(None).unwrap();
        assert_eq!(unchanged.rules, RetryRules::DEFAULT);
        assert_eq!(unchanged.max_attempts, 8);
    }

    #[test]
    fn without_network_a_transport_failure_is_final() {
        let rules = RetryRules::parse(&["5xx".into()], true).unwrap();
        assert_eq!(
            rules.verdict(
                AttemptResult::Transport(TransportFailure::Timeout),
                CAP,
                at()
            ),
            Verdict::DeadLetter(Reason::Exhausted)
        );
        assert_eq!(
            rules.verdict(AttemptResult::Transport(TransportFailure::Local), CAP, at()),
            Verdict::Defer,
            "a local failure is never the endpoint's"
        );
    }

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
            rules: RetryRules::DEFAULT,
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
