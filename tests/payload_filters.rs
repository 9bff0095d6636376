//! Given endpoints with payload filters on event fields and record headers,
//! when a fleet's status events are produced, then each receiver gets exactly
//! the events its filter admits, every offset is committed (filtered-out
//! events are settled, not waited for), and nothing is dead-lettered. A
//! filter the API cannot compile is refused with a 400 naming its key.

mod common;

use std::time::Duration;

use common::*;
use hookstream::demo::receiver::{Behaviour, Receiver};
use hookstream::index::Endpoint;
use hookstream::source::extract::Preset;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_receiver_gets_exactly_what_its_filter_admits() {
    let cluster = Cluster::start(&["device-events"], 2);
    let low_battery = receiver(Behaviour::Healthy).await;
    let from_edge = receiver(Behaviour::Healthy).await;
    let everything = receiver(Behaviour::Healthy).await;
    let mut config = config("filters", &[("device-events", Preset::Mender)]);
    let mut ep = endpoint("low-battery", low_battery.url("in"), &["*"], "none", "");
    ep.filter = Some(Box::new(serde_json::json!({
        "body": { "data.battery": { "$lt": 20 }, "data.status": { "$in": ["accepted", "pending"] } }
    })));
    config.endpoints.push(ep);
    let mut ep = endpoint("from-edge", from_edge.url("in"), &["*"], "none", "");
    ep.filter = Some(Box::new(serde_json::json!({
        "headers": { "origin": { "$regex": "^edge-" } }
    })));
    config.endpoints.push(ep);
    config.endpoints.push(endpoint(
        "everything",
        everything.url("in"),
        &["*"],
        "none",
        "",
    ));
    let _pipeline = start(config, &cluster).await;

    let mut want_low = Vec::new();
    let mut want_edge = Vec::new();
    for i in 0..60u32 {
        let status = ["accepted", "pending", "rejected"][i as usize % 3];
        let body = format!(
            r#"{{"id":"ev-{i}","type":"device-status-changed","tenant_id":"t1","data":{{"id":"dev-{i}","status":"{status}","battery":{}}}}}"#,
            i % 40
        );
        let origin = if i % 4 == 0 { "edge-7" } else { "cloud" };
        if i % 40 < 20 && status != "rejected" {
            want_low.push(format!("ev-{i}"));
        }
        if origin.starts_with("edge-") {
            want_edge.push(format!("ev-{i}"));
        }
        cluster
            .produce(
                "device-events",
                &format!("dev-{i}"),
                body.as_bytes(),
                &[("origin", origin)],
            )
            .await;
    }
    wait_for(
        "every event to reach the unfiltered receiver",
        Duration::from_secs(30),
        || everything.log().recorded().len() >= 60,
    )
    .await;
    wait_for("offsets to reach the end", Duration::from_secs(15), || {
        cluster.offsets_at_end("filters", "device-events")
    })
    .await;
    let ids = |r: &Receiver| {
        let mut ids: Vec<String> = bodies_by(&r.log().recorded(), "/id").into_keys().collect();
        ids.sort();
        ids
    };
    want_low.sort();
    want_edge.sort();
    assert_eq!(
        ids(&low_battery),
        want_low,
        "battery < 20 and status accepted/pending"
    );
    assert_eq!(ids(&from_edge), want_edge, "origin header matches ^edge-");
    assert_eq!(everything.log().recorded().len(), 60);
    assert!(cluster.read_all("hookstream.dlq").is_empty());
}

#[test]
fn a_filter_that_does_not_compile_names_its_key() {
    let mut e = hookstream::config::EndpointConfig::new("ep", "https://x.example/in");
    e.filter = Some(Box::new(serde_json::json!({
        "body": { "data.model": { "$regex": "rpi(" } }
    })));
    let err = Endpoint::build(e, false, Duration::from_secs(5), &|_| None).unwrap_err();
    assert_eq!(err.field, "filter.body.data.model.$regex");
}
