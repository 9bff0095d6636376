//! An endpoint that answers 410 Gone is disabled for good: given a service
//! with an endpoint whose receiver answers 410, when an event reaches it,
//! then the endpoint is stored disabled (`enabled = false`, and
//! `disabled = {reason, at, cause = "gone"}` naming the 410), the API shows
//! it so, a second instance and a restarted one keep it disabled and send
//! it nothing more, and enabling it through the API clears the reason and
//! delivers again.

mod common;

use std::time::Duration;

use common::*;
use hookstream::cmd::run::Service;
use hookstream::config::{Role, TokenConfig};
use hookstream::demo::receiver::Behaviour;
use hookstream::source::extract::Preset;

const TOPIC: &str = "device-events";
const ADMIN: &str = "gone-admin-token";

fn service_config() -> hookstream::config::Config {
    let mut c = config("gone-test", &[(TOPIC, Preset::Mender)]);
    c.api.listen = "127.0.0.1:0".into();
    c.api.tokens = vec![TokenConfig {
        token_file: None,
        token_env: None,
        token: Some(ADMIN.into()),
        role: Role::Admin,
    }];
    c
}

async fn get(service: &Service, path: &str) -> serde_json::Value {
    let addr = service.api_addr().expect("API listening");
    let text = reqwest::Client::new()
        .get(format!("http://{addr}{path}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("API answers")
        .text()
        .await
        .expect("a body");
    serde_json::from_str(&text).expect("JSON")
}

async fn post(service: &Service, path: &str) -> u16 {
    let addr = service.api_addr().expect("API listening");
    reqwest::Client::new()
        .post(format!("http://{addr}{path}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .expect("API answers")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_disables_the_endpoint_in_the_store_for_every_instance_and_restart() {
    let cluster = Cluster::start(&[TOPIC], 3);
    let gone = receiver(Behaviour::Status(410)).await;
    let mut config = service_config();
    config
        .endpoints
        .push(endpoint("retired", gone.url("in"), &["*"], "none", ""));
    let first = Service::start(config.clone(), cluster.target())
        .await
        .expect("service starts");
    let mut second_config = config.clone();
    second_config.api.listen = String::new();
    let second = Service::start(second_config, cluster.target())
        .await
        .expect("second instance starts");

    cluster.produce_many(TOPIC, &status_events(0, 1)).await;
    wait_for("the 410", Duration::from_secs(30), || {
        gone.log()
            .requests
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 1
    })
    .await;
    wait_for(
        "the endpoint stored disabled",
        Duration::from_secs(15),
        || {
            first
                .store()
                .get("retired")
                .is_some_and(|e| !e.config.enabled)
        },
    )
    .await;
    let shown = get(&first, "/v1/endpoints/retired").await;
    // Unlike a failing one, it keeps no backlog.
    assert_disabled_by_hookstream(&shown, "gone", "410");
    wait_for(
        "the other instance sees it disabled",
        Duration::from_secs(5),
        || {
            second
                .store()
                .get("retired")
                .is_some_and(|e| !e.config.enabled)
        },
    )
    .await;

    // Nothing more is sent to it, whichever instance reads the events (a
    // disabled endpoint matches no event).
    let before = gone
        .log()
        .requests
        .load(std::sync::atomic::Ordering::Relaxed);
    cluster.produce_many(TOPIC, &status_events(1, 40)).await;
    wait_for("the new events consumed", Duration::from_secs(30), || {
        cluster.offsets_at_end("gone-test", TOPIC)
    })
    .await;
    assert_eq!(
        gone.log()
            .requests
            .load(std::sync::atomic::Ordering::Relaxed),
        before,
        "a disabled endpoint gets no request"
    );
    second.shutdown().await.unwrap();
    first.shutdown().await.unwrap();

    // A restarted instance loads it disabled.
    let restarted = Service::start(config, cluster.target())
        .await
        .expect("restarted");
    let shown = get(&restarted, "/v1/endpoints/retired").await;
    assert_eq!(shown["enabled"], false, "after a restart: {shown}");

    // Enabled through the API: the reason goes, deliveries resume.
    assert_eq!(post(&restarted, "/v1/endpoints/retired/enable").await, 200);
    let shown = get(&restarted, "/v1/endpoints/retired").await;
    assert_eq!(shown["enabled"], true, "{shown}");
    assert!(shown.get("disabled").is_none(), "{shown}");
    restarted.shutdown().await.unwrap();
}
