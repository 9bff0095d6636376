//! Absurd numbers from an admin, a config file or a script: whatever the
//! endpoint validator accepts, the arithmetic downstream (rate limiter,
//! backoff, circuit breaker, idle-sender check) computes without a panic;
//! whatever it refuses is refused with the field named. (An endpoint with
//! `rate_limit.per_second = 1e-20` was once accepted and crashed the
//! process on its first event, and again at every restart.)

use std::time::Duration;

use governor::RateLimiter;
use hookstream::config::{
    BackoffConfig, BatchConfig, Config, EndpointConfig, HumanDuration, RateLimitConfig,
};
use hookstream::deliver::sender::{rate_quota, refill_ms};
use hookstream::index::Endpoint;
use hookstream::outcome::backoff::Backoff;
use hookstream::outcome::circuit::{Circuit, first_open_interval};
use proptest::prelude::*;

/// Any f64 at all, tiny, huge and non-finite ones included.
fn any_rate() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        Just(1e-20),
        Just(1e-300),
        Just(f64::MIN_POSITIVE),
        Just(0.0),
        Just(-1.0),
        Just(f64::INFINITY),
        Just(f64::NAN),
        Just(1e300),
        0.0001f64..10_000_000.0,
    ]
}

fn any_duration() -> impl Strategy<Value = Duration> {
    prop_oneof![
        Just(Duration::ZERO),
        Just(Duration::from_nanos(1)),
        Just(Duration::MAX),
        (0u64..u64::MAX).prop_map(Duration::from_millis),
        (0u64..10_000_000).prop_map(Duration::from_millis),
    ]
}

fn endpoint(rate: Option<(f64, u32)>, concurrency: u32, queue: u32, batch: u32) -> EndpointConfig {
    let mut e = EndpointConfig::new("ep", "https://hooks.example.com/in");
    e.rate_limit = rate.map(|(per_second, burst)| Box::new(RateLimitConfig { per_second, burst }));
    e.max_concurrency = concurrency;
    e.queue_size = queue;
    e.batch = BatchConfig {
        max_events: batch,
        max_wait: HumanDuration::from_millis(0),
    };
    e
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn an_accepted_rate_limit_never_breaks_the_limiter(
        per_second in any_rate(),
        burst in any::<u32>(),
        concurrency in any::<u32>(),
        queue in any::<u32>(),
        batch in any::<u32>(),
    ) {
        let config = endpoint(Some((per_second, burst)), concurrency, queue, batch);
        match Endpoint::build(config, false, Duration::from_secs(30), &|_| None) {
            Ok(built) => {
                let rl = built.config.rate_limit.as_deref().expect("kept");
                let limiter = RateLimiter::direct(rate_quota(rl));
                let _ = limiter.check();
                let _ = limiter.check_n(std::num::NonZeroU32::MIN);
                prop_assert!(refill_ms(rl) >= 0);
            }
            Err(e) => prop_assert!(
                ["rate_limit.per_second", "rate_limit.burst", "max_concurrency", "queue_size", "batch.max_events"]
                    .contains(&e.field.as_str()),
                "refused naming `{}`: {}", e.field, e.message
            ),
        }
    }

    #[test]
    fn the_limiter_arithmetic_itself_never_panics(per_second in any_rate(), burst in any::<u32>()) {
        // Even values the validator refuses (they never reach a sender).
        let rl = RateLimitConfig { per_second, burst };
        let limiter = RateLimiter::direct(rate_quota(&rl));
        let _ = limiter.check();
        let _ = refill_ms(&rl);
    }

    #[test]
    fn accepted_backoff_settings_give_finite_delays_within_the_cap(
        initial in any_duration(),
        max in any_duration(),
        factor in any_rate(),
        jitter in any_rate(),
        attempts in any::<u32>(),
        unit in any_rate(),
    ) {
        let text = format!(
            "[delivery]\nbackoff = {{ initial = \"{}ms\", max = \"{}ms\", factor = {factor:?}, jitter = {jitter:?} }}\n",
            initial.as_millis(),
            max.as_millis(),
        );
        // TOML has no NaN/inf literals spelled like Rust's Debug: those are
        // refused by the parser, which is fine; what parses must validate.
        if let Ok(config) = Config::from_toml_with_env(&text, &|_| None) {
            let b = Backoff::new(&config.delivery.backoff);
            let d = b.delay(attempts, unit);
            prop_assert!(d <= b.max());
            let base = first_open_interval(Duration::from_millis(10), b.max());
            let circuit = Circuit::new(base, b.max());
            let mut now = 0i64;
            for _ in 0..40 {
                circuit.record_failure(now);
                if let Some(open) = circuit.open_for(now) {
                    now = now.saturating_add(open.as_millis() as i64);
                }
                let _ = circuit.defer_for(now);
            }
        }
        // And the arithmetic holds for any backoff, validated or not.
        let raw = BackoffConfig {
            initial: HumanDuration(initial),
            max: HumanDuration(max),
            factor,
            jitter,
        };
        let _ = Backoff::new(&raw).delay(attempts, unit);
    }
}

#[test]
fn refused_numbers_name_their_key() {
    let cases: &[(&str, &str)] = &[
        ("[kafka]\ncommit_interval = \"0\"", "kafka.commit_interval"),
        (
            "[kafka]\ncommit_interval = \"100000h\"",
            "kafka.commit_interval",
        ),
        (
            "[kafka]\nembedded_partitions = 100000",
            "kafka.embedded_partitions",
        ),
        ("[topics]\npartitions = 0", "topics.partitions"),
        ("[topics]\npartitions = 2147483647", "topics.partitions"),
        (
            "[topics]\nreplication_factor = 0",
            "topics.replication_factor",
        ),
        (
            "[topics]\nretry_tiers = [\"1s\", \"100000h\"]",
            "topics.retry_tiers[1]",
        ),
        ("[delivery]\ntimeout = \"0\"", "delivery.timeout"),
        (
            "[delivery]\nmax_attempts = 4294967295",
            "delivery.max_attempts",
        ),
        (
            "[delivery]\nbackoff = { factor = 1e300 }",
            "delivery.backoff.factor",
        ),
        (
            "[delivery]\nbackoff = { jitter = -0.5 }",
            "delivery.backoff.jitter",
        ),
        ("[delivery]\nmax_in_flight = 0", "delivery.max_in_flight"),
        (
            "[delivery]\nmax_in_flight = 9223372036854775807",
            "delivery.max_in_flight",
        ),
        (
            "[delivery]\nmax_connections_per_host = 0",
            "delivery.max_connections_per_host",
        ),
        (
            "[delivery]\nmax_payload_bytes = 9223372036854775807",
            "delivery.max_payload_bytes",
        ),
        (
            "[delivery]\ndrain_timeout = \"1000h\"",
            "delivery.drain_timeout",
        ),
        ("[delivery]\nretry_window = \"0\"", "delivery.retry_window"),
        ("[delivery]\nuser_agent = \"\"", "delivery.user_agent"),
        ("[api]\nrotation_grace = \"0\"", "api.rotation_grace"),
        (
            "[[endpoints]]\nid = \"e\"\nurl = \"https://x.example\"\nrate_limit = { per_second = 1e-20 }",
            "endpoints[0].rate_limit.per_second",
        ),
        (
            "[[endpoints]]\nid = \"e\"\nurl = \"https://x.example\"\nrate_limit = { per_second = 1.0, burst = 4000000000 }",
            "endpoints[0].rate_limit.burst",
        ),
        (
            "[[endpoints]]\nid = \"e\"\nurl = \"https://x.example\"\nbatch = { max_wait = \"1h\" }",
            "endpoints[0].batch.max_wait",
        ),
        (
            "[[endpoints]]\nid = \"e\"\nurl = \"https://x.example\"\ntimeout = \"0\"",
            "endpoints[0].timeout",
        ),
    ];
    for (text, key) in cases {
        let err = Config::from_toml_with_env(text, &|_| None)
            .expect_err(text)
            .to_string();
        assert!(err.contains(&format!("`{key}`")), "{text}\n→ {err}");
    }
}

#[test]
fn a_number_toml_cannot_hold_is_refused_with_its_line() {
    let err = Config::from_toml_with_env(
        "[delivery]\n\nmax_in_flight = 18446744073709551615\n",
        &|_| None,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("line 3"), "{err}");
}

#[test]
fn a_megabyte_url_is_refused_for_its_length_naming_url() {
    let mut e = EndpointConfig::new("ep", format!("https://x.example/{}", "a".repeat(1_000_000)));
    e.events = vec!["*".into()];
    let err = Endpoint::build(e, false, Duration::from_secs(30), &|_| None).unwrap_err();
    assert_eq!(err.field, "url");
    assert!(err.message.contains("2048"), "{}", err.message);
}
