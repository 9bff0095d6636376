//! Broker faults, injected into librdkafka's mock cluster: a broker going
//! down and coming back, produce requests to the retry and DLQ topics
//! failing (single records and deferral batches), slow requests, and a rebalance between two pipelines of one
//! group. In every case nothing is lost, no offset is committed past a
//! record whose retry or dead letter was not stored, and the pipeline
//! recovers by itself.

mod common;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use hookstream::config::HumanDuration;
use hookstream::demo::receiver::{Behaviour, Receiver};
use hookstream::source::extract::Preset;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

const TOPIC: &str = "device-events";

fn seen(rx: &Receiver) -> HashSet<String> {
    bodies_by(&rx.log().recorded(), "/id").into_keys().collect()
}

/// Asserts that the receiver saw every one of `evt-0` .. `evt-{n-1}`.
/// Waits poll the receiver's count of distinct webhook-ids answered 2xx
/// (one endpoint: one per event); the bodies are parsed once, here.
fn assert_every_event_seen(rx: &Receiver, n: usize) {
    let seen = seen(rx);
    let missing: Vec<String> = (0..n)
        .map(|i| format!("evt-{i}"))
        .filter(|id| !seen.contains(id))
        .collect();
    assert!(missing.is_empty(), "never delivered: {missing:?}");
}

fn committed_total(cluster: &Cluster, group: &str) -> i64 {
    cluster
        .committed_vs_end(group, TOPIC)
        .iter()
        .map(|(_, c, _)| (*c).max(0))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_loses_nothing_and_the_pipeline_recovers() {
    let cluster = Cluster::start(&[TOPIC], 3);
    let rx = receiver(Behaviour::Healthy).await;
    let mut config = config("outage-test", &[(TOPIC, Preset::Mender)]);
    config
        .endpoints
        .push(endpoint("sink", rx.url("in"), &["*"], "none", ""));
    let pipeline = start(config, &cluster).await;
    cluster.produce_many(TOPIC, &status_events(0, 300)).await;
    wait_for("the first events", Duration::from_secs(20), || {
        rx.log().accepted_count() > 0
    })
    .await;

    cluster.broker.broker_down(1).unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.broker.broker_up(1).unwrap();
    cluster.produce_many(TOPIC, &status_events(300, 600)).await;

    wait_for(
        "all 600 events after the outage",
        Duration::from_secs(60),
        || rx.log().accepted_count() >= 600,
    )
    .await;
    assert_every_event_seen(&rx, 600);
    wait_for("offsets at the end", Duration::from_secs(30), || {
        cluster.offsets_at_end("outage-test", TOPIC)
    })
    .await;
    assert!(!pipeline.is_finished(), "the pipeline kept running");
    pipeline.shutdown().await.unwrap();
}

/// Given a pipeline whose endpoint needs outcome records on `outcome_topic`
/// and whose group settled with one event, when `events - 1` more are
/// produced while produce requests fail, then no offset moves past the
/// first until the writes succeed (`tried` says the pipeline has had the
/// chance to write them), and afterwards every event is on `outcome_topic`
/// (deferral batches read entry by entry) and the offsets reach the end.
async fn failing_writes_hold_the_offsets(
    cluster: &Cluster,
    group: &str,
    outcome_topic: &str,
    events: usize,
    mut tried: impl FnMut() -> bool,
) {
    cluster.produce_many(TOPIC, &status_events(0, 1)).await;
    wait_for("the first outcome", Duration::from_secs(20), || {
        !cluster.read_all(outcome_topic).is_empty() && cluster.offsets_at_end(group, TOPIC)
    })
    .await;
    assert_eq!(committed_total(cluster, group), 1);

    cluster.produce_many(TOPIC, &status_events(1, events)).await;
    cluster
        .broker
        .request_errors(
            RDKafkaApiKey::Produce,
            &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED; 500],
        )
        .unwrap();
    wait_for(
        "the pipeline to try the writes",
        Duration::from_secs(20),
        &mut tried,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        committed_total(cluster, group),
        1,
        "no offset committed while the outcome writes fail"
    );

    cluster
        .broker
        .clear_request_errors(RDKafkaApiKey::Produce)
        .unwrap();
    wait_for(
        "offsets at the end once writes succeed",
        Duration::from_secs(60),
        || cluster.offsets_at_end(group, TOPIC),
    )
    .await;
    let ids: HashSet<String> = cluster
        .read_retries(outcome_topic)
        .iter()
        .filter_map(|r| r.header("hookstream-event-id").map(str::to_string))
        .collect();
    let missing: Vec<String> = (0..events)
        .map(|i| format!("evt-{i}"))
        .filter(|id| !ids.contains(id))
        .collect();
    assert!(
        missing.is_empty(),
        "not stored on {outcome_topic}: {missing:?}"
    );
}

/// Produce requests fail while the endpoint needs dead letters (or retries):
/// the input offsets must not move until the broker stored them.
async fn failing_outcome_writes_hold_the_offsets(
    group: &str,
    behaviour: Behaviour,
    outcome_topic: &str,
) {
    let cluster = Cluster::start(&[TOPIC], 1);
    let rx = receiver(behaviour).await;
    let mut config = config(group, &[(TOPIC, Preset::Mender)]);
    config.delivery.max_attempts = 2;
    config
        .endpoints
        .push(endpoint("failing", rx.url("in"), &["*"], "none", ""));
    let pipeline = start(config, &cluster).await;
    // The receiver answers after a second: the errors are in place before
    // the pipeline writes any outcome for the five after the first.
    failing_writes_hold_the_offsets(&cluster, group, outcome_topic, 6, || {
        rx.log().requests.load(Ordering::Relaxed) >= 6
    })
    .await;
    pipeline.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_dlq_writes_hold_the_offsets() {
    let refuse = Behaviour::SlowStatus(Duration::from_secs(1), 400);
    failing_outcome_writes_hold_the_offsets("dlq-fault-test", refuse, "hookstream.dlq").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_retry_writes_hold_the_offsets() {
    let unavailable = Behaviour::SlowStatus(Duration::from_secs(1), 503);
    failing_outcome_writes_hold_the_offsets(
        "retry-fault-test",
        unavailable,
        "hookstream.retry.100ms",
    )
    .await;
}

/// A dead endpoint's deferrals share batch records: while produce requests
/// fail, no input offset moves past the first event; once they succeed,
/// every event is on the tier, and some of them in batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_deferral_batch_writes_hold_the_offsets() {
    let group = "batch-fault-test";
    let tier = "hookstream.retry.100ms";
    let cluster = Cluster::start(&[TOPIC], 1);
    let mut config = config(group, &[(TOPIC, Preset::Mender)]);
    probe_a_dead_host_often(&mut config);
    config
        .endpoints
        .push(endpoint("dead", refused_url("in"), &["*"], "none", ""));
    let pipeline = start(config, &cluster).await;
    failing_writes_hold_the_offsets(&cluster, group, tier, 201, || {
        pipeline.stats().consumed.load(Ordering::Relaxed) >= 201
    })
    .await;
    pipeline.shutdown().await.unwrap();
    assert!(
        cluster
            .read_all(tier)
            .iter()
            .any(|r| r.header("hookstream-batch").is_some()),
        "deferrals were batched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_broker_requests_lose_nothing() {
    let cluster = Cluster::start(&[TOPIC], 2);
    let rx = receiver(Behaviour::FailFirst {
        times: 1,
        status: 503,
        retry_after: None,
    })
    .await;
    let mut config = config("rtt-test", &[(TOPIC, Preset::Mender)]);
    // A hundred first attempts failing open the circuit. Deferred events
    // keep their first attempt, so while they come back first every probe
    // fails and the circuit stays open another interval (the backoff cap):
    // keep that interval short, so the wait depends on the broker's delay.
    config.delivery.backoff.max = HumanDuration::from_millis(300);
    config
        .endpoints
        .push(endpoint("sink", rx.url("in"), &["*"], "none", ""));
    let pipeline = start(config, &cluster).await;
    cluster.produce_many(TOPIC, &status_events(0, 100)).await;
    wait_for("the first events", Duration::from_secs(20), || {
        rx.log().requests.load(Ordering::Relaxed) > 0
    })
    .await;
    cluster
        .broker
        .round_trip_time(1, Duration::from_millis(1500))
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    cluster.broker.round_trip_time(1, Duration::ZERO).unwrap();
    wait_for(
        "all 100 events delivered after their retry",
        Duration::from_secs(60),
        || rx.log().accepted_count() >= 100,
    )
    .await;
    wait_for("offsets at the end", Duration::from_secs(30), || {
        cluster.offsets_at_end("rtt-test", TOPIC)
    })
    .await;
    pipeline.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebalance_between_two_pipelines_loses_nothing() {
    let cluster = Cluster::start(&[TOPIC], 6);
    let rx = receiver(Behaviour::Slow(Duration::from_millis(1))).await;
    let make = || {
        let mut c = config("rebalance-test", &[(TOPIC, Preset::Mender)]);
        if let Ok(debug) = std::env::var("KAFKA_DEBUG") {
            c.kafka.properties.insert(
                "debug".into(),
                hookstream::config::PropertyValue::Text(debug),
            );
        }
        let mut ep = endpoint("sink", rx.url("in"), &["*"], "none", "");
        ep.max_concurrency = 4;
        c.endpoints.push(ep);
        c
    };
    cluster.produce_many(TOPIC, &status_events(0, 1500)).await;
    let first = start(make(), &cluster).await;
    wait_for(
        "the first pipeline to start delivering",
        Duration::from_secs(20),
        || rx.log().accepted_count() > 100,
    )
    .await;
    let second = start(make(), &cluster).await;
    wait_for(
        "the second pipeline to be assigned input partitions",
        Duration::from_secs(30),
        || second.stats().input_partitions.load(Ordering::Relaxed) > 0,
    )
    .await;
    cluster
        .produce_many(TOPIC, &status_events(1500, 3000))
        .await;
    wait_for(
        "the second pipeline to take partitions",
        Duration::from_secs(30),
        || second.stats().consumed.load(Ordering::Relaxed) > 0,
    )
    .await;
    first.shutdown().await.unwrap();
    wait_for("all 3000 events", Duration::from_secs(60), || {
        rx.log().accepted_count() >= 3000
    })
    .await;
    assert_every_event_seen(&rx, 3000);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !cluster.offsets_at_end("rebalance-test", TOPIC) {
        assert!(
            std::time::Instant::now() < deadline,
            "offsets not at the end: {:?}",
            cluster.committed_vs_end("rebalance-test", TOPIC)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let requests = rx.log().requests.load(Ordering::Relaxed);
    eprintln!("rebalance: {requests} requests for 3000 events");
    second.shutdown().await.unwrap();
}
