//! The management API: given a running instance (embedded broker, endpoint
//! store, pipeline, API on 127.0.0.1), an operator manages endpoints over
//! HTTP with bearer tokens, and what they change is what events are
//! delivered to: on this instance and, within a second, on every other.

mod common;

use std::time::{Duration, Instant};

use common::*;
use hookstream::cmd::run::Service;
use hookstream::config::{Config, HumanDuration, Role, SourceConfig, TokenConfig};
use hookstream::demo::receiver::Behaviour;
use hookstream::source::extract::Preset;
use serde_json::{Value, json};

const TOPIC: &str = "device-events";
const ADMIN: &str = "admin-token-0123456789";
const VIEWER: &str = "viewer-token-0123456789";
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// An HTTP client of one instance's API.
struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    fn new(service: &Service) -> Self {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Self {
            base: format!("http://{}", service.api_addr().expect("api listens")),
            client: reqwest::Client::new(),
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = req.send().await.expect("API answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, value)
    }

    async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call(method, path, Some(ADMIN), body).await
    }

    async fn raw(&self, method: &str, path: &str, body: &str) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let resp = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(ADMIN)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

fn api_config(group: &str) -> Config {
    let mut c = config(group, &[(TOPIC, Preset::Mender)]);
    c.api.listen = "127.0.0.1:0".into();
    c.api.tokens = vec![
        TokenConfig {
            token_file: None,
            token_env: None,
            token: Some(ADMIN.into()),
            role: Role::Admin,
        },
        TokenConfig {
            token_file: None,
            token_env: None,
            token: Some(VIEWER.into()),
            role: Role::Viewer,
        },
    ];
    c
}

async fn service(config: Config, cluster: &Cluster) -> (Service, Api) {
    let service = Service::start(config, cluster.target())
        .await
        .expect("service starts");
    let api = Api::new(&service);
    (service, api)
}

fn event(i: usize, device: &str) -> (String, Vec<u8>) {
    (
        device.to_string(),
        format!(r#"{{"id":"evt-{i}","type":"device-provisioned","data":{{"id":"{device}"}}}}"#)
            .into_bytes(),
    )
}

async fn wait_ready(api: &Api) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = api.call("GET", "/readyz", None, None).await;
        if status == 200 {
            assert_eq!(body["ready"], true);
            return;
        }
        assert_eq!(status, 503, "{body}");
        assert!(Instant::now() < deadline, "not ready: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_are_managed_over_http_and_deliveries_follow_them() {
    let cluster = Cluster::start(&[TOPIC], 2);
    let rx = receiver(Behaviour::Healthy).await;
    let witness = receiver(Behaviour::Healthy).await;
    let (service, api) = service(api_config("api-crud"), &cluster).await;
    assert_eq!(api.call("GET", "/healthz", None, None).await.0, 200);
    wait_ready(&api).await;

    // Create one without a secret: one is generated and shown this once.
    let (status, created) = api
        .admin(
            "POST",
            "/v1/endpoints",
            Some(json!({
                "id": "fleet", "url": rx.url("in"), "allow_http": true,
                "events": ["device-*"], "devices": ["dev-1"], "signature": "standard",
            })),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let secret = created["secret"].as_str().unwrap().to_string();
    assert!(
        secret.starts_with("whsec_") && secret.len() > 40,
        "{secret}"
    );

    // Reads mask it, everywhere.
    let (status, got) = api
        .call("GET", "/v1/endpoints/fleet", Some(VIEWER), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(got["secret"], "whsec_****");
    assert_eq!(got["events"], json!(["device-*"]));
    let (_, all) = api.call("GET", "/v1/endpoints", Some(VIEWER), None).await;
    assert!(!all.to_string().contains(&secret[6..]));

    // An array; the second gets a generated id.
    let (status, many) = api
        .admin(
            "POST",
            "/v1/endpoints",
            Some(json!([
                {"id": "audit", "url": witness.url("audit"), "allow_http": true, "signature": "none",
                 "groups": ["g1"], "tenant": "t1", "events": ["device-decommissioned"]},
                {"url": witness.url("all"), "allow_http": true, "signature": "mender"},
            ])),
        )
        .await;
    assert_eq!(status, 201, "{many}");
    assert_eq!(many.as_array().unwrap().len(), 2);
    let anon = many[1]["id"].as_str().unwrap().to_string();
    assert!(anon.starts_with("ep_"));
    assert_eq!(many[1]["secret"].as_str().unwrap().len(), 64, "mender: hex");

    // Filters.
    let ids = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    };
    let list = |q: &'static str| {
        let api = &api;
        async move {
            api.call("GET", &format!("/v1/endpoints{q}"), Some(VIEWER), None)
                .await
                .1
        }
    };
    assert_eq!(ids(&list("").await).len(), 3);
    assert_eq!(ids(&list("?device=dev-1").await), ["fleet"]);
    assert_eq!(ids(&list("?group=g1").await), ["audit"]);
    assert_eq!(ids(&list("?tenant=t1").await), ["audit"]);
    let mut subscribed = ids(&list("?event=device-provisioned").await);
    subscribed.sort();
    let mut expected = vec!["fleet".to_string(), anon.clone()];
    expected.sort();
    assert_eq!(subscribed, expected);

    // The created endpoint receives its events, signed with the generated
    // secret; the others are not for it (device restriction).
    cluster
        .produce_many(TOPIC, &[event(1, "dev-1"), event(2, "dev-2")])
        .await;
    wait_for(
        "both events at the witness",
        Duration::from_secs(20),
        || witness.log().accepted_count() == 2,
    )
    .await;
    wait_for("the event for dev-1", Duration::from_secs(20), || {
        rx.log().accepted_count() == 1
    })
    .await;
    let first = &rx.log().recorded()[0];
    assert!(independently_verified("standard", &secret, first));
    assert_eq!(bodies_by(&rx.log().recorded(), "/id")["evt-1"], 1);

    // PUT replaces (a masked secret keeps the current one), PATCH merges.
    let mut replacement = got.clone();
    replacement["events"] = json!(["*"]);
    replacement["devices"] = json!([]);
    let (status, put) = api
        .admin("PUT", "/v1/endpoints/fleet", Some(replacement))
        .await;
    assert_eq!(status, 200, "{put}");
    assert_eq!(put["secret"], "whsec_****");
    assert_eq!(put["events"], json!(["*"]));
    let (status, patched) = api
        .admin(
            "PATCH",
            "/v1/endpoints/fleet",
            Some(json!({"headers": {"X-Team": "fleet"}, "rate_limit": {"per_second": 50.0, "burst": 5}})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(
        patched["headers"]["X-Team"], "****",
        "header values are masked like secrets"
    );
    assert_eq!(patched["events"], json!(["*"]), "untouched fields stay");

    // Disabled: nothing is delivered to it (its events wait on a retry
    // tier); enabled: deliveries resume, with the new settings and the
    // same secret, and the event kept while it was disabled comes too.
    let (status, disabled) = api.admin("POST", "/v1/endpoints/fleet/disable", None).await;
    assert_eq!((status, disabled["enabled"].clone()), (200, json!(false)));
    cluster.produce_many(TOPIC, &[event(3, "dev-3")]).await;
    wait_for("event 3 at the witness", Duration::from_secs(20), || {
        witness.log().accepted_count() == 3
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.log().accepted_count(), 1, "nothing sent while disabled");
    let (status, enabled) = api.admin("POST", "/v1/endpoints/fleet/enable", None).await;
    assert_eq!((status, enabled["enabled"].clone()), (200, json!(true)));
    cluster.produce_many(TOPIC, &[event(4, "dev-4")]).await;
    wait_for(
        "a delivery after enabling, and the kept one",
        Duration::from_secs(20),
        || rx.log().accepted_count() == 3,
    )
    .await;
    let seen = bodies_by(&rx.log().recorded(), "/id");
    assert_eq!(
        (seen.get("evt-3"), seen.get("evt-4")),
        (Some(&1), Some(&1)),
        "{seen:?}"
    );
    for resumed in &rx.log().recorded()[1..] {
        assert_eq!(
            resumed.header("x-team"),
            Some("fleet"),
            "new settings are used"
        );
        assert!(independently_verified("standard", &secret, resumed));
    }

    // Delete: gone from reads; 404 afterwards.
    assert_eq!(
        api.admin("DELETE", "/v1/endpoints/audit", None).await.0,
        204
    );
    assert_eq!(api.admin("GET", "/v1/endpoints/audit", None).await.0, 404);
    assert_eq!(
        api.admin("DELETE", "/v1/endpoints/audit", None).await.0,
        404
    );
    // Taken ids conflict.
    let (status, conflict) = api
        .admin(
            "POST",
            "/v1/endpoints",
            Some(json!({"id": "fleet", "url": rx.url("x"), "allow_http": true})),
        )
        .await;
    assert_eq!((status, conflict["field"].clone()), (409, json!("id")));
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_values_are_secrets_that_only_admins_who_ask_may_read() {
    const KEY: &str = "Bearer k3y-0123456789";
    let cluster = Cluster::start(&[TOPIC], 1);
    let rx = receiver(Behaviour::Healthy).await;
    let (service, api) = service(api_config("api-headers"), &cluster).await;
    wait_ready(&api).await;

    // An operator stores an API key in a header; the answer masks it.
    let (status, created) = api
        .admin(
            "POST",
            "/v1/endpoints",
            Some(json!({
                "id": "keyed", "url": rx.url("in"), "allow_http": true,
                "signature": "standard", "secret": SECRET,
                "headers": {"Authorization": KEY, "X-Team": "fleet"},
            })),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["headers"]["Authorization"], "****");

    // Viewers never see it: not in the list, not in one endpoint, and not
    // when they ask.
    let (status, one) = api
        .call("GET", "/v1/endpoints/keyed", Some(VIEWER), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        one["headers"],
        json!({"Authorization": "****", "X-Team": "****"})
    );
    let (_, all) = api.call("GET", "/v1/endpoints", Some(VIEWER), None).await;
    assert!(!all.to_string().contains("k3y"), "{all}");
    let (status, refused) = api
        .call(
            "GET",
            "/v1/endpoints/keyed?reveal=headers",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(status, 403, "{refused}");
    assert!(refused["error"].as_str().unwrap().contains("admin"));
    assert!(!refused.to_string().contains("k3y"));

    // Admins see it masked too, unless they ask; the secret stays masked.
    let (_, masked) = api.admin("GET", "/v1/endpoints/keyed", None).await;
    assert_eq!(masked["headers"]["Authorization"], "****");
    let (status, revealed) = api
        .admin("GET", "/v1/endpoints/keyed?reveal=headers", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(revealed["headers"]["Authorization"], KEY);
    assert_eq!(revealed["headers"]["X-Team"], "fleet");
    assert_eq!(revealed["secret"], "whsec_****");
    let (status, bad) = api
        .admin("GET", "/v1/endpoints/keyed?reveal=secret", None)
        .await;
    assert_eq!((status, bad["field"].clone()), (400, json!("reveal")));

    // What an admin read (masked) and sends back keeps the stored value;
    // a value given in the clear replaces it.
    let mut edited = masked.clone();
    edited["headers"]["X-Team"] = json!("ops");
    edited["events"] = json!(["device-*"]);
    let (status, put) = api.admin("PUT", "/v1/endpoints/keyed", Some(edited)).await;
    assert_eq!(status, 200, "{put}");
    assert_eq!(put["headers"]["Authorization"], "****");
    let (status, patched) = api
        .admin(
            "PATCH",
            "/v1/endpoints/keyed",
            Some(json!({"headers": {"Authorization": "****", "X-Extra": "1"}})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    let (_, stored) = api
        .admin("GET", "/v1/endpoints/keyed?reveal=headers", None)
        .await;
    assert_eq!(
        stored["headers"],
        json!({"Authorization": KEY, "X-Team": "ops", "X-Extra": "1"})
    );

    // A mask with nothing stored behind it is refused, naming the header.
    let (status, answer) = api
        .admin(
            "PATCH",
            "/v1/endpoints/keyed",
            Some(json!({"headers": {"X-Unknown": "****"}})),
        )
        .await;
    assert_eq!(
        (status, answer["field"].clone()),
        (400, json!("headers.X-Unknown"))
    );
    let (status, answer) = api
        .admin(
            "POST",
            "/v1/endpoints",
            Some(json!({"url": rx.url("x"), "allow_http": true, "headers": {"X-Key": "****"}})),
        )
        .await;
    assert_eq!(
        (status, answer["field"].clone()),
        (400, json!("headers.X-Key"))
    );

    // The receiver gets the real key, not the mask.
    cluster.produce_many(TOPIC, &[event(1, "dev-1")]).await;
    wait_for("the delivery", Duration::from_secs(20), || {
        rx.log().accepted_count() == 1
    })
    .await;
    let sent = &rx.log().recorded()[0];
    assert_eq!(sent.header("authorization"), Some(KEY));
    assert_eq!(sent.header("x-team"), Some("ops"));
    assert!(independently_verified("standard", SECRET, sent));

    // Mainflux clients read masks too, and sending them back keeps the key.
    let (status, hook) = api.call("GET", "/webhooks/keyed", Some(VIEWER), None).await;
    assert_eq!(status, 200);
    assert_eq!(hook["headers"]["Authorization"], "****");
    let (status, updated) = api
        .admin(
            "PUT",
            "/webhooks/keyed",
            Some(
                json!({"name": "renamed", "url": rx.url("in"), "headers": hook["headers"].clone()}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert!(!updated.to_string().contains("k3y"));
    let (_, stored) = api
        .admin("GET", "/v1/endpoints/keyed?reveal=headers", None)
        .await;
    assert_eq!(stored["headers"]["Authorization"], KEY);
    assert_eq!(stored["name"], "renamed");

    // `hookstream endpoints get` shows what the API shows each role.
    let base = api.base.clone();
    let cli = |token: &'static str, args: &'static [&'static str]| {
        let base = base.clone();
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(env!("CARGO_BIN_EXE_hookstream"))
                .arg("endpoints")
                .args(args)
                .args(["--api", &base])
                .env("HOOKSTREAM_TOKEN", token)
                .output()
                .expect("runs");
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        })
    };
    let (code, out, err) = cli(VIEWER, &["get", "keyed"]).await.unwrap();
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("****") && !out.contains("k3y"), "{out}");
    let (code, out, err) = cli(VIEWER, &["get", "keyed", "--reveal-headers"])
        .await
        .unwrap();
    assert_eq!(code, Some(1), "{out}");
    assert!(err.contains("403"), "{err}");
    let (code, out, err) = cli(ADMIN, &["get", "keyed", "--reveal-headers"])
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains(KEY), "{out}");
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_signs_with_both_secrets_for_the_grace_period() {
    let cluster = Cluster::start(&[TOPIC], 1);
    let rx = receiver(Behaviour::Healthy).await;
    let mut config = api_config("api-rotate");
    config.api.rotation_grace = HumanDuration::from_secs(3);
    let (service, api) = service(config, &cluster).await;
    wait_ready(&api).await;
    let (status, _) = api
        .admin(
            "POST",
            "/v1/endpoints",
            Some(json!({"id": "rot", "url": rx.url("in"), "allow_http": true, "signature": "standard", "secret": SECRET})),
        )
        .await;
    assert_eq!(status, 201);
    let (status, rotated) = api
        .admin("POST", "/v1/endpoints/rot/rotate-secret", None)
        .await;
    assert_eq!(status, 200, "{rotated}");
    let new = rotated["secret"].as_str().unwrap().to_string();
    assert_ne!(new, SECRET);
    assert!(rotated["previous_secret_expires_at"].is_string());
    let (_, got) = api.admin("GET", "/v1/endpoints/rot", None).await;
    let text = got.to_string();
    assert!(
        !text.contains(&SECRET[6..]) && !text.contains(&new[6..]),
        "{text}"
    );
    assert_eq!(got["previous_secret"], "whsec_****");

    cluster.produce_many(TOPIC, &[event(1, "d")]).await;
    wait_for(
        "the delivery during the grace period",
        Duration::from_secs(20),
        || rx.log().accepted_count() == 1,
    )
    .await;
    let during = &rx.log().recorded()[0];
    let signatures = during.header("webhook-signature").unwrap();
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
    assert!(
        independently_verified("standard", &new, during),
        "new secret"
    );
    assert!(
        independently_verified("standard", SECRET, during),
        "previous secret"
    );

    tokio::time::sleep(Duration::from_secs(4)).await;
    cluster.produce_many(TOPIC, &[event(2, "d")]).await;
    wait_for(
        "the delivery after the grace period",
        Duration::from_secs(20),
        || rx.log().accepted_count() == 2,
    )
    .await;
    let after = &rx.log().recorded()[1];
    assert_eq!(
        after
            .header("webhook-signature")
            .unwrap()
            .split(' ')
            .count(),
        1
    );
    assert!(independently_verified("standard", &new, after));
    assert!(!independently_verified("standard", SECRET, after));
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_sends_a_signed_event_and_activity_is_reported() {
    let cluster = Cluster::start(&[TOPIC], 1);
    let rx = receiver(Behaviour::Healthy).await;
    let refusing = receiver(Behaviour::Status(400)).await;
    let (service, api) = service(api_config("api-activity"), &cluster).await;
    wait_ready(&api).await;
    for (id, url) in [("ok", rx.url("in")), ("no", refusing.url("in"))] {
        let (status, _) = api
            .admin(
                "POST",
                "/v1/endpoints",
                Some(json!({"id": id, "url": url, "allow_http": true, "signature": "github", "secret": "gh-secret"})),
            )
            .await;
        assert_eq!(status, 201);
    }
    let (status, result) = api.admin("POST", "/v1/endpoints/ok/test", None).await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["delivered"], true);
    assert_eq!(result["status"], 200);
    assert!(result["latency_ms"].as_f64().unwrap() > 0.0);
    let sent = &rx.log().recorded()[0];
    assert_eq!(sent.header("x-github-event"), Some("hookstream.test"));
    assert!(independently_verified("github", "gh-secret", sent));
    let body: Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(body["type"], "hookstream.test");

    // The test event comes in the shape the endpoint's platform sends
    // (OpenMDM: {id, event, timestamp, data}) and in the endpoint's envelope.
    let shaped = [
        json!({"id": "mdm", "url": rx.url("mdm"), "allow_http": true, "signature": "openmdm", "secret": "mdm-secret"}),
        json!({"id": "sw", "url": rx.url("sw"), "allow_http": true, "payload": "standard_webhooks"}),
    ];
    for endpoint in shaped {
        let (status, answer) = api.admin("POST", "/v1/endpoints", Some(endpoint)).await;
        assert_eq!(status, 201, "{answer}");
    }
    let (_, mdm) = api.admin("POST", "/v1/endpoints/mdm/test", None).await;
    assert_eq!(mdm["delivered"], true, "{mdm}");
    let sent = &rx.log().recorded()[1];
    assert!(independently_verified("openmdm", "mdm-secret", sent));
    let body: Value = serde_json::from_slice(&sent.body).unwrap();
    assert_eq!(body["event"], "hookstream.test", "OpenMDM's shape: {body}");
    assert_eq!(body["id"], mdm["event_id"]);
    assert!(body.get("type").is_none(), "{body}");
    assert_eq!(sent.header("x-openmdm-delivery"), body["id"].as_str());
    assert_eq!(
        sent.header("x-openmdm-timestamp"),
        body["timestamp"].as_str()
    );
    let (_, sw) = api.admin("POST", "/v1/endpoints/sw/test", None).await;
    assert_eq!(sw["delivered"], true, "{sw}");
    let body: Value = serde_json::from_slice(&rx.log().recorded()[2].body).unwrap();
    assert_eq!(
        body["type"], "hookstream.test",
        "Standard Webhooks envelope: {body}"
    );
    assert_eq!(body["data"]["type"], "hookstream.test", "{body}");
    assert!(body["timestamp"].is_string(), "{body}");
    for id in ["mdm", "sw"] {
        let (status, _) = api
            .admin("DELETE", &format!("/v1/endpoints/{id}"), None)
            .await;
        assert_eq!(status, 204);
    }

    let (_, refused) = api.admin("POST", "/v1/endpoints/no/test", None).await;
    assert_eq!(
        (refused["delivered"].clone(), refused["status"].clone()),
        (json!(false), json!(400))
    );

    let events: Vec<_> = (0..5).map(|i| event(i, "d")).collect();
    cluster.produce_many(TOPIC, &events).await;
    wait_for("five deliveries", Duration::from_secs(20), || {
        rx.log().accepted_count() >= 8
    })
    .await;
    wait_for("five refusals recorded", Duration::from_secs(20), || {
        service
            .store()
            .registry()
            .activity("no")
            .stats()
            .dead_lettered
            >= 5
    })
    .await;
    let (status, attempts) = api
        .call(
            "GET",
            "/v1/endpoints/ok/attempts?limit=3",
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let attempts = attempts.as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    assert_eq!(attempts[0]["status"], 200);
    assert_eq!(attempts[0]["outcome"], "delivered");
    assert!(
        attempts[0]["event_id"]
            .as_str()
            .unwrap()
            .starts_with("evt-")
    );
    assert!(
        attempts[0]["webhook_id"]
            .as_str()
            .unwrap()
            .starts_with("msg_")
    );
    let (_, refused) = api
        .call("GET", "/v1/endpoints/no/attempts", Some(VIEWER), None)
        .await;
    assert_eq!(refused[0]["status"], 400);
    assert_eq!(refused[0]["outcome"], "dead_lettered");
    assert!(!refused[0]["error"].as_str().unwrap().is_empty());
    let (status, stats) = api
        .call("GET", "/v1/endpoints/ok/stats", Some(VIEWER), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(stats["delivered"], 5);
    assert_eq!(stats["attempts"], 5);
    assert!(stats["latency_p50_ms"].as_f64().unwrap() > 0.0);
    let (_, stats) = api
        .call("GET", "/v1/endpoints/no/stats", Some(VIEWER), None)
        .await;
    assert_eq!(stats["dead_lettered"], 5);
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_decide_who_may_read_and_write() {
    let cluster = Cluster::start(&[TOPIC], 1);
    let (service, api) = service(api_config("api-auth"), &cluster).await;
    let body =
        || Some(json!({"id": "x", "url": "https://hooks.example.com/", "signature": "none"}));
    let cases: [(&str, &str, Option<&str>, u16); 8] = [
        ("GET", "/v1/endpoints", None, 401),
        ("GET", "/v1/endpoints", Some("wrong"), 401),
        ("GET", "/v1/endpoints", Some(VIEWER), 200),
        ("GET", "/v1/endpoints", Some(ADMIN), 200),
        ("POST", "/v1/endpoints", None, 401),
        ("POST", "/v1/endpoints", Some("wrong"), 401),
        ("POST", "/v1/endpoints", Some(VIEWER), 403),
        ("POST", "/v1/endpoints", Some(ADMIN), 201),
    ];
    for (method, path, token, expected) in cases {
        let (status, answer) = api.call(method, path, token, body()).await;
        assert_eq!(status, expected, "{method} {path} with {token:?}: {answer}");
        if status >= 400 {
            assert!(answer["error"].is_string(), "{answer}");
        }
    }
    for (method, path) in [
        ("DELETE", "/v1/endpoints/x"),
        ("POST", "/v1/endpoints/x/rotate-secret"),
        ("POST", "/v1/endpoints/x/disable"),
        ("PUT", "/webhooks/x"),
        ("DELETE", "/webhooks"),
    ] {
        assert_eq!(
            api.call(method, path, Some(VIEWER), body()).await.0,
            403,
            "{method} {path}"
        );
        assert_eq!(
            api.call(method, path, None, body()).await.0,
            401,
            "{method} {path}"
        );
    }
    for path in [
        "/v1/endpoints/x",
        "/v1/endpoints/x/attempts",
        "/v1/endpoints/x/stats",
        "/webhooks/nope",
    ] {
        let status = api.call("GET", path, Some(VIEWER), None).await.0;
        assert!(status == 200 || status == 404, "{path}: {status}");
    }
    for path in ["/healthz", "/v1/openapi.json"] {
        assert_eq!(api.call("GET", path, None, None).await.0, 200, "{path}");
    }
    assert_eq!(
        api.call("GET", "/v1/endpoints/nope", Some(VIEWER), None)
            .await
            .0,
        404
    );
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_destinations_are_refused_when_saved() {
    let cluster = Cluster::start(&[TOPIC], 1);
    let mut config = api_config("api-ssrf");
    config.delivery.allow_private_destinations = false;
    let (service, api) = service(config, &cluster).await;
    let mut urls: Vec<String> = [
        "https://127.0.0.1/",
        "https://localhost/",
        "https://[::1]/",
        "https://10.0.0.1/",
        "https://172.16.0.1/",
        "https://192.168.1.1/",
        "https://169.254.169.254/latest/meta-data/",
        "https://100.64.0.1/",
        "https://0.0.0.0/",
        "https://2130706433/",
        "https://0x7f000001/",
        "https://[::ffff:127.0.0.1]/",
        "https://localhost./",
        "https://something.localhost/",
        "http://127.0.0.1:8080/",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    // A name resolving to loopback through the resolver (not by its
    // spelling): this machine's own name, where /etc/hosts maps it so.
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim().to_string();
        if let Ok(addrs) = tokio::net::lookup_host((host.as_str(), 443)).await {
            let addrs: Vec<_> = addrs.collect();
            if !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()) {
                urls.push(format!("https://{host}/"));
            }
        }
    }
    for url in &urls {
        for path in ["/v1/endpoints", "/things/t1/webhooks"] {
            let body = if path == "/v1/endpoints" {
                json!({"url": url, "allow_http": true, "signature": "none"})
            } else {
                json!([{"name": "n", "url": url}])
            };
            let (status, answer) = api.admin("POST", path, Some(body)).await;
            assert_eq!(status, 400, "{url} via {path}: {answer}");
            let field = answer["field"].as_str().unwrap();
            assert!(field.ends_with("url"), "{url}: {answer}");
        }
    }
    let (status, ok) = api
        .admin(
            "POST",
            "/v1/endpoints",
            Some(json!({"id": "public", "url": "https://93.184.216.34/", "signature": "none"})),
        )
        .await;
    assert_eq!(status, 201, "a public destination is accepted: {ok}");
    let (status, answer) = api
        .admin(
            "PATCH",
            "/v1/endpoints/public",
            Some(json!({"url": "https://10.1.2.3/"})),
        )
        .await;
    assert_eq!(
        (status, answer["field"].clone()),
        (400, json!("url")),
        "updates too"
    );
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_names_its_field() {
    let cluster = Cluster::start(&[TOPIC], 1);
    let mut config = api_config("api-400");
    config.delivery.allow_private_destinations = false;
    let (service, api) = service(config, &cluster).await;
    // IP literals: nothing here may make a DNS query off this machine.
    let good = json!({"id": "ok", "url": "https://93.184.216.34/", "signature": "none"});
    assert_eq!(
        api.admin("POST", "/v1/endpoints", Some(good.clone()))
            .await
            .0,
        201
    );
    let with = |patch: Value| {
        let mut v = good.clone();
        v["id"] = json!("new");
        for (k, val) in patch.as_object().unwrap() {
            v[k] = val.clone();
        }
        v
    };
    let cases: Vec<(&str, &str, Value, &str)> = vec![
        ("POST", "/v1/endpoints", json!({"id": "a"}), "url"),
        (
            "POST",
            "/v1/endpoints",
            with(json!({"url": "not a url"})),
            "url",
        ),
        (
            "POST",
            "/v1/endpoints",
            with(json!({"url": "ftp://x.example/"})),
            "url",
        ),
        (
            "POST",
            "/v1/endpoints",
            with(json!({"url": "http://hooks.example.com/"})),
            "url",
        ),
        ("POST", "/v1/endpoints", with(json!({"id": "bad id"})), "id"),
        (
            "POST",
            "/v1/endpoints",
            with(json!({"events": []})),
            "events",
        ),
        (
            "POST",
            "/v1/endpoints",
            with(json!({"events": ["a", "de*v*"]})),
            "events[1]",
        ),
        (
            "POST",
            "/v1/endpoints",
            with(json!({"signature": "rsa"})),
            "signature",
        ),
        (
            "POST",
            "/v1/endpoints",
            with(json!({"signature": "mender", "secret": "zz"})),
            "secret",
        ),
        (
            "POST",
            "/v1/endpoints",
            with(json!({"secret_env": "HOME", "signature": "github"})),
            "secret_env",
        ),
        (
            "POST",
            "/v1/endpoints",
            with(json!({"rate_limit": {"per_second": 0, "burst": 1}})),
            "rate_limit.per_second",
        ),
        (
            "POST",
            "/v1/endpoints",
            with(json!({"batch": {"max_events": 0}})),
            "batch.max_events",
        ),
        (
            "POST",
            "/v1/endpoints",
            with(json!({"max_concurrency": "many"})),
            "max_concurrency",
        ),
        (
            "POST",
            "/v1/endpoints",
            with(json!({"timeout": "30"})),
            "timeout",
        ),
        (
            "POST",
            "/v1/endpoints",
            with(json!({"adaptive_concurrency": {"decrease_ratio": 1.5}})),
            "adaptive_concurrency.decrease_ratio",
        ),
        (
            "POST",
            "/v1/endpoints",
            with(json!({"max_concurrency": 8, "adaptive_concurrency": {"initial": 9}})),
            "adaptive_concurrency.initial",
        ),
        (
            "POST",
            "/v1/endpoints",
            with(json!({"adaptive_concurrency": {"alpha": 0.5}})),
            "adaptive_concurrency.alpha",
        ),
        (
            "PATCH",
            "/v1/endpoints/ok",
            json!({"adaptive_concurrency": {"ewma_alpha": 0}}),
            "adaptive_concurrency.ewma_alpha",
        ),
        (
            "POST",
            "/v1/endpoints",
            with(json!({"headers": {"Connection": "close"}})),
            "headers.Connection",
        ),
        (
            "POST",
            "/v1/endpoints",
            with(json!({"headers": {"X-OpenMDM-Delivery": "forged"}})),
            "headers.X-OpenMDM-Delivery",
        ),
        (
            "POST",
            "/v1/endpoints",
            with(json!({"retry": {"retry_on": ["teapot"]}})),
            "retry.retry_on[0]",
        ),
        (
            "POST",
            "/v1/endpoints",
            with(json!({"payload": "soap"})),
            "payload",
        ),
        (
            "POST",
            "/v1/endpoints",
            with(json!({"headers": {"X-Bad": "a\nb"}})),
            "headers.X-Bad",
        ),
        (
            "POST",
            "/v1/endpoints",
            with(json!({"colour": "blue"})),
            "colour",
        ),
        (
            "POST",
            "/v1/endpoints",
            json!([good.clone(), {"id": "b"}]),
            "[1].url",
        ),
        ("POST", "/v1/endpoints", json!([]), "body"),
        ("POST", "/v1/endpoints", json!("text"), "body"),
        (
            "PUT",
            "/v1/endpoints/ok",
            json!({"id": "other", "url": "https://hooks.example.com/"}),
            "id",
        ),
        (
            "PATCH",
            "/v1/endpoints/ok",
            json!({"queue_size": 0}),
            "queue_size",
        ),
        ("PATCH", "/v1/endpoints/ok", json!([1]), "body"),
        (
            "PATCH",
            "/v1/endpoints/ok",
            json!({"ordering": "sideways"}),
            "ordering",
        ),
        (
            "POST",
            "/things/t1/webhooks",
            json!([{"name": "", "url": "https://x.example/"}]),
            "webhooks[0].name",
        ),
        (
            "POST",
            "/things/t1/webhooks",
            json!({"webhooks": [{"url": "https://x.example/"}]}),
            "webhooks[0].name",
        ),
        (
            "DELETE",
            "/webhooks",
            json!({"webhook_ids": []}),
            "webhook_ids",
        ),
        (
            "POST",
            "/v1/endpoints/ok/rotate-secret",
            json!(null),
            "signature",
        ),
    ];
    for (method, path, body, field) in cases {
        let (status, answer) = api.admin(method, path, Some(body.clone())).await;
        assert_eq!(status, 400, "{method} {path} {body}: {answer}");
        assert_eq!(answer["field"], field, "{method} {path} {body}: {answer}");
        assert!(!answer["error"].as_str().unwrap().is_empty());
    }
    for (body, field) in [("", "body"), ("{", "body")] {
        let (status, answer) = api.raw("POST", "/v1/endpoints", body).await;
        assert_eq!(
            (status, answer["field"].as_str()),
            (400, Some(field)),
            "{body:?}"
        );
    }
    // Adaptive concurrency is switched on with its defaults, shown whole,
    // and switched off again by a merge patch.
    let (status, on) = api
        .admin(
            "PATCH",
            "/v1/endpoints/ok",
            Some(json!({"adaptive_concurrency": {}})),
        )
        .await;
    assert_eq!(status, 200, "{on}");
    assert_eq!(
        on["adaptive_concurrency"],
        json!({"initial": 1, "decrease_ratio": 0.9, "ewma_alpha": 0.4, "rtt_deviation_scale": 2.5})
    );
    let (status, off) = api
        .admin(
            "PATCH",
            "/v1/endpoints/ok",
            Some(json!({"adaptive_concurrency": null})),
        )
        .await;
    assert_eq!(status, 200, "{off}");
    assert!(off.get("adaptive_concurrency").is_none(), "{off}");
    for q in ["limit=0", "limit=abc", "limit=100000"] {
        let (status, answer) = api
            .admin("GET", &format!("/v1/endpoints/ok/attempts?{q}"), None)
            .await;
        assert_eq!(
            (status, answer["field"].clone()),
            (400, json!("limit")),
            "{q}"
        );
    }
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_through_one_instance_is_used_by_the_other_within_a_second() {
    let cluster = Cluster::start(&[TOPIC], 4);
    let rx = receiver(Behaviour::Healthy).await;
    let (a, api_a) = service(api_config("two-instances"), &cluster).await;
    let mut config_b = api_config("two-instances");
    config_b.api.listen = String::new();
    let b = Service::start(config_b, cluster.target()).await.unwrap();
    wait_for("both instances assigned", Duration::from_secs(30), || {
        a.pipeline().has_assignment() && b.pipeline().has_assignment()
    })
    .await;
    // Let the group settle with both members.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let written = Instant::now();
    let (status, _) = api_a
        .admin(
            "POST",
            "/v1/endpoints",
            Some(json!({"id": "shared", "url": rx.url("in"), "allow_http": true, "signature": "none"})),
        )
        .await;
    assert_eq!(status, 201);
    wait_for(
        "the other instance to apply the write",
        Duration::from_secs(1),
        || b.store().get("shared").is_some(),
    )
    .await;
    println!(
        "applied by the other instance after {:?}",
        written.elapsed()
    );

    let events: Vec<_> = (0..40).map(|i| event(i, &format!("dev-{i}"))).collect();
    cluster.produce_many(TOPIC, &events).await;
    wait_for("every event delivered", Duration::from_secs(30), || {
        bodies_by(&rx.log().recorded(), "/id").len() >= 40
    })
    .await;
    let by_b = b.store().registry().activity("shared").stats().delivered;
    let by_a = a.store().registry().activity("shared").stats().delivered;
    assert!(
        by_b > 0,
        "the other instance delivered to it too ({by_a} + {by_b})"
    );
    assert!(by_a > 0, "({by_a} + {by_b})");

    // A delete through A stops B as well.
    assert_eq!(
        api_a.admin("DELETE", "/v1/endpoints/shared", None).await.0,
        204
    );
    wait_for(
        "the other instance to apply the delete",
        Duration::from_secs(1),
        || b.store().get("shared").is_none(),
    )
    .await;
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_endpoints_are_seeded_without_overwriting_api_changes() {
    let cluster = Cluster::start(&[TOPIC], 1);
    let mut config = api_config("seed");
    config.endpoints.push(endpoint(
        "static",
        "https://hooks.example.com/a".into(),
        &["*"],
        "standard",
        SECRET,
    ));
    // Enough more to be seeded in several slices and applied in swaps of
    // growing size.
    for i in 0..2_500 {
        config.endpoints.push(endpoint(
            &format!("bulk-{i:04}"),
            format!("https://hooks.example.com/bulk/{i}"),
            &["*"],
            "standard",
            SECRET,
        ));
    }
    let in_file: Vec<String> = config.endpoints.iter().map(|e| e.id.clone()).collect();
    let (first, api) = service(config.clone(), &cluster).await;
    let seeded: Vec<String> = first
        .pipeline()
        .registry()
        .snapshot()
        .endpoints()
        .iter()
        .map(|e| e.id().to_string())
        .collect();
    assert_eq!(seeded, in_file, "every endpoint of the file, in its order");
    let (status, got) = api.admin("GET", "/v1/endpoints/static", None).await;
    assert_eq!((status, got["secret"].clone()), (200, json!("whsec_****")));
    let (status, _) = api
        .admin(
            "PATCH",
            "/v1/endpoints/static",
            Some(json!({"url": "https://hooks.example.com/b"})),
        )
        .await;
    assert_eq!(status, 200);
    first.shutdown().await.unwrap();
    // A restart with the same file keeps the API's change.
    let (second, api) = service(config, &cluster).await;
    let (_, got) = api.admin("GET", "/v1/endpoints/static", None).await;
    assert_eq!(got["url"], "https://hooks.example.com/b");
    let (_, got) = api.admin("GET", "/v1/endpoints/bulk-2499", None).await;
    assert_eq!(got["url"], "https://hooks.example.com/bulk/2499");
    assert_eq!(second.pipeline().registry().snapshot().len(), 2_501);
    second.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_pending_for_a_deleted_endpoint_are_dead_lettered() {
    let cluster = Cluster::start(&[TOPIC], 1);
    let failing = receiver(Behaviour::Status(503)).await;
    let mut config = api_config("api-delete-retries");
    config.delivery.backoff.jitter = 0.0;
    config.delivery.backoff.initial = HumanDuration::from_secs(2);
    config.delivery.max_attempts = 5;
    let (service, api) = service(config, &cluster).await;
    let (status, _) = api
        .admin(
            "POST",
            "/v1/endpoints",
            Some(json!({"id": "doomed", "url": failing.url("in"), "allow_http": true, "signature": "none"})),
        )
        .await;
    assert_eq!(status, 201);
    cluster.produce_many(TOPIC, &[event(1, "d")]).await;
    wait_for("the first attempt", Duration::from_secs(20), || {
        failing.log().recorded().len() == 1
    })
    .await;
    assert_eq!(
        api.admin("DELETE", "/v1/endpoints/doomed", None).await.0,
        204
    );
    let mut dlq = Vec::new();
    wait_for("the retry on the DLQ", Duration::from_secs(20), || {
        dlq = cluster.read_all("hookstream.dlq");
        !dlq.is_empty()
    })
    .await;
    assert_eq!(dlq[0].header("hookstream-reason"), Some("endpoint_deleted"));
    assert_eq!(dlq[0].header("hookstream-endpoint"), Some("doomed"));
    assert_eq!(
        failing.log().recorded().len(),
        1,
        "no attempt after the delete"
    );
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mainflux_clients_manage_webhooks_of_things() {
    let cluster = Cluster::start(&[TOPIC], 1);
    let (service, api) = service(api_config("api-mainflux"), &cluster).await;
    let (status, created) = api
        .admin(
            "POST",
            "/things/thing-1/webhooks",
            Some(json!({"webhooks": [
                {"name": "one", "url": "http://hooks.example.com/1", "headers": {"X-Key": "k"}},
                {"name": "two", "url": "https://hooks.example.com/2"},
            ]})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let hooks = created.as_array().expect("a bare array");
    assert_eq!(hooks.len(), 2);
    let id = hooks[0]["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 36, "a UUID");
    assert_eq!(hooks[0]["thing_id"], "thing-1");
    let (_, listed) = api
        .call("GET", "/things/thing-1/webhooks", Some(VIEWER), None)
        .await;
    assert_eq!(listed.as_array().unwrap().len(), 2);
    let (_, none) = api
        .call("GET", "/things/thing-2/webhooks", Some(VIEWER), None)
        .await;
    assert_eq!(none, json!([]));
    let (_, endpoint) = api.admin("GET", &format!("/v1/endpoints/{id}"), None).await;
    assert_eq!(endpoint["devices"], json!(["thing-1"]));
    assert_eq!(endpoint["name"], "one");
    // The same endpoint through the v1 API gets a group; Mainflux sees it.
    api.admin(
        "PATCH",
        &format!("/v1/endpoints/{id}"),
        Some(json!({"groups": ["grp"]})),
    )
    .await;
    let (_, by_group) = api
        .call("GET", "/groups/grp/webhooks", Some(VIEWER), None)
        .await;
    assert_eq!(by_group[0]["id"], id);
    let (status, updated) = api
        .admin(
            "PUT",
            &format!("/webhooks/{id}"),
            Some(json!({"name": "renamed", "url": "https://hooks.example.com/r"})),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    let (_, got) = api
        .call("GET", &format!("/webhooks/{id}"), Some(VIEWER), None)
        .await;
    assert_eq!(
        (got["name"].clone(), got["url"].clone()),
        (json!("renamed"), json!("https://hooks.example.com/r"))
    );
    let ids: Vec<Value> = hooks.iter().map(|h| h["id"].clone()).collect();
    let (status, _) = api
        .admin(
            "DELETE",
            "/webhooks",
            Some(json!({"webhook_ids": [ids[0], "unknown"]})),
        )
        .await;
    assert_eq!(status, 404, "all or nothing");
    assert_eq!(
        api.admin("DELETE", "/webhooks", Some(json!({"webhook_ids": ids})))
            .await
            .0,
        204
    );
    let (_, listed) = api
        .call("GET", "/things/thing-1/webhooks", Some(VIEWER), None)
        .await;
    assert_eq!(listed, json!([]));
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_route_and_every_route_answers() {
    let cluster = Cluster::start(&[TOPIC], 1);
    let (service, api) = service(api_config("api-openapi"), &cluster).await;
    let (status, doc) = api.call("GET", "/v1/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let spec_routes = [
        ("post", "/v1/endpoints"),
        ("get", "/v1/endpoints"),
        ("get", "/v1/endpoints/{id}"),
        ("put", "/v1/endpoints/{id}"),
        ("patch", "/v1/endpoints/{id}"),
        ("delete", "/v1/endpoints/{id}"),
        ("post", "/v1/endpoints/{id}/enable"),
        ("post", "/v1/endpoints/{id}/disable"),
        ("post", "/v1/endpoints/{id}/rotate-secret"),
        ("post", "/v1/endpoints/{id}/test"),
        ("get", "/v1/endpoints/{id}/attempts"),
        ("get", "/v1/endpoints/{id}/stats"),
        ("get", "/v1/event-types"),
        ("post", "/things/{thing_id}/webhooks"),
        ("get", "/things/{thing_id}/webhooks"),
        ("get", "/groups/{group_id}/webhooks"),
        ("get", "/webhooks/{id}"),
        ("put", "/webhooks/{id}"),
        ("delete", "/webhooks"),
        ("post", "/svcwebhooks/things/{thing_id}/webhooks"),
        ("get", "/svcwebhooks/things/{thing_id}/webhooks"),
        ("get", "/svcwebhooks/groups/{group_id}/webhooks"),
        ("get", "/svcwebhooks/webhooks/{id}"),
        ("put", "/svcwebhooks/webhooks/{id}"),
        ("delete", "/svcwebhooks/webhooks"),
        ("get", "/api/management/v1/iot-manager/integrations"),
        ("post", "/api/management/v1/iot-manager/integrations"),
        ("get", "/api/management/v1/iot-manager/integrations/{id}"),
        ("delete", "/api/management/v1/iot-manager/integrations/{id}"),
        (
            "put",
            "/api/management/v1/iot-manager/integrations/{id}/credentials",
        ),
        ("get", "/api/management/v1/iot-manager/events"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/v1/openapi.json"),
    ];
    for (method, path) in spec_routes {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is documented"
        );
    }
    // Every documented operation is served (not the 404/405 of a missing route).
    let mut operations = 0;
    for (path, methods) in doc["paths"].as_object().unwrap() {
        for method in methods.as_object().unwrap().keys() {
            operations += 1;
            let concrete = path
                .replace("{id}", "no-such-endpoint")
                .replace("{thing_id}", "t")
                .replace("{group_id}", "g");
            let (status, answer) = api
                .admin(&method.to_uppercase(), &concrete, Some(json!({})))
                .await;
            assert_ne!(status, 405, "{method} {path}: {answer}");
            assert_ne!(answer["error"], "no such route", "{method} {path}");
            let documented = &doc["paths"][path][method]["responses"][status.to_string()];
            assert!(
                documented.is_object(),
                "{method} {path} answered {status}, which is not documented: {answer}"
            );
        }
    }
    assert_eq!(operations, spec_routes.len());
    let (status, answer) = api.admin("GET", "/v1/nothing", None).await;
    assert_eq!(
        (status, answer["error"].clone()),
        (404, json!("no such route"))
    );
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_manages_endpoints_through_the_api() {
    let cluster = Cluster::start(&[TOPIC], 1);
    let rx = receiver(Behaviour::Healthy).await;
    let (service, api) = service(api_config("api-cli"), &cluster).await;
    let base = api.base.clone();
    let cli = move |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_hookstream"))
            .arg("endpoints")
            .args(args)
            .args(["--api", &base])
            .env("HOOKSTREAM_TOKEN", ADMIN)
            .output()
            .expect("runs");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let run = |args: Vec<String>| {
        let cli = cli.clone();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cli(&args)
        })
    };
    let args = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let url = rx.url("in");
    let (code, out, err) = run(args(&[
        "create",
        "--id",
        "cli",
        "--url",
        &url,
        "--event",
        "device-*",
        "--signature",
        "standard",
        "--allow-http",
        "--json",
    ]))
    .await
    .unwrap();
    assert_eq!(code, 0, "{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    assert!(created["secret"].as_str().unwrap().starts_with("whsec_"));
    let (code, out, _) = run(args(&["list"])).await.unwrap();
    assert_eq!(code, 0);
    assert!(
        out.contains("cli") && out.contains(&url) && out.contains("device-*"),
        "{out}"
    );
    let (code, out, _) = run(args(&["get", "cli"])).await.unwrap();
    assert_eq!(code, 0);
    assert!(out.contains("whsec_****"), "{out}");
    let (code, out, _) = run(args(&["update", "cli", "--event", "*", "--json"]))
        .await
        .unwrap();
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["events"],
        json!(["*"])
    );
    let (code, out, _) = run(args(&["rotate", "cli"])).await.unwrap();
    assert_eq!(code, 0);
    assert!(out.contains("whsec_") && !out.contains("****"), "{out}");
    let (code, out, _) = run(args(&["test", "cli"])).await.unwrap();
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("200"), "{out}");
    assert_eq!(rx.log().accepted_count(), 1);
    cluster
        .produce_many(TOPIC, &[event(77, "cli-device")])
        .await;
    wait_for("the event delivered", Duration::from_secs(20), || {
        rx.log().accepted_count() == 2
    })
    .await;
    // "View details": the attempt with the event as it was consumed.
    let mut shown = String::new();
    for _ in 0..50 {
        let (code, out, err) = run(args(&["attempts", "cli", "--payload"])).await.unwrap();
        assert_eq!(code, 0, "{err}");
        if out.contains("evt-77 (attempt 1):") {
            shown = out;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(shown.contains("OUTCOME"), "a table first: {shown}");
    let details = &shown[shown.find("evt-77 (attempt 1):").unwrap()..];
    assert!(
        details.contains("\"type\": \"device-provisioned\"") && details.contains("cli-device"),
        "the payload, pretty-printed: {shown}"
    );
    let (code, _, err) = run(args(&["create", "--id", "bad", "--url", "ftp://x/"]))
        .await
        .unwrap();
    assert_eq!(code, 2, "a refused endpoint is a usage error");
    assert!(err.contains("url"), "{err}");
    let (code, _, _) = run(args(&["delete", "cli"])).await.unwrap();
    assert_eq!(code, 0);
    let (code, _, err) = run(args(&["get", "cli"])).await.unwrap();
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("404") || err.contains("no endpoint"), "{err}");
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cmdb_clients_use_their_own_names_and_one_signature_schemes_rotate_without_overlap() {
    const CMDB: &str = "cmdb.objects";
    let cluster = Cluster::start(&[CMDB], 1);
    let rx = receiver(Behaviour::Healthy).await;
    let mut config = api_config("api-cmdb");
    config.kafka.topics = vec![CMDB.into()];
    config.sources = vec![SourceConfig::for_preset(CMDB, Preset::Cmdb)];
    let (service, api) = service(config, &cluster).await;
    wait_ready(&api).await;

    let (status, types) = api.call("GET", "/v1/event-types", Some(VIEWER), None).await;
    assert_eq!(status, 200);
    assert_eq!(
        types["sources"][0],
        json!({"topic": CMDB, "preset": "cmdb", "types": ["create", "update", "delete"], "open": false})
    );
    // The old prefixed names can never match: refused, naming the field.
    let (status, refused) = api
        .admin(
            "POST",
            "/v1/endpoints",
            Some(json!({"id": "old", "url": rx.url("in"), "allow_http": true, "events": ["object.create"]})),
        )
        .await;
    assert_eq!(
        (status, refused["field"].as_str()),
        (400, Some("events")),
        "{refused}"
    );
    // The CMDB's names and its `active` flag.
    let (status, made) = api
        .admin(
            "POST",
            "/v1/endpoints",
            Some(json!({"id": "inv", "url": rx.url("in"), "allow_http": true, "events": ["create", "delete"], "active": false, "signature": "openmdm"})),
        )
        .await;
    assert_eq!(status, 201, "{made}");
    assert_eq!(made["enabled"], false);
    let (status, patched) = api
        .admin("PATCH", "/v1/endpoints/inv", Some(json!({"active": true})))
        .await;
    assert_eq!(
        (status, &patched["enabled"]),
        (200, &json!(true)),
        "{patched}"
    );

    // openmdm carries one signature: the answer says there is no overlap.
    let (status, rotated) = api
        .admin("POST", "/v1/endpoints/inv/rotate-secret", None)
        .await;
    assert_eq!(status, 200, "{rotated}");
    assert_eq!(rotated["overlap"], false);
    assert!(rotated["previous_secret_expires_at"].is_null());
    assert!(rotated["note"].as_str().unwrap().contains("no overlap"));
    let (_, shown) = api.admin("GET", "/v1/endpoints/inv", None).await;
    assert!(shown.get("previous_secret").is_none(), "{shown}");
    service.shutdown().await.unwrap();
}
