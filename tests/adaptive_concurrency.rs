//! Given an endpoint with `adaptive_concurrency` (ceiling: `max_concurrency
//! = 32`) whose receiver answers at most four requests at once and 503 to
//! any beyond, when a backlog of events flows to it, then hookstream learns
//! the receiver's capacity: once the backlog is half delivered, the receiver
//! never sees more than a request or two above four at once (a fixed limit
//! would send 32); every event is still delivered, the 503s retried through
//! the tiers; and `/metrics` shows the endpoint's limit moving, up from its
//! initial 1 and down again when the receiver pushed back.
//!
//! The metrics recorder is global to a process: this file is a test binary
//! of its own.

mod common;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use hookstream::config::AdaptiveConcurrencyConfig;
use hookstream::demo::receiver::Behaviour;
use hookstream::source::extract::Preset;

const TOPIC: &str = "device-events";
/// Requests the receiver answers at once.
const CAPACITY: u64 = 4;
/// Events in the backlog.
const EVENTS: usize = 400;

/// The endpoint's `hookstream_endpoint_concurrency_limit` in a scrape.
fn limit_in(text: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| {
            l.strip_prefix("hookstream_endpoint_concurrency_limit{endpoint=\"adaptive\"} ")
        })
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adaptive_endpoint_settles_at_what_its_receiver_takes_and_delivers_everything() {
    let port = hookstream::metrics::install_exporter("127.0.0.1:0")
        .unwrap()
        .port();
    let cluster = Cluster::start(&[TOPIC], 2);
    let overloaded = receiver(Behaviour::Overloaded {
        capacity: CAPACITY,
        delay: Duration::from_millis(25),
    })
    .await;
    let mut config = config("adaptive-test", &[(TOPIC, Preset::Mender)]);
    // Every 503 is retried until delivered.
    config.delivery.max_attempts = 1_000;
    let mut endpoint = endpoint("adaptive", overloaded.url("in"), &["*"], "none", "");
    endpoint.max_concurrency = 32;
    endpoint.adaptive_concurrency = Some(Box::new(AdaptiveConcurrencyConfig::default()));
    config.endpoints.push(endpoint);
    let dlq = config.topics.dlq_topic();
    let pipeline = start(config, &cluster).await;

    // The limit as /metrics shows it, scraped every 20 ms.
    let limits = Arc::new(Mutex::new(Vec::<f64>::new()));
    let scraper = {
        let limits = Arc::clone(&limits);
        tokio::spawn(async move {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let client = reqwest::Client::new();
            let url = format!("http://127.0.0.1:{port}/metrics");
            loop {
                if let Ok(answer) = client.get(&url).send().await
                    && let Ok(text) = answer.text().await
                    && let Some(limit) = limit_in(&text)
                {
                    limits.lock().unwrap().push(limit);
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };

    cluster.produce_many(TOPIC, &status_events(0, EVENTS)).await;
    let log = overloaded.log();
    wait_for(
        "half the backlog delivered",
        Duration::from_secs(60),
        || log.accepted_count() >= EVENTS / 2,
    )
    .await;
    // From here on, the most requests the receiver saw at once.
    log.max_in_progress
        .store(log.in_progress.load(Ordering::SeqCst), Ordering::SeqCst);
    wait_for("nine tenths delivered", Duration::from_secs(60), || {
        log.accepted_count() >= EVENTS * 9 / 10
    })
    .await;
    let settled_max = log.max_in_progress.load(Ordering::SeqCst);
    wait_for("every event delivered", Duration::from_secs(60), || {
        log.accepted_count() >= EVENTS
    })
    .await;
    scraper.abort();

    let rejected = log.requests.load(Ordering::SeqCst) - EVENTS as u64;
    assert!(
        (CAPACITY - 1..=CAPACITY + 2).contains(&settled_max),
        "the receiver saw at most {settled_max} requests at once in the second half (capacity {CAPACITY}, ceiling 32; {rejected} requests answered 503 in all)"
    );
    assert_eq!(log.accepted_count(), EVENTS, "each event delivered once");
    assert!(
        cluster.read_all(&dlq).is_empty(),
        "nothing was dead-lettered"
    );

    let limits = limits.lock().unwrap().clone();
    let highest = limits.iter().copied().fold(0.0, f64::max);
    let went_down = limits.windows(2).any(|w| w[1] < w[0]);
    assert!(
        highest >= 2.0 && went_down,
        "the limit rose from 1 and came down again: {limits:?}"
    );
    let last = limits.last().copied().unwrap_or_default();
    assert!(
        (1.0..=(CAPACITY + 2) as f64).contains(&last),
        "the limit ends near the capacity: {limits:?}"
    );
    pipeline.shutdown().await.unwrap();
}
