//! DLQ tooling: given dead letters from a receiver that refused events, when
//! a user lists and replays them, then the filters select the right ones, a
//! dry run writes nothing, a replay delivers them with their original
//! webhook-ids, and replaying the same selection again needs --force.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use hookstream::demo::receiver::Behaviour;
use hookstream::retry::dlq::{DlqFilter, select};
use hookstream::retry::replay::{ReplayError, ReplayOptions, replay};
use hookstream::source::extract::Preset;

const TOPIC: &str = "device-events";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_filtered_and_replayed_once() {
    let cluster = Cluster::start(&[TOPIC], 2);
    let picky = receiver(Behaviour::FailFirst {
        times: 1,
        status: 400,
        retry_after: None,
    })
    .await;
    let mut config = config("replay-test", &[(TOPIC, Preset::Mender)]);
    config
        .endpoints
        .push(endpoint("picky", picky.url("in"), &["*"], "none", ""));
    let pipeline = start(config.clone(), &cluster).await;
    let events = provisioned_events("evt", 10);
    cluster.produce_many(TOPIC, &events).await;
    cluster
        .produce("device-events", "bad", b"not json", &[])
        .await;

    let client = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
        .clone();
    let list = |filter: DlqFilter| {
        let client = client.clone();
        async move {
            tokio::task::spawn_blocking(move || select(&client, "hookstream.dlq", &filter))
                .await
                .unwrap()
                .unwrap()
        }
    };
    wait_for("11 dead letters", Duration::from_secs(20), || {
        cluster.read_all("hookstream.dlq").len() >= 11
    })
    .await;

    let all = list(DlqFilter::default()).await;
    assert_eq!(all.len(), 11);
    let picky_letters = list(DlqFilter {
        endpoint: Some("picky".into()),
        ..DlqFilter::default()
    })
    .await;
    assert_eq!(picky_letters.len(), 10);
    assert!(
        picky_letters
            .iter()
            .all(|l| l.reason == "http_400" && l.attempt == 1 && l.last_status == "400")
    );
    assert!(
        picky_letters
            .iter()
            .all(|l| l.event_type.as_deref() == Some("device-provisioned")),
        "letters name their event type"
    );
    assert!(
        all.iter()
            .any(|l| l.reason == "invalid_event" && l.event_type.is_none()),
        "an invalid event has no type"
    );
    assert_eq!(
        list(DlqFilter {
            reason: Some("invalid_event".into()),
            ..DlqFilter::default()
        })
        .await
        .len(),
        1
    );
    assert_eq!(
        list(DlqFilter {
            reason: Some("exhausted".into()),
            ..DlqFilter::default()
        })
        .await
        .len(),
        0
    );
    assert_eq!(
        list(DlqFilter {
            limit: Some(3),
            ..DlqFilter::default()
        })
        .await
        .len(),
        3
    );
    let future = hookstream::wire::headers::now_ms() + 3_600_000;
    assert_eq!(
        list(DlqFilter {
            since_ms: Some(future),
            ..DlqFilter::default()
        })
        .await
        .len(),
        0
    );
    assert_eq!(
        list(DlqFilter {
            until_ms: Some(future),
            ..DlqFilter::default()
        })
        .await
        .len(),
        11
    );
    let first_ids: HashSet<String> = picky
        .log()
        .recorded()
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_string())
        .collect();
    assert_eq!(first_ids.len(), 10);

    // A dry run counts and writes nothing.
    let report = replay(
        &config,
        cluster.bootstrap(),
        &ReplayOptions {
            dry_run: true,
            ..ReplayOptions::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        (report.selected, report.replayed, report.skipped_no_endpoint),
        (11, 10, 1)
    );
    assert!(
        cluster.read_all("hookstream.retry.100ms").is_empty(),
        "dry run wrote nothing"
    );

    // Replay the picky endpoint's letters: delivered now, same webhook-ids.
    let only_picky = ReplayOptions {
        filter: DlqFilter {
            endpoint: Some("picky".into()),
            ..DlqFilter::default()
        },
        rate: Some(1000.0),
        ..ReplayOptions::default()
    };
    let report = replay(&config, cluster.bootstrap(), &only_picky)
        .await
        .unwrap();
    assert_eq!(report.replayed, 10);
    wait_for(
        "the replayed events to be delivered",
        Duration::from_secs(20),
        || picky.log().accepted_count() >= 10,
    )
    .await;
    let accepted = picky.log().accepted.lock().unwrap().clone();
    assert_eq!(accepted, first_ids, "replays keep their webhook-id");
    let replayed = cluster.read_all("hookstream.retry.100ms");
    assert_eq!(replayed.len(), 10);
    assert!(
        replayed
            .iter()
            .all(|r| r.header("hookstream-attempt") == Some("0"))
    );
    assert!(replayed.iter().all(|r| {
        r.header("hookstream-replay-of")
            .unwrap()
            .starts_with("hookstream.dlq/")
    }));

    // The same selection again is refused; --force replays it.
    match replay(&config, cluster.bootstrap(), &only_picky).await {
        Err(ReplayError::AlreadyReplayed(10, 10)) => {}
        other => panic!("second replay must be refused, got {other:?}"),
    }
    let forced = ReplayOptions {
        force: true,
        ..only_picky
    };
    assert_eq!(
        replay(&config, cluster.bootstrap(), &forced)
            .await
            .unwrap()
            .replayed,
        10
    );
    wait_for("the forced replays", Duration::from_secs(20), || {
        picky
            .log()
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 30
    })
    .await;
    pipeline.shutdown().await.unwrap();
}
