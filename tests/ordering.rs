//! Per-device ordering: given an endpoint with `ordering = "per_device"` and
//! a receiver that fails one device for a while, when a stream of events
//! for several devices is produced, then the other devices' events arrive
//! meanwhile, the failing device's events wait behind its first failed one
//! (only that one is tried while it fails) and arrive later in the order
//! they were produced, also across a restart while they wait; and every
//! offset (input and ordered lane) is committed in the end.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use hookstream::config::{Config, DeliveryOrder, HumanDuration};
use hookstream::demo::receiver::{Behaviour, ReceivedRequest, Receiver};
use hookstream::source::extract::Preset;

const TOPIC: &str = "device-events";
const LANE: &str = "hookstream.ordered";
const DEVICES: usize = 5;
/// The device the receiver fails.
const FAILING: &str = r#""id":"dev-3""#;

/// Event `i` of device `dev-<i % 5>`, keyed by its device.
fn event(i: usize) -> (String, Vec<u8>) {
    let device = i % DEVICES;
    (
        format!("dev-{device}"),
        format!(
            r#"{{"id":"evt-{i}","type":"device-status-changed","data":{{"id":"dev-{device}"}}}}"#
        )
        .into_bytes(),
    )
}

/// The device and event number of a received request.
fn device_and_number(r: &ReceivedRequest) -> (usize, usize) {
    let body: serde_json::Value = serde_json::from_slice(&r.body).expect("a JSON body");
    let number = body["id"]
        .as_str()
        .and_then(|id| id.strip_prefix("evt-"))
        .and_then(|n| n.parse().ok())
        .expect("evt-<n>");
    (number % DEVICES, number)
}

/// For each device, the events it was answered 2xx for, first sighting
/// only, in arrival order.
fn accepted_in_order(requests: &[ReceivedRequest]) -> HashMap<usize, Vec<usize>> {
    let mut seen = std::collections::HashSet::new();
    let mut out: HashMap<usize, Vec<usize>> = HashMap::new();
    for r in requests.iter().filter(|r| (200..300).contains(&r.status)) {
        let (device, number) = device_and_number(r);
        if seen.insert(number) {
            out.entry(device).or_default().push(number);
        }
    }
    out
}

/// Every device's events arrived in production order, none missing of
/// the first `n`, each before any later one of its device.
fn assert_in_order(requests: &[ReceivedRequest], n: usize) {
    let by_device = accepted_in_order(requests);
    for device in 0..DEVICES {
        let want: Vec<usize> = (0..n).filter(|i| i % DEVICES == device).collect();
        assert_eq!(
            by_device.get(&device).cloned().unwrap_or_default(),
            want,
            "dev-{device}: events in the order produced, each once before the next"
        );
    }
}

/// A receiver that answers 503 to dev-3 until it recovers.
async fn failing_dev3() -> Receiver {
    receiver(Behaviour::DeviceOutage {
        marker: FAILING,
        status: 503,
    })
    .await
}

/// The events the receiver answered 503 to, each once, in order.
fn tried_while_failing(rx: &Receiver) -> Vec<usize> {
    let tried: std::collections::BTreeSet<usize> = rx
        .log()
        .recorded()
        .iter()
        .filter(|r| r.status == 503)
        .map(|r| device_and_number(r).1)
        .collect();
    tried.into_iter().collect()
}

/// Produces events `from..to`.
async fn produce(cluster: &Cluster, from: usize, to: usize) {
    cluster
        .produce_many(TOPIC, &(from..to).map(event).collect::<Vec<_>>())
        .await;
}

/// Waits up to `within` for the first `n` events, then checks that every
/// device's arrived in the order produced.
async fn all_arrive_in_order(rx: &Receiver, n: usize, within: Duration) {
    wait_for("every event", within, || rx.log().accepted_count() >= n).await;
    assert_in_order(&rx.log().recorded(), n);
}

fn ordered_config(group: &str, url: String) -> Config {
    let mut config = config(group, &[(TOPIC, Preset::Mender)]);
    config.delivery.max_attempts = 1_000;
    config.delivery.backoff.initial = HumanDuration::from_millis(100);
    config.delivery.backoff.max = HumanDuration::from_millis(300);
    config.delivery.backoff.jitter = 0.0;
    let mut e = endpoint("ordered", url, &["*"], "none", "");
    e.ordering = DeliveryOrder::PerDevice;
    e.max_concurrency = 8;
    config.endpoints.push(e);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_device_waits_in_order_while_the_others_flow() {
    let cluster = Cluster::start(&[TOPIC, LANE], 2);
    let rx = failing_dev3().await;
    let pipeline = start(ordered_config("ordered-flow", rx.url("in")), &cluster).await;
    let n = 200;
    produce(&cluster, 0, n).await;

    let others = n - n / DEVICES;
    wait_for("the other devices' events", Duration::from_secs(30), || {
        rx.log().accepted_count() >= others
    })
    .await;
    // While dev-3 fails, only its first event is tried, again and again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        tried_while_failing(&rx),
        vec![3],
        "only the failing device's first event is tried while it fails"
    );
    let failures = rx
        .log()
        .recorded()
        .iter()
        .filter(|r| r.status == 503)
        .count();
    assert!(failures >= 2, "and it is retried ({failures} attempts)");
    assert_eq!(rx.log().accepted_count(), others, "nothing of dev-3 yet");

    rx.recover();
    all_arrive_in_order(&rx, n, Duration::from_secs(30)).await;
    for topic in [TOPIC, LANE] {
        wait_for(
            &format!("{topic} offsets at the end"),
            Duration::from_secs(15),
            || match topic {
                LANE => lane_settled(&cluster),
                _ => cluster.offsets_at_end("ordered-flow", topic),
            },
        )
        .await;
    }
    pipeline.shutdown().await.expect("clean shutdown");
}

/// The lane's committed offsets (group `<group>.retry`) reached its end.
fn lane_settled(cluster: &Cluster) -> bool {
    cluster.offsets_at_end("ordered-flow.retry", LANE)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_while_a_device_waits_keeps_its_order_and_loses_nothing() {
    let cluster = Cluster::start(&[TOPIC, LANE], 2);
    let rx = failing_dev3().await;
    let group = "ordered-restart";
    let first = start(ordered_config(group, rx.url("in")), &cluster).await;
    let n = 100;
    produce(&cluster, 0, n).await;
    let others = n - n / DEVICES;
    wait_for("the other devices' events", Duration::from_secs(30), || {
        rx.log().accepted_count() >= others
    })
    .await;
    first.shutdown().await.expect("clean shutdown");

    // A second run of more events, then the device comes back.
    let second = start(ordered_config(group, rx.url("in")), &cluster).await;
    produce(&cluster, n, 2 * n).await;
    wait_for("the others' new events", Duration::from_secs(60), || {
        rx.log().accepted_count() >= 2 * others
    })
    .await;
    rx.recover();
    all_arrive_in_order(&rx, 2 * n, Duration::from_secs(60)).await;
    wait_for("input offsets at the end", Duration::from_secs(15), || {
        cluster.offsets_at_end(group, TOPIC)
    })
    .await;
    wait_for("lane offsets at the end", Duration::from_secs(15), || {
        cluster.offsets_at_end(&format!("{group}.retry"), LANE)
    })
    .await;
    second.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_member_joining_and_leaving_while_a_device_waits_keeps_its_order() {
    let cluster = Cluster::start(&[TOPIC, LANE], 2);
    let rx = failing_dev3().await;
    let group = "ordered-members";
    let member = || {
        let mut c = ordered_config(group, rx.url("in"));
        // One tier: the lane's two partitions are half of what the retry
        // group shares out, so the second member likely takes one.
        c.topics.retry_tiers = vec![HumanDuration::from_millis(500)];
        c
    };
    let first = start(member(), &cluster).await;
    let n = 100;
    produce(&cluster, 0, n).await;
    let others = n - n / DEVICES;
    wait_for("the other devices' events", Duration::from_secs(30), || {
        rx.log().accepted_count() >= others
    })
    .await;
    // A second member joins (partitions move to it, drained first), more
    // events come, and it leaves again (they move back).
    let second = start(member(), &cluster).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    produce(&cluster, n, 2 * n).await;
    wait_for("the others' new events", Duration::from_secs(60), || {
        rx.log().accepted_count() >= 2 * others
    })
    .await;
    second.shutdown().await.expect("clean shutdown");
    tokio::time::sleep(Duration::from_secs(3)).await;
    rx.recover();
    all_arrive_in_order(&rx, 2 * n, Duration::from_secs(60)).await;
    assert_eq!(
        tried_while_failing(&rx),
        vec![3],
        "whichever member held the lane, only dev-3's first event was tried while it failed"
    );
    first.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_waiting_with_more_than_its_lane_holds_parks_the_rest_on_kafka() {
    let cluster = Cluster::start(&[TOPIC, LANE], 2);
    let rx = failing_dev3().await;
    let mut config = ordered_config("ordered-parked", rx.url("in"));
    // A lane partition's lines hold half of max_in_flight: 20 deliveries.
    config.delivery.max_in_flight = 40;
    let pipeline = start(config, &cluster).await;
    let n = 200;
    produce(&cluster, 0, n).await;
    // dev-3 has 40 events: once 20 wait in lines, the endpoint's lane
    // partition stops being read, and the other devices' later events stay
    // on Kafka with dev-3's.
    let others = n - n / DEVICES;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let plateau = rx.log().accepted_count();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        rx.log().accepted_count(),
        plateau,
        "nothing more is read from the full lane partition"
    );
    assert!(
        plateau < others,
        "the others' later events wait on Kafka ({plateau} of {others} delivered)"
    );
    assert!(plateau > 0, "the others flowed until the lines were full");
    eprintln!("{plateau} of the others' {others} events delivered while the lane partition waits");

    rx.recover();
    all_arrive_in_order(&rx, n, Duration::from_secs(30)).await;
    pipeline.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_down_for_every_device_tries_only_each_devices_first_event() {
    let cluster = Cluster::start(&[TOPIC, LANE], 2);
    let rx = receiver(Behaviour::Outage { status: 503 }).await;
    let pipeline = start(ordered_config("ordered-down", rx.url("in")), &cluster).await;
    let n = 200;
    produce(&cluster, 0, n).await;
    // Failures open the endpoint's circuit: deliveries are deferred (in
    // place, in their lines) and its probes fail too.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let tried = tried_while_failing(&rx);
    assert!(!tried.is_empty(), "the endpoint was tried");
    assert!(
        tried.iter().all(|n| *n < DEVICES),
        "only each device's first event is tried while the endpoint is down: {tried:?}"
    );
    rx.recover();
    all_arrive_in_order(&rx, n, Duration::from_secs(30)).await;
    pipeline.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_endpoint_keeps_each_devices_events_in_order_until_enabled() {
    let cluster = Cluster::start(&[TOPIC, LANE], 2);
    let rx = receiver(Behaviour::Healthy).await;
    let mut config = ordered_config("ordered-disabled", rx.url("in"));
    config.delivery.disabled_backlog.recheck = HumanDuration::from_millis(500);
    config.endpoints[0].enabled = false;
    let enabled = {
        let mut e = config.endpoints[0].clone();
        e.enabled = true;
        e
    };
    let pipeline = start(config, &cluster).await;
    let n = 100;
    produce(&cluster, 0, n).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(rx.log().recorded().len(), 0, "nothing sent while disabled");
    let saved =
        hookstream::index::Endpoint::build(enabled, true, Duration::from_secs(5), &|_| None)
            .expect("a valid endpoint");
    pipeline.registry().upsert(vec![std::sync::Arc::new(saved)]);
    produce(&cluster, n, 2 * n).await;
    all_arrive_in_order(&rx, 2 * n, Duration::from_secs(30)).await;
    pipeline.shutdown().await.expect("clean shutdown");
}
