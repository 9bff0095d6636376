//! Given a topic where malformed records sit between valid ones, when the
//! pipeline runs, then the valid events are delivered, every malformed one is
//! on the DLQ with reason `invalid_event` and its original bytes, and the
//! partition is not stalled: offsets reach the end.

mod common;

use std::time::Duration;

use common::*;
use hookstream::demo::receiver::Behaviour;
use hookstream::source::extract::Preset;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_events_are_dead_lettered_and_valid_ones_around_them_delivered() {
    let cluster = Cluster::start(&["device-events"], 1);
    let rx = receiver(Behaviour::Healthy).await;
    let mut config = config("invalid-test", &[("device-events", Preset::Mender)]);
    config.delivery.max_payload_bytes = 2048;
    config
        .endpoints
        .push(endpoint("all", rx.url("in"), &["*"], "none", ""));
    let pipeline = start(config, &cluster).await;

    let valid =
        |i: u32| format!(r#"{{"id":"ok-{i}","type":"device-provisioned","data":{{"id":"d{i}"}}}}"#);
    let oversized = format!(
        r#"{{"id":"big","type":"device-provisioned","data":{{"blob":"{}"}}}}"#,
        "x".repeat(3000)
    );
    let records: Vec<(String, Vec<u8>)> = vec![
        ("a".into(), valid(1).into_bytes()),
        ("b".into(), b"this is not json".to_vec()),
        ("c".into(), valid(2).into_bytes()),
        ("d".into(), br#"{"id":"no-type","data":{}}"#.to_vec()),
        ("e".into(), valid(3).into_bytes()),
        ("f".into(), oversized.clone().into_bytes()),
        ("g".into(), Vec::new()),
        ("h".into(), valid(4).into_bytes()),
    ];
    for (key, body) in &records {
        cluster
            .produce("device-events", key, body, &[("origin", "test")])
            .await;
    }

    wait_for("the four valid events", Duration::from_secs(20), || {
        rx.log().recorded().len() >= 4
    })
    .await;
    wait_for("offsets to reach the end", Duration::from_secs(15), || {
        cluster.offsets_at_end("invalid-test", "device-events")
    })
    .await;
    let ids = bodies_by(&rx.log().recorded(), "/id");
    for i in 1..=4 {
        assert_eq!(
            ids.get(&format!("ok-{i}")),
            Some(&1),
            "ok-{i} delivered once"
        );
    }
    assert_eq!(ids.len(), 4, "only valid events were sent");

    let dlq = cluster.read_all("hookstream.dlq");
    assert_eq!(dlq.len(), 4, "four invalid records dead-lettered: {dlq:?}");
    let by_key = |k: &str| {
        dlq.iter()
            .find(|r| r.key.as_deref() == Some(k))
            .unwrap_or_else(|| panic!("{k} on DLQ"))
    };
    for (key, offset, detail) in [
        ("b", 1, "not valid JSON"),
        ("d", 3, "no event type"),
        ("f", 5, "exceeds max_payload_bytes"),
        ("g", 6, "empty"),
    ] {
        let r = by_key(key);
        assert_eq!(r.header("hookstream-reason"), Some("invalid_event"));
        assert_eq!(
            r.header("hookstream-source"),
            Some(format!("device-events/0/{offset}").as_str())
        );
        assert!(
            r.header("hookstream-last-error").unwrap().contains(detail),
            "{key}: {:?}",
            r.header("hookstream-last-error")
        );
        assert_eq!(
            r.header("origin"),
            Some("test"),
            "original headers are kept"
        );
        assert!(
            r.header("hookstream-dead-ms")
                .unwrap()
                .parse::<i64>()
                .unwrap()
                > 0
        );
        assert!(r.header("hookstream-endpoint").is_none());
    }
    assert_eq!(
        by_key("b").value,
        b"this is not json",
        "original bytes kept"
    );
    assert_eq!(by_key("f").value, oversized.as_bytes());
    pipeline.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_are_dead_lettered_with_their_history() {
    let cluster = Cluster::start(&["device-events"], 1);
    let rejecting = receiver(Behaviour::Status(400)).await;
    let unavailable = receiver(Behaviour::Status(503)).await;
    let gone = receiver(Behaviour::Status(410)).await;
    let mut config = config("failure-test", &[("device-events", Preset::Mender)]);
    config.endpoints.push(endpoint(
        "rejecting",
        rejecting.url("in"),
        &["*"],
        "none",
        "",
    ));
    config.endpoints.push(endpoint(
        "unavailable",
        unavailable.url("in"),
        &["*"],
        "none",
        "",
    ));
    config
        .endpoints
        .push(endpoint("gone", gone.url("in"), &["*"], "none", ""));
    let mut closed = endpoint(
        "closed-port",
        "http://127.0.0.1:9/".into(),
        &["*"],
        "none",
        "",
    );
    closed.timeout = Some(hookstream::config::HumanDuration::from_secs(2));
    config.endpoints.push(closed);
    let pipeline = start(config, &cluster).await;
    for i in 0..3 {
        let body = format!(r#"{{"id":"e{i}","type":"device-provisioned","data":{{"id":"d"}}}}"#);
        cluster
            .produce("device-events", "k", body.as_bytes(), &[])
            .await;
    }
    wait_for("offsets to reach the end", Duration::from_secs(20), || {
        cluster.offsets_at_end("failure-test", "device-events")
    })
    .await;
    // Retries of the 503s and connection failures take a few hundred ms.
    let mut dlq = Vec::new();
    wait_for("twelve dead letters", Duration::from_secs(30), || {
        dlq = cluster.read_all("hookstream.dlq");
        dlq.len() >= 12
    })
    .await;
    let reasons = |ep: &str| -> Vec<String> {
        let mut v: Vec<String> = dlq
            .iter()
            .filter(|r| r.header("hookstream-endpoint") == Some(ep))
            .map(|r| r.header("hookstream-reason").unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(reasons("rejecting"), ["http_400"; 3]);
    assert_eq!(
        reasons("unavailable"),
        ["exhausted"; 3],
        "retried until max_attempts"
    );
    assert_eq!(
        unavailable
            .log()
            .requests
            .load(std::sync::atomic::Ordering::Relaxed),
        9,
        "3 events x max_attempts (3)"
    );
    assert_eq!(reasons("closed-port"), ["exhausted"; 3]);
    let gone_reasons = reasons("gone");
    assert_eq!(gone_reasons.len(), 3);
    assert!(gone_reasons.contains(&"gone".to_string()));
    assert!(
        gone.log()
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
            < 3
            || gone_reasons.iter().all(|r| r == "gone"),
        "after 410 the endpoint is disabled"
    );
    let r = dlq
        .iter()
        .find(|r| r.header("hookstream-endpoint") == Some("rejecting"))
        .unwrap();
    assert_eq!(r.header("hookstream-last-status"), Some("400"));
    assert_eq!(r.header("hookstream-attempt"), Some("1"));
    assert!(r.header("hookstream-event-id").unwrap().starts_with('e'));
    assert!(r.header("hookstream-first-ms").is_some());
    let c = dlq
        .iter()
        .find(|r| r.header("hookstream-endpoint") == Some("closed-port"))
        .unwrap();
    assert_eq!(c.header("hookstream-last-status"), Some("connect"));
    pipeline.shutdown().await.unwrap();
}
