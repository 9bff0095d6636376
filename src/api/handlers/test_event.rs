//! `POST /v1/endpoints/{id}/test`: one signed test event, shaped as the
//! endpoint's platform shapes its events, sent at once through the
//! delivery path's request builder, the receiver's answer returned.
//!
//! Sends outside the pipeline: nothing is consumed, retried or committed.

use std::time::{Duration, Instant};

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::{Value, json};

use super::{AppState, existing, new_id};
use crate::api::errors::{ApiError, ApiResult};
use crate::api::extract::IdParam;
use crate::config::PayloadConfig;
use crate::deliver::request::{Outgoing, send_attempt, webhook_id};
use crate::deliver::shape::{EventFacts, shape};
use crate::outcome::classify::Verdict;
use crate::sign::SignatureScheme;

/// Longest a `test` request waits for the receiver.
const TEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The type of the event `test` sends.
const TEST_EVENT_TYPE: &str = "hookstream.test";

/// The event `test` sends, in the shape the endpoint's platform sends its
/// own events: OpenMDM's `{id, event, timestamp, data}` for an OpenMDM
/// signature, else `{id, type, time, data}` (Mender's shape).
fn test_event(scheme: SignatureScheme, event_id: &str, now_ms: i64, endpoint: &str) -> Value {
    let time = crate::deliver::shape::iso_millis(now_ms);
    let data =
        json!({"endpoint": endpoint, "message": "a test event sent from the hookstream API"});
    match scheme {
        SignatureScheme::Openmdm => json!({
            "id": event_id,
            "event": TEST_EVENT_TYPE,
            "timestamp": time,
            "data": data,
        }),
        _ => json!({
            "id": event_id,
            "type": TEST_EVENT_TYPE,
            "time": time,
            "data": data,
        }),
    }
}

/// The answer of `test`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct TestResult {
    /// The receiver answered 2xx.
    pub delivered: bool,
    /// The HTTP status, if an answer arrived.
    pub status: Option<u16>,
    /// Duration of the exchange.
    pub latency_ms: f64,
    /// What went wrong (empty when delivered).
    pub error: String,
    /// The test event's id.
    pub event_id: String,
    /// The delivery id sent as `webhook-id`.
    pub webhook_id: String,
}

/// `POST /v1/endpoints/{id}/test`: sends a signed `hookstream.test` event
/// now (enabled or not) and returns what the receiver answered.
pub async fn test(State(state): AppState, IdParam(id): IdParam) -> ApiResult<Json<TestResult>> {
    let endpoint = existing(&state, &id)?;
    let event_id = new_id("test_");
    let now_ms = crate::core::now_ms();
    let event = test_event(endpoint.config.signature, &event_id, now_ms, &id);
    let event = if endpoint.config.batch.max_events > 1 {
        json!([event])
    } else {
        event
    };
    let raw = Bytes::from(event.to_string());
    // The endpoint's envelope (Standard Webhooks, CloudEvents) around the
    // test event; its pointer, written for a platform's events, does not
    // apply to the test event.
    let envelope = endpoint.config.payload.as_deref().map(|p| PayloadConfig {
        pointer: None,
        ..p.clone()
    });
    let shaped = shape(
        envelope.as_ref(),
        &EventFacts {
            body: &raw,
            id: &event_id,
            event_type: TEST_EVENT_TYPE,
            time_ms: now_ms,
            topic: "hookstream.test",
            platform_pointer: None,
        },
    )
    .map_err(|e| {
        ApiError::bad_request(
            "payload",
            format!(
                "the endpoint's payload cannot shape the test event: {}",
                e.0
            ),
        )
    })?;
    let body = shaped.body;
    let delivery_id = webhook_id(&event_id, &id);
    let started = Instant::now();
    let attempt = send_attempt(
        &state.clients,
        &endpoint,
        Outgoing {
            body: &body,
            webhook_id: &delivery_id,
            event_type: TEST_EVENT_TYPE,
            event_id: &event_id,
            event_time_ms: now_ms,
            timestamp: now_ms.div_euclid(1000),
            content_type: shaped.content_type,
            cloudevent_source: shaped.cloudevent_source.as_deref(),
            trace: None,
        },
        &crate::outcome::policy::RetryRules::DEFAULT,
        state.settings.retry_after_cap,
    );
    let result = match tokio::time::timeout(TEST_TIMEOUT, attempt).await {
        Ok(report) => TestResult {
            delivered: matches!(report.verdict, Verdict::Delivered),
            status: report.status,
            latency_ms: report.latency.as_secs_f64() * 1000.0,
            error: report.last_error,
            event_id,
            webhook_id: delivery_id,
        },
        Err(_) => TestResult {
            delivered: false,
            status: None,
            latency_ms: started.elapsed().as_secs_f64() * 1000.0,
            error: format!("no answer within {TEST_TIMEOUT:?}"),
            event_id,
            webhook_id: delivery_id,
        },
    };
    Ok(Json(result))
}
