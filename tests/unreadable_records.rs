//! Given a partition where record batches no consumer can read sit between
//! valid events (a batch flagged with a compression codec no client knows,
//! and one flagged gzip whose bytes are not gzip), when the pipeline runs,
//! then every record of those batches is on the DLQ as `unreadable_record`
//! with its coordinates and librdkafka's error, the valid events around
//! them are delivered, the committed offset reaches the end of the
//! partition, and `hookstream_unreadable_records_total` counts them.

mod common;

use std::time::Duration;

use common::*;
use hookstream::demo::receiver::Behaviour;
use hookstream::source::extract::Preset;

const TOPIC: &str = "device-events";

fn event(id: &str) -> Vec<u8> {
    format!(r#"{{"id":"{id}","type":"device-provisioned","data":{{"id":"d-{id}"}}}}"#).into_bytes()
}

async fn scrape(port: u16) -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_batches_are_dead_lettered_record_by_record_and_the_partition_moves_on() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    hookstream::metrics::install_exporter(&format!("127.0.0.1:{port}")).unwrap();
    let cluster = Cluster::start(&[TOPIC], 1);
    let rx = receiver(Behaviour::Healthy).await;
    let mut config = config("unreadable-test", &[(TOPIC, Preset::Mender)]);
    config
        .endpoints
        .push(endpoint("all", rx.url("in"), &["*"], "none", ""));

    assert_eq!(
        cluster.produce(TOPIC, "a", &event("ok-1"), &[]).await,
        (0, 0)
    );
    // Three valid events in a batch whose codec (5) no Kafka client knows.
    let (l1, l2, l3) = (event("lost-1"), event("lost-2"), event("lost-3"));
    let unknown_codec = record_batch(5, &[("b", &l1), ("c", &l2), ("d", &l3)]);
    assert_eq!(cluster.produce_raw(TOPIC, 0, &unknown_codec), 1);
    // One flagged gzip whose bytes are not gzip.
    let l4 = event("lost-4");
    assert_eq!(
        cluster.produce_raw(TOPIC, 0, &record_batch(1, &[("e", &l4)])),
        4
    );
    assert_eq!(
        cluster.produce(TOPIC, "f", &event("ok-2"), &[]).await,
        (0, 5)
    );

    let pipeline = start(config, &cluster).await;
    wait_for("the two readable events", Duration::from_secs(60), || {
        rx.log().recorded().len() >= 2
    })
    .await;
    wait_for(
        "the committed offset to reach the end",
        Duration::from_secs(30),
        || cluster.offsets_at_end("unreadable-test", TOPIC),
    )
    .await;
    assert_eq!(
        cluster.committed_vs_end("unreadable-test", TOPIC),
        vec![(0, 6, 6)]
    );
    let ids = bodies_by(&rx.log().recorded(), "/id");
    assert_eq!(ids.get("ok-1"), Some(&1));
    assert_eq!(ids.get("ok-2"), Some(&1));
    assert_eq!(
        ids.len(),
        2,
        "nothing of the unreadable batches was sent: {ids:?}"
    );

    let mut dlq = Vec::new();
    wait_for("four dead letters", Duration::from_secs(20), || {
        dlq = cluster.read_all("hookstream.dlq");
        dlq.len() >= 4
    })
    .await;
    assert_eq!(
        dlq.len(),
        4,
        "one dead letter per unreadable record: {dlq:?}"
    );
    let mut sources: Vec<&str> = dlq
        .iter()
        .map(|r| r.header("hookstream-source").unwrap())
        .collect();
    sources.sort();
    assert_eq!(
        sources,
        [
            "device-events/0/1",
            "device-events/0/2",
            "device-events/0/3",
            "device-events/0/4"
        ]
    );
    for r in &dlq {
        let source = r.header("hookstream-source").unwrap();
        assert_eq!(
            r.header("hookstream-reason"),
            Some("unreadable_record"),
            "{source}"
        );
        assert!(r.value.is_empty(), "{source}: a placeholder has no value");
        assert!(r.key.is_none(), "{source}");
        assert!(r.header("hookstream-endpoint").is_none(), "{source}");
        assert!(r.header("hookstream-dead-ms").is_some(), "{source}");
        let error = r.header("hookstream-last-error").unwrap();
        let expected = if source.ends_with("/4") {
            "Decompression (codec 0x1) of message at 4"
        } else {
            "Decompression (codec 0x5) of message at 1"
        };
        assert!(error.starts_with(expected), "{source}: {error}");
    }

    let metrics = scrape(port).await;
    let lines = metrics.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).unwrap();
    let unreadable: f64 = scrape
        .samples
        .iter()
        .filter(|s| {
            s.metric == "hookstream_unreadable_records_total"
                && s.labels.get("topic") == Some(TOPIC)
        })
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum();
    assert_eq!(unreadable, 4.0);
    let dead: f64 = scrape
        .samples
        .iter()
        .filter(|s| {
            s.metric == "hookstream_dlq_total"
                && s.labels.get("reason") == Some("unreadable_record")
        })
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => 0.0,
        })
        .sum();
    assert_eq!(dead, 4.0);
    pipeline.shutdown().await.unwrap();
}
