//! Given a running pipeline with a metrics listener, and traffic that
//! produces every outcome (delivered, retried, dead-lettered, deferred,
//! rate-limited, invalid), when `/metrics` is scraped and parsed as
//! Prometheus text, then every metric hookstream names, every metric the
//! Grafana dashboard queries and every metric the alert rules use is there,
//! every family has help text, and `promtool check metrics` finds nothing
//! to say (when promtool is installed: `.ci/run` sets `PROMTOOL`, which
//! makes it required). When an endpoint is deleted, its series go; when the
//! pipeline stops, its partitions are revoked and their lag series go.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use hookstream::config::{HumanDuration, RateLimitConfig};
use hookstream::demo::receiver::Behaviour;
use hookstream::source::extract::Preset;

const TOPIC: &str = "device-events";

fn repo_file(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every `hookstream_*` and `process_*` name in `text`.
fn metric_names_in(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for prefix in ["hookstream_", "process_"] {
        let mut rest = text;
        while let Some(i) = rest.find(prefix) {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    names
}

fn dashboard_metric_names() -> BTreeSet<String> {
    metric_names_in(&repo_file("docker/grafana/dashboards/hookstream.json"))
}

/// The metric names in the `expr` of every alerting rule.
fn alert_rule_metric_names() -> BTreeSet<String> {
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&repo_file("deploy/prometheus/hookstream-alerts.yml")).unwrap();
    let mut names = BTreeSet::new();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            names.extend(metric_names_in(rule["expr"].as_str().unwrap()));
        }
    }
    names
}

/// Names in `wanted` that are not in `exposed` (a histogram's `_bucket`,
/// `_sum` and `_count` count as their family).
fn missing<'a>(wanted: &'a BTreeSet<String>, exposed: &BTreeSet<String>) -> Vec<&'a String> {
    wanted
        .iter()
        .filter(|name| {
            let base = name
                .strip_suffix("_bucket")
                .or_else(|| name.strip_suffix("_sum"))
                .or_else(|| name.strip_suffix("_count"))
                .unwrap_or(name);
            !exposed.contains(*name) && !exposed.contains(base)
        })
        .collect()
}

/// `promtool check metrics` on `text`: `None` when promtool is not there
/// (and `PROMTOOL` is not set), else its verdict and output.
fn promtool_check_metrics(text: &str) -> Option<(bool, String)> {
    use std::io::Write;
    let required = std::env::var_os("PROMTOOL");
    let program = required.clone().unwrap_or_else(|| "promtool".into());
    let mut child = match std::process::Command::new(&program)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if required.is_none() => {
            eprintln!("promtool not found ({e}): skipping `promtool check metrics`");
            return None;
        }
        Err(e) => panic!("PROMTOOL={program:?} does not run: {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), said))
}

async fn scrape(port: u16) -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_the_dashboard_queries_is_exposed() {
    let port = hookstream::metrics::install_exporter("127.0.0.1:0")
        .unwrap()
        .port();

    let cluster = Cluster::start(&[TOPIC], 2);
    let healthy = receiver(Behaviour::Healthy).await;
    let flaky = receiver(Behaviour::FailFirst {
        times: 1,
        status: 503,
        retry_after: None,
    })
    .await;
    let refusing = receiver(Behaviour::Status(400)).await;
    let slow = receiver(Behaviour::Slow(Duration::from_millis(300))).await;
    let mut config = config("metrics-test", &[(TOPIC, Preset::Mender)]);
    // The flaky endpoint's twenty first attempts open its circuit, and while
    // deferred first attempts meet its probes it stays open an interval (the
    // backoff cap) at a time: keep the interval short.
    config.delivery.backoff.max = HumanDuration::from_millis(300);
    let mut limited = endpoint("healthy", healthy.url("in"), &["*"], "none", "");
    limited.rate_limit = Some(Box::new(RateLimitConfig {
        per_second: 20.0,
        burst: 1,
    }));
    config.endpoints.push(limited);
    // Adaptive concurrency: its limit is a gauge of its own.
    let mut adaptive = endpoint("flaky", flaky.url("in"), &["*"], "none", "");
    adaptive.adaptive_concurrency = Some(Box::default());
    config.endpoints.push(adaptive);
    config
        .endpoints
        .push(endpoint("refusing", refusing.url("in"), &["*"], "none", ""));
    let mut tiny = endpoint("slow", slow.url("in"), &["*"], "none", "");
    tiny.queue_size = 1;
    tiny.max_concurrency = 1;
    config.endpoints.push(tiny);
    let pipeline = start(config, &cluster).await;
    let events = provisioned_events("m", 20);
    cluster.produce_many(TOPIC, &events).await;
    cluster.produce(TOPIC, "bad", b"not json", &[]).await;

    wait_for(
        "the flaky endpoint's retries",
        Duration::from_secs(30),
        || flaky.log().accepted_count() >= 20,
    )
    .await;
    wait_for("the rate-limited endpoint", Duration::from_secs(30), || {
        healthy.log().accepted_count() >= 20
    })
    .await;
    // librdkafka reports consumer lag every 5 s.
    tokio::time::sleep(Duration::from_secs(6)).await;

    let text = scrape(port).await;
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    let exposed: BTreeSet<String> = parsed.samples.iter().map(|s| s.metric.clone()).collect();
    let wanted = dashboard_metric_names();
    assert!(
        wanted.len() >= 12,
        "the dashboard queries hookstream's metrics: {wanted:?}"
    );
    let not_exposed = missing(&wanted, &exposed);
    assert!(
        not_exposed.is_empty(),
        "queried by the dashboard, not exposed: {not_exposed:?}\n{text}"
    );
    let in_rules = alert_rule_metric_names();
    assert!(in_rules.len() >= 8, "{in_rules:?}");
    let not_exposed = missing(&in_rules, &exposed);
    assert!(
        not_exposed.is_empty(),
        "used by the alert rules, not exposed: {not_exposed:?}\n{text}"
    );
    let named: BTreeSet<String> = hookstream::metrics::names::ALL
        .iter()
        .map(|n| n.to_string())
        .collect();
    let not_exposed = missing(&named, &exposed);
    assert!(
        not_exposed.is_empty(),
        "named in hookstream::metrics::names, not exposed: {not_exposed:?}\n{text}"
    );
    for family in &named {
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "{family} has help text"
        );
    }
    assert!(
        text.contains("hookstream_build_info{version=\"0.1.0\",librdkafka=\""),
        "build info"
    );
    if let Some((ok, said)) = promtool_check_metrics(&text) {
        assert!(
            ok && said.trim().is_empty(),
            "promtool check metrics:\n{said}"
        );
    }
    for outcome in ["delivered", "retry_scheduled", "dead_lettered", "deferred"] {
        assert!(
            text.contains(&format!("outcome=\"{outcome}\"")),
            "deliveries with outcome {outcome} are counted"
        );
    }
    assert!(
        text.contains(
            "hookstream_delivery_duration_seconds_bucket{endpoint=\"healthy\",le=\"0.001\"}"
        ),
        "1 ms bucket"
    );
    assert!(text.contains("le=\"60\""), "60 s bucket");
    assert!(
        text.contains("hookstream_endpoint_concurrency_limit{endpoint=\"flaky\"} "),
        "the adaptive endpoint's limit"
    );
    assert!(
        !text.contains("hookstream_endpoint_concurrency_limit{endpoint=\"healthy\"}"),
        "no limit series for a fixed limit"
    );

    // Deleting an endpoint (as the API or the store's follower does)
    // removes its series.
    assert!(text.contains("endpoint=\"refusing\""));
    pipeline.registry().remove(&["refusing"]);
    let text = scrape(port).await;
    assert!(
        !text.contains("endpoint=\"refusing\""),
        "a deleted endpoint's series are gone:\n{text}"
    );
    assert!(text.contains("endpoint=\"healthy\""));
    assert!(text.contains("hookstream_consumer_lag{topic=\"device-events\",partition=\"0\"}"));
    pipeline.shutdown().await.unwrap();
    let text = scrape(port).await;
    assert!(
        !text.contains("hookstream_consumer_lag{"),
        "the stopped pipeline's partitions were revoked: their lag is gone\n{text}"
    );
}
