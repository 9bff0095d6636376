//! A delivery this process cannot make is not the endpoint's fault: when
//! hookstream runs out of file descriptors (whatever took them), each
//! delivery it cannot connect for is deferred to a retry tier without
//! using an attempt and without counting against the endpoint's circuit,
//! and is delivered once descriptors are free again. Before, each such
//! failure used an attempt until the events were dead-lettered as
//! `exhausted`.
//!
//! This test takes every free descriptor of its own process, so it lives
//! alone in this file (its own test binary, its own process).

mod common;

use std::fs::File;
use std::time::Duration;

use common::*;
use hookstream::demo::receiver::Behaviour;
use hookstream::source::extract::Preset;

const TOPIC: &str = "device-events";
const UNREAD: &str = "warm-up";
const EVENTS: usize = 20;

/// Opens `/dev/null` until the process may open no more files; the files
/// are freed when the returned vector is dropped.
fn take_every_free_descriptor() -> Vec<File> {
    let mut taken = Vec::new();
    loop {
        match File::open("/dev/null") {
            Ok(f) => taken.push(f),
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(libc::EMFILE), "{e}");
                return taken;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_descriptors_defers_deliveries_without_using_attempts() {
    let cluster = Cluster::start(&[TOPIC, UNREAD], 1);
    let rx = receiver(Behaviour::Healthy).await;
    let mut config = config("local-errors", &[(TOPIC, Preset::Mender)]);
    // One attempt each: a local failure that used it would dead-letter
    // the event at once.
    config.delivery.max_attempts = 1;
    let mut fleet = endpoint("fleet", rx.url("in"), &["*"], "none", "");
    // One attempt at a time, so that five failures counted against the
    // circuit would open it before the later deliveries.
    fleet.max_concurrency = 1;
    config.endpoints.push(fleet);
    let pipeline = start(config, &cluster).await;
    wait_for("the assignment", Duration::from_secs(30), || {
        pipeline.has_assignment()
    })
    .await;
    // The test's producer connects before the descriptors run out.
    cluster.produce(UNREAD, "k", b"{}", &[]).await;

    let taken = take_every_free_descriptor();
    println!("took {} free descriptors", taken.len());
    cluster
        .produce_many(TOPIC, &provisioned_events("local", EVENTS))
        .await;
    let activity = pipeline.registry().activity("fleet");
    wait_for(
        "every event to meet the shortage",
        Duration::from_secs(30),
        || activity.stats().deferred >= EVENTS as u64,
    )
    .await;
    assert_eq!(rx.log().recorded().len(), 0, "nothing could be sent");
    let seen = activity.recent(EVENTS);
    assert!(
        seen.iter().all(|a| a.error.contains("os error 24")),
        "each attempt met `Too many open files`: {:?}",
        seen.iter().map(|a| &a.error).collect::<Vec<_>>()
    );
    drop(taken);

    // Once descriptors are free, every event is delivered; none is dead.
    wait_for("every event delivered", Duration::from_secs(60), || {
        bodies_by(&rx.log().recorded(), "/id").len() == EVENTS
    })
    .await;
    assert!(
        cluster.read_all("hookstream.dlq").is_empty(),
        "nothing dead-lettered"
    );
    // What went to the tier meanwhile used no attempt and says why; the
    // circuit never opened (no `circuit open` deferral).
    let deferred = cluster.read_retries("hookstream.retry.100ms");
    let deferred: Vec<_> = deferred
        .iter()
        .chain(cluster.read_retries("hookstream.retry.500ms").iter())
        .chain(cluster.read_retries("hookstream.retry.2s").iter())
        .cloned()
        .collect();
    assert!(deferred.len() >= EVENTS, "{} deferrals", deferred.len());
    for d in &deferred {
        assert_eq!(d.header("hookstream-attempt"), Some("0"), "{:?}", d.headers);
        let why = d.header("hookstream-last-error").unwrap_or_default();
        assert!(why.contains("local failure"), "{why}");
    }
    pipeline.shutdown().await.unwrap();
}
