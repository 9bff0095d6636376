//! DLQ tooling: given dead letters from a receiver that refused events, when
//! a user lists and replays them, then the filters select the right ones
//! (endpoint, reason, times in RFC 3339 with offsets or relative, event type
//! and id, limit), a dry run writes nothing, a replay delivers them with
//! their original webhook-ids and notes them in the ledger in the order it
//! read them, replaying the same selection again needs --force, and `--to`
//! sends them to another endpoint. The command line lists, shows and counts
//! the same letters.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use hookstream::demo::receiver::Behaviour;
use hookstream::retry::dlq::{DeadLetter, DlqFilter};
use hookstream::retry::dlq_scan::ScanPlan;
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
        async move { select(client, filter).await }
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
    assert_eq!(
        list(DlqFilter {
            event_type: Some("device-prov*".into()),
            ..DlqFilter::default()
        })
        .await
        .len(),
        10,
        "a type prefix"
    );
    assert_eq!(
        list(DlqFilter {
            event_type: Some("device-status-changed".into()),
            ..DlqFilter::default()
        })
        .await
        .len(),
        0
    );
    let one = &picky_letters[3];
    let by_id = list(DlqFilter {
        event_id: Some(one.event_id.clone()),
        ..DlqFilter::default()
    })
    .await;
    assert_eq!(
        by_id
            .iter()
            .map(|l| (l.partition, l.offset))
            .collect::<Vec<_>>(),
        vec![(one.partition, one.offset)]
    );
    let now = hookstream::wire::headers::now_ms();
    let time = |text: &str| hookstream::retry::dlq::parse_time_flag("--since", text, now).unwrap();
    assert_eq!(
        list(DlqFilter {
            since_ms: Some(time("1h")),
            ..DlqFilter::default()
        })
        .await
        .len(),
        11,
        "--since 1h"
    );
    assert_eq!(
        list(DlqFilter {
            until_ms: Some(time("1h")),
            ..DlqFilter::default()
        })
        .await
        .len(),
        0,
        "--until 1h"
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
    // The ledger names each replayed letter, in the order they were read
    // (partition by partition, oldest first).
    let ledger: Vec<String> = cluster
        .read_all("hookstream.dlq.replays")
        .iter()
        .map(|r| r.key.clone().unwrap_or_default())
        .collect();
    let read_order: Vec<String> = picky_letters
        .iter()
        .map(|l| l.coordinates("hookstream.dlq"))
        .collect();
    assert_eq!(ledger, read_order);
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

    // --to sends the letters to another endpoint, with the same ids; an
    // endpoint nobody knows is refused before anything is written.
    let elsewhere = ReplayOptions {
        to: Some("backup".into()),
        ..forced.clone()
    };
    match replay(&config, cluster.bootstrap(), &elsewhere).await {
        Err(ReplayError::UnknownEndpoint(id)) => assert_eq!(id, "backup"),
        other => panic!("an unknown --to must be refused, got {other:?}"),
    }
    let backup = receiver(Behaviour::Healthy).await;
    let mut with_backup = config.clone();
    with_backup.endpoints.push(endpoint(
        "backup",
        backup.url("in"),
        &["nothing-matches"],
        "none",
        "",
    ));
    pipeline.shutdown().await.unwrap();
    let pipeline = start(with_backup.clone(), &cluster).await;
    let report = replay(&with_backup, cluster.bootstrap(), &elsewhere)
        .await
        .unwrap();
    assert_eq!(report.replayed, 10);
    wait_for(
        "the letters at the backup endpoint",
        Duration::from_secs(20),
        || backup.log().accepted_count() >= 10,
    )
    .await;
    // webhook-ids are per endpoint: the backup's are those of the same
    // events for it.
    let at_backup = backup.log().accepted.lock().unwrap().clone();
    let expected: HashSet<String> = picky_letters
        .iter()
        .map(|l| hookstream::deliver::request::webhook_id(&l.event_id, "backup"))
        .collect();
    assert_eq!(at_backup, expected, "--to keeps the event ids");
    pipeline.shutdown().await.unwrap();
}

/// The letters `filter` selects, as `dlq list` reads them.
async fn select(client: rdkafka::ClientConfig, filter: DlqFilter) -> Vec<DeadLetter> {
    tokio::task::spawn_blocking(move || {
        let plan = ScanPlan::plan(&client, "hookstream.dlq", &filter).unwrap();
        let mut out = Vec::new();
        plan.scan(&filter, |l| {
            out.push(l);
            true
        })
        .unwrap();
        out
    })
    .await
    .unwrap()
}

/// Runs the `hookstream` binary with `HOOKSTREAM_CONFIG` set.
fn hookstream_cli(config: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_hookstream"))
        .args(args)
        .env("HOOKSTREAM_CONFIG", config)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operators_list_show_and_count_letters_from_the_command_line() {
    let cluster = Cluster::start(&["hookstream.dlq"], 2);
    let now = hookstream::wire::headers::now_ms().to_string();
    let mut coordinates = Vec::new();
    for (i, event_type) in [
        "device-provisioned",
        "device-decommissioned",
        "deployment-finished",
    ]
    .iter()
    .enumerate()
    {
        let id = format!("evt-{i}");
        let body = format!(r#"{{"id":"{id}","type":"{event_type}"}}"#);
        let (p, o) = cluster
            .produce(
                "hookstream.dlq",
                &format!("dev-{i}"),
                body.as_bytes(),
                &[
                    (
                        "traceparent",
                        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                    ),
                    ("hookstream-endpoint", "crm"),
                    ("hookstream-reason", "http_400"),
                    ("hookstream-dead-ms", &now),
                    ("hookstream-event-id", &id),
                    ("hookstream-event-type", event_type),
                    ("hookstream-attempt", "1"),
                    ("hookstream-last-status", "400"),
                    ("hookstream-source", "device-events/0/1"),
                ],
            )
            .await;
        coordinates.push(format!("hookstream.dlq/{p}/{o}"));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hookstream.toml");
    std::fs::write(
        &path,
        format!("[kafka]\nbrokers = \"{}\"\n", cluster.bootstrap()),
    )
    .unwrap();

    // A JSON list, filtered by type prefix and a relative time.
    let out = hookstream_cli(
        &path,
        &[
            "dlq", "list", "--json", "--type", "device-*", "--since", "1h",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut ids: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["event_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["evt-0", "evt-1"]);

    // The table, by event id, with an RFC 3339 time with an offset.
    let out = hookstream_cli(
        &path,
        &[
            "dlq",
            "list",
            "--event-id",
            "evt-2",
            "--until",
            "2999-01-01T02:00:00+02:00",
        ],
    );
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(table.contains("EVENT TYPE") && table.contains("deployment-finished"));
    assert!(table.ends_with("1 dead letter(s)\n"), "{table}");

    // One letter whole: headers and payload.
    let out = hookstream_cli(&path, &["dlq", "show", &coordinates[2]]);
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(shown.contains(&coordinates[2]));
    assert!(shown.contains("traceparent") && shown.contains("0af7651916cd43dd8448eb211c80319c"));
    assert!(
        shown.contains("\"type\": \"deployment-finished\""),
        "{shown}"
    );
    let out = hookstream_cli(&path, &["dlq", "show", "--json", &coordinates[0]]);
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["payload"]["id"], "evt-0");

    // Mistakes: exit 2 naming the flag; a letter that is not there: exit 1.
    for (args, status, needle) in [
        (vec!["dlq", "list", "--since", "yesterday"], 2, "--since"),
        (vec!["dlq", "show", "0/x"], 2, "LETTER"),
        (vec!["dlq", "show", "1/999999"], 1, "no such letter"),
        (
            vec!["dlq", "replay", "--dry-run", "--to", "nobody"],
            2,
            "--to",
        ),
    ] {
        let out = hookstream_cli(&path, &args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(status), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
    let out = hookstream_cli(&path, &["dlq", "replay", "--dry-run", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (report["selected"].as_u64(), report["replayed"].as_u64()),
        (Some(3), Some(3))
    );
}
