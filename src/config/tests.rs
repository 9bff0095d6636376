//! Unit tests of the configuration: defaults, ranges and errors naming the key, env references, the shipped example.

use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

#[test]
fn empty_file_gives_spec_defaults() {
    let c = Config::from_toml_with_env("", &no_env).unwrap();
    assert_eq!(c.kafka.brokers, "127.0.0.1:9092");
    assert_eq!(c.kafka.group_id, "hookstream");
    assert_eq!(c.topics.retry_tiers.len(), 6);
    assert_eq!(
        c.topics.retry_topic(c.topics.retry_tiers[3]),
        "hookstream.retry.2m"
    );
    assert_eq!(c.topics.dlq_topic(), "hookstream.dlq");
    assert_eq!(c.delivery.max_attempts, 8);
    assert_eq!(c.delivery.max_in_flight, 20_000);
    assert_eq!(c.delivery.backoff.max.get().as_secs(), 3600);
    assert!(c.delivery.user_agent.starts_with("hookstream/"));
}

#[test]
fn unknown_key_is_named() {
    let err = Config::from_toml_with_env("[delivery]\ntimeuot = \"1s\"", &no_env).unwrap_err();
    assert_eq!(err.key, "delivery.timeuot");
    assert!(err.message.contains("unknown field"), "{err}");
}

#[test]
fn bad_duration_is_named() {
    let err = Config::from_toml_with_env("[delivery]\ntimeout = \"30\"", &no_env).unwrap_err();
    assert_eq!(err.key, "delivery.timeout");
    assert!(err.to_string().contains("no unit"));
}

#[test]
fn bad_nested_value_is_named() {
    let err = Config::from_toml_with_env(
        "[delivery]\nbackoff = { initial = \"1s\", jitter = 2.0 }",
        &no_env,
    )
    .unwrap_err();
    assert_eq!(err.key, "delivery.backoff.jitter");
}

#[test]
fn auto_disable_and_the_backlog_have_defaults_and_named_ranges() {
    let c = Config::from_toml_with_env("", &no_env).unwrap();
    assert!(c.delivery.auto_disable.enabled);
    assert_eq!(c.delivery.auto_disable.after.get().as_secs(), 24 * 3600);
    assert_eq!(
        c.delivery.disabled_backlog.max_age.get().as_secs(),
        7 * 24 * 3600
    );
    assert_eq!(c.delivery.disabled_backlog.recheck.get().as_secs(), 600);
    let c = Config::from_toml_with_env(
            "[delivery]\nauto_disable = { after = \"3s\" }\ndisabled_backlog = { max_age = \"1m\", recheck = \"1s\" }",
            &no_env,
        )
        .unwrap();
    assert_eq!(c.delivery.auto_disable.after.get().as_secs(), 3);
    assert!(c.delivery.auto_disable.enabled, "enabled stays default");
    assert_eq!(c.delivery.disabled_backlog.max_age.get().as_secs(), 60);
    for (text, key) in [
        (
            "auto_disable = { after = \"500ms\" }",
            "delivery.auto_disable.after",
        ),
        (
            "disabled_backlog = { max_age = \"400d\" }",
            "delivery.disabled_backlog.max_age",
        ),
        (
            "disabled_backlog = { recheck = \"1ms\" }",
            "delivery.disabled_backlog.recheck",
        ),
        (
            "auto_disable = { afterwards = \"1h\" }",
            "delivery.auto_disable.afterwards",
        ),
    ] {
        let err = Config::from_toml_with_env(&format!("[delivery]\n{text}"), &no_env).unwrap_err();
        assert_eq!(err.key, key, "{text}: {err}");
    }
}

#[test]
fn a_disabled_endpoint_keeps_its_backlog_unless_it_answered_gone() {
    let mut e = EndpointConfig::new("e", "https://x.example/");
    assert!(e.takes_events() && !e.keeps_backlog(), "enabled");
    e.enabled = false;
    assert!(e.keeps_backlog() && e.takes_events(), "disabled by hand");
    let by = |cause| {
        Some(Box::new(DisabledBy {
            reason: "r".into(),
            at: "2026-01-01T00:00:00Z".into(),
            cause,
        }))
    };
    e.disabled = by(DisableCause::Failing);
    assert!(e.keeps_backlog(), "disabled after failing");
    e.disabled = by(DisableCause::Gone);
    assert!(!e.keeps_backlog() && !e.takes_events(), "after 410 Gone");
    let stored: DisabledBy =
        serde_json::from_str(r#"{"reason":"the endpoint answered 410 Gone","at":"x"}"#).unwrap();
    assert_eq!(
        stored.cause,
        DisableCause::Gone,
        "records from before causes"
    );
}

#[test]
fn endpoint_errors_name_the_index() {
    let text = r#"
[delivery]
allow_private_destinations = true
[[endpoints]]
id = "a"
url = "http://127.0.0.1:1/"
signature = "none"
[[endpoints]]
id = "b"
url = "http://127.0.0.1:1/"
signature = "none"
max_concurrency = 0
"#;
    let err = Config::from_toml_with_env(text, &no_env).unwrap_err();
    assert_eq!(err.key, "endpoints[1].max_concurrency");
}

#[test]
fn adaptive_concurrency_takes_defaults_and_its_ranges_are_named() {
    let endpoint = |extra: &str| {
        format!(
            "[delivery]\nallow_private_destinations = true\n[[endpoints]]\nid = \"a\"\nurl = \"http://127.0.0.1:1/\"\nsignature = \"none\"\n{extra}"
        )
    };
    let c = Config::from_toml_with_env(&endpoint(""), &no_env).unwrap();
    assert_eq!(
        c.endpoints[0].adaptive_concurrency, None,
        "off unless asked"
    );
    let c = Config::from_toml_with_env(&endpoint("adaptive_concurrency = {}"), &no_env).unwrap();
    assert_eq!(
        c.endpoints[0].adaptive_concurrency.as_deref(),
        Some(&AdaptiveConcurrencyConfig::default())
    );
    for (extra, key) in [
        (
            "adaptive_concurrency = { decrease_ratio = 1.0 }",
            "endpoints[0].adaptive_concurrency.decrease_ratio",
        ),
        (
            "adaptive_concurrency = { decrease_ratio = nan }",
            "endpoints[0].adaptive_concurrency.decrease_ratio",
        ),
        (
            "adaptive_concurrency = { ewma_alpha = 0.0 }",
            "endpoints[0].adaptive_concurrency.ewma_alpha",
        ),
        (
            "adaptive_concurrency = { rtt_deviation_scale = -1.0 }",
            "endpoints[0].adaptive_concurrency.rtt_deviation_scale",
        ),
        (
            "adaptive_concurrency = { initial = 0 }",
            "endpoints[0].adaptive_concurrency.initial",
        ),
        (
            "max_concurrency = 4\nadaptive_concurrency = { initial = 5 }",
            "endpoints[0].adaptive_concurrency.initial",
        ),
        (
            "adaptive_concurrency = { initial = -1 }",
            "endpoints[0].adaptive_concurrency.initial",
        ),
        (
            "adaptive_concurrency = { step = 2 }",
            "endpoints[0].adaptive_concurrency.step",
        ),
    ] {
        let err = Config::from_toml_with_env(&endpoint(extra), &no_env).unwrap_err();
        assert_eq!(err.key, key, "{extra}: {err}");
    }
}

#[test]
fn env_references_expand_and_unset_ones_are_named() {
    let env = |name: &str| (name == "GROUP").then(|| "fleet".to_string());
    let c = Config::from_toml_with_env("[kafka]\ngroup_id = \"${GROUP}-hs\"", &env).unwrap();
    assert_eq!(c.kafka.group_id, "fleet-hs");
    let err = Config::from_toml_with_env("[kafka]\nbrokers = \"${NOPE}\"", &env).unwrap_err();
    assert_eq!(err.key, "kafka.brokers");
    assert!(err.message.contains("NOPE"));
}

#[test]
fn properties_accept_numbers_and_strings() {
    let c = Config::from_toml_with_env(
        "[kafka.properties]\n\"session.timeout.ms\" = 10000\n\"x\" = \"y\"",
        &no_env,
    )
    .unwrap();
    assert_eq!(
        c.kafka.properties["session.timeout.ms"].to_string(),
        "10000"
    );
}

#[test]
fn source_topic_must_be_consumed() {
    let err = Config::from_toml_with_env(
        "[[sources]]\ntopic = \"other\"\npreset = \"mender\"",
        &no_env,
    )
    .unwrap_err();
    assert_eq!(err.key, "sources[0].topic");
}

#[test]
fn api_limits_have_defaults_and_ranges_named_by_key() {
    let c = Config::from_toml_with_env("", &no_env).unwrap();
    assert_eq!(c.api.max_connections, 1024);
    assert_eq!(c.api.header_timeout.get().as_secs(), 10);
    assert_eq!(c.api.idle_timeout.get().as_secs(), 60);
    assert_eq!(c.api.body_timeout.get().as_secs(), 30);
    assert_eq!(c.api.max_body_bytes, 1_048_576);
    let c = Config::from_toml_with_env(
            "[api]\nmax_connections = 1\nheader_timeout = \"100ms\"\nidle_timeout = \"1h\"\nmax_body_bytes = 1024",
            &no_env,
        )
        .unwrap();
    assert_eq!(c.api.max_connections, 1);
    assert_eq!(c.api.header_timeout.get().as_millis(), 100);
    for (text, key) in [
        ("max_connections = 0", "api.max_connections"),
        ("max_connections = 1000001", "api.max_connections"),
        ("max_connections = -1", "api.max_connections"),
        ("header_timeout = \"0\"", "api.header_timeout"),
        ("header_timeout = \"99ms\"", "api.header_timeout"),
        ("idle_timeout = \"2h\"", "api.idle_timeout"),
        ("body_timeout = \"50ms\"", "api.body_timeout"),
        ("body_timeout = \"5\"", "api.body_timeout"),
        ("max_body_bytes = 1023", "api.max_body_bytes"),
        ("max_body_bytes = 268435457", "api.max_body_bytes"),
    ] {
        let err = Config::from_toml_with_env(&format!("[api]\n{text}"), &no_env).unwrap_err();
        assert_eq!(err.key, key, "{text}: {err}");
    }
}

#[test]
fn the_shipped_example_config_is_valid() {
    let text = include_str!("../../config/hookstream.toml");
    let env = |_: &str| Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string());
    Config::from_toml_with_env(text, &env).unwrap();
}

/// A file of `n` endpoints of several shapes: sub-tables (some after
/// another table), `${VAR}`s, headers, arrays over several lines.
fn many_endpoints(n: usize) -> String {
    let mut t = String::from("[kafka]\nbrokers = \"${BROKERS}\"\ntopics = [\"a\", \"b\"]\n\n");
    for i in 0..n {
        t.push_str(&format!(
            "[[endpoints]]\nid = \"ep-{i}\"\nurl = \"https://hooks.example.com/{i}\" # comment [x]\nsecret = \"${{SECRET}}\"\ndevices = [\n  \"dev-{i}\",\n  \"dev-{}\",\n]\n",
            i + 1
        ));
        if i % 3 == 0 {
            t.push_str("[endpoints.headers]\nX-Team = \"fleet [ops]\"\n");
        }
        if i % 7 == 0 {
            t.push_str("[endpoints.batch]\nmax_events = 10\n");
        }
        if i == n / 2 {
            t.push_str(
                "\n[delivery]\ntimeout = \"5s\"\n[endpoints.payload]\npointer = \"/data\"\n",
            );
        }
        t.push('\n');
    }
    t
}

fn test_env(name: &str) -> Option<String> {
    match name {
        "BROKERS" => Some("kafka:9092".into()),
        "SECRET" => Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into()),
        _ => None,
    }
}

fn no_files(path: &str) -> std::io::Result<String> {
    Err(std::io::Error::other(format!(
        "no file {path} in this test"
    )))
}

#[test]
fn many_endpoints_read_in_slices_equal_the_whole_file_read_at_once() {
    let text = many_endpoints(2 * chunked::ENDPOINTS_PER_SLICE + 345);
    assert!(chunked::split(&text, chunked::ENDPOINTS_PER_SLICE).is_some());
    let sliced = Config::from_toml_resolving(&text, &test_env, &no_files).unwrap();
    let whole = Config::from_whole(&text, &test_env, &no_files).unwrap();
    whole.validate().unwrap();
    assert_eq!(
        sliced.endpoints.len(),
        2 * chunked::ENDPOINTS_PER_SLICE + 345
    );
    assert_eq!(
        toml::Value::try_from(&sliced).unwrap(),
        toml::Value::try_from(&whole).unwrap()
    );
    assert_eq!(sliced.kafka.brokers, "kafka:9092");
    assert_eq!(sliced.delivery.timeout.get().as_secs(), 5);
}

#[test]
fn an_error_in_a_slice_names_the_endpoint_in_the_whole_file() {
    let n = 2 * chunked::ENDPOINTS_PER_SLICE + 10;
    let text = many_endpoints(n).replace(
        "id = \"ep-1500\"\n",
        "id = \"ep-1500\"\nmax_concurency = 3\n",
    );
    let err = Config::from_toml_resolving(&text, &test_env, &no_files).unwrap_err();
    assert_eq!(err.key, "endpoints[1500].max_concurency", "{err}");
    let unset = many_endpoints(n).replace(
        "id = \"ep-1999\"\nurl = \"https://hooks.example.com/1999\"",
        "id = \"ep-1999\"\nurl = \"${NOT_SET}\"",
    );
    let err = Config::from_toml_resolving(&unset, &test_env, &no_files).unwrap_err();
    assert_eq!(err.key, "endpoints[1999].url", "{err}");
}

#[test]
fn invalid_toml_in_a_slice_gives_the_line_in_the_whole_file() {
    let text = many_endpoints(2 * chunked::ENDPOINTS_PER_SLICE + 10);
    let line = text
        .lines()
        .position(|l| l == "id = \"ep-1234\"")
        .expect("endpoint 1234")
        + 1;
    let broken = text.replace("id = \"ep-1234\"\n", "id = \"ep-1234\"\nurl = = 3\n");
    let err = Config::from_toml_resolving(&broken, &test_env, &no_files).unwrap_err();
    assert!(err.message.contains(&format!("line {}", line + 1)), "{err}");
}
