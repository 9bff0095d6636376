//! A soak of about three minutes: a backlog and a steady stream into one
//! `hookstream run` process, a receiver that turns every few seconds
//! through healthy, 503, slow and resetting connections, and three
//! SIGKILLs of the process (each followed by a restart). At the end every
//! event is delivered or dead-lettered with a reason, the input and tier
//! offsets are committed to the end, and the duplicates are reported: how
//! many followed a kill, and how many events each kill found delivered
//! but not yet committed, per topic (a deferral batch on a tier commits
//! only when all its entries are settled).
//!
//! Ignored by default (`cargo test --test soak -- --ignored`); `.ci/run`
//! runs it.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::Instance;
use common::*;
use hookstream::config::Config;
use hookstream::demo::receiver::{Behaviour, ReceivedRequest, Receiver, ReceiverSpec};

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

/// Where an event's records lie: the topic, partition and offset of its
/// input record and of each of its retries.
type Places = HashMap<String, Vec<(String, i32, i64)>>;

/// When a SIGKILL came, what the group had committed then, and what had
/// been delivered.
struct AtKill {
    at: Instant,
    /// Committed offset per topic and partition (0: none), input and tiers.
    committed: HashMap<String, HashMap<i32, i64>>,
    /// Ids of the events delivered (2xx) before the kill.
    delivered: HashSet<String>,
}

impl AtKill {
    /// Of the events delivered before the kill, how many have a record at
    /// or past its partition's committed offset (the restart reads it
    /// again), per topic, and in all.
    fn uncommitted(&self, places: &Places) -> (BTreeMap<String, usize>, usize) {
        let mut per_topic = BTreeMap::new();
        let mut events = 0;
        for id in &self.delivered {
            let mut topics: Vec<&String> = places
                .get(id)
                .into_iter()
                .flatten()
                .filter(|(topic, partition, offset)| {
                    let committed = self.committed.get(topic).and_then(|p| p.get(partition));
                    *offset >= committed.copied().unwrap_or(0)
                })
                .map(|(topic, _, _)| topic)
                .collect();
            topics.dedup();
            events += usize::from(!topics.is_empty());
            for topic in topics {
                *per_topic.entry(topic.clone()).or_default() += 1;
            }
        }
        (per_topic, events)
    }
}

/// When each event was delivered (answered 2xx), in the order recorded.
fn delivered_at(recorded: &[ReceivedRequest]) -> HashMap<String, Vec<Instant>> {
    let mut times: HashMap<String, Vec<Instant>> = HashMap::new();
    for r in recorded {
        if (200..300).contains(&r.status)
            && let Some(id) = event_id(&r.body)
        {
            times.entry(id).or_default().push(r.received_at);
        }
    }
    times
}

/// The repeated deliveries: those with a SIGKILL between them and the
/// delivery before, and those without, per run (the run is the number of
/// kills before the repeat).
fn repeats(delivered: &HashMap<String, Vec<Instant>>, kills: &[AtKill]) -> (usize, Vec<Repeats>) {
    let (mut across, mut within) = (0, vec![Vec::new(); kills.len() + 1]);
    for deliveries in delivered.values() {
        let mut deliveries = deliveries.clone();
        deliveries.sort();
        for pair in deliveries.windows(2) {
            if kills.iter().any(|k| (pair[0]..pair[1]).contains(&k.at)) {
                across += 1;
            } else {
                within[kills.iter().filter(|k| k.at < pair[1]).count()].push((pair[0], pair[1]));
            }
        }
    }
    (across, within)
}

/// A run's repeated deliveries: (the delivery before, the repeat).
type Repeats = Vec<(Instant, Instant)>;

/// `min–max s` of `times` since `from`, and the same in UTC (as the
/// runs' log lines show it).
fn span(times: impl Iterator<Item = Instant>, from: Instant) -> String {
    let times: Vec<Instant> = times.collect();
    let (Some(first), Some(last)) = (times.iter().min(), times.iter().max()) else {
        return "—".into();
    };
    let utc = |t: &Instant| {
        let wall = std::time::SystemTime::now() - t.elapsed();
        humantime::format_rfc3339_millis(wall).to_string()
    };
    format!(
        "{:.2}–{:.2} s ({}–{})",
        first.saturating_duration_since(from).as_secs_f64(),
        last.saturating_duration_since(from).as_secs_f64(),
        utc(first),
        utc(last)
    )
}

/// What a run's log says about its rebalances and commits: the lines a
/// repeat within one run would follow from.
fn rebalance_lines(log: &str) -> Vec<&str> {
    const SAID: [&str; 6] = [
        "partitions assigned",
        "partitions revoked",
        "revoked partitions failed",
        "no drain answer",
        "offset commit",
        "rebalance error",
    ];
    log.lines()
        .filter(|l| SAID.iter().any(|s| l.contains(s)))
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
    // Events delivered so far, with when each of their deliveries came.
    let delivered = || delivered_at(&receiver.log().recorded());
    // Input and tiers, whose committed offsets each kill notes.
    let mut topics = vec![INPUT.to_string()];
    topics.extend(
        probe
            .topics
            .retry_tiers
            .iter()
            .map(|t| probe.topics.retry_topic(*t)),
    );
    let mut kills = Vec::new();
    let mut instance = Instance::start(dir.path(), "run-0", &text, None, "SOAK_LOG");
    for kill_after in [12, 17, 23] {
        std::thread::sleep(Duration::from_secs(kill_after));
        instance.sigkill();
        let at = Instant::now();
        runs += 1;
        eprintln!(
            "soak: SIGKILL {runs} after {:?} (at {}), {} requests so far",
            started.elapsed(),
            humantime::format_rfc3339_millis(std::time::SystemTime::now()),
            receiver
                .log()
                .requests
                .load(std::sync::atomic::Ordering::Relaxed)
        );
        kills.push(AtKill {
            at,
            committed: topics
                .iter()
                .map(|topic| {
                    let partitions = cluster.committed_vs_end(GROUP, topic).into_iter();
                    let committed = partitions.map(|(p, committed, _)| (p, committed.max(0)));
                    (topic.clone(), committed.collect())
                })
                .collect(),
            delivered: delivered().into_keys().collect(),
        });
        instance = Instance::start(dir.path(), &format!("run-{runs}"), &text, None, "SOAK_LOG");
    }
    rt.block_on(producer).expect("producer");
    let total = BACKLOG + STREAMED;

    // Every event delivered or dead-lettered with a reason.
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

    let requests_2xx: usize = seen.values().map(Vec::len).sum();
    let (across, within) = repeats(&seen, &kills);
    let per_run: Vec<usize> = within.iter().map(Vec::len).collect();
    eprintln!(
        "soak: of the repeated deliveries, {across} came after a SIGKILL that followed the delivery before, {} in the same run ({per_run:?} per run)",
        per_run.iter().sum::<usize>()
    );
    // The activity log's lines, read once for every run with repeats.
    let attempt_lines: Vec<String> = if within.iter().any(|p| !p.is_empty()) {
        cluster
            .read_all(&probe.topics.attempts_topic())
            .iter()
            .flat_map(|r| {
                let text = String::from_utf8_lossy(&r.value).into_owned();
                text.lines().map(str::to_string).collect::<Vec<_>>()
            })
            .collect()
    } else {
        Vec::new()
    };
    for (run, pairs) in within.iter().enumerate().filter(|(_, p)| !p.is_empty()) {
        let run_start = run.checked_sub(1).map_or(started, |k| kills[k].at);
        let log =
            std::fs::read_to_string(dir.path().join(format!("run-{run}.log"))).unwrap_or_default();
        eprintln!(
            "soak: run {run}: {} repeats, delivered first at {} and again at {} after the run started; its rebalances and commits:",
            pairs.len(),
            span(pairs.iter().map(|p| p.0), run_start),
            span(pairs.iter().map(|p| p.1), run_start),
        );
        for line in rebalance_lines(&log).iter().take(20) {
            eprintln!("    {line}");
        }
        // What the activity log says of three of them: each attempt's
        // time, number, status and outcome (a killed instance loses its
        // last ~70 ms of lines).
        let repeated: HashSet<String> = seen
            .iter()
            .filter(|(_, times)| times.iter().any(|t| pairs.iter().any(|p| p.1 == *t)))
            .map(|(id, _)| id.clone())
            .take(3)
            .collect();
        for line in &attempt_lines {
            let Ok(attempt) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            if attempt["event_id"]
                .as_str()
                .is_some_and(|id| repeated.contains(id))
            {
                eprintln!("    attempt: {line}");
            }
        }
    }
    let mut reasons: HashMap<&str, usize> = HashMap::new();
    for reason in letters.values() {
        *reasons.entry(reason).or_default() += 1;
    }
    // What each kill left to be delivered again: the events delivered
    // before it at or past the offsets the group had committed.
    let mut places = Places::new();
    for topic in &topics {
        let records = if topic == INPUT {
            cluster.read_all(topic)
        } else {
            cluster.read_retries(topic)
        };
        for r in records {
            if let Some(id) = event_id(&r.value) {
                places
                    .entry(id)
                    .or_default()
                    .push((topic.clone(), r.partition, r.offset));
            }
        }
    }
    let produced_twice = places
        .values()
        .filter(|p| p.iter().filter(|(topic, _, _)| topic == INPUT).count() > 1)
        .count();
    eprintln!(
        "soak: {produced_twice} events are on {INPUT} more than once (the test's producer retried)"
    );
    for (n, kill) in kills.iter().enumerate() {
        let (per_topic, events) = kill.uncommitted(&places);
        eprintln!(
            "soak: SIGKILL {}: {} events delivered before it, {events} of them with a record \
             not yet committed {per_topic:?}",
            n + 1,
            kill.delivered.len(),
        );
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
