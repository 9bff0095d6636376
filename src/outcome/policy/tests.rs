//! Unit tests of the outcome policy: each answer and failure to its decision, per platform's retry rules.

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
        at,
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
                rules.verdict(result, CAP, at),
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
        TransportFailure::Auth,
    ] {
        let result = AttemptResult::Transport(kind);
        assert_eq!(
            rules.verdict(result, CAP, at),
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
            rules.verdict(AttemptResult::Transport(kind), CAP, at),
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
        disabled: DisabledPolicy::default(),
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
        rules.verdict(AttemptResult::Transport(TransportFailure::Timeout), CAP, at),
        Verdict::DeadLetter(Reason::Exhausted)
    );
    assert_eq!(
        rules.verdict(AttemptResult::Transport(TransportFailure::Local), CAP, at),
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
        // Disabled after a minute of failures; kept an hour, looked
        // at every 10 s.
        disabled: DisabledPolicy {
            auto_disable_after: Some(Duration::from_secs(60)),
            backlog_max_age: Duration::from_secs(3600),
            backlog_recheck: Duration::from_secs(10),
        },
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
    // Kept on a disabled endpoint's backlog for 59 min: within the cap.
    let kept = Tried {
        attempt: 2,
        first_ms: NOW - 3_540_000,
    };
    let secs = Duration::from_secs;
    // NOW is a multiple of 10 s: held deliveries are due at the next.
    let next_recheck = NOW + 10_000;
    // When the endpoint's run of failures began, before this attempt.
    let (answering, failing_30s, failing_60s) = (None, Some(NOW - 30_000), Some(NOW - 60_000));
    #[rustfmt::skip]
        let table: Vec<(Verdict, Tried, Option<i64>, Decision)> = vec![
            (Verdict::Delivered, fresh, answering, Decision::Delivered),
            (Verdict::Delivered, last, failing_60s, Decision::Delivered),
            // Backoff: 1 s after the first attempt, 2 s after the second.
            (retry(None, true), fresh, answering, Decision::Retry { attempt: 1, delay: secs(1) }),
            (retry(None, true), second, failing_30s, Decision::Retry { attempt: 2, delay: secs(2) }),
            // The third attempt was the last one allowed.
            (retry(None, true), last, answering, Decision::DeadLetter { attempt: 3, reason: Reason::Exhausted }),
            // Past the retry window, whatever the attempts.
            (retry(None, true), old, answering, Decision::DeadLetter { attempt: 2, reason: Reason::Exhausted }),
            // Retry-After is the delay and uses no attempt (429, or any
            // retried status that names one).
            (retry(Some(30), false), last, answering, Decision::Retry { attempt: 2, delay: secs(30) }),
            (retry(None, false), fresh, answering, Decision::Retry { attempt: 0, delay: secs(1) }),
            (retry(Some(30), false), old, answering, Decision::DeadLetter { attempt: 1, reason: Reason::Exhausted }),
            // A local failure never uses an attempt and never dead-letters.
            (Verdict::Defer, last, answering, Decision::Defer { delay: secs(5) }),
            (Verdict::Defer, old, failing_60s, Decision::Defer { delay: secs(5) }),
            (Verdict::Gone, second, answering, Decision::Disable { attempt: 2 }),
            (Verdict::DeadLetter(Reason::Http(404)), fresh, answering, Decision::DeadLetter { attempt: 1, reason: Reason::Http(404) }),
            (Verdict::DeadLetter(Reason::DestinationRefused), second, answering, Decision::DeadLetter { attempt: 2, reason: Reason::DestinationRefused }),
            // Failing for less than the window (60 s): retried as usual.
            (retry(None, true), second, failing_30s, Decision::Retry { attempt: 2, delay: secs(2) }),
            // Failing for the window: the endpoint is disabled and this
            // delivery kept with its backlog, even with no attempt left...
            (retry(None, true), second, failing_60s, Decision::AutoDisable { attempt: 2, hold_until_ms: Some(next_recheck) }),
            (retry(None, true), last, failing_60s, Decision::AutoDisable { attempt: 3, hold_until_ms: Some(next_recheck) }),
            (retry(Some(30), false), fresh, failing_60s, Decision::AutoDisable { attempt: 0, hold_until_ms: Some(next_recheck) }),
            // ...unless it is older than the backlog's cap (1 h) already.
            (retry(None, true), old, failing_60s, Decision::AutoDisable { attempt: 2, hold_until_ms: None }),
            // An answer ends the run: a 404 disables nothing.
            (Verdict::DeadLetter(Reason::Http(404)), second, failing_60s, Decision::DeadLetter { attempt: 2, reason: Reason::Http(404) }),
            // A disabled endpoint that keeps its backlog: held until the
            // next recheck, no attempt used, within the cap...
            (Verdict::Disabled, fresh, answering, Decision::Hold { until_ms: next_recheck }),
            (Verdict::Disabled, kept, failing_60s, Decision::Hold { until_ms: next_recheck }),
            // ...and dead-lettered as endpoint_disabled beyond it, with
            // its attempts as they were.
            (Verdict::Disabled, old, answering, Decision::DeadLetter { attempt: 1, reason: Reason::EndpointDisabled }),
        ];
    for (verdict, tried, since, want) in table {
        let got = after_attempt(&verdict, tried, since, &policy(), NOW, || 0.5);
        assert_eq!(
            got, want,
            "{verdict:?} after {tried:?}, failing since {since:?}"
        );
    }
}

#[test]
fn held_deliveries_come_due_together_at_the_next_recheck() {
    let p = DisabledPolicy {
        auto_disable_after: None,
        backlog_max_age: Duration::from_secs(60),
        backlog_recheck: Duration::from_secs(10),
    };
    // Everything held within one recheck shares its due time; a pass
    // made at that time holds its deliveries until the next one.
    assert_eq!(p.hold_until(20_000), 30_000);
    assert_eq!(p.hold_until(20_001), 30_000);
    assert_eq!(p.hold_until(29_999), 30_000);
    assert_eq!(p.hold_until(30_000), 40_000);
    assert_eq!(p.hold_until(i64::MAX), i64::MAX, "saturates");
    assert_eq!(p.hold_until(-5), 0);
    let zero = DisabledPolicy {
        backlog_recheck: Duration::ZERO,
        ..p
    };
    assert_eq!(zero.hold_until(7), 8, "a step of at least 1 ms");
    // Without auto_disable, failing never disables.
    assert!(!p.failing_too_long(0, i64::MAX));
    let after = DisabledPolicy {
        auto_disable_after: Some(Duration::from_secs(3)),
        ..p
    };
    assert!(!after.failing_too_long(10_000, 12_999));
    assert!(after.failing_too_long(10_000, 13_000));
    assert!(!after.failing_too_long(13_000, 10_000), "clock went back");
    assert!(after.failing_too_long(i64::MIN, i64::MAX), "saturates");
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
        Verdict::Disabled,
    ] {
        let d = after_attempt(&verdict, tried, Some(NOW), &policy(), NOW, || 0.0);
        assert!(d.attempt(tried) >= tried.attempt, "{verdict:?}");
    }
    let max = Tried {
        attempt: u32::MAX,
        first_ms: i64::MIN,
    };
    let d = after_attempt(&retry(None, true), max, None, &policy(), i64::MAX, || 1.0);
    assert_eq!(
        d,
        Decision::DeadLetter {
            attempt: u32::MAX,
            reason: Reason::Exhausted
        }
    );
}

#[test]
fn jitter_is_drawn_only_for_a_computed_backoff() {
    let tried = Tried {
        attempt: 1,
        first_ms: NOW,
    };
    for (verdict, draws) in [
        (Verdict::Delivered, 0),
        (Verdict::DeadLetter(Reason::Http(400)), 0),
        (retry(Some(5), true), 0),
        (retry(None, true), 1),
    ] {
        let mut drawn = 0;
        after_attempt(&verdict, tried, None, &policy(), NOW, || {
            drawn += 1;
            0.5
        });
        assert_eq!(drawn, draws, "{verdict:?}");
    }
}
