//! A panic in one endpoint's sender stays in that sender: given two
//! endpoints on one pipeline and a fault injected so that the first three
//! attempts towards one of them panic, when events flow, then the other
//! endpoint receives every event, the faulty one receives every event but
//! the three whose attempts panicked, those three are on the DLQ with reason
//! `internal_error`, the pipeline keeps running and commits every offset.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use hookstream::demo::receiver::Behaviour;
use hookstream::source::extract::Preset;

const TOPIC: &str = "device-events";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_sender_dead_letters_what_it_held_and_the_rest_flows() {
    let cluster = Cluster::start(&[TOPIC], 3);
    let steady = receiver(Behaviour::Healthy).await;
    let faulty = receiver(Behaviour::Healthy).await;
    let mut config = config("sender-faults", &[(TOPIC, Preset::Mender)]);
    config
        .endpoints
        .push(endpoint("steady", steady.url("in"), &["*"], "none", ""));
    config
        .endpoints
        .push(endpoint("faulty", faulty.url("in"), &["*"], "none", ""));
    hookstream::deliver::faults::inject_sender_panics("faulty", 3);
    let pipeline = start(config, &cluster).await;
    cluster.produce_many(TOPIC, &status_events(0, 200)).await;

    wait_for(
        "every event at the steady endpoint",
        Duration::from_secs(30),
        || bodies_by(&steady.log().recorded(), "/id").len() == 200,
    )
    .await;
    let mut dead = Vec::new();
    wait_for("three dead letters", Duration::from_secs(30), || {
        dead = cluster.read_all("hookstream.dlq");
        dead.len() >= 3
    })
    .await;
    wait_for(
        "the other 197 at the faulty endpoint",
        Duration::from_secs(30),
        || bodies_by(&faulty.log().recorded(), "/id").len() >= 197,
    )
    .await;

    assert_eq!(dead.len(), 3, "exactly the three attempts that panicked");
    let dead_ids: HashSet<String> = dead
        .iter()
        .map(|r| {
            assert_eq!(r.header("hookstream-reason"), Some("internal_error"));
            assert_eq!(r.header("hookstream-endpoint"), Some("faulty"));
            assert!(
                r.header("hookstream-last-error")
                    .is_some_and(|e| e.contains("panic")),
                "{:?}",
                r.headers
            );
            r.header("hookstream-event-id").unwrap_or("").to_string()
        })
        .collect();
    let delivered: HashSet<String> = bodies_by(&faulty.log().recorded(), "/id")
        .into_keys()
        .collect();
    assert_eq!(delivered.len(), 197);
    assert!(
        delivered.is_disjoint(&dead_ids),
        "a dead letter was also delivered"
    );
    assert!(!pipeline.is_finished(), "the pipeline carries on");
    wait_for("offsets at the end", Duration::from_secs(15), || {
        cluster.offsets_at_end("sender-faults", TOPIC)
    })
    .await;
    pipeline.shutdown().await.unwrap();
}
