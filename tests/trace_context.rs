//! W3C Trace Context: given device events whose Kafka records carry a
//! `traceparent` (and `tracestate`), when hookstream delivers them and the
//! first attempt fails, then every request, the retry included, carries the
//! record's trace headers unchanged; and with `delivery.start_traces` on, a
//! record without one gets a new `traceparent` that its retry repeats.

mod common;

use std::time::Duration;

use common::*;
use hookstream::demo::receiver::Behaviour;
use hookstream::source::extract::Preset;

const TOPIC: &str = "device-events";
const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_headers_follow_an_event_across_retries() {
    let cluster = Cluster::start(&[TOPIC], 2);
    let flaky = receiver(Behaviour::FailFirst {
        times: 1,
        status: 503,
        retry_after: None,
    })
    .await;
    let mut config = config("trace-test", &[(TOPIC, Preset::Mender)]);
    config.delivery.start_traces = true;
    config
        .endpoints
        .push(endpoint("flaky", flaky.url("in"), &["*"], "none", ""));
    let pipeline = start(config, &cluster).await;
    let events = provisioned_events("traced", 2);
    cluster
        .produce(
            TOPIC,
            &events[0].0,
            &events[0].1,
            &[("traceparent", PARENT), ("tracestate", "congo=t61rcWkgMzE")],
        )
        .await;
    cluster
        .produce(TOPIC, &events[1].0, &events[1].1, &[])
        .await;
    wait_for(
        "both events delivered after a retry",
        Duration::from_secs(20),
        || flaky.log().accepted_count() >= 2,
    )
    .await;
    let requests = flaky.log().recorded();
    let of = |id: &str| {
        requests
            .iter()
            .filter(|r| String::from_utf8_lossy(&r.body).contains(id))
            .collect::<Vec<_>>()
    };
    let traced = of("traced-0");
    assert!(traced.len() >= 2, "a failed attempt and its retry");
    for r in &traced {
        assert_eq!(r.header("traceparent"), Some(PARENT));
        assert_eq!(r.header("tracestate"), Some("congo=t61rcWkgMzE"));
    }
    let started = of("traced-1");
    assert!(started.len() >= 2);
    let first = started[0]
        .header("traceparent")
        .expect("a trace was started");
    assert!(
        hookstream::deliver::trace::valid_traceparent(first),
        "{first}"
    );
    assert_ne!(first, PARENT);
    assert!(
        started
            .iter()
            .all(|r| r.header("traceparent") == Some(first))
    );
    assert!(started.iter().all(|r| r.header("tracestate").is_none()));
    pipeline.shutdown().await.unwrap();
}
