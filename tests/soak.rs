//! A soak of about three minutes: a backlog and a steady stream into one
//! `hookstream run` process, a receiver that turns every few seconds
//! through healthy, 503, slow and resetting connections, and three
//! SIGKILLs of the process (each followed by a restart). At the end every
//! event is delivered or dead-lettered with a reason, the input and tier
//! offsets are committed to the end, and the duplicates are reported.
//!
//! Ignored by default (`cargo test --test soak -- --ignored`); `.ci/run`
//! runs it.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::Instance;
use common::*;
use hookstream::config::Config;
use hookstream::demo::receiver::{Behaviour, Receiver, ReceiverSpec};

const INPUT: &str = "device-events";
const GROUP: &str = "soak";
const BACKLOG: usize = 20_000;
const STREAMED: usize = 20_000;
const STREAM_FOR: Duration = Duration::from_secs(60);

fn config(bootstrap: &str, url: &str) -> String {
    format!(
        r#"
[kafka]
brokers = "{bootstrap}"
group_id = "{GROUP}"
topics = ["{INPUT}"]
commit_interval = "500ms"
[kafka.properties]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "1000"
[topics]
create = false
partitions = 4
retry_tiers = ["500ms", "2s", "10s"]
[delivery]
allow_private_destinations = true
timeout = "3s"
max_attempts = 30
backoff = {{ initial = "300ms", factor = 2.0, max = "4s", jitter = 0.2 }}
drain_timeout = "3s"
[metrics]
listen = ""
[api]
listen = ""
[[sources]]
topic = "{INPUT}"
preset = "mender"
[[endpoints]]
id = "cycling"
url = "{url}"
events = ["*"]
signature = "none"
allow_http = true
max_concurrency = 16
"#
    )
}

fn events(from: usize, to: usize) -> Vec<(String, Vec<u8>)> {
    (from..to)
        .map(|i| {
            let device = format!("dev-{}", i % 701);
            let body = format!(
                r#"{{"id":"evt-{i}","type":"device-status-changed","data":{{"id":"{device}"}}}}"#
            );
            (device, body.into_bytes())
        })
        .collect()
}

fn event_id(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("id")?.as_str().map(str::to_string)
}

#[test]
#[ignore = "a soak of about three minutes; .ci/run runs it"]
fn three_kills_under_a_flipping_receiver_lose_nothing() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let started = Instant::now();
    let cluster = Arc::new(Cluster::in_child_process(&[INPUT], 8));
    let receiver: Receiver = rt
        .block_on(Receiver::start(ReceiverSpec {
            behaviour: Behaviour::Cycling {
                phase: Duration::from_secs(3),
            },
            verify_with: None,
            record: true,
        }))
        .expect("receiver");
    let url = receiver.url("hooks");
    let text = config(cluster.bootstrap(), &url);
    let probe = Config::from_toml(&text).unwrap();
    cluster.create_owned_topics(&probe);
    rt.block_on(cluster.produce_many(INPUT, &events(0, BACKLOG)));
    let producer = {
        let _in_runtime = rt.enter();
        cluster.stream(INPUT, BACKLOG..BACKLOG + STREAMED, 200, STREAM_FOR, events)
    };
    let dir = tempfile::tempdir().unwrap();
    let mut runs = 0;
    let mut instance = Instance::start(dir.path(), "run-0", &text, None, "SOAK_LOG");
    for kill_after in [12, 17, 23] {
        std::thread::sleep(Duration::from_secs(kill_after));
        instance.sigkill();
        runs += 1;
        eprintln!(
            "soak: SIGKILL {runs} after {:?}, {} requests so far",
            started.elapsed(),
            receiver
                .log()
                .requests
                .load(std::sync::atomic::Ordering::Relaxed)
        );
        instance = Instance::start(dir.path(), &format!("run-{runs}"), &text, None, "SOAK_LOG");
    }
    rt.block_on(producer).expect("producer");
    let total = BACKLOG + STREAMED;

    // Every event delivered or dead-lettered with a reason.
    let delivered = || -> HashMap<String, usize> {
        let mut seen = HashMap::new();
        for r in receiver.log().recorded() {
            if (200..300).contains(&r.status)
                && let Some(id) = event_id(&r.body)
            {
                *seen.entry(id).or_default() += 1;
            }
        }
        seen
    };
    let dead = || -> HashMap<String, String> {
        cluster
            .read_all(&probe.topics.dlq_topic())
            .iter()
            .filter_map(|r| {
                Some((
                    r.header("hookstream-event-id")?.to_string(),
                    r.header("hookstream-reason").unwrap_or("").to_string(),
                ))
            })
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let (seen, letters) = loop {
        let seen = delivered();
        if seen.len() >= total {
            break (seen, dead());
        }
        let letters = dead();
        let outcome: HashSet<&String> = seen.keys().chain(letters.keys()).collect();
        if outcome.len() >= total || Instant::now() >= deadline {
            break (seen, letters);
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    let missing: Vec<String> = (0..total)
        .map(|i| format!("evt-{i}"))
        .filter(|id| !seen.contains_key(id) && !letters.contains_key(id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {total} events neither delivered nor dead-lettered: {:?}…\n{}",
        missing.len(),
        &missing[..missing.len().min(10)],
        instance.log()
    );
    for (id, reason) in &letters {
        assert!(!reason.is_empty(), "{id} dead-lettered without a reason");
    }

    // Offsets committed to the end: input and every tier.
    let mut topics = vec![INPUT.to_string()];
    topics.extend(
        probe
            .topics
            .retry_tiers
            .iter()
            .map(|t| probe.topics.retry_topic(*t)),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let behind: Vec<String> = topics
            .iter()
            .filter(|t| !cluster.offsets_at_end(GROUP, t))
            .cloned()
            .collect();
        if behind.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "offsets not at the end of {behind:?}: {:?}",
            behind
                .iter()
                .map(|t| cluster.committed_vs_end(GROUP, t))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    assert_eq!(instance.terminate(Duration::from_secs(30)), Some(0));

    let requests_2xx: usize = seen.values().sum();
    let mut reasons: HashMap<&str, usize> = HashMap::new();
    for reason in letters.values() {
        *reasons.entry(reason).or_default() += 1;
    }
    eprintln!(
        "soak: {total} events in {:?}, {} SIGKILLs: {} delivered ({} duplicate deliveries, {:.1} %), \
         {} dead-lettered {reasons:?}; {} requests in all",
        started.elapsed(),
        runs,
        seen.len(),
        requests_2xx - seen.len(),
        100.0 * (requests_2xx - seen.len()) as f64 / total as f64,
        letters.len(),
        receiver
            .log()
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
    );
}
