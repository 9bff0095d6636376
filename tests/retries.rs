//! Retries: given receivers that fail for a while, when events are produced,
//! then they are retried through the delay tiers with the same webhook-id
//! until delivered; 429/Retry-After use no attempts; a retry for an endpoint
//! that no longer exists is dead-lettered; deliveries an endpoint cannot take
//! now are deferred without using an attempt; retry-tier offsets commit; an
//! endpoint's retries stay on its own partition of each tier.

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use hookstream::config::HumanDuration;
use hookstream::demo::receiver::Behaviour;
use hookstream::source::extract::Preset;

const TOPIC: &str = "device-events";
const TIERS: [&str; 3] = [
    "hookstream.retry.100ms",
    "hookstream.retry.500ms",
    "hookstream.retry.2s",
];

/// Waits until `group` committed the end of the input topic and of every
/// retry tier.
async fn input_and_tier_offsets_reach_the_end(cluster: &Cluster, group: &str) {
    for topic in std::iter::once(TOPIC).chain(TIERS) {
        wait_for(
            &format!("{topic} offsets at the end"),
            Duration::from_secs(15),
            || cluster.offsets_at_end(group, topic),
        )
        .await;
    }
}

fn event(i: usize) -> (String, Vec<u8>) {
    (
        format!("dev-{}", i % 5),
        format!(
            r#"{{"id":"evt-{i}","type":"device-status-changed","data":{{"id":"dev-{}"}}}}"#,
            i % 5
        )
        .into_bytes(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_with_the_same_webhook_id_until_delivered() {
    let cluster = Cluster::start(&[TOPIC], 2);
    let flaky = receiver(Behaviour::FailFirst {
        times: 2,
        status: 503,
        retry_after: None,
    })
    .await;
    let mut config = config("retry-test", &[(TOPIC, Preset::Mender)]);
    config.delivery.backoff.jitter = 0.0;
    config.delivery.backoff.initial = HumanDuration::from_millis(500);
    // Twenty first attempts failing together open the circuit. It stays open
    // another interval (the backoff cap) each time its probe meets an attempt
    // this receiver fails, up to 40 times in a row: cap it at 1 s (2 s in the
    // common config), and wait long enough for the worst order.
    config.delivery.backoff.max = HumanDuration::from_secs(1);
    config.endpoints.push(endpoint(
        "flaky",
        flaky.url("in"),
        &["*"],
        "standard",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ));
    let pipeline = start(config, &cluster).await;
    let events: Vec<_> = (0..20).map(event).collect();
    cluster.produce_many(TOPIC, &events).await;

    wait_for("20 deliveries", Duration::from_secs(60), || {
        flaky.log().accepted_count() >= 20
    })
    .await;
    let recorded = flaky.log().recorded();
    assert_eq!(recorded.len(), 60, "each event: two 503s, then 200");
    let mut by_id: HashMap<String, Vec<(Instant, String, u16)>> = HashMap::new();
    let mut seq = Instant::now();
    for r in &recorded {
        seq += Duration::from_nanos(1);
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        by_id
            .entry(body["id"].as_str().unwrap().to_string())
            .or_default()
            .push((seq, r.header("webhook-id").unwrap().to_string(), r.status));
        assert!(
            independently_verified("standard", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", r),
            "retries are signed"
        );
    }
    assert_eq!(by_id.len(), 20);
    for (id, attempts) in &by_id {
        assert_eq!(attempts.len(), 3, "{id}");
        assert!(
            attempts.iter().all(|a| a.1 == attempts[0].1),
            "{id}: same webhook-id on every attempt"
        );
        assert_eq!(
            attempts.iter().map(|a| a.2).collect::<Vec<_>>(),
            [503, 503, 200]
        );
    }
    input_and_tier_offsets_reach_the_end(&cluster, "retry-test").await;
    // Backoff 500 ms then 1 s map to the 500ms tier: 40 retries of 503s
    // there (besides deliveries deferred while the circuit was open).
    let retries: Vec<_> = cluster
        .read_retries("hookstream.retry.500ms")
        .into_iter()
        .filter(|r| r.header("hookstream-last-status") == Some("503"))
        .collect();
    assert_eq!(retries.len(), 40);
    let r = &retries[0];
    assert_eq!(r.header("hookstream-endpoint"), Some("flaky"));
    assert_eq!(r.header("hookstream-last-status"), Some("503"));
    assert!(
        r.header("hookstream-source")
            .unwrap()
            .starts_with("device-events/")
    );
    assert!(r.header("hookstream-event-id").unwrap().starts_with("evt-"));
    let due: i64 = r.header("hookstream-due-ms").unwrap().parse().unwrap();
    let first: i64 = r.header("hookstream-first-ms").unwrap().parse().unwrap();
    assert!(
        due - first >= 500,
        "due {due} at least the backoff after first {first}"
    );
    assert!(cluster.read_all("hookstream.dlq").is_empty());
    pipeline.shutdown().await.unwrap();
}

/// A retry is read back from its tier without parsing the event again: its
/// event type travels in `hookstream-event-type`, so the retried request
/// names the same event type in the scheme's header as the first attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_names_the_same_event_type_as_the_first_attempt() {
    let cluster = Cluster::start(&[TOPIC], 2);
    let flaky = receiver(Behaviour::FailFirst {
        times: 1,
        status: 503,
        retry_after: None,
    })
    .await;
    let mut config = config("retry-type-test", &[(TOPIC, Preset::Mender)]);
    config.delivery.backoff.jitter = 0.0;
    config.delivery.backoff.initial = HumanDuration::from_millis(100);
    config.endpoints.push(endpoint(
        "gh",
        flaky.url("in"),
        &["*"],
        "github",
        "github-secret",
    ));
    let pipeline = start(config, &cluster).await;
    let events: Vec<_> = (0..5).map(event).collect();
    cluster.produce_many(TOPIC, &events).await;

    wait_for("5 deliveries", Duration::from_secs(30), || {
        flaky.log().accepted_count() >= 5
    })
    .await;
    let recorded = flaky.log().recorded();
    assert_eq!(
        recorded.len(),
        10,
        "each event: a 503, then 200 from the tier"
    );
    for r in &recorded {
        assert_eq!(r.header("x-github-event"), Some("device-status-changed"));
        assert!(independently_verified("github", "github-secret", r));
    }
    // One retry per event, besides deferrals once five failures in a row
    // opened the circuit: every one carries the event type.
    let retries = cluster.read_retries("hookstream.retry.100ms");
    let ids: std::collections::HashSet<&str> = retries
        .iter()
        .map(|r| r.header("hookstream-event-id").unwrap())
        .collect();
    assert_eq!(ids.len(), 5);
    for r in &retries {
        assert_eq!(
            r.header("hookstream-event-type"),
            Some("device-status-changed")
        );
    }
    pipeline.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_requests_use_no_attempts_and_retry_after_is_honoured() {
    let cluster = Cluster::start(&[TOPIC], 1);
    // max_attempts is 3; five 429s still end in a delivery.
    let limited = receiver(Behaviour::FailFirst {
        times: 5,
        status: 429,
        retry_after: Some("1"),
    })
    .await;
    let mut config = config("ratelimit-test", &[(TOPIC, Preset::Mender)]);
    config
        .endpoints
        .push(endpoint("limited", limited.url("in"), &["*"], "none", ""));
    let pipeline = start(config, &cluster).await;
    cluster.produce_many(TOPIC, &[event(1)]).await;
    wait_for(
        "the delivery after five 429s",
        Duration::from_secs(30),
        || limited.log().accepted_count() == 1,
    )
    .await;
    let recorded = limited.log().recorded();
    assert_eq!(recorded.len(), 6);
    // Retry-After: 1 (capped at backoff max 2s) → about a second apart.
    // Arrival order is recording order; check the gaps via the DLQ-free path.
    assert!(
        cluster.read_all("hookstream.dlq").is_empty(),
        "not exhausted"
    );
    let retries = cluster.read_all("hookstream.retry.500ms");
    assert_eq!(retries.len(), 5, "Retry-After 1s maps to the 500ms tier");
    assert!(
        retries
            .iter()
            .all(|r| r.header("hookstream-attempt") == Some("0")),
        "no attempt used"
    );
    for r in &retries {
        let due: i64 = r.header("hookstream-due-ms").unwrap().parse().unwrap();
        let dead_or_first: i64 = r.header("hookstream-first-ms").unwrap().parse().unwrap();
        assert!(due > dead_or_first);
    }
    pipeline.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_wait_for_their_due_time() {
    let cluster = Cluster::start(&[TOPIC], 1);
    let flaky = receiver(Behaviour::FailFirst {
        times: 1,
        status: 500,
        retry_after: None,
    })
    .await;
    let mut config = config("due-test", &[(TOPIC, Preset::Mender)]);
    config.delivery.backoff.jitter = 0.0;
    config.delivery.backoff.initial = HumanDuration::from_secs(2);
    config
        .endpoints
        .push(endpoint("flaky", flaky.url("in"), &["*"], "none", ""));
    let pipeline = start(config, &cluster).await;
    cluster.produce_many(TOPIC, &[event(7)]).await;
    wait_for("the first attempt", Duration::from_secs(20), || {
        flaky.log().requests.load(Ordering::Relaxed) == 1
    })
    .await;
    let first = Instant::now();
    wait_for("the retry", Duration::from_secs(20), || {
        flaky.log().accepted_count() == 1
    })
    .await;
    let gap = first.elapsed();
    assert!(
        gap >= Duration::from_millis(1900),
        "retried after {gap:?}, not before the 2 s backoff"
    );
    assert!(gap < Duration::from_secs(6), "and not much later: {gap:?}");
    pipeline.shutdown().await.unwrap();
}

/// Retries for a deleted endpoint and for one that answered 410 Gone are
/// dead-lettered; a disabled endpoint's retry waits on the recheck tier
/// while it is younger than `disabled_backlog.max_age` and is dead-lettered
/// as `endpoint_disabled` once older.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_for_an_endpoint_that_no_longer_exists_are_dead_lettered() {
    let cluster = Cluster::start(&[TOPIC], 1);
    let rx = receiver(Behaviour::Healthy).await;
    let mut config = config("ghost-test", &[(TOPIC, Preset::Mender)]);
    config
        .endpoints
        .push(endpoint("present", rx.url("in"), &["*"], "none", ""));
    let mut disabled = endpoint("paused", rx.url("in"), &["*"], "none", "");
    disabled.enabled = false;
    config.endpoints.push(disabled);
    let mut gone = endpoint("retired", rx.url("in"), &["*"], "none", "");
    gone.enabled = false;
    gone.disabled = Some(Box::new(hookstream::config::DisabledBy {
        reason: "the endpoint answered 410 Gone".into(),
        at: "2026-01-01T00:00:00Z".into(),
        cause: hookstream::config::DisableCause::Gone,
    }));
    config.endpoints.push(gone);
    config.delivery.disabled_backlog.max_age = HumanDuration::from_secs(3600);
    let pipeline = start(config, &cluster).await;
    let now_ms = hookstream::wire::headers::now_ms();
    let now = now_ms.to_string();
    let two_hours_ago = (now_ms - 2 * 3_600_000).to_string();
    for (ep, first_ms) in [
        ("ghost", &now),
        ("paused", &now),
        ("paused-long", &two_hours_ago),
        ("retired", &now),
        ("present", &now),
    ] {
        let (ep, id) = match ep {
            "paused-long" => ("paused", "r2"),
            other => (other, "r1"),
        };
        cluster
            .produce(
                "hookstream.retry.100ms",
                "k",
                format!(r#"{{"id":"{id}","type":"device-provisioned","data":{{"id":"d"}}}}"#)
                    .as_bytes(),
                &[
                    ("hookstream-endpoint", ep),
                    ("hookstream-attempt", "1"),
                    ("hookstream-due-ms", &now),
                    ("hookstream-first-ms", first_ms),
                    ("hookstream-source", "device-events/0/42"),
                    ("hookstream-event-id", id),
                ],
            )
            .await;
    }
    cluster
        .produce(
            "hookstream.retry.100ms",
            "k",
            b"{}",
            &[("hookstream-endpoint", "present")],
        )
        .await;
    let mut dlq = Vec::new();
    wait_for("four dead letters", Duration::from_secs(20), || {
        dlq = cluster.read_all("hookstream.dlq");
        dlq.len() >= 4
    })
    .await;
    let reason_of = |ep: Option<&str>| {
        dlq.iter()
            .find(|r| r.header("hookstream-endpoint") == ep)
            .and_then(|r| r.header("hookstream-reason"))
            .map(str::to_string)
    };
    assert_eq!(
        reason_of(Some("ghost")).as_deref(),
        Some("endpoint_deleted")
    );
    assert_eq!(
        reason_of(Some("retired")).as_deref(),
        Some("endpoint_disabled"),
        "after 410 Gone nothing is kept"
    );
    let paused: Vec<_> = dlq
        .iter()
        .filter(|r| r.header("hookstream-endpoint") == Some("paused"))
        .collect();
    assert_eq!(paused.len(), 1, "only the old one is dead-lettered");
    assert_eq!(paused[0].header("hookstream-event-id"), Some("r2"));
    assert_eq!(
        paused[0].header("hookstream-reason"),
        Some("endpoint_disabled")
    );
    assert_eq!(
        paused[0].header("hookstream-attempt"),
        Some("1"),
        "with its history"
    );
    assert_eq!(
        paused[0].header("hookstream-first-ms"),
        Some(two_hours_ago.as_str())
    );
    wait_for(
        "the young one kept on the recheck tier",
        Duration::from_secs(10),
        || {
            cluster.read_retries("hookstream.retry.2s").iter().any(|r| {
                r.header("hookstream-endpoint") == Some("paused")
                    && r.header("hookstream-event-id") == Some("r1")
                    && r.header("hookstream-attempt") == Some("1")
            })
        },
    )
    .await;
    assert_eq!(
        reason_of(None).as_deref(),
        Some("invalid_event"),
        "a retry record without its headers"
    );
    wait_for(
        "the retry to the present endpoint",
        Duration::from_secs(10),
        || rx.log().accepted_count() == 1,
    )
    .await;
    let sent = &rx.log().recorded()[0];
    assert_eq!(
        sent.header("webhook-id").unwrap(),
        hookstream::deliver::request::webhook_id("r1", "present")
    );
    pipeline.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_defers_without_using_attempts_and_spares_the_neighbour() {
    let cluster = Cluster::start(&[TOPIC], 2);
    // One request at a time, 700 ms each: the sender takes nothing from its
    // queue for longer than the dispatcher's patience, so it is stalled.
    let slow = receiver(Behaviour::Slow(Duration::from_millis(700))).await;
    let healthy = receiver(Behaviour::Healthy).await;
    let mut config = config("defer-test", &[(TOPIC, Preset::Mender)]);
    let mut ep = endpoint("slow", slow.url("in"), &["*"], "none", "");
    ep.max_concurrency = 1;
    ep.queue_size = 1;
    config.endpoints.push(ep);
    config
        .endpoints
        .push(endpoint("healthy", healthy.url("in"), &["*"], "none", ""));
    let pipeline = start(config, &cluster).await;
    let events: Vec<_> = (0..20).map(event).collect();
    cluster.produce_many(TOPIC, &events).await;

    wait_for(
        "the healthy endpoint to get everything",
        Duration::from_secs(20),
        || healthy.log().accepted_count() >= 20,
    )
    .await;
    let slow_done = slow.log().accepted_count();
    assert!(
        slow_done < 10,
        "the healthy endpoint did not wait for the slow one ({slow_done} slow deliveries so far)"
    );
    wait_for(
        "the slow endpoint to get everything",
        Duration::from_secs(60),
        || slow.log().accepted_count() >= 20,
    )
    .await;
    let stats = pipeline.registry().activity("slow").stats();
    assert!(stats.deferred > 0, "some deliveries were deferred");
    assert!(
        cluster.read_all("hookstream.dlq").is_empty(),
        "deferrals use no attempts: nothing exhausted"
    );
    let deferred = cluster.read_retries("hookstream.retry.100ms");
    assert!(!deferred.is_empty());
    assert!(
        deferred
            .iter()
            .all(|r| r.header("hookstream-last-status") == Some("deferred"))
    );
    assert!(
        deferred
            .iter()
            .all(|r| r.header("hookstream-attempt") == Some("0"))
    );
    pipeline.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_disables_until_the_endpoint_is_saved_again() {
    let cluster = Cluster::start(&[TOPIC], 1);
    let rx = receiver(Behaviour::FailFirst {
        times: 1,
        status: 410,
        retry_after: None,
    })
    .await;
    let mut config = config("gone-test", &[(TOPIC, Preset::Mender)]);
    let ep = endpoint("gone", rx.url("in"), &["*"], "none", "");
    config.endpoints.push(ep.clone());
    let pipeline = start(config, &cluster).await;
    cluster.produce_many(TOPIC, &[event(1)]).await;
    wait_for("the 410", Duration::from_secs(20), || {
        cluster
            .read_all("hookstream.dlq")
            .iter()
            .any(|r| r.header("hookstream-reason") == Some("gone"))
    })
    .await;
    cluster.produce_many(TOPIC, &[event(2)]).await;
    wait_for(
        "the next event dead-lettered as endpoint_disabled",
        Duration::from_secs(20),
        || {
            cluster
                .read_all("hookstream.dlq")
                .iter()
                .any(|r| r.header("hookstream-reason") == Some("endpoint_disabled"))
        },
    )
    .await;
    assert_eq!(
        rx.log().requests.load(Ordering::Relaxed),
        1,
        "no request after 410"
    );
    // Saved again (as the API does on enable/update): deliveries resume.
    let saved =
        hookstream::index::Endpoint::build(ep, true, Duration::from_secs(5), &|_| None).unwrap();
    pipeline.registry().upsert(vec![std::sync::Arc::new(saved)]);
    cluster.produce_many(TOPIC, &[event(3)]).await;
    // (The receiver answers 410 to the first request of every webhook-id;
    // what matters is that a request is made again.)
    wait_for(
        "a request after the endpoint was saved",
        Duration::from_secs(20),
        || rx.log().requests.load(Ordering::Relaxed) == 2,
    )
    .await;
    pipeline.shutdown().await.unwrap();
}

/// Given two endpoints that always answer 503 and retry tiers of four
/// partitions, when events keyed by five devices are produced, then every
/// retry and deferral of an endpoint lies on that endpoint's partition of
/// its tier (so a dead endpoint's backlog holds back one partition, not all
/// of them), still keyed like its source record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoints_retries_stay_on_its_partition_of_each_tier() {
    let cluster = Cluster::start(&[TOPIC], 2);
    let down = receiver(Behaviour::Status(503)).await;
    let mut config = config("partition-test", &[(TOPIC, Preset::Mender)]);
    config.topics.partitions = 4;
    let ids = ["down-a", "down-b"];
    let partitions: Vec<i32> = ids
        .iter()
        .map(|id| hookstream::wire::headers::endpoint_partition(id, 4))
        .collect();
    assert_ne!(partitions[0], partitions[1], "the two ids hash apart");
    for id in ids {
        config
            .endpoints
            .push(endpoint(id, down.url(id), &["*"], "none", ""));
    }
    let pipeline = start(config, &cluster).await;
    let events: Vec<_> = (0..40).map(event).collect();
    cluster.produce_many(TOPIC, &events).await;
    wait_for(
        "every event's first outcome for both endpoints",
        Duration::from_secs(30),
        || {
            ids.iter().all(|id| {
                let a = pipeline.registry().activity(id).stats();
                a.retry_scheduled + a.deferred + a.dead_lettered >= 40
            })
        },
    )
    .await;
    pipeline.shutdown().await.unwrap();

    let records: Vec<_> = TIERS.iter().flat_map(|t| cluster.read_retries(t)).collect();
    for (id, partition) in ids.iter().zip(&partitions) {
        let mine: Vec<_> = records
            .iter()
            .filter(|r| r.header("hookstream-endpoint") == Some(*id))
            .collect();
        assert!(mine.len() >= 40, "{id}: {} retry records", mine.len());
        assert!(
            mine.iter().all(|r| r.partition == *partition),
            "{id}: partitions {:?}",
            mine.iter()
                .map(|r| r.partition)
                .collect::<std::collections::BTreeSet<_>>()
        );
        for r in &mine {
            let body = String::from_utf8_lossy(&r.value);
            let device = r.key.as_deref().expect("keyed");
            assert!(
                body.contains(&format!(r#""data":{{"id":"{device}"}}"#)),
                "{id}: key {device} is the source record's key, body {body}"
            );
        }
    }
}

/// Given an endpoint whose host refuses connections and 300 events, when its
/// circuit opens, then its deferrals share tier records, each entry being the
/// retry record it stands for (source key, original value, `hookstream-*`
/// headers); and once the endpoint points at a live receiver, every event
/// arrives with its own body, webhook-id and signature, none is
/// dead-lettered, and every offset commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoints_deferrals_share_records_and_all_arrive_once_it_is_back() {
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let cluster = Cluster::start(&[TOPIC], 2);
    let live = receiver(Behaviour::Healthy).await;
    let mut config = config("batch-test", &[(TOPIC, Preset::Mender)]);
    probe_a_dead_host_often(&mut config);
    let ep = endpoint("fleet", refused_url("in"), &["*"], "standard", SECRET);
    config.endpoints.push(ep.clone());
    let pipeline = start(config, &cluster).await;
    let events: Vec<_> = (0..300).map(event).collect();
    cluster.produce_many(TOPIC, &events).await;
    wait_for("200 deferrals", Duration::from_secs(30), || {
        pipeline.registry().activity("fleet").stats().deferred >= 200
    })
    .await;

    let records: Vec<_> = TIERS.iter().flat_map(|t| cluster.read_all(t)).collect();
    let batches: Vec<_> = records
        .iter()
        .filter(|r| r.header("hookstream-batch").is_some())
        .collect();
    assert!(
        !batches.is_empty(),
        "no deferral batch among {} tier records",
        records.len()
    );
    for batch in &batches {
        let entries = batch.retries();
        assert!(entries.len() > 1, "a lone deferral is a single record");
        assert_eq!(
            batch.header("hookstream-batch"),
            Some(entries.len().to_string().as_str())
        );
        assert_eq!(batch.header("hookstream-endpoint"), Some("fleet"));
        assert_eq!(batch.header("hookstream-last-status"), Some("deferred"));
        let due: i64 = batch.header("hookstream-due-ms").unwrap().parse().unwrap();
        for e in &entries {
            let id = e.header("hookstream-event-id").unwrap();
            let i: usize = id.strip_prefix("evt-").unwrap().parse().unwrap();
            assert_eq!(e.value, events[i].1, "{id}: the original value");
            assert_eq!(e.key.as_deref(), Some(events[i].0.as_str()), "{id}");
            assert_eq!(e.header("hookstream-endpoint"), Some("fleet"));
            assert_eq!(e.header("hookstream-last-status"), Some("deferred"));
            assert_eq!(e.header("hookstream-last-error"), Some("circuit open"));
            assert_eq!(
                e.header("hookstream-event-type"),
                Some("device-status-changed")
            );
            assert!(
                e.header("hookstream-source")
                    .unwrap()
                    .starts_with("device-events/"),
                "{id}"
            );
            let entry_due: i64 = e.header("hookstream-due-ms").unwrap().parse().unwrap();
            assert!(entry_due <= due, "{id}: due before its batch");
        }
    }

    // The operator points the endpoint at a live receiver.
    let mut fixed = ep;
    fixed.url = live.url("in");
    let fixed =
        hookstream::index::Endpoint::build(fixed, true, Duration::from_secs(5), &|_| None).unwrap();
    pipeline.registry().upsert(vec![std::sync::Arc::new(fixed)]);
    wait_for("300 deliveries", Duration::from_secs(60), || {
        live.log().accepted_count() >= 300
    })
    .await;
    let mut seen = std::collections::HashSet::new();
    for r in live.log().recorded() {
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let id = body["id"].as_str().unwrap().to_string();
        let i: usize = id.strip_prefix("evt-").unwrap().parse().unwrap();
        assert_eq!(&r.body[..], &events[i].1[..], "{id}: the exact bytes");
        assert_eq!(
            r.header("webhook-id").unwrap(),
            hookstream::deliver::request::webhook_id(&id, "fleet")
        );
        assert!(independently_verified("standard", SECRET, &r), "{id}");
        seen.insert(id);
    }
    assert_eq!(seen.len(), 300);
    assert!(cluster.read_all("hookstream.dlq").is_empty());
    input_and_tier_offsets_reach_the_end(&cluster, "batch-test").await;
    pipeline.shutdown().await.unwrap();
}

/// Given a Kafka client that takes records of at most 8 000 bytes and an
/// endpoint whose host refuses connections, when 100 events of 4 000 bytes
/// and one of 9 000 are produced, then the deferral batches the limit
/// refuses are stored entry by entry as single retry records, the large event is dead-lettered
/// as `exhausted` without its value (too large for the tier, then for the
/// DLQ), and every input offset commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outcome_records_over_the_size_limit_are_split_or_dead_lettered() {
    let cluster = Cluster::start(&[TOPIC], 2);
    let mut config = config("size-test", &[(TOPIC, Preset::Mender)]);
    config.kafka.properties.insert(
        "message.max.bytes".into(),
        hookstream::config::PropertyValue::Integer(8_000),
    );
    probe_a_dead_host_often(&mut config);
    config
        .endpoints
        .push(endpoint("dead", refused_url("in"), &["*"], "none", ""));
    let pipeline = start(config, &cluster).await;
    // Events of 4 000 bytes: two deferrals together are over the limit, one
    // alone is under it.
    let padded = |id: &str, size: usize| {
        (
            "dev-0".to_string(),
            format!(
                r#"{{"id":"{id}","type":"device-status-changed","data":{{"id":"dev-0","pad":"{}"}}}}"#,
                "x".repeat(size)
            )
            .into_bytes(),
        )
    };
    let mut events: Vec<_> = (0..100)
        .map(|i| padded(&format!("evt-{i}"), 4_000))
        .collect();
    events.push(padded("evt-big", 9_000));
    cluster.produce_many(TOPIC, &events).await;
    wait_for(
        "100 deferrals and the large event's dead letter",
        Duration::from_secs(30),
        || {
            let a = pipeline.registry().activity("dead").stats();
            a.deferred >= 100 && a.dead_lettered >= 1
        },
    )
    .await;
    wait_for("input offsets at the end", Duration::from_secs(15), || {
        cluster.offsets_at_end("size-test", TOPIC)
    })
    .await;
    pipeline.shutdown().await.unwrap();

    let records: Vec<_> = TIERS.iter().flat_map(|t| cluster.read_all(t)).collect();
    assert!(
        records
            .iter()
            .all(|r| r.header("hookstream-batch").is_none()),
        "two deferrals together are over the limit: no batch is stored"
    );
    let deferred: std::collections::HashSet<&str> = records
        .iter()
        .filter(|r| r.header("hookstream-last-status") == Some("deferred"))
        .map(|r| r.header("hookstream-event-id").unwrap())
        .collect();
    assert!(
        deferred.len() >= 50,
        "{} events deferred as single records",
        deferred.len()
    );
    let dlq = cluster.read_all("hookstream.dlq");
    assert_eq!(dlq.len(), 1, "only the large event is dead-lettered");
    let big = &dlq[0];
    assert_eq!(big.header("hookstream-event-id"), Some("evt-big"));
    assert_eq!(big.header("hookstream-reason"), Some("exhausted"));
    assert!(big.value.is_empty(), "its value is omitted");
    assert!(
        big.header("hookstream-last-error")
            .unwrap()
            .contains("too large for the DLQ topic"),
        "{:?}",
        big.header("hookstream-last-error")
    );
    assert_eq!(big.key.as_deref(), Some("dev-0"));
}
