//! Retry policies and the one decision after an attempt.
//!
//! Which failures are tried again, whether a retry uses an attempt, and how
//! many attempts and how much backoff a delivery gets ([`RetryRules`],
//! [`RetryPolicy`]: an endpoint's `retry` settings and `[delivery]`'s
//! defaults in, a policy out; an attempt's result in, a [`Verdict`] out);
//! then what follows the attempt ([`after_attempt`]: delivered, retried on a
//! tier after which delay, deferred without using an attempt,
//! dead-lettered with which [`Reason`], dead-lettered and the endpoint
//! disabled (410), or the endpoint disabled after failing for
//! `auto_disable.after` and the delivery kept), a pure function of the
//! verdict, the delivery's history, the endpoint's run of failures, the
//! policy, the time and a jitter draw. The sender carries the decision out
//! (writes, acks, metrics) and decides nothing itself. What happens
//! *instead* of an attempt is decided before sending: refused endpoints
//! (deleted, disabled after 410) by [`crate::deliver::refusal`], an open
//! circuit by the circuit; a delivery to a disabled endpoint that keeps its
//! backlog comes here as [`Verdict::Disabled`] (held on a tier until the
//! next recheck, or dead-lettered `endpoint_disabled` beyond the cap).
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
    /// resolves HTTP-date values (called only for a `Retry-After` to read,
    /// so the usual attempt reads no wall clock here). 2xx delivers, 410 is `Gone`, a failure of
    /// this process defers and an SSRF refusal dead-letters whatever the
    /// rules say; the rest is theirs.
    pub fn verdict(
        &self,
        result: AttemptResult<'_>,
        cap: Duration,
        now: impl FnOnce() -> SystemTime,
    ) -> Verdict {
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
                    .and_then(|v| parse_retry_after(v, now()))
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
    /// When failing disables an endpoint, and how long a disabled one's
    /// deliveries are kept.
    pub disabled: DisabledPolicy,
}

/// Auto-disable and the backlog of disabled endpoints
/// (`[delivery.auto_disable]`, `[delivery.disabled_backlog]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisabledPolicy {
    /// An unbroken run of failed attempts this long disables the endpoint
    /// (`None`: failures never do).
    pub auto_disable_after: Option<Duration>,
    /// A kept delivery older than this (since its first attempt, or first
    /// deferral) is dead-lettered as `endpoint_disabled`.
    pub backlog_max_age: Duration,
    /// Kept deliveries are due at the next multiple of this since the Unix
    /// epoch (the delay of the tier that holds them): a whole backlog comes
    /// back at once, in the order it was written.
    pub backlog_recheck: Duration,
}

impl Default for DisabledPolicy {
    /// `[delivery]`'s defaults: disabled after 24 h of failures, kept 7
    /// days, looked at every 10 minutes.
    fn default() -> Self {
        Self {
            auto_disable_after: Some(Duration::from_secs(24 * 3600)),
            backlog_max_age: Duration::from_secs(7 * 24 * 3600),
            backlog_recheck: Duration::from_secs(600),
        }
    }
}

impl DisabledPolicy {
    /// When a delivery held at `now_ms` is due: the next multiple of
    /// `backlog_recheck` (at least 1 ms) after it. Every delivery held
    /// within one recheck is due at the same instant, so a backlog is read
    /// back and held again as one pass, ahead of what is held after it.
    pub fn hold_until(&self, now_ms: i64) -> i64 {
        let step = i64::try_from(self.backlog_recheck.as_millis())
            .unwrap_or(i64::MAX)
            .max(1);
        now_ms
            .div_euclid(step)
            .saturating_add(1)
            .saturating_mul(step)
    }

    /// Whether an endpoint whose unbroken run of failures began at
    /// `since_ms` has failed long enough at `now_ms` to be disabled.
    pub fn failing_too_long(&self, since_ms: i64, now_ms: i64) -> bool {
        self.auto_disable_after.is_some_and(|after| {
            let failing_ms = now_ms.saturating_sub(since_ms).max(0);
            Duration::from_millis(u64::try_from(failing_ms).unwrap_or(0)) >= after
        })
    }
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
                disabled: self.disabled,
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
    /// The endpoint failed every attempt for `auto_disable.after`: disable
    /// it (cause `failing`) and keep this delivery with its backlog.
    AutoDisable {
        /// Attempts counted, this one included when it counts.
        attempt: u32,
        /// Hold it on the backlog tier until then; `None`: it is older
        /// than the backlog's cap already, dead-letter it
        /// (`endpoint_disabled`).
        hold_until_ms: Option<i64>,
    },
    /// The endpoint is disabled and keeps its backlog: write the delivery
    /// to the backlog tier, due at `until_ms` (no attempt used).
    Hold {
        /// Unix ms when it is due.
        until_ms: i64,
    },
}

impl Decision {
    /// Attempts counted after this decision (unchanged for a deferral).
    pub fn attempt(&self, tried: Tried) -> u32 {
        match *self {
            Self::Delivered => tried.attempt.saturating_add(1),
            Self::Defer { .. } | Self::Hold { .. } => tried.attempt,
            Self::Retry { attempt, .. }
            | Self::DeadLetter { attempt, .. }
            | Self::Disable { attempt }
            | Self::AutoDisable { attempt, .. } => attempt,
        }
    }
}

/// Decides what follows an attempt. `failing_since_ms` is when the
/// endpoint's unbroken run of failed attempts began, before this one
/// (`None`: its last attempt did not fail); `now_ms` is the wall clock in
/// Unix ms; `jitter` draws a uniform value in [0, 1) for the backoff, and
/// is called only when a backoff is computed (a delivered batch of 100
/// drew 100 random numbers for nothing: 1 % of the delivery workers' CPU
/// in bench (b)).
pub fn after_attempt(
    verdict: &Verdict,
    tried: Tried,
    failing_since_ms: Option<i64>,
    policy: &RetryPolicy,
    now_ms: i64,
    jitter: impl FnOnce() -> f64,
) -> Decision {
    let counted = tried.attempt.saturating_add(1);
    let age_ms = now_ms.saturating_sub(tried.first_ms).max(0);
    let age = Duration::from_millis(u64::try_from(age_ms).unwrap_or(0));
    // A disabled endpoint's delivery is kept until the backlog's cap.
    let kept =
        || (age < policy.disabled.backlog_max_age).then(|| policy.disabled.hold_until(now_ms));
    match verdict {
        Verdict::Delivered => Decision::Delivered,
        Verdict::Defer => Decision::Defer {
            delay: policy.local_failure_delay,
        },
        Verdict::Disabled => match kept() {
            Some(until_ms) => Decision::Hold { until_ms },
            None => Decision::DeadLetter {
                attempt: tried.attempt,
                reason: Reason::EndpointDisabled,
            },
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
            // This attempt failed too: the run began with it or before.
            let run_began = failing_since_ms.unwrap_or(now_ms).min(now_ms);
            if policy.disabled.failing_too_long(run_began, now_ms) {
                return Decision::AutoDisable {
                    attempt,
                    hold_until_ms: kept(),
                };
            }
            if attempt >= policy.max_attempts || age >= policy.retry_window {
                return Decision::DeadLetter {
                    attempt,
                    reason: Reason::Exhausted,
                };
            }
            let delay = after.unwrap_or_else(|| policy.backoff.delay(attempt.max(1), jitter()));
            Decision::Retry { attempt, delay }
        }
    }
}

#[cfg(test)]
mod tests;
