//! The platforms' own clients, unchanged, against hookstream's compatible
//! APIs: a Mainflux/Magistrala user runs the `curl` calls of the platform's
//! webhook documentation (gateway prefix, bare arrays, headers, metadata,
//! groups) and their things' messages arrive; a Mender user registers
//! webhook integrations the way iot-manager's management API takes them,
//! receives only their scope's events, signed, and reads the Activity view;
//! an operator reads an endpoint's activity from another instance and after
//! a restart, with the payloads.

mod common;

use std::time::Duration;

use common::*;
use hookstream::cmd::run::Service;
use hookstream::config::{BatchConfig, Config, HumanDuration, Role, TokenConfig};
use hookstream::demo::receiver::Behaviour;
use hookstream::source::extract::Preset;
use serde_json::{Value, json};

const TOKEN: &str = "user-token-0123456789";

/// What `curl -s -S -i` shows: the status, the headers and the body.
struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

/// A client sending requests the way the platforms' `curl` examples do.
struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    fn new(service: &Service) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            base: format!("http://{}", service.api_addr().expect("api listens")),
            http: reqwest::Client::new(),
        }
    }

    /// `curl -X METHOD -H "Authorization: Bearer <token>" [-H
    /// "Content-Type: application/json" -d 'BODY'] URL`.
    async fn curl(&self, method: &str, path: &str, body: Option<&str>) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {TOKEN}"));
        if let Some(b) = body {
            req = req
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.expect("the API answers");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Answer {
            status,
            headers,
            body,
        }
    }
}

fn api_config(group: &str, topic: &str, preset: Preset) -> Config {
    let mut c = config(group, &[(topic, preset)]);
    c.api.listen = "127.0.0.1:0".into();
    c.api.tokens = vec![TokenConfig {
        token_env: None,
        token: Some(TOKEN.into()),
        token_file: None,
        role: Role::Admin,
    }];
    c
}

async fn start(config: Config, cluster: &Cluster) -> (Service, Client) {
    log_if_asked();
    let service = Service::start(config, cluster.target())
        .await
        .expect("service starts");
    let client = Client::new(&service);
    (service, client)
}

const THING: &str = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d";
const GROUP: &str = "211e4567-e89b-12d3-a456-426614174000";

/// A Magistrala message published by [`THING`]; `group` adds the group the
/// things service put it in (as a deployment's messages may carry it).
fn message(n: u32, group: Option<&str>) -> (String, Vec<u8>) {
    let mut m = json!({
        "channel": "8f4e7a52-1c3b-4d2e-9f6a-0b1c2d3e4f5a",
        "subtopic": "temperature",
        "publisher": THING,
        "protocol": "mqtt",
        "created": 1_776_254_400_000_000_000u64 + u64::from(n),
        "payload": [{"bn": "sensor-1:", "n": "temp", "u": "Cel", "v": 21.5}],
    });
    if let Some(g) = group {
        m["group_id"] = json!(g);
    }
    (THING.to_string(), m.to_string().into_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mainflux_users_run_the_documented_curl_calls() {
    const TOPIC: &str = "messages";
    let cluster = Cluster::start(&[TOPIC], 2);
    let rx = receiver(Behaviour::Healthy).await;
    let group_rx = receiver(Behaviour::Healthy).await;
    let mut config = api_config("mainflux-docs", TOPIC, Preset::Magistrala);
    config.sources[0].group = Some("/group_id".into());
    let (service, mf) = start(config, &cluster).await;

    // The thing's group is learned from a message that names it.
    cluster
        .produce_many(TOPIC, &[message(0, Some(GROUP))])
        .await;
    let devices = std::sync::Arc::clone(service.store().registry().devices());
    wait_for("the thing's group", Duration::from_secs(20), || {
        devices.group_of(THING).as_deref() == Some(GROUP)
    })
    .await;

    // Create webhooks: the documentation's call, through the gateway prefix.
    let created = mf
        .curl(
            "POST",
            &format!("/svcwebhooks/things/{THING}/webhooks"),
            Some(
                r#"[{
"name": "Data pipeline",
"url": "https://ingest.example.com/mainflux",
"headers": {"X-Api-Key": "k-123"}
}]"#,
            ),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let hooks = created
        .body
        .as_array()
        .expect("a bare array, as documented");
    assert_eq!(hooks.len(), 1);
    let id = hooks[0]["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 36, "a UUID");
    assert_eq!(hooks[0]["name"], "Data pipeline");
    assert_eq!(hooks[0]["url"], "https://ingest.example.com/mainflux");
    assert_eq!(hooks[0]["headers"], json!({"X-Api-Key": "****"}));
    assert_eq!(hooks[0]["group_id"], GROUP, "the thing's group");

    // List webhooks of the thing and of its group, with and without the prefix.
    for prefix in ["/svcwebhooks", ""] {
        let by_thing = mf
            .curl("GET", &format!("{prefix}/things/{THING}/webhooks"), None)
            .await;
        assert_eq!(by_thing.status, 200);
        assert_eq!(by_thing.body[0]["id"], id.as_str(), "{}", by_thing.body);
        let by_group = mf
            .curl("GET", &format!("{prefix}/groups/{GROUP}/webhooks"), None)
            .await;
        assert_eq!(by_group.status, 200);
        assert_eq!(by_group.body[0]["id"], id.as_str(), "{}", by_group.body);
    }

    // View, then update with the documentation's body.
    let viewed = mf.curl("GET", &format!("/webhooks/{id}"), None).await;
    assert_eq!(viewed.status, 200);
    assert_eq!(viewed.body["group_id"], GROUP);
    let updated = mf
        .curl(
            "PUT",
            &format!("/webhooks/{id}"),
            Some(
                r#"{
"name": "Data pipeline",
"url": "https://ingest.example.com/mainflux-v2",
"headers": {"X-Api-Key": "k-123"}
}"#,
            ),
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(
        updated.body["url"],
        "https://ingest.example.com/mainflux-v2"
    );

    // What GET answers goes back with PUT, metadata added; the masked key
    // keeps the stored one, and metadata comes back.
    let mut again = mf.curl("GET", &format!("/webhooks/{id}"), None).await.body;
    again["metadata"] = json!({"team": "ops", "priority": 2});
    let round_trip = mf
        .curl("PUT", &format!("/webhooks/{id}"), Some(&again.to_string()))
        .await;
    assert_eq!(round_trip.status, 200, "{}", round_trip.body);
    let viewed = mf.curl("GET", &format!("/webhooks/{id}"), None).await;
    assert_eq!(
        viewed.body["metadata"],
        json!({"team": "ops", "priority": 2})
    );
    let stored = mf
        .curl("GET", &format!("/v1/endpoints/{id}?reveal=headers"), None)
        .await;
    assert_eq!(stored.body["headers"]["X-Api-Key"], "k-123");

    // A webhook to a reachable receiver with a Content-Type header, and an
    // endpoint of the whole group: a message naming only the thing reaches
    // both.
    let local = mf
        .curl(
            "POST",
            &format!("/things/{THING}/webhooks"),
            Some(&json!([{"name": "local", "url": rx.url("mf"), "headers": {"Content-Type": "application/senml+json"}}]).to_string()),
        )
        .await;
    assert_eq!(local.status, 201, "{}", local.body);
    let group_endpoint = mf
        .curl(
            "POST",
            "/v1/endpoints",
            Some(&json!({"id": "whole-group", "url": group_rx.url("g"), "groups": [GROUP], "allow_http": true, "signature": "none"}).to_string()),
        )
        .await;
    assert_eq!(group_endpoint.status, 201, "{}", group_endpoint.body);
    cluster.produce_many(TOPIC, &[message(1, None)]).await;
    wait_for("the message at both", Duration::from_secs(20), || {
        rx.log().accepted_count() >= 1 && group_rx.log().accepted_count() >= 1
    })
    .await;
    let sent = &rx.log().recorded()[0];
    assert_eq!(sent.header("content-type"), Some("application/senml+json"));
    assert!(String::from_utf8_lossy(&sent.body).contains("\"v\":21.5"));

    // Remove webhooks: the documentation's call.
    let local_id = local.body[0]["id"].as_str().unwrap().to_string();
    let removed = mf
        .curl(
            "DELETE",
            "/webhooks",
            Some(&format!(r#"{{"webhook_ids": ["{id}", "{local_id}"]}}"#)),
        )
        .await;
    assert_eq!(removed.status, 204, "{}", removed.body);
    let left = mf
        .curl(
            "GET",
            &format!("/svcwebhooks/things/{THING}/webhooks"),
            None,
        )
        .await;
    assert_eq!(left.body, json!([]));
    service.shutdown().await.unwrap();
}

const MENDER_SECRET: &str = "8c9f0ba9e33a0a4d7a5b1c2d3e4f5a6b";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mender_users_register_integrations_and_read_their_activity() {
    const TOPIC: &str = "mender-events";
    const INTEGRATIONS: &str = "/api/management/v1/iot-manager/integrations";
    let cluster = Cluster::start(&[TOPIC], 2);
    let deviceauth_rx = receiver(Behaviour::Healthy).await;
    let inventory_rx = receiver(Behaviour::Healthy).await;
    let (service, mender) = start(api_config("mender-flow", TOPIC, Preset::Mender), &cluster).await;

    // Settings -> Integrations -> Webhooks: URL and secret.
    let body = json!({
        "provider": "webhook",
        "description": "device lifecycle",
        "credentials": {"type": "http", "http": {"url": deviceauth_rx.url("hook"), "secret": MENDER_SECRET}},
    });
    let created = mender
        .curl("POST", INTEGRATIONS, Some(&body.to_string()))
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let location = created.headers["location"].to_str().unwrap().to_string();
    assert!(
        location.starts_with(&format!("{INTEGRATIONS}/")),
        "{location}"
    );
    let body = json!({
        "provider": "webhook",
        "scope": "inventory",
        "credentials": {"type": "http", "http": {"url": inventory_rx.url("hook")}},
    });
    let inventory = mender
        .curl("POST", INTEGRATIONS, Some(&body.to_string()))
        .await;
    assert_eq!(inventory.status, 201, "{}", inventory.body);

    let listed = mender.curl("GET", INTEGRATIONS, None).await;
    assert_eq!(listed.status, 200);
    let list = listed.body.as_array().unwrap();
    assert_eq!(list.len(), 2, "{}", listed.body);
    let one = mender.curl("GET", &location, None).await;
    assert_eq!(one.status, 200);
    let id = one.body["id"].as_str().unwrap().to_string();
    assert_eq!(one.body["provider"], "webhook");
    assert_eq!(one.body["scope"], "deviceauth");
    assert_eq!(one.body["description"], "device lifecycle");
    assert_eq!(one.body["credentials"]["http"]["secret"], "<omitted>");
    assert!(!listed.body.to_string().contains(MENDER_SECRET));

    // What iot-manager refuses, hookstream refuses, naming the field.
    for (bad, field) in [
        (
            json!({"provider": "iot-hub", "credentials": {"type": "sas", "connection_string": "x"}}),
            "credentials.connection_string",
        ),
        (
            json!({"provider": "iot-core", "credentials": {"type": "http", "http": {"url": "https://x.example/"}}}),
            "provider",
        ),
        (
            json!({"provider": "webhook", "credentials": {"type": "http", "http": {"url": "https://x.example/", "secret": "not hex"}}}),
            "credentials.http.secret",
        ),
    ] {
        let refused = mender
            .curl("POST", INTEGRATIONS, Some(&bad.to_string()))
            .await;
        assert_eq!(
            (refused.status, refused.body["field"].as_str()),
            (400, Some(field)),
            "{bad}"
        );
    }

    // Events of both scopes: each integration gets its scope's, signed
    // with its secret when it has one.
    let samples = [
        include_str!("../src/samples/mender-device-provisioned.json"),
        include_str!("../src/samples/mender-devices-inventory-changed.json"),
        include_str!("../src/samples/mender-device-status-changed.json"),
    ];
    let records: Vec<(String, Vec<u8>)> = samples
        .iter()
        .map(|s| ("dev".to_string(), s.as_bytes().to_vec()))
        .collect();
    cluster.produce_many(TOPIC, &records).await;
    wait_for("each scope's events", Duration::from_secs(20), || {
        deviceauth_rx.log().accepted_count() == 2 && inventory_rx.log().accepted_count() == 1
    })
    .await;
    for req in deviceauth_rx.log().recorded() {
        assert!(independently_verified("mender", MENDER_SECRET, &req));
        let event: Value = serde_json::from_slice(&req.body).unwrap();
        assert_ne!(event["type"], "devices-inventory-changed");
    }
    let inventory_req = &inventory_rx.log().recorded()[0];
    assert_eq!(
        inventory_req.header("x-men-signature"),
        None,
        "no secret, no signature"
    );

    // The Activity tab: events with their delivery status and data.
    let events = mender
        .curl(
            "GET",
            &format!("/api/management/v1/iot-manager/events?integration_id={id}"),
            None,
        )
        .await;
    assert_eq!(events.status, 200, "{}", events.body);
    let events = events.body.as_array().unwrap().clone();
    assert_eq!(events.len(), 2, "{events:?}");
    for event in &events {
        assert_eq!(
            event["delivery_statuses"],
            json!([{"integration_id": id, "success": true, "status_code": 200}])
        );
        let sent: Value = serde_json::from_str(
            samples
                .iter()
                .find(|s| s.contains(event["id"].as_str().unwrap()))
                .expect("a sent event"),
        )
        .unwrap();
        assert_eq!(
            event["data"], sent["data"],
            "View details shows the event data"
        );
    }
    let all = mender
        .curl(
            "GET",
            "/api/management/v1/iot-manager/events?per_page=2",
            None,
        )
        .await;
    assert_eq!(all.body.as_array().unwrap().len(), 2, "paged");
    let page2 = mender
        .curl(
            "GET",
            "/api/management/v1/iot-manager/events?per_page=2&page=2",
            None,
        )
        .await;
    assert_eq!(page2.body.as_array().unwrap().len(), 1, "{}", page2.body);

    let deleted = mender.curl("DELETE", &location, None).await;
    assert_eq!(deleted.status, 204);
    assert_eq!(mender.curl("GET", &location, None).await.status, 404);
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activity_is_answered_by_any_instance_and_survives_restarts() {
    const TOPIC: &str = "device-events";
    let cluster = Cluster::start(&[TOPIC], 2);
    let ok_rx = receiver(Behaviour::Healthy).await;
    let failing_rx = receiver(Behaviour::Status(500)).await;
    let batched_rx = receiver(Behaviour::Healthy).await;
    let mut config = api_config("activity", TOPIC, Preset::Mender);
    config.delivery.max_attempts = 2;
    // A batch endpoint's attempt is one line in the log for all its events.
    let mut batched = endpoint("batched", batched_rx.url("b"), &["*"], "none", "");
    batched.batch = BatchConfig {
        max_events: 3,
        max_wait: HumanDuration::from_secs(2),
    };
    config.endpoints = vec![
        endpoint("ok", ok_rx.url("ok"), &["*"], "none", ""),
        endpoint("failing", failing_rx.url("f"), &["*"], "none", ""),
        batched,
    ];
    let (first, a) = start(config.clone(), &cluster).await;
    let events: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| {
            let body = json!({"id": format!("evt-{i}"), "type": "device-provisioned", "data": {"id": format!("dev-{i}")}});
            (format!("dev-{i}"), body.to_string().into_bytes())
        })
        .collect();
    cluster.produce_many(TOPIC, &events).await;
    let registry = std::sync::Arc::clone(first.store().registry());
    wait_for(
        "three delivered, three exhausted",
        Duration::from_secs(30),
        || {
            ok_rx.log().accepted_count() == 3
                && registry.activity("failing").stats().dead_lettered == 3
                && registry.activity("batched").stats().delivered == 3
        },
    )
    .await;
    let here = a.curl("GET", "/v1/endpoints/failing/attempts", None).await;
    assert_eq!(here.body.as_array().unwrap().len(), 6, "{}", here.body);

    // Another instance, which delivered nothing, answers for the first.
    let (second, b) = start(config.clone(), &cluster).await;
    let there = b
        .curl("GET", "/v1/endpoints/failing/attempts?payload=true", None)
        .await;
    assert_eq!(there.status, 200, "{}", there.body);
    let attempts = there.body.as_array().unwrap().clone();
    assert_eq!(attempts.len(), 6, "{}", there.body);
    for i in 0..3 {
        let id = format!("evt-{i}");
        let of_event: Vec<&Value> = attempts
            .iter()
            .filter(|r| r["event_id"] == id.as_str())
            .collect();
        assert_eq!(of_event.len(), 2, "{id}: {of_event:?}");
        let last = of_event
            .iter()
            .find(|r| r["attempt"] == 2)
            .expect("attempt 2");
        let first_try = of_event
            .iter()
            .find(|r| r["attempt"] == 1)
            .expect("attempt 1");
        assert_eq!(
            (last["outcome"].as_str(), last["reason"].as_str()),
            (Some("dead_lettered"), Some("exhausted"))
        );
        assert_eq!(first_try["outcome"], "retry_scheduled");
        for r in &of_event {
            assert_eq!(r["status"], 500);
            assert_eq!(r["endpoint"], "failing");
            assert_eq!(r["event_type"], "device-provisioned");
            assert_eq!(
                r["payload"]["data"]["id"],
                format!("dev-{i}"),
                "the event as consumed"
            );
        }
    }
    let times: Vec<i64> = attempts
        .iter()
        .map(|r| r["time_ms"].as_i64().unwrap())
        .collect();
    assert!(
        times.windows(2).all(|w| w[0] >= w[1]),
        "newest first: {times:?}"
    );

    // Both stop; a new instance still knows what happened.
    second.shutdown().await.unwrap();
    first.shutdown().await.unwrap();
    let (third, c) = start(config, &cluster).await;
    let after = c
        .curl("GET", "/v1/endpoints/ok/attempts?limit=10", None)
        .await;
    let delivered = after.body.as_array().unwrap();
    assert_eq!(delivered.len(), 3, "{}", after.body);
    assert!(
        delivered
            .iter()
            .all(|r| r["outcome"] == "delivered" && r["status"] == 200)
    );
    // The batch's events, each with its own id and payload, read from the
    // log by an instance that did not deliver them.
    let batch = c
        .curl("GET", "/v1/endpoints/batched/attempts?payload=true", None)
        .await;
    let batch = batch.body.as_array().unwrap();
    let mut ids: Vec<&str> = batch
        .iter()
        .map(|r| r["event_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["evt-0", "evt-1", "evt-2"], "{batch:?}");
    let requests: std::collections::HashSet<&str> = batch
        .iter()
        .map(|r| r["webhook_id"].as_str().unwrap())
        .collect();
    assert!(requests.len() < 3, "some in one request: {batch:?}");
    for r in batch {
        assert_eq!(
            (r["outcome"].as_str(), r["status"].as_u64()),
            (Some("delivered"), Some(200))
        );
        assert_eq!(
            (r["endpoint"].as_str(), r["attempt"].as_u64()),
            (Some("batched"), Some(1))
        );
        assert_eq!(r["event_type"], "device-provisioned");
        let id = r["event_id"].as_str().unwrap();
        assert_eq!(r["payload"]["id"], id, "the event as consumed");
    }
    let bad = c
        .curl("GET", "/v1/endpoints/ok/attempts?payload=yes", None)
        .await;
    assert_eq!(
        (bad.status, bad.body["field"].as_str()),
        (400, Some("payload"))
    );
    third.shutdown().await.unwrap();
}
