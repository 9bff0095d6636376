//! Scaling out while instances die: three `hookstream run` processes share
//! one consumer group on a broker process (librdkafka's mock cluster in a
//! child process), delivering to one endpoint whose receiver is too slow
//! for the load, so its circuit opens and deliveries are deferred in
//! deferral batches on the retry tiers. Once a third of the events are
//! delivered one process is SIGKILLed; later a fourth joins. Every rebalance
//! moves partitions of the input topic and of the tiers between processes.
//!
//! Then every event is delivered or dead-lettered with a reason, every
//! input and tier offset is committed, and nothing deferred is left on a
//! tier. Before the kill at least two of the three first instances
//! delivered a share of the events (the group split the work). The
//! duplicates are reported and bounded: by what the killed instance had in flight plus
//! what it settled in its last commit interval (delivered, or deferred and
//! retried on a tier: each of those is a second copy once its input record
//! is read again), plus what refused revoke commits explain (the mock
//! cluster refuses commits while the group is joining, where Kafka accepts
//! those of the current generation). `REBALANCE_STRICT=1` fails a round
//! past that bound; without it a round fails only past twice the bound
//! (the strict bound held in every one of 25 rounds measured for issue 20
//! item 3; before deferrals counted, 2 rounds of 20 exceeded it).
//!
//! `the_group_survives_a_kill_and_a_join` runs it once; the stress mode
//! (`--ignored`, `REBALANCE_LOOPS`, 20 by default) runs it in a loop and
//! prints the figures of each round.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use common::process::{Instance, free_port};
use common::*;
use hookstream::config::Config;
use hookstream::demo::receiver::{Behaviour, Receiver, ReceiverSpec};

const INPUT: &str = "device-events";
const GROUP: &str = "scale-out";
const COMMIT_INTERVAL_MS: u64 = 500;
const SESSION_TIMEOUT_MS: u64 = 6000;

/// Starts instance `n`; its deliveries carry `User-Agent: instance-<n>`.
fn start_instance(dir: &Path, n: usize, bootstrap: &str, url: &str) -> Instance {
    let name = format!("instance-{n}");
    let metrics_port = free_port();
    let metrics = format!("127.0.0.1:{metrics_port}");
    let config = instance_config(bootstrap, url, &name, &metrics);
    Instance::start(dir, &name, &config, Some(metrics_port), "REBALANCE_LOG")
}

fn instance_config(bootstrap: &str, url: &str, name: &str, metrics: &str) -> String {
    format!(
        r#"
[kafka]
brokers = "{bootstrap}"
group_id = "{GROUP}"
topics = ["{INPUT}"]
commit_interval = "{COMMIT_INTERVAL_MS}ms"
[kafka.properties]
"session.timeout.ms" = "{SESSION_TIMEOUT_MS}"
"heartbeat.interval.ms" = "1000"
[topics]
create = false
partitions = 4
retry_tiers = ["1s", "5s", "30s"]
[delivery]
allow_private_destinations = true
user_agent = "{name}"
timeout = "2s"
max_attempts = 1000
backoff = {{ initial = "200ms", factor = 2.0, max = "2s", jitter = 0.2 }}
drain_timeout = "5s"
[metrics]
listen = "{metrics}"
[api]
listen = ""
[[sources]]
topic = "{INPUT}"
preset = "mender"
[[endpoints]]
id = "slow"
url = "{url}"
events = ["*"]
signature = "none"
allow_http = true
max_concurrency = 4
queue_size = 256
"#
    )
}

/// `n` small Mender events `evt-<i>` for 500 devices, keyed by device.
fn events(n: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let device = format!("dev-{}", i % 500);
            let body = format!(
                r#"{{"id":"evt-{i}","type":"device-status-changed","data":{{"id":"{device}"}}}}"#
            );
            (device, body.into_bytes())
        })
        .collect()
}

/// What one round measured.
#[derive(Debug)]
struct Round {
    events: usize,
    delivered: usize,
    dead_lettered: usize,
    requests_2xx: usize,
    duplicates: usize,
    /// Duplicates of events the killed instance had delivered.
    duplicates_of_killed: usize,
    /// What the killed instance delivered in its last 2 × commit_interval.
    killed_last_window: usize,
    /// What it deferred or scheduled for retry in that window (each is a
    /// second copy once its input record is consumed again).
    killed_last_window_set_aside: usize,
    /// Its deliveries in flight when it was killed.
    killed_in_flight: usize,
    /// Deliveries of each of the first three instances before the kill.
    split_before_kill: Vec<(String, usize)>,
    /// Revoked partitions whose final commit the broker refused (the mock
    /// refuses commits once the group is rebalancing again).
    failed_revoke_commits: usize,
    /// The killed instance had a periodic commit refused in the session
    /// before its kill: its last successful commit is older than two
    /// commit intervals.
    killed_commit_refused_lately: bool,
    took: Duration,
}

fn event_id(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get("id")?.as_str().map(str::to_string)
}

/// Every retry-tier topic of the instances' configuration.
fn tier_topics(config: &Config) -> Vec<String> {
    config
        .topics
        .retry_tiers
        .iter()
        .map(|t| config.topics.retry_topic(*t))
        .collect()
}

/// The first instance that logged a lost fetch position (the mock cluster
/// dropped records it had not consumed yet: a loss that would say nothing
/// about hookstream).
fn out_of_range(instances: &[Instance]) -> Option<String> {
    instances
        .iter()
        .find(|i| i.log().contains("fetch position out of range"))
        .map(|i| {
            format!(
                "{} logged a fetch position out of range: the mock cluster dropped unconsumed \
                 records (the round is too large for its ~5 MiB per partition)",
                i.name
            )
        })
}

fn round(n: usize, total: usize) -> Round {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let started = Instant::now();
    let cluster = Cluster::in_child_process(&[INPUT], 4);
    let bootstrap = cluster.bootstrap().to_string();
    let receiver: Receiver = rt
        .block_on(Receiver::start(ReceiverSpec {
            // Slow (a few ms per request, 10 at once, 503 beyond) and down
            // for 600 ms every 4 s: circuits open and deliveries are
            // deferred in deferral batches, again and again.
            behaviour: Behaviour::Flapping {
                period: Duration::from_secs(4),
                outage: Duration::from_millis(600),
                capacity: 10,
                delay: Duration::from_millis(3),
            },
            verify_with: None,
            record: true,
        }))
        .expect("receiver");
    let url = receiver.url("hooks");
    let config = Config::from_toml(&instance_config(&bootstrap, &url, "probe", "")).unwrap();
    cluster.create_owned_topics(&config);
    let tiers = tier_topics(&config);
    // The events arrive as a stream of about 1 500/s. (A backlog of all of
    // them would be copied to one tier partition within a second whenever
    // the circuit opens: more than the mock cluster keeps per partition.)
    let cluster = std::sync::Arc::new(cluster);
    let producer = {
        let cluster = std::sync::Arc::clone(&cluster);
        rt.spawn(async move {
            for chunk in events(total).chunks(300) {
                cluster.produce_many(INPUT, chunk).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };

    let dir = tempfile::tempdir().unwrap();
    let mut instances: Vec<Instance> = (0..3)
        .map(|i| start_instance(dir.path(), i, &bootstrap, &url))
        .collect();
    let log = receiver.log();
    let delivered = || log.accepted_count();
    let wait_until = |what: &str, timeout: Duration, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + timeout;
        while !done() {
            if Instant::now() >= deadline {
                return Err(format!("timed out waiting for {what}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    };
    // Until a third is delivered, what the instance to be killed has put
    // on the tiers (deferred, or retried after a failed attempt) is
    // sampled: each of those it made since its last commit is a second
    // copy once its input record is consumed again.
    let mut set_aside: Vec<(Instant, f64)> = Vec::new();
    let set_aside_now = |i: &Instance| {
        i.sum("hookstream_deliveries_total", "outcome=\"deferred\"")
            + i.sum("hookstream_deliveries_total", "outcome=\"retry_scheduled\"")
    };
    let third_by = Instant::now() + Duration::from_secs(120);
    let mut failure = loop {
        if delivered() >= total / 3 {
            break None;
        }
        if Instant::now() >= third_by {
            break Some("timed out waiting for a third delivered".to_string());
        }
        set_aside.push((Instant::now(), set_aside_now(&instances[0])));
        std::thread::sleep(Duration::from_millis(50));
    };
    let killed_in_flight = instances[0].gauge("hookstream_inflight_deliveries") as usize;
    let killed_set_aside = set_aside_now(&instances[0]);
    let killed_at = Instant::now();
    let killed_wall = std::time::SystemTime::now();
    instances[0].sigkill();
    let killed = instances[0].name.clone();
    eprintln!(
        "round {n}: {killed} SIGKILLed after {:?} with {} delivered",
        killed_at - started,
        delivered()
    );
    if failure.is_none() {
        let _ = wait_until("two thirds delivered", Duration::from_secs(20), &|| {
            delivered() >= 2 * total / 3
        });
        instances.push(start_instance(dir.path(), 3, &bootstrap, &url));
        eprintln!(
            "round {n}: instance-3 joined with {} delivered",
            delivered()
        );
    }

    rt.block_on(producer).expect("producer");
    // Every event delivered, or dead-lettered with a reason.
    let dlq_topic = config.topics.dlq_topic();
    let all_ids: HashSet<String> = (0..total).map(|i| format!("evt-{i}")).collect();
    let mut dead: HashMap<String, String> = HashMap::new();
    let accounted = |dead: &HashMap<String, String>| {
        let accepted: HashSet<String> = log
            .recorded()
            .iter()
            .filter(|r| (200..300).contains(&r.status))
            .filter_map(|r| event_id(&r.body))
            .collect();
        all_ids
            .iter()
            .filter(|id| !accepted.contains(*id) && !dead.contains_key(*id))
            .cloned()
            .collect::<Vec<_>>()
    };
    if failure.is_none() {
        let deadline = Instant::now() + Duration::from_secs(180);
        for turn in 0.. {
            if delivered() >= total {
                break;
            }
            if turn % 20 == 0
                && let Some(lost) = out_of_range(&instances)
            {
                failure = Some(lost);
                break;
            }
            if Instant::now() >= deadline {
                for r in cluster.read_all(&dlq_topic) {
                    if let Some(id) = r.header("hookstream-event-id") {
                        let reason = r.header("hookstream-reason").unwrap_or("").to_string();
                        dead.insert(id.to_string(), reason);
                    }
                }
                let missing = accounted(&dead);
                if !missing.is_empty() {
                    failure = Some(format!(
                        "{} of {total} events neither delivered nor dead-lettered after 180 s: {:?}…",
                        missing.len(),
                        &missing[..missing.len().min(10)]
                    ));
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    for (id, reason) in &dead {
        assert!(!reason.is_empty(), "{id} dead-lettered without a reason");
    }

    // Every input and tier offset committed.
    let mut topics = vec![INPUT.to_string()];
    topics.extend(tiers.iter().cloned());
    if failure.is_none() {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let behind: Vec<String> = topics
                .iter()
                .flat_map(|t| {
                    cluster
                        .committed_vs_end(GROUP, t)
                        .into_iter()
                        .filter(|(_, committed, end)| *end > 0 && committed != end)
                        .map(move |(p, c, e)| format!("{t}[{p}] committed {c} of {e}"))
                })
                .collect();
            if behind.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                failure = Some(format!(
                    "offsets not committed 60 s after the last delivery: {behind:?}"
                ));
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    // Nothing deferred left undelivered on a tier: every event a tier holds
    // was delivered or dead-lettered.
    if failure.is_none() {
        let delivered_ids: HashSet<String> = log
            .recorded()
            .iter()
            .filter(|r| (200..300).contains(&r.status))
            .filter_map(|r| event_id(&r.body))
            .collect();
        for tier in &tiers {
            let stranded: Vec<String> = cluster
                .read_retries(tier)
                .iter()
                .filter_map(|r| r.header("hookstream-event-id").map(str::to_string))
                .filter(|id| !delivered_ids.contains(id) && !dead.contains_key(id))
                .collect();
            if !stranded.is_empty() {
                failure = Some(format!(
                    "{} events deferred on {tier} never delivered: {:?}…",
                    stranded.len(),
                    &stranded[..stranded.len().min(10)]
                ));
            }
        }
    }

    if failure.is_none() {
        failure = out_of_range(&instances);
    }

    for i in &instances {
        let log = i.log();
        eprintln!(
            "round {n}: {}: {} circuit openings, {} revokes, {} assignments, {} warnings",
            i.name,
            log.matches("circuit opened").count(),
            log.matches("partitions revoked").count(),
            log.matches("partitions assigned").count(),
            log.matches(" WARN ").count(),
        );
    }
    let mut exits = Vec::new();
    for i in instances.iter_mut().skip(1) {
        exits.push((i.name.clone(), i.terminate(Duration::from_secs(30))));
    }
    if let Some(failure) = failure {
        let kept = dir.keep();
        let logs: Vec<String> = instances
            .iter()
            .map(|i| {
                let log = i.log();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                format!(
                    "--- {} (last lines, newest first)\n{}",
                    i.name,
                    tail.join("\n")
                )
            })
            .collect();
        panic!(
            "round {n}: {failure}\nlogs in {}\n{}",
            kept.display(),
            logs.join("\n")
        );
    }
    if std::env::var_os("REBALANCE_KEEP").is_some() {
        // Every request and every tier record, for a closer look.
        use std::io::Write as _;
        let mut out = std::fs::File::create(dir.path().join("requests.csv")).unwrap();
        for r in log.recorded() {
            let _ = writeln!(
                out,
                "{},{},{},{}",
                r.received_at.duration_since(started).as_millis(),
                r.status,
                r.header("user-agent").unwrap_or(""),
                event_id(&r.body).unwrap_or_default()
            );
        }
        let mut out = std::fs::File::create(dir.path().join("tiers.csv")).unwrap();
        for tier in &tiers {
            for (i, record) in cluster.read_all(tier).iter().enumerate() {
                for e in record.retries() {
                    let _ = writeln!(
                        out,
                        "{tier},{},{i},{},{},{},{},{},{}",
                        record.partition,
                        e.header("hookstream-event-id").unwrap_or(""),
                        e.header("hookstream-hop").unwrap_or(""),
                        e.header("hookstream-source").unwrap_or(""),
                        e.header("hookstream-attempt").unwrap_or(""),
                        e.header("hookstream-due-ms").unwrap_or(""),
                        e.header("hookstream-last-error").unwrap_or(""),
                    );
                }
            }
        }
        eprintln!("round {n}: logs kept in {}", dir.keep().display());
    }
    for (name, code) in &exits {
        assert_eq!(*code, Some(0), "{name} did not stop cleanly on SIGTERM");
    }

    // Duplicates, and which of them the kill explains.
    let recorded = log.recorded();
    let mut first_by: HashMap<String, (String, usize)> = HashMap::new();
    let mut requests_2xx = 0;
    let mut killed_last_window = 0;
    let window_start = killed_at - 2 * Duration::from_millis(COMMIT_INTERVAL_MS);
    // Set aside in the window: since the last sample taken before it.
    let before_window = set_aside
        .iter()
        .rev()
        .find(|(at, _)| *at <= window_start)
        .map_or(0.0, |(_, n)| *n);
    let killed_last_window_set_aside = (killed_set_aside - before_window).max(0.0) as usize;
    // How the three first instances shared the work before the kill.
    let mut split_before_kill: Vec<(String, usize)> =
        (0..3).map(|i| (format!("instance-{i}"), 0)).collect();
    for (i, r) in recorded.iter().enumerate() {
        if !(200..300).contains(&r.status) {
            continue;
        }
        requests_2xx += 1;
        let by = r.header("user-agent").unwrap_or("").to_string();
        if r.received_at < killed_at
            && let Some(share) = split_before_kill.iter_mut().find(|(name, _)| *name == by)
        {
            share.1 += 1;
        }
        if by == killed && r.received_at >= window_start {
            killed_last_window += 1;
        }
        if let Some(id) = event_id(&r.body) {
            first_by.entry(id).or_insert((by, i));
        }
    }
    let delivered_ids = first_by.len();
    let duplicates = requests_2xx - delivered_ids;
    let mut seen = HashSet::new();
    let duplicates_of_killed = recorded
        .iter()
        .filter(|r| (200..300).contains(&r.status))
        .filter_map(|r| event_id(&r.body))
        .filter(|id| !seen.insert(id.clone()))
        .filter(|id| first_by.get(id).is_some_and(|(by, _)| *by == killed))
        .count();
    let mut pairs: HashMap<(String, String), usize> = HashMap::new();
    let mut by_first: HashMap<String, String> = HashMap::new();
    for r in recorded.iter().filter(|r| (200..300).contains(&r.status)) {
        let by = r.header("user-agent").unwrap_or("").to_string();
        if let Some(id) = event_id(&r.body) {
            match by_first.get(&id) {
                None => {
                    by_first.insert(id, by);
                }
                Some(first) => {
                    let at = r.received_at.duration_since(started).as_secs();
                    *pairs
                        .entry((format!("{first}→{by}"), format!("{at}s")))
                        .or_default() += 1;
                }
            }
        }
    }
    let mut pairs: Vec<_> = pairs.into_iter().collect();
    pairs.sort();
    eprintln!("round {n}: duplicates by (first→again, second of the run): {pairs:?}");
    let failed_revoke_commits = instances
        .iter()
        .map(|i| {
            i.log()
                .matches("committing revoked partitions failed")
                .count()
        })
        .sum();
    let killed_commit_refused_lately = refused_commit_within(
        &instances[0].log(),
        killed_wall,
        Duration::from_millis(SESSION_TIMEOUT_MS + 2 * COMMIT_INTERVAL_MS),
    );
    Round {
        killed_in_flight,
        failed_revoke_commits,
        killed_commit_refused_lately,
        events: total,
        delivered: delivered_ids,
        dead_lettered: dead.len(),
        requests_2xx,
        duplicates,
        duplicates_of_killed,
        killed_last_window,
        killed_last_window_set_aside,
        split_before_kill,
        took: started.elapsed(),
    }
}

/// Whether `log` says a periodic offset commit was refused within `window`
/// before `until` (its lines start with an RFC 3339 time).
fn refused_commit_within(log: &str, until: std::time::SystemTime, window: Duration) -> bool {
    let from = until - window;
    log.lines()
        .filter(|line| line.contains("offset commit refused"))
        .filter_map(|line| line.split_whitespace().next())
        .filter_map(|at| humantime::parse_rfc3339_weak(at).ok())
        .any(|at| at >= from && at <= until)
}

fn check(n: usize, r: &Round) {
    eprintln!(
        "round {n}: {} events, {} delivered, {} dead-lettered in {:.0?}; {} 2xx requests: \
         {} duplicates, {} of them of events the killed instance had delivered; it had {} \
         deliveries in flight, delivered {} and set aside {} on the tiers in its last \
         2 × commit_interval; {} revoke commits refused; a periodic commit of the killed \
         instance refused in the session before the kill: {}",
        r.events,
        r.delivered,
        r.dead_lettered,
        r.took,
        r.requests_2xx,
        r.duplicates,
        r.duplicates_of_killed,
        r.killed_in_flight,
        r.killed_last_window,
        r.killed_last_window_set_aside,
        r.failed_revoke_commits,
        r.killed_commit_refused_lately,
    );
    assert_eq!(
        r.delivered + r.dead_lettered,
        r.events,
        "every event delivered or dead-lettered"
    );
    // The group shared the work: at least two of the three instances
    // delivered a part of it before the kill. (Not always all three: the
    // mock cluster can leave a late joiner without an input partition for
    // the first seconds, 2/2/0 of four, and a round once killed such an
    // instance, which then cost nothing.)
    let before_kill: usize = r.split_before_kill.iter().map(|(_, n)| n).sum();
    eprintln!(
        "round {n}: deliveries before the kill {:?}",
        r.split_before_kill
    );
    let sharing = r
        .split_before_kill
        .iter()
        .filter(|(_, delivered)| *delivered * 20 >= before_kill)
        .count();
    assert!(
        sharing >= 2,
        "round {n}: only {sharing} instance(s) delivered 5 % or more of the {before_kill} \
         deliveries before the kill: the work was not shared ({:?})",
        r.split_before_kill
    );
    // What a kill may cost: what the killed instance had in flight and
    // what it delivered or set aside on a tier since its last commit. A refused revoke commit
    // costs what its partitions settled since their last successful
    // commit: the mock cluster refuses every commit while the group is
    // joining (up to `session.timeout.ms` − 1 s; Kafka accepts commits of
    // the current generation then), so at most a session's worth.
    let rate = r.events as f64 / r.took.as_secs_f64();
    let per_refusal = (rate * SESSION_TIMEOUT_MS as f64 / 1000.0).ceil() as usize;
    // A periodic commit of the killed instance refused shortly before the
    // kill (the same mock behaviour) leaves its last successful commit up
    // to a session older: once, however many refusals that stall had.
    let bound = r.killed_in_flight
        + r.killed_last_window
        + r.killed_last_window_set_aside
        + (r.failed_revoke_commits + usize::from(r.killed_commit_refused_lately)) * per_refusal;
    if r.duplicates > bound {
        // Said every time; it fails the test with REBALANCE_STRICT=1, and
        // beyond DUPLICATE_MARGIN times the bound always (the redelivery
        // storms of before were 10-100x).
        eprintln!(
            "round {n}: {} duplicates exceed the bound of {bound} (in flight on the killed \
             instance + what it settled in its last commit interval + refused revoke commits; \
             issue 20 item 3)",
            r.duplicates
        );
    }
    let margin = if std::env::var_os("REBALANCE_STRICT").is_some() {
        1
    } else {
        DUPLICATE_MARGIN
    };
    assert!(
        r.duplicates <= bound * margin,
        "round {n}: {} duplicates, more than {margin} x what the kill and the refused revoke \
         commits explain ({bound})",
        r.duplicates
    );
}

/// How far past the bound a round's duplicates may go before the test
/// fails without `REBALANCE_STRICT` (see [`check`]).
const DUPLICATE_MARGIN: usize = 2;

#[test]
fn the_group_survives_a_kill_and_a_join() {
    let r = round(0, 30_000);
    check(0, &r);
}

/// The same scenario in a loop (`REBALANCE_LOOPS`, default 20).
#[test]
#[ignore = "stress mode: .ci/run runs 3 loops; REBALANCE_LOOPS=20 for the full loop"]
fn stress_kill_and_join_in_a_loop() {
    let loops: usize = std::env::var("REBALANCE_LOOPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    // Every round runs, failed or not, so the figures of the whole loop are
    // reported; the test fails at the end if any round did.
    let mut rounds = Vec::new();
    let mut failed = Vec::new();
    for n in 0..loops {
        let outcome = std::panic::catch_unwind(|| {
            let r = round(n, 30_000);
            check(n, &r);
            r
        });
        match outcome {
            Ok(r) => rounds.push(r),
            Err(_) => failed.push(n),
        }
    }
    let dups: Vec<usize> = rounds.iter().map(|r| r.duplicates).collect();
    eprintln!(
        "{loops} rounds: {} passed, failed {failed:?}; duplicates per passed round {dups:?}, took {:?} s",
        rounds.len(),
        rounds.iter().map(|r| r.took.as_secs()).collect::<Vec<_>>()
    );
    assert!(failed.is_empty(), "rounds {failed:?} failed (see above)");
}

#[test]
fn a_refused_commit_is_found_by_its_time() {
    let log = "2026-12-05T23:06:52.511331Z  WARN hookstream::commit::committer: offset commit refused; committing again at the next interval\n\
               2026-12-05T23:06:40.000000Z  WARN hookstream::commit::committer: offset commit refused; committing again at the next interval\n\
               2026-12-05T23:06:53.000000Z  INFO something else\n";
    let until = humantime::parse_rfc3339("2026-12-05T23:06:55Z").unwrap();
    assert!(refused_commit_within(log, until, Duration::from_secs(5)));
    assert!(!refused_commit_within(log, until, Duration::from_secs(2)));
    let before = humantime::parse_rfc3339("2026-12-05T23:06:45Z").unwrap();
    assert!(refused_commit_within(log, before, Duration::from_secs(7)));
    assert!(!refused_commit_within(log, before, Duration::from_secs(4)));
}
