//! One receiver per fleet platform, written from that platform's own
//! documentation (`shared/platform-docs`), not from hookstream's code: what
//! the body is, which headers arrive, how the signature verifies (an HMAC
//! computed here, by the documented algorithm), and which failures are
//! retried when.
//!
//! - Magistrala/Mainflux: "each webhook receives an HTTP POST with the
//!   message payload as the request body", with the webhook's custom
//!   headers (a `Content-Type` among them).
//! - CMDB: event types `create`/`update`/`delete`; the body is the object
//!   (created, updated, or as it was before deletion); `active` flag.
//! - OpenMDM: `X-OpenMDM-Delivery` is the event's id (receivers dedupe on
//!   it), `X-OpenMDM-Timestamp` the time the event was generated (ISO 8601,
//!   ms), `X-OpenMDM-Signature: sha256=<hex HMAC of the raw body>`; 5xx
//!   retried at 0, 1, 3, 7 s then given up; 4xx other than 429 final.
//! - Mender: the event as Mender sends it, `X-Men-Signature` = hex
//!   HMAC-SHA256 of the payload under the hex-decoded secret.
//! - Envelopes: Standard Webhooks `{type, timestamp, data}` and CloudEvents
//!   (binary and structured), signed over the exact bytes sent, the same on
//!   every attempt.

mod common;

use std::time::Duration;

use common::*;
use hmac::{Hmac, KeyInit, Mac};
use hookstream::config::{Config, Envelope, PayloadConfig, RetryConfig, RetryPolicyName};
use hookstream::demo::receiver::{Behaviour, ReceivedRequest};
use hookstream::source::extract::Preset;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

fn hex_hmac(key: &[u8], body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(key).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// OpenMDM's documented check: `sha256=` + hex HMAC-SHA256 of the raw body
/// under the signing secret.
fn openmdm_verifies(req: &ReceivedRequest, secret: &str) -> bool {
    req.header("x-openmdm-signature")
        == Some(format!("sha256={}", hex_hmac(secret.as_bytes(), &req.body)).as_str())
}

/// Mender's documented check: hex HMAC-SHA256 of the payload; the secret
/// is hex.
fn mender_verifies(req: &ReceivedRequest, secret_hex: &str) -> bool {
    let key = hex::decode(secret_hex).unwrap();
    req.header("x-men-signature") == Some(hex_hmac(&key, &req.body).as_str())
}

fn dlq(cluster: &Cluster) -> Vec<DlqRecord> {
    cluster.read_all("hookstream.dlq")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mainflux_receiver_gets_the_message_payload_with_its_headers() {
    const TOPIC: &str = "magistrala.messages";
    let cluster = Cluster::start(&[TOPIC], 1);
    let ingest = receiver(Behaviour::Healthy).await;
    let mut config = config("magistrala-receiver", &[(TOPIC, Preset::Magistrala)]);
    let mut webhook = endpoint("pipeline", ingest.url("mainflux"), &["*"], "none", "");
    webhook.headers.insert("X-Api-Key".into(), "k-123".into());
    // The platform's documentation shows a Content-Type among the headers.
    webhook
        .headers
        .insert("Content-Type".into(), "application/senml+json".into());
    config.endpoints.push(webhook);
    let pipeline = start(config, &cluster).await;
    let message = include_str!("../src/samples/magistrala-message.json").trim();
    cluster.produce(TOPIC, "p", message.as_bytes(), &[]).await;

    wait_for("the message", Duration::from_secs(20), || {
        ingest.log().accepted_count() >= 1
    })
    .await;
    let req = &ingest.log().recorded()[0];
    assert_eq!(
        &req.body[..],
        br#"[{"bn":"sensor-1:","n":"temp","u":"Cel","v":21.5}]"#,
        "the body is the message payload, byte for byte"
    );
    assert_eq!(req.header("x-api-key"), Some("k-123"));
    assert_eq!(req.header("content-type"), Some("application/senml+json"));
    pipeline.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cmdb_receiver_gets_the_object_for_the_documented_event_names() {
    const TOPIC: &str = "cmdb.objects";
    let cluster = Cluster::start(&[TOPIC], 1);
    let inventory = receiver(Behaviour::Healthy).await;
    let mut config = config("cmdb-receiver", &[(TOPIC, Preset::Cmdb)]);
    // As the CMDB's webhook form has it: event types and an `active` flag.
    let from_file: Config = Config::from_toml(&format!(
        r#"
[kafka]
brokers = "embedded"
topics = ["{TOPIC}"]
[[endpoints]]
id = "inventory"
url = "{}"
events = ["create", "delete"]
active = true
allow_http = true
signature = "none"
"#,
        inventory.url("object-created")
    ))
    .expect("the CMDB's names and `active` are accepted");
    assert!(from_file.endpoints[0].enabled);
    config.endpoints = from_file.endpoints;
    let pipeline = start(config, &cluster).await;
    for (action, object) in [
        (
            "create",
            r#"{"public_id":1,"type":"server","state":"created"}"#,
        ),
        (
            "update",
            r#"{"public_id":1,"type":"server","state":"updated"}"#,
        ),
        (
            "delete",
            r#"{"public_id":1,"type":"server","state":"before deletion"}"#,
        ),
    ] {
        let event = format!(
            r#"{{"event":"{action}","object":{object},"changes":{{}},"timestamp":"2026-04-15T12:10:00Z"}}"#
        );
        cluster.produce(TOPIC, "1", event.as_bytes(), &[]).await;
    }

    wait_for("create and delete", Duration::from_secs(20), || {
        inventory.log().accepted_count() >= 2
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // (Requests to one endpoint may overlap: compared as a set.)
    let mut bodies: Vec<String> = inventory
        .log()
        .recorded()
        .iter()
        .map(|r| String::from_utf8(r.body.to_vec()).unwrap())
        .collect();
    bodies.sort();
    assert_eq!(
        bodies,
        [
            r#"{"public_id":1,"type":"server","state":"before deletion"}"#,
            r#"{"public_id":1,"type":"server","state":"created"}"#,
        ],
        "the created object and the object as it was before deletion; no update"
    );
    pipeline.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openmdm_receiver_sees_the_documented_headers_and_retry_timeline() {
    const TOPIC: &str = "openmdm.events";
    const SECRET: &str = "openmdm-webhook-secret";
    let cluster = Cluster::start(&[TOPIC], 1);
    let failing = receiver(Behaviour::Status(503)).await;
    let refusing = receiver(Behaviour::Status(404)).await;
    let mut config = config("openmdm-receiver", &[(TOPIC, Preset::Openmdm)]);
    for (id, r) in [("analytics", &failing), ("slack-alerts", &refusing)] {
        let mut e = endpoint(
            id,
            r.url("mdm/events"),
            &["device.enrolled"],
            "openmdm",
            SECRET,
        );
        e.retry = Some(Box::new(RetryConfig {
            policy: RetryPolicyName::Openmdm,
            ..RetryConfig::default()
        }));
        e.headers
            .insert("Content-Type".into(), "application/json".into());
        config.endpoints.push(e);
    }
    // Tiers that hold the documented delays (1 s, 2 s, 4 s).
    config.topics.retry_tiers = ["1s", "2s", "4s"]
        .map(|t| hookstream::config::HumanDuration(hookstream::config::parse_duration(t).unwrap()))
        .to_vec();
    let pipeline = start(config, &cluster).await;
    let event = include_str!("../src/samples/openmdm-device-enrolled.json").trim();
    cluster
        .produce(TOPIC, "dev_123", event.as_bytes(), &[])
        .await;

    wait_for("two dead letters", Duration::from_secs(40), || {
        dlq(&cluster).len() >= 2
    })
    .await;
    let attempts = failing.log().recorded();
    assert_eq!(attempts.len(), 4, "3 retries after the first attempt");
    let start = attempts[0].received_at;
    let at: Vec<f64> = attempts
        .iter()
        .map(|r| (r.received_at - start).as_secs_f64())
        .collect();
    // t=0, 1, 3, 7 s: each gap at least the documented backoff (1, 2, 4 s),
    // plus what reading a tier back adds (a poll, a busy machine).
    for (i, gap) in [1.0, 2.0, 4.0].into_iter().enumerate() {
        let got = at[i + 1] - at[i];
        assert!(
            got >= gap - 0.05 && got < gap + 2.0,
            "attempts at {at:?}, documented 0, 1, 3, 7 s"
        );
    }
    for req in &attempts {
        assert_eq!(req.header("x-openmdm-event"), Some("device.enrolled"));
        assert_eq!(
            req.header("x-openmdm-delivery"),
            Some("7f3e9c20-9a8f-4e2a-8e29-4b5f0a3c0d10"),
            "the event's id, on every attempt (receivers dedupe on it)"
        );
        assert_eq!(
            req.header("x-openmdm-timestamp"),
            Some("2026-04-15T12:00:00.000Z"),
            "when the event was generated"
        );
        assert_eq!(req.header("content-type"), Some("application/json"));
        assert_eq!(&req.body[..], event.as_bytes(), "OpenMDM's own JSON body");
        assert!(openmdm_verifies(req, SECRET), "documented HMAC check");
    }
    assert_eq!(refusing.log().recorded().len(), 1, "404 is permanent");
    let letters = dlq(&cluster);
    let reason = |endpoint: &str| {
        letters
            .iter()
            .find(|l| l.header("hookstream-endpoint") == Some(endpoint))
            .and_then(|l| l.header("hookstream-reason"))
            .map(str::to_string)
    };
    assert_eq!(reason("analytics").as_deref(), Some("exhausted"));
    assert_eq!(reason("slack-alerts").as_deref(), Some("http_404"));
    pipeline.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mender_receiver_verifies_x_men_signature_over_the_event() {
    const TOPIC: &str = "mender.events";
    const SECRET: &str = "a3f1c2d4e5f60718293a4b5c6d7e8f90";
    let cluster = Cluster::start(&[TOPIC], 1);
    let app = receiver(Behaviour::FailFirst {
        times: 1,
        status: 500,
        retry_after: None,
    })
    .await;
    let mut config = config("mender-receiver", &[(TOPIC, Preset::Mender)]);
    config.endpoints.push(endpoint(
        "integration",
        app.url("hook"),
        &["device-status-changed", "devices-inventory-changed"],
        "mender",
        SECRET,
    ));
    let pipeline = start(config, &cluster).await;
    let event = include_str!("../src/samples/mender-device-status-changed.json").trim();
    cluster.produce(TOPIC, "d", event.as_bytes(), &[]).await;

    wait_for(
        "the event, after one retry",
        Duration::from_secs(20),
        || app.log().accepted_count() >= 1,
    )
    .await;
    let reqs = app.log().recorded();
    assert_eq!(reqs.len(), 2);
    for req in &reqs {
        assert_eq!(
            &req.body[..],
            event.as_bytes(),
            "the event as Mender sends it"
        );
        assert!(mender_verifies(req, SECRET));
        assert_eq!(
            req.header("x-men-algorithm"),
            Some("MEN-HMAC-SHA256-Payload")
        );
    }
    pipeline.shutdown().await.expect("clean shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelopes_are_signed_as_sent_and_the_same_on_every_attempt() {
    const TOPIC: &str = "magistrala.messages";
    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let cluster = Cluster::start(&[TOPIC], 1);
    let flaky = |_| async {
        receiver(Behaviour::FailFirst {
            times: 1,
            status: 503,
            retry_after: None,
        })
        .await
    };
    let (sw, binary, structured) = (flaky(0).await, flaky(1).await, flaky(2).await);
    let mut config = config("envelopes", &[(TOPIC, Preset::Magistrala)]);
    for (id, r, envelope) in [
        ("sw", &sw, Envelope::StandardWebhooks),
        ("ce-binary", &binary, Envelope::CloudeventsBinary),
        (
            "ce-structured",
            &structured,
            Envelope::CloudeventsStructured,
        ),
    ] {
        let mut e = endpoint(id, r.url("in"), &["*"], "standard", SECRET);
        e.payload = Some(Box::new(PayloadConfig {
            pointer: Some("/payload".into()),
            envelope,
        }));
        config.endpoints.push(e);
    }
    let pipeline = start(config, &cluster).await;
    let message = include_str!("../src/samples/magistrala-message.json").trim();
    cluster.produce(TOPIC, "p", message.as_bytes(), &[]).await;

    for r in [&sw, &binary, &structured] {
        wait_for("delivery after a retry", Duration::from_secs(20), || {
            r.log().accepted_count() >= 1
        })
        .await;
    }
    for r in [&sw, &binary, &structured] {
        let reqs = r.log().recorded();
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].body, reqs[1].body, "shaped the same on the retry");
        for req in &reqs {
            assert!(independently_verified("standard", SECRET, req));
        }
    }
    let sw_body: serde_json::Value = serde_json::from_slice(&sw.log().recorded()[0].body).unwrap();
    assert_eq!(sw_body["type"], "temperature");
    assert_eq!(sw_body["timestamp"], "2026-04-15T12:00:00.000Z");
    assert_eq!(sw_body["data"][0]["n"], "temp");
    let bin = &binary.log().recorded()[1];
    assert_eq!(bin.header("ce-specversion"), Some("1.0"));
    assert_eq!(bin.header("ce-type"), Some("temperature"));
    assert_eq!(
        bin.header("ce-source"),
        Some("/hookstream/magistrala.messages")
    );
    assert_eq!(bin.header("ce-time"), Some("2026-04-15T12:00:00.000Z"));
    assert!(bin.header("ce-id").is_some());
    assert_eq!(
        &bin.body[..],
        br#"[{"bn":"sensor-1:","n":"temp","u":"Cel","v":21.5}]"#
    );
    let st = &structured.log().recorded()[1];
    assert_eq!(
        st.header("content-type"),
        Some("application/cloudevents+json")
    );
    let ce: serde_json::Value = serde_json::from_slice(&st.body).unwrap();
    assert_eq!(ce["specversion"], "1.0");
    assert_eq!(ce["id"], bin.header("ce-id").unwrap());
    assert_eq!(ce["data"][0]["v"], 21.5);
    pipeline.shutdown().await.expect("clean shutdown");
}
