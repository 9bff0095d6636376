//! Given a broker with events of every preset and receivers behind endpoints
//! of every signature scheme, when the pipeline runs, then each receiver gets
//! exactly the events its endpoint subscribed to, byte for byte, correctly
//! signed, and the group's offsets reach the end of every partition.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use common::*;
use hookstream::config::HttpVersion;
use hookstream::demo::receiver::Behaviour;
use hookstream::samples::SAMPLES;
use hookstream::source::extract::Preset;

const TOPICS: [(&str, Preset); 5] = [
    ("device-events", Preset::Mender),
    ("mdm-events", Preset::Openmdm),
    ("telemetry", Preset::Magistrala),
    ("cmdb-events", Preset::Cmdb),
    ("ce-events", Preset::Cloudevents),
];

fn sample(name: &str) -> &'static [u8] {
    SAMPLES
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap()
        .1
        .trim()
        .as_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_preset_reaches_exactly_the_matching_endpoints_signed() {
    let cluster = Cluster::start(&TOPICS.map(|(t, _)| t), 3);
    let names = [
        "all",
        "mender-devices",
        "one-device",
        "mdm",
        "objects",
        "ce",
    ];
    let mut receivers = Vec::new();
    for _ in names {
        receivers.push(receiver(Behaviour::Healthy).await);
    }
    let secrets = [
        ("standard", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"),
        ("mender", "a3f1c2"),
        ("github", "It's a Secret to Everybody"),
        ("openmdm", "test-secret"),
        ("none", ""),
        ("standard", "whsec_c2Vjb25kIHNlY3JldA=="),
    ];
    let events: [&[&str]; 6] = [
        &["*"],
        &["device-*"],
        &["*"],
        &["device.enrolled", "security.*"],
        &["create", "update", "delete", "temperature"],
        &["com.fleet.*"],
    ];
    let mut config = config("delivery-test", &TOPICS);
    for (i, name) in names.iter().enumerate() {
        let mut ep = endpoint(
            name,
            receivers[i].url("in"),
            events[i],
            secrets[i].0,
            secrets[i].1,
        );
        if *name == "one-device" {
            ep.devices = vec!["769e5a83-259c-4506-ab05-9c2564f196fd".into()];
        }
        if *name == "ce" {
            ep.http_version = HttpVersion::Http2;
            ep.headers.insert("X-Api-Key".into(), "k-123".into());
        }
        config.endpoints.push(ep);
    }
    let pipeline = start(config, &cluster).await;

    let mut produced: BTreeMap<&str, &[u8]> = BTreeMap::new();
    for (name, _) in SAMPLES {
        let topic = match name.split('-').next().unwrap() {
            "mender" => "device-events",
            "openmdm" => "mdm-events",
            "magistrala" => "telemetry",
            _ => "cmdb-events",
        };
        cluster.produce(topic, "k", sample(name), &[]).await;
        produced.insert(name, sample(name));
    }
    let ce_body: &[u8] = br#"{"specversion":"1.0","data":{"reason":"watchdog"}}"#;
    cluster
        .produce(
            "ce-events",
            "dev-9",
            ce_body,
            &[
                ("ce_id", "ce-1"),
                ("ce_type", "com.fleet.device.rebooted"),
                ("ce_subject", "dev-9"),
            ],
        )
        .await;

    // What each platform sends: Magistrala the message payload, the CMDB
    // the object (slices of the events, byte for byte); the others the event.
    let sent: BTreeMap<&str, Vec<u8>> = produced
        .iter()
        .map(|(name, body)| {
            let part = |key: &str| {
                let text = std::str::from_utf8(body).unwrap();
                let fields: BTreeMap<String, &serde_json::value::RawValue> =
                    serde_json::from_str(text).unwrap();
                fields[key].get().as_bytes().to_vec()
            };
            let bytes = match name.split('-').next().unwrap() {
                "magistrala" => part("payload"),
                "cmdb" => part("object"),
                _ => body.to_vec(),
            };
            (*name, bytes)
        })
        .collect();
    let b = |n: &str| sent[n].as_slice();
    let expected: [Vec<&[u8]>; 6] = [
        sent.values().map(Vec::as_slice).chain([ce_body]).collect(),
        vec![
            b("mender-device-provisioned.json"),
            b("mender-device-status-changed.json"),
            b("mender-device-decommissioned.json"),
        ],
        vec![
            b("mender-device-provisioned.json"),
            b("mender-device-status-changed.json"),
            b("mender-device-decommissioned.json"),
        ],
        vec![
            b("openmdm-device-enrolled.json"),
            b("openmdm-security-tamper.json"),
        ],
        vec![b("cmdb-object-updated.json"), b("magistrala-message.json")],
        vec![ce_body],
    ];
    wait_for(
        "every receiver to get its events",
        Duration::from_secs(30),
        || {
            receivers
                .iter()
                .zip(&expected)
                .all(|(r, e)| r.log().recorded().len() >= e.len())
        },
    )
    .await;
    // Give stray extra deliveries a moment to show up before asserting exactness.
    tokio::time::sleep(Duration::from_millis(500)).await;

    for (i, r) in receivers.iter().enumerate() {
        let got = r.log().recorded();
        let mut got_bodies: Vec<&[u8]> = got.iter().map(|q| q.body.as_ref()).collect();
        let mut want = expected[i].clone();
        got_bodies.sort();
        want.sort();
        assert_eq!(
            got_bodies, want,
            "endpoint {} got exactly its events, byte for byte",
            names[i]
        );
        let ids: HashSet<&str> = got.iter().filter_map(|q| q.header("webhook-id")).collect();
        assert_eq!(
            ids.len(),
            got.len(),
            "one webhook-id per event for {}",
            names[i]
        );
        for q in &got {
            assert!(
                independently_verified(secrets[i].0, secrets[i].1, q),
                "{} signature verifies: {:?}",
                names[i],
                q.headers
            );
            assert_eq!(q.header("content-type"), Some("application/json"));
            assert!(q.header("user-agent").unwrap().starts_with("hookstream/"));
            let ts: i64 = q.header("webhook-timestamp").unwrap().parse().unwrap();
            assert!((ts - hookstream::wire::headers::now_ms() / 1000).abs() < 60);
        }
    }
    let ce = &receivers[5].log().recorded()[0];
    assert_eq!(ce.version, "HTTP/2.0", "http_version = http2 is honoured");
    assert_eq!(
        ce.header("x-api-key"),
        Some("k-123"),
        "custom headers are sent"
    );
    let mdm = &receivers[3].log().recorded();
    assert!(
        mdm.iter()
            .any(|q| q.header("x-openmdm-event") == Some("security.tamper"))
    );

    for (topic, _) in TOPICS {
        wait_for(
            &format!("offsets of {topic} to reach the end"),
            Duration::from_secs(15),
            || cluster.offsets_at_end("delivery-test", topic),
        )
        .await;
    }
    assert!(
        cluster.read_all("hookstream.dlq").is_empty(),
        "nothing was dead-lettered"
    );
    pipeline.shutdown().await.unwrap();
}
