//! Auto-disable after sustained failure, with the backlog kept: given a
//! service whose endpoint's receiver fails every request, when it has
//! failed for `delivery.auto_disable.after`, then the endpoint is stored
//! disabled (the API shows why, when and the cause `failing`), the
//! auto-disable counter moves, the receiver gets no request more, and
//! neither the events produced before nor those produced after are
//! dead-lettered: they wait on the recheck tier, their input offsets
//! committed. Once the receiver is back and the endpoint is enabled through
//! the API, every event is delivered exactly once as produced (the events
//! of one partition that joined the backlog together in their produced
//! order), and the input and tier offsets reach the end. Deliveries kept
//! longer than `disabled_backlog.max_age` are dead-lettered as
//! `endpoint_disabled` with their history; a disable through the API keeps
//! the backlog the same way.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use hookstream::cmd::run::Service;
use hookstream::config::{Config, HumanDuration, Role, TokenConfig};
use hookstream::demo::receiver::{Behaviour, Receiver};
use hookstream::source::extract::Preset;
use hookstream::wire::headers::now_ms;
use serde_json::Value;

const TOPIC: &str = "device-events";
const ADMIN: &str = "auto-disable-admin-token";
/// The tiers of the tests' configuration.
const TIERS: [&str; 3] = [
    "hookstream.retry.100ms",
    "hookstream.retry.500ms",
    "hookstream.retry.2s",
];

/// The metrics exporter of this test binary (the recorder is global to a
/// process): installed once, on a thread of its own, so that it outlives
/// each test's runtime.
fn metrics_addr() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| {
        std::thread::spawn(|| hookstream::metrics::install_exporter("127.0.0.1:0"))
            .join()
            .expect("installing the exporter")
            .expect("the exporter listens")
    })
}

/// `name{endpoint="<endpoint>"}`'s value in a scrape (`None`: no such series).
async fn metric(name: &str, endpoint: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://{}/metrics", metrics_addr()))
        .await
        .expect("a scrape")
        .text()
        .await
        .expect("a body");
    let series = format!("{name}{{endpoint=\"{endpoint}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
}

/// A service configuration: the API on 127.0.0.1, attempts that never run
/// out within a test (the circuit probes every 500 ms), `after` of
/// failures disabling an endpoint, and the backlog kept `max_age`,
/// coming back every `recheck`.
fn service_config(group: &str, after: &str, max_age: &str, recheck: &str) -> Config {
    let mut c = config(group, &[(TOPIC, Preset::Mender)]);
    c.api.listen = "127.0.0.1:0".into();
    c.api.tokens = vec![TokenConfig {
        token_file: None,
        token_env: None,
        token: Some(ADMIN.into()),
        role: Role::Admin,
    }];
    c.delivery.max_attempts = 1_000;
    c.delivery.retry_window = HumanDuration::from_secs(3600);
    c.delivery.backoff.max = HumanDuration::from_millis(500);
    let duration = |text| HumanDuration(hookstream::config::parse_duration(text).unwrap());
    c.delivery.auto_disable.after = duration(after);
    c.delivery.disabled_backlog.max_age = duration(max_age);
    c.delivery.disabled_backlog.recheck = duration(recheck);
    c
}

async fn api(service: &Service, method: &str, path: &str) -> (u16, Value) {
    let addr = service.api_addr().expect("API listening");
    let client = reqwest::Client::new();
    let url = format!("http://{addr}{path}");
    let request = match method {
        "GET" => client.get(url),
        _ => client.post(url),
    };
    let response = request
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("API answers");
    let status = response.status().as_u16();
    let text = response.text().await.expect("a body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Events `<prefix>-<i>` for `i` in `range`, all keyed `key` (one partition,
/// in this order).
fn keyed_events(prefix: &str, key: &str, range: std::ops::Range<usize>) -> Vec<(String, Vec<u8>)> {
    range
        .map(|i| {
            (
                key.to_string(),
                format!(r#"{{"id":"{prefix}-{i}","type":"device-status-changed","data":{{"id":"{key}"}}}}"#)
                    .into_bytes(),
            )
        })
        .collect()
}

/// The `/id` of each request the receiver answered 200, in arrival order.
fn delivered_ids(rx: &Receiver) -> Vec<(String, Vec<u8>)> {
    rx.log()
        .recorded()
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).expect("a JSON body");
            (
                body["id"].as_str().expect("an id").to_string(),
                r.body.to_vec(),
            )
        })
        .collect()
}

async fn wait_until_stored_disabled(service: &Service, id: &str, within: Duration) {
    wait_for("the endpoint stored disabled", within, || {
        service.store().get(id).is_some_and(|e| !e.config.enabled)
    })
    .await;
}

/// Every input and tier partition of `group` committed to its end.
async fn wait_for_every_offset(cluster: &Cluster, group: &str) {
    wait_for(
        "input and tier offsets committed to the end",
        Duration::from_secs(30),
        || {
            cluster.offsets_at_end(group, TOPIC)
                && TIERS.iter().all(|t| cluster.offsets_at_end(group, t))
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_endpoint_is_disabled_keeps_its_backlog_and_delivers_it_all_once_enabled() {
    metrics_addr();
    let cluster = Cluster::start(&[TOPIC], 2);
    let rx = receiver(Behaviour::Outage { status: 503 }).await;
    let group = "auto-disable-story";
    let mut config = service_config(group, "3s", "7d", "2s");
    let mut ep = endpoint("failing-fleet", rx.url("in"), &["*"], "none", "");
    // One request at a time: the order of deliveries is the order of
    // attempts.
    ep.max_concurrency = 1;
    config.endpoints.push(ep);
    let service = Service::start(config, cluster.target())
        .await
        .expect("service starts");

    // Failing for 3 s: disabled through the store, with the reason.
    let early = status_events(0, 20);
    cluster.produce_many(TOPIC, &early).await;
    wait_until_stored_disabled(&service, "failing-fleet", Duration::from_secs(40)).await;
    let (status, shown) = api(&service, "GET", "/v1/endpoints/failing-fleet").await;
    assert_eq!(status, 200);
    assert_disabled_by_hookstream(&shown, "failing", "failed every attempt for 3s");
    assert_eq!(
        metric("hookstream_endpoint_auto_disabled_total", "failing-fleet").await,
        Some(1.0),
        "the auto-disable is counted once"
    );

    // Disabled: events produced now join the backlog (one partition, just
    // after a recheck instant, so that they are held within one recheck),
    // nothing more is sent, nothing is dead-lettered, and the input
    // offsets commit (the deliveries are durable on the tier).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let requests_when_disabled = rx.log().requests.load(Ordering::Relaxed);
    while !(200..800).contains(&now_ms().rem_euclid(2_000)) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let late = keyed_events("late", "dev-ordered", 0..20);
    cluster.produce_many(TOPIC, &late).await;
    wait_for(
        "the input offsets committed while disabled",
        Duration::from_secs(30),
        || cluster.offsets_at_end(group, TOPIC),
    )
    .await;
    // A whole recheck later, the backlog went round once more.
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(
        rx.log().requests.load(Ordering::Relaxed),
        requests_when_disabled,
        "a disabled endpoint gets no request"
    );
    assert!(
        cluster.read_all("hookstream.dlq").is_empty(),
        "nothing is dead-lettered while the backlog is within its cap"
    );
    let held: Vec<_> = cluster
        .read_retries("hookstream.retry.2s")
        .into_iter()
        .filter(|r| {
            r.header("hookstream-last-error")
                .is_some_and(|e| e.starts_with("endpoint disabled"))
        })
        .collect();
    assert!(
        held.iter()
            .any(|r| r.header("hookstream-event-id") == Some("late-19")),
        "the backlog waits on the recheck tier"
    );

    // The receiver is back and the endpoint enabled: everything comes.
    rx.recover();
    let (status, enabled) = api(&service, "POST", "/v1/endpoints/failing-fleet/enable").await;
    assert_eq!((status, &enabled["enabled"]), (200, &Value::Bool(true)));
    assert!(enabled.get("disabled").is_none(), "{enabled}");
    let produced: HashMap<String, Vec<u8>> = early
        .iter()
        .chain(&late)
        .map(|(_, body)| {
            let v: Value = serde_json::from_slice(body).unwrap();
            (v["id"].as_str().unwrap().to_string(), body.clone())
        })
        .collect();
    wait_for("every event delivered", Duration::from_secs(40), || {
        rx.log().accepted_count() == produced.len()
    })
    .await;
    let delivered = delivered_ids(&rx);
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (id, body) in &delivered {
        *counts.entry(id.as_str()).or_default() += 1;
        assert_eq!(Some(body), produced.get(id), "{id} arrives as produced");
    }
    assert_eq!(counts.len(), produced.len(), "every event: {counts:?}");
    assert!(
        counts.values().all(|n| *n == 1),
        "each exactly once: {counts:?}"
    );
    let late_order: Vec<&str> = delivered
        .iter()
        .map(|(id, _)| id.as_str())
        .filter(|id| id.starts_with("late-"))
        .collect();
    let late_ids: Vec<String> = (0..20).map(|i| format!("late-{i}")).collect();
    assert_eq!(
        late_order, late_ids,
        "the events of one partition held together come in their produced order"
    );
    wait_for_every_offset(&cluster, group).await;
    assert!(cluster.read_all("hookstream.dlq").is_empty());
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_kept_beyond_the_cap_are_dead_lettered_as_endpoint_disabled_with_their_history()
{
    metrics_addr();
    let cluster = Cluster::start(&[TOPIC], 2);
    let rx = receiver(Behaviour::Outage { status: 503 }).await;
    let group = "auto-disable-cap";
    let config = {
        let mut c = service_config(group, "2s", "5s", "500ms");
        c.endpoints
            .push(endpoint("doomed", rx.url("in"), &["*"], "none", ""));
        c
    };
    let service = Service::start(config, cluster.target())
        .await
        .expect("service starts");
    let events = status_events(0, 10);
    cluster.produce_many(TOPIC, &events).await;
    wait_until_stored_disabled(&service, "doomed", Duration::from_secs(40)).await;
    let mut dlq = Vec::new();
    wait_for(
        "every delivery dead-lettered past the cap",
        Duration::from_secs(40),
        || {
            dlq = cluster.read_all("hookstream.dlq");
            dlq.len() >= events.len()
        },
    )
    .await;
    assert_eq!(dlq.len(), events.len(), "one letter per event");
    let mut attempted = 0;
    for letter in &dlq {
        assert_eq!(
            letter.header("hookstream-reason"),
            Some("endpoint_disabled"),
            "{:?}",
            letter.headers
        );
        assert_eq!(letter.header("hookstream-endpoint"), Some("doomed"));
        let id = letter.header("hookstream-event-id").expect("its event id");
        let produced = events
            .iter()
            .find(|(_, body)| {
                std::str::from_utf8(body)
                    .unwrap()
                    .contains(&format!("\"{id}\""))
            })
            .expect("a produced event");
        assert_eq!(letter.value, produced.1, "the event as consumed");
        let number = |name: &str| -> i64 {
            letter
                .header(name)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} in {:?}", letter.headers))
        };
        let (first, dead) = (number("hookstream-first-ms"), number("hookstream-dead-ms"));
        assert!(
            dead - first >= 5_000,
            "kept at least max_age since its first attempt: {first} → {dead}"
        );
        if number("hookstream-attempt") >= 1 {
            attempted += 1;
        }
        assert!(
            letter
                .header("hookstream-last-error")
                .is_some_and(|e| !e.is_empty()),
            "{:?}",
            letter.headers
        );
    }
    assert!(
        attempted >= 1,
        "the attempts made before the disable are in the history"
    );
    wait_for_every_offset(&cluster, group).await;
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disable_through_the_api_keeps_the_backlog_the_same_way() {
    let cluster = Cluster::start(&[TOPIC], 2);
    let rx = receiver(Behaviour::Healthy).await;
    let group = "manual-disable";
    let mut config = service_config(group, "24h", "7d", "500ms");
    config
        .endpoints
        .push(endpoint("paused-fleet", rx.url("in"), &["*"], "none", ""));
    let service = Service::start(config, cluster.target())
        .await
        .expect("service starts");
    cluster.produce_many(TOPIC, &status_events(0, 5)).await;
    wait_for("the first events", Duration::from_secs(20), || {
        rx.log().accepted_count() == 5
    })
    .await;

    let (status, disabled) = api(&service, "POST", "/v1/endpoints/paused-fleet/disable").await;
    assert_eq!((status, &disabled["enabled"]), (200, &Value::Bool(false)));
    cluster.produce_many(TOPIC, &status_events(5, 15)).await;
    wait_for(
        "the input offsets committed while disabled",
        Duration::from_secs(30),
        || cluster.offsets_at_end(group, TOPIC),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(rx.log().accepted_count(), 5, "nothing sent while disabled");
    assert!(cluster.read_all("hookstream.dlq").is_empty());
    let held = cluster.read_retries("hookstream.retry.500ms");
    for i in 5..15 {
        let id = format!("evt-{i}");
        assert!(
            held.iter()
                .any(|r| r.header("hookstream-event-id") == Some(id.as_str())),
            "{id} waits on the recheck tier"
        );
    }

    let (status, _) = api(&service, "POST", "/v1/endpoints/paused-fleet/enable").await;
    assert_eq!(status, 200);
    wait_for("the kept events", Duration::from_secs(20), || {
        rx.log().accepted_count() == 15
    })
    .await;
    let mut ids: Vec<String> = delivered_ids(&rx).into_iter().map(|(id, _)| id).collect();
    ids.sort();
    let mut wanted: Vec<String> = (0..15).map(|i| format!("evt-{i}")).collect();
    wanted.sort();
    assert_eq!(ids, wanted, "each event once");
    wait_for_every_offset(&cluster, group).await;
    assert!(cluster.read_all("hookstream.dlq").is_empty());
    service.shutdown().await.unwrap();
}
