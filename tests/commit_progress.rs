//! Committed offsets follow deliveries while the pipeline is busy.
//!
//! Given a backlog of 50 000 events on 16 partitions and one `hookstream
//! run` process delivering them, the group's committed offset, read by a
//! separate client every 100 ms, moves at least every 2 × commit_interval
//! while the backlog drains (it once stayed at 0 until the backlog was
//! gone). SIGKILLed half-way and restarted, the process loses nothing, and
//! the duplicates are no more than what it had in flight plus what it
//! delivered in its last two commit intervals (one interval between
//! commits, and the commit's own round trip). With fan-out to a fast and a
//! slow endpoint, the fast endpoint's duplicates stay bounded the same way:
//! what the slow one cannot take is deferred to a retry tier instead of
//! holding the commit point back.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::process::{Instance, free_port};
use common::*;
use hookstream::config::Config;
use hookstream::demo::receiver::{Behaviour, Receiver, ReceiverSpec};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const INPUT: &str = "device-events";
const PARTITIONS: i32 = 16;
const COMMIT_INTERVAL: Duration = Duration::from_millis(500);
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

fn config(bootstrap: &str, group: &str, metrics_port: u16, endpoints: &str) -> String {
    format!(
        r#"
[kafka]
brokers = "{bootstrap}"
group_id = "{group}"
topics = ["{INPUT}"]
commit_interval = "{}ms"
[kafka.properties]
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "1000"
[topics]
create = false
partitions = 4
retry_tiers = ["1s", "5s"]
[delivery]
allow_private_destinations = true
timeout = "5s"
[metrics]
listen = "127.0.0.1:{metrics_port}"
[api]
listen = ""
[[sources]]
topic = "{INPUT}"
preset = "mender"
{endpoints}
"#,
        COMMIT_INTERVAL.as_millis()
    )
}

fn endpoint_toml(id: &str, url: &str, concurrency: u32) -> String {
    format!(
        "[[endpoints]]\nid = \"{id}\"\nurl = \"{url}\"\nevents = [\"*\"]\nsignature = \"none\"\nallow_http = true\nmax_concurrency = {concurrency}\n"
    )
}

fn events(n: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let device = format!("dev-{}", i % 997);
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

/// Reads the committed offsets of one group from outside, every
/// [`SAMPLE_EVERY`], until stopped: (time, sum of committed offsets).
struct CommitSampler {
    samples: Arc<std::sync::Mutex<Vec<(Instant, i64)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CommitSampler {
    fn start(bootstrap: &str, group: &str) -> Self {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", group)
            .create()
            .expect("sampler");
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition(INPUT, p);
        }
        let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let samples = Arc::clone(&samples);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let at = Instant::now();
                    if let Ok(committed) =
                        consumer.committed_offsets(tpl.clone(), Duration::from_secs(5))
                    {
                        let sum = committed
                            .elements()
                            .iter()
                            .map(|e| match e.offset() {
                                Offset::Offset(o) if o > 0 => o,
                                _ => 0,
                            })
                            .sum();
                        samples.lock().unwrap().push((at, sum));
                    }
                    std::thread::sleep(SAMPLE_EVERY.saturating_sub(at.elapsed()));
                }
            })
        };
        Self {
            samples,
            stop,
            thread: Some(thread),
        }
    }

    /// The longest time the committed offset stood still between `from`
    /// and `until` (one that never moves stands still all along).
    fn longest_stand_still(&self, from: Instant, until: Instant) -> Duration {
        let samples = self.samples.lock().unwrap();
        let mut window = samples.iter().filter(|(at, _)| *at >= from && *at <= until);
        let Some(&(mut moved_at, mut value)) = window.next() else {
            return until - from;
        };
        let mut longest = Duration::ZERO;
        for &(at, sum) in window {
            longest = longest.max(at - moved_at);
            if sum != value {
                moved_at = at;
                value = sum;
            }
        }
        longest.max(until - moved_at)
    }

    /// The committed offset (sum) at the last sample.
    fn last(&self) -> i64 {
        self.samples.lock().unwrap().last().map_or(0, |s| s.1)
    }
}

impl Drop for CommitSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn recording(behaviour: Behaviour) -> Receiver {
    Receiver::start(ReceiverSpec {
        behaviour,
        verify_with: None,
        record: true,
    })
    .await
    .expect("receiver")
}

/// Distinct event ids answered 2xx, and 2xx requests.
fn delivered(receiver: &Receiver) -> (HashSet<String>, usize) {
    let mut ids = HashSet::new();
    let mut requests = 0;
    for r in receiver.log().recorded() {
        if (200..300).contains(&r.status) {
            requests += 1;
            if let Some(id) = event_id(&r.body) {
                ids.insert(id);
            }
        }
    }
    (ids, requests)
}

/// 2xx requests `receiver` answered since `since`.
fn delivered_since(receiver: &Receiver, since: Instant) -> usize {
    receiver
        .log()
        .recorded()
        .iter()
        .filter(|r| (200..300).contains(&r.status) && r.received_at >= since)
        .count()
}

struct Setup {
    rt: tokio::runtime::Runtime,
    cluster: Cluster,
    dir: tempfile::TempDir,
}

fn setup(total: usize, group: &str) -> Setup {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cluster = Cluster::in_child_process(&[INPUT], PARTITIONS);
    let probe = Config::from_toml(&config(cluster.bootstrap(), group, 0, "")).unwrap();
    cluster.create_owned_topics(&probe);
    rt.block_on(cluster.produce_many(INPUT, &events(total)));
    Setup {
        rt,
        cluster,
        dir: tempfile::tempdir().unwrap(),
    }
}

fn wait(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs the backlog on one instance, measures how long the committed offset
/// stood still while it drained, SIGKILLs the instance when `fast` has half
/// of it, restarts it, and returns the figures of `fast` and the restarted
/// instance.
fn drain_kill_restart(
    s: &Setup,
    group: &str,
    fast: &Receiver,
    endpoints: &str,
    total: usize,
) -> (Figures, Instance) {
    let sampler = CommitSampler::start(s.cluster.bootstrap(), group);
    let port = free_port();
    let text = config(s.cluster.bootstrap(), group, port, endpoints);
    let mut first = Instance::start(s.dir.path(), "first", &text, Some(port), "COMMIT_TEST_LOG");
    wait("a first delivery", Duration::from_secs(60), || {
        fast.log().accepted_count() > 0
    });
    let started = Instant::now();
    wait(
        "half of the backlog delivered",
        Duration::from_secs(120),
        || fast.log().accepted_count() >= total / 2,
    );
    let in_flight = first.gauge("hookstream_inflight_deliveries") as usize;
    let killed_at = Instant::now();
    let stand_still = sampler.longest_stand_still(started, killed_at);
    let committed_at_kill = sampler.last();
    first.sigkill();
    let last_window = delivered_since(fast, killed_at - 2 * COMMIT_INTERVAL);

    let port = free_port();
    let text = config(s.cluster.bootstrap(), group, port, endpoints);
    let second = Instance::start(s.dir.path(), "second", &text, Some(port), "COMMIT_TEST_LOG");
    wait(
        "every event delivered after the restart",
        Duration::from_secs(180),
        || fast.log().accepted_count() >= total,
    );
    let (ids, requests) = delivered(fast);
    let figures = Figures {
        stand_still,
        committed_at_kill,
        in_flight,
        last_window,
        delivered: ids.len(),
        duplicates: requests - ids.len(),
    };
    (figures, second)
}

#[derive(Debug)]
struct Figures {
    /// Longest time the committed offset stood still while draining.
    stand_still: Duration,
    committed_at_kill: i64,
    /// Deliveries in flight on the killed process.
    in_flight: usize,
    /// What it delivered in its last two commit intervals.
    last_window: usize,
    delivered: usize,
    duplicates: usize,
}

fn check(what: &str, f: &Figures, total: usize) {
    eprintln!("{what}: {f:?}");
    assert_eq!(f.delivered, total, "{what}: every event delivered");
    let allowed = 2 * COMMIT_INTERVAL + 2 * SAMPLE_EVERY;
    assert!(
        f.stand_still <= allowed,
        "{what}: the committed offset stood still for {:?} while the backlog drained \
         (allowed: 2 × commit_interval + the sampling period twice = {allowed:?})",
        f.stand_still
    );
    let bound = f.in_flight + f.last_window;
    assert!(
        f.duplicates <= bound,
        "{what}: {} duplicates after the SIGKILL; at most what was in flight ({}) plus what \
         was delivered in the last two commit intervals ({}) may be sent again",
        f.duplicates,
        f.in_flight,
        f.last_window
    );
}

#[test]
fn a_backlog_commits_as_it_drains_and_a_kill_repeats_only_the_last_interval() {
    let total = 50_000;
    let group = "backlog";
    let s = setup(total, group);
    let fast = s.rt.block_on(recording(Behaviour::Healthy));
    let endpoints = endpoint_toml("fast", &fast.url("in"), 16);
    let (f, mut second) = drain_kill_restart(&s, group, &fast, &endpoints, total);
    check("one endpoint", &f, total);
    assert!(
        f.committed_at_kill > 0,
        "something was committed before the kill"
    );
    assert_eq!(
        second.terminate(Duration::from_secs(30)),
        Some(0),
        "{}",
        second.log()
    );
}

#[test]
fn fan_out_to_a_slow_endpoint_keeps_the_commit_point_moving() {
    let total = 20_000;
    let group = "fan-out";
    let s = setup(total, group);
    let fast = s.rt.block_on(recording(Behaviour::Healthy));
    let slow =
        s.rt.block_on(recording(Behaviour::Slow(Duration::from_millis(5))));
    let endpoints = format!(
        "{}{}",
        endpoint_toml("fast", &fast.url("in"), 16),
        endpoint_toml("slow", &slow.url("in"), 4)
    );
    let (f, mut second) = drain_kill_restart(&s, group, &fast, &endpoints, total);
    check("fast beside slow", &f, total);
    // The slow endpoint gets everything too, in the end (from the tiers).
    let mut seen: HashMap<String, usize> = HashMap::new();
    wait(
        "every event at the slow endpoint",
        Duration::from_secs(240),
        || {
            seen = bodies_by(
                &slow
                    .log()
                    .recorded()
                    .into_iter()
                    .filter(|r| (200..300).contains(&r.status))
                    .collect::<Vec<_>>(),
                "/id",
            );
            seen.len() >= total
        },
    );
    assert_eq!(
        second.terminate(Duration::from_secs(30)),
        Some(0),
        "{}",
        second.log()
    );
}
