//! The activity routes: an endpoint's recent attempts, from the durable
//! activity log (`<prefix>.attempts`, so any instance answers for all and
//! the answer survives restarts) merged with this instance's in-memory
//! ring (which has the attempts of the last 100 ms that the log's producer
//! may still hold), and the events themselves on request.

use std::collections::HashSet;
use std::sync::Arc;

use axum::Json;
use axum::extract::{RawQuery, State};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

use super::ApiState;
use super::errors::{ApiError, ApiResult};
use super::extract::{IdParam, query_map};
use super::handlers::existing;
use crate::index::activity::{AttemptRecord, RING_CAPACITY};

/// Attempts returned when `limit` is not given.
const DEFAULT_ATTEMPTS: usize = 50;

type AppState = State<Arc<ApiState>>;

/// `limit` (1..=[`RING_CAPACITY`], default [`DEFAULT_ATTEMPTS`]).
pub(super) fn limit_param(text: Option<&String>, name: &str) -> ApiResult<usize> {
    match text {
        None => Ok(DEFAULT_ATTEMPTS),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=RING_CAPACITY).contains(&n) => Ok(n),
            _ => Err(ApiError::bad_request(
                name,
                format!("must be a whole number from 1 to {RING_CAPACITY}"),
            )),
        },
    }
}

/// A boolean query parameter (`true`/`false`, default false).
pub(super) fn flag_param(text: Option<&String>, name: &str) -> ApiResult<bool> {
    match text.map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(_) => Err(ApiError::bad_request(name, "must be true or false")),
    }
}

/// The newest `limit` attempts of endpoint `id`, newest first: the durable
/// log's, plus those of this instance's ring the log does not show yet.
/// When the log cannot be read, the ring's alone (and a warning).
pub(super) async fn recent_attempts(
    state: &ApiState,
    id: &str,
    limit: usize,
) -> Vec<AttemptRecord> {
    let local = state.store.registry().activity(id).recent(limit);
    let Some(reader) = &state.attempts else {
        return local;
    };
    match reader.recent(id, limit).await {
        Ok(durable) => merge(durable, local, limit),
        Err(e) => {
            tracing::warn!(endpoint = %id, error = %e, "reading the activity log: answering from this instance's memory");
            local
        }
    }
}

/// `durable` plus the `local` attempts it lacks (same webhook id and
/// attempt), newest first, at most `limit`.
fn merge(
    durable: Vec<AttemptRecord>,
    local: Vec<AttemptRecord>,
    limit: usize,
) -> Vec<AttemptRecord> {
    let seen: HashSet<(String, u32)> = durable
        .iter()
        .map(|r| (r.webhook_id.clone(), r.attempt))
        .collect();
    let mut all = durable;
    all.extend(
        local
            .into_iter()
            .filter(|r| !seen.contains(&(r.webhook_id.clone(), r.attempt))),
    );
    all.sort_by_key(|r| std::cmp::Reverse(r.time_ms));
    all.truncate(limit);
    all
}

/// The events of `records` as consumed (`None` where not available).
pub(super) async fn payloads(state: &ApiState, records: &[AttemptRecord]) -> Vec<Value> {
    let Some(reader) = &state.attempts else {
        return vec![Value::Null; records.len()];
    };
    let sources = records.iter().map(|r| r.source.clone()).collect();
    reader
        .payloads(sources)
        .await
        .into_iter()
        .map(|bytes| match bytes {
            None => Value::Null,
            Some(b) => serde_json::from_slice(&b)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&b).into_owned())),
        })
        .collect()
}

/// `GET /v1/endpoints/{id}/attempts?limit=&payload=`: recent attempts,
/// newest first.
pub async fn attempts(
    State(state): AppState,
    IdParam(id): IdParam,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Vec<AttemptShown>>> {
    let q = query_map(query.as_deref());
    let limit = limit_param(q.get("limit"), "limit")?;
    let with_payload = flag_param(q.get("payload"), "payload")?;
    existing(&state, &id)?;
    let records = recent_attempts(&state, &id, limit).await;
    let payloads = if with_payload {
        payloads(&state, &records)
            .await
            .into_iter()
            .map(Some)
            .collect()
    } else {
        vec![None; records.len()]
    };
    Ok(Json(
        records
            .into_iter()
            .zip(payloads)
            .map(|(record, payload)| AttemptShown { record, payload })
            .collect(),
    ))
}

/// One attempt as `GET /v1/endpoints/{id}/attempts` shows it.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "Attempt")]
pub struct AttemptShown {
    /// The attempt.
    #[serde(flatten)]
    pub record: AttemptRecord,
    /// The event as consumed (with `payload=true`: its JSON, or its text;
    /// null once the source topic's retention removed it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::activity::Outcome;

    fn rec(time_ms: i64, webhook_id: &str, attempt: u32) -> AttemptRecord {
        AttemptRecord {
            time_ms,
            endpoint: "ep".into(),
            event_id: "e".into(),
            event_type: "t".into(),
            webhook_id: webhook_id.into(),
            attempt,
            status: Some(200),
            outcome: Outcome::Delivered,
            reason: None,
            latency_ms: 1.0,
            error: String::new(),
            source: String::new(),
        }
    }

    #[test]
    fn the_ring_adds_only_what_the_log_lacks() {
        let durable = vec![rec(3, "a", 2), rec(1, "a", 1)];
        let local = vec![rec(4, "b", 1), rec(3, "a", 2)];
        let merged = merge(durable, local, 10);
        let keys: Vec<_> = merged
            .iter()
            .map(|r| (r.webhook_id.as_str(), r.attempt))
            .collect();
        assert_eq!(keys, [("b", 1), ("a", 2), ("a", 1)]);
        assert_eq!(
            merge(vec![rec(1, "a", 1)], vec![rec(2, "b", 1)], 1).len(),
            1
        );
    }
}
