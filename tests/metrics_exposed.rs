//! Given a running pipeline with a metrics listener, and traffic that
//! produces every outcome (delivered, retried, dead-lettered, deferred,
//! rate-limited, invalid), when `/metrics` is scraped and parsed as
//! Prometheus text, then every metric the Grafana dashboard queries is there.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use hookstream::config::{HumanDuration, RateLimitConfig};
use hookstream::demo::receiver::Behaviour;
use hookstream::source::extract::Preset;

const TOPIC: &str = "device-events";

fn dashboard_metric_names() -> BTreeSet<String> {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("docker/grafana/dashboards/hookstream.json"),
    )
    .unwrap();
    let mut names = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("hookstream_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
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
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    hookstream::metrics::install_exporter(&format!("127.0.0.1:{port}")).unwrap();

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
    limited.rate_limit = Some(RateLimitConfig {
        per_second: 20.0,
        burst: 1,
    });
    config.endpoints.push(limited);
    config
        .endpoints
        .push(endpoint("flaky", flaky.url("in"), &["*"], "none", ""));
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
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    let exposed: BTreeSet<String> = scrape.samples.iter().map(|s| s.metric.clone()).collect();
    let wanted = dashboard_metric_names();
    assert!(
        wanted.len() >= 12,
        "the dashboard queries the metrics of SPEC §7: {wanted:?}"
    );
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|name| {
            let base = name
                .strip_suffix("_bucket")
                .or_else(|| name.strip_suffix("_sum"))
                .or_else(|| name.strip_suffix("_count"))
                .unwrap_or(name);
            !exposed.contains(*name) && !exposed.contains(base)
        })
        .collect();
    assert!(missing.is_empty(), "not exposed: {missing:?}\n{text}");
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
    pipeline.shutdown().await.unwrap();
}
