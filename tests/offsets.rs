//! Offsets and memory: a pipeline that crashes or stops mid-stream loses no
//! event when restarted, and `max_in_flight` bounds what is held at once.

mod common;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use hookstream::demo::receiver::Behaviour;
use hookstream::source::extract::Preset;

const TOPIC: &str = "device-events";

fn seen_ids(rx: &hookstream::demo::receiver::Receiver) -> HashSet<String> {
    bodies_by(&rx.log().recorded(), "/id").into_keys().collect()
}

async fn restart_loses_nothing(group: &str, crash: bool) {
    let cluster = Cluster::start(&[TOPIC], 4);
    let rx = receiver(Behaviour::Slow(Duration::from_millis(2))).await;
    let make_config = || {
        let mut c = config(group, &[(TOPIC, Preset::Mender)]);
        let mut ep = endpoint("sink", rx.url("in"), &["*"], "none", "");
        ep.max_concurrency = 8;
        c.endpoints.push(ep);
        c
    };
    let total = 3000;
    cluster.produce_many(TOPIC, &status_events(0, total)).await;

    let first = start(make_config(), &cluster).await;
    wait_for(
        "the first pipeline to deliver some events",
        Duration::from_secs(30),
        || rx.log().requests.load(Ordering::Relaxed) >= 600,
    )
    .await;
    if crash {
        first.abort();
    } else {
        first.shutdown().await.unwrap();
    }
    let before_restart = rx.log().requests.load(Ordering::Relaxed);
    assert!(
        before_restart < total as u64,
        "stopped mid-stream ({before_restart} of {total})"
    );

    let second = start(make_config(), &cluster).await;
    wait_for(
        "every event after the restart",
        Duration::from_secs(60),
        || seen_ids(&rx).len() >= total,
    )
    .await;
    wait_for("offsets to reach the end", Duration::from_secs(15), || {
        cluster.offsets_at_end(group, TOPIC)
    })
    .await;
    let seen = seen_ids(&rx);
    for i in 0..total {
        assert!(seen.contains(&format!("evt-{i}")), "evt-{i} was delivered");
    }
    let requests = rx.log().requests.load(Ordering::Relaxed);
    eprintln!(
        "{} restart: {requests} requests for {total} events ({:.1}% duplicates)",
        if crash { "crash" } else { "graceful" },
        (requests as f64 - total as f64) * 100.0 / total as f64
    );
    second.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_mid_stream_loses_no_event() {
    restart_loses_nothing("crash-test", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_mid_stream_loses_no_event_and_commits_what_it_settled() {
    restart_loses_nothing("graceful-test", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_bounds_what_is_held_at_once() {
    let cluster = Cluster::start(&[TOPIC], 2);
    let rx = receiver(Behaviour::Slow(Duration::from_millis(50))).await;
    let mut config = config("backpressure-test", &[(TOPIC, Preset::Mender)]);
    config.delivery.max_in_flight = 20;
    let mut ep = endpoint("sink", rx.url("in"), &["*"], "none", "");
    ep.max_concurrency = 200;
    ep.queue_size = 5000;
    config.endpoints.push(ep);
    cluster.produce_many(TOPIC, &status_events(0, 400)).await;
    let pipeline = start(config, &cluster).await;
    wait_for("all events", Duration::from_secs(60), || {
        seen_ids(&rx).len() >= 400
    })
    .await;
    let peak = rx.log().max_in_progress.load(Ordering::SeqCst);
    assert!(
        peak <= 21,
        "at most max_in_flight (+1 being dispatched) requests at once, saw {peak}"
    );
    assert!(
        peak >= 10,
        "the bound, not something else, limited concurrency (peak {peak})"
    );
    wait_for("offsets to reach the end", Duration::from_secs(15), || {
        cluster.offsets_at_end("backpressure-test", TOPIC)
    })
    .await;
    pipeline.shutdown().await.unwrap();
}

/// Many endpoints on one receiver share its host's limit: 50 endpoints that
/// each may send 8 requests at once never have more than
/// `max_connections_per_host` requests open at that receiver.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_on_one_host_share_its_connection_limit() {
    let cluster = Cluster::start(&[TOPIC], 2);
    let rx = receiver(Behaviour::Slow(Duration::from_millis(50))).await;
    let mut config = config("host-limit-test", &[(TOPIC, Preset::Mender)]);
    config.delivery.max_connections_per_host = 6;
    for i in 0..50 {
        let mut ep = endpoint(
            &format!("ep-{i}"),
            rx.url(&format!("in/{i}")),
            &["*"],
            "none",
            "",
        );
        ep.max_concurrency = 8;
        config.endpoints.push(ep);
    }
    cluster.produce_many(TOPIC, &status_events(0, 20)).await;
    let pipeline = start(config, &cluster).await;
    wait_for(
        "every event at every endpoint",
        Duration::from_secs(60),
        || rx.log().accepted_count() >= 20 * 50,
    )
    .await;
    let peak = rx.log().max_in_progress.load(Ordering::SeqCst);
    assert!(peak <= 6, "at most 6 requests open at the host, saw {peak}");
    assert!(
        peak >= 4,
        "the host limit, not something else, bounded it (peak {peak})"
    );
    wait_for("offsets to reach the end", Duration::from_secs(15), || {
        cluster.offsets_at_end("host-limit-test", TOPIC)
    })
    .await;
    pipeline.shutdown().await.unwrap();
}

/// Senders cost memory only while endpoints are in use: once an endpoint
/// had nothing to do for a couple of seconds its sender is dropped, and its
/// next event makes a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_endpoints_keep_no_sender_and_deliver_again_when_needed() {
    let cluster = Cluster::start(&[TOPIC], 2);
    let rx = receiver(Behaviour::Healthy).await;
    let mut config = config("idle-sender-test", &[(TOPIC, Preset::Mender)]);
    for i in 0..30 {
        let mut ep = endpoint(&format!("ep-{i}"), rx.url("in"), &["*"], "none", "");
        ep.devices = vec![format!("dev-{i}")];
        config.endpoints.push(ep);
    }
    let event = |i: usize, n: usize| {
        (
            format!("dev-{i}"),
            format!(
                r#"{{"id":"e-{i}-{n}","type":"device-status-changed","data":{{"id":"dev-{i}"}}}}"#
            )
            .into_bytes(),
        )
    };
    let pipeline = start(config, &cluster).await;
    cluster
        .produce_many(TOPIC, &(0..30).map(|i| event(i, 0)).collect::<Vec<_>>())
        .await;
    wait_for("one event per endpoint", Duration::from_secs(30), || {
        rx.log().accepted_count() >= 30
    })
    .await;
    let senders = || pipeline.stats().senders.load(Ordering::Relaxed);
    assert_eq!(senders(), 30, "one sender per endpoint in use");
    wait_for("idle senders dropped", Duration::from_secs(10), || {
        senders() == 0
    })
    .await;

    cluster.produce_many(TOPIC, &[event(7, 1)]).await;
    wait_for("the next event", Duration::from_secs(15), || {
        rx.log().accepted_count() >= 31
    })
    .await;
    assert_eq!(senders(), 1);
    assert_eq!(
        pipeline.registry().activity("ep-7").stats().delivered,
        2,
        "activity outlives senders"
    );
    pipeline.shutdown().await.unwrap();
}
