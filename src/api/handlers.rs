//! The `/v1` handlers of SPEC §6 and the health routes. Each reads its
//! input (errors name the field), works through the store, and answers
//! with endpoints as the `[[endpoints]]` table in JSON, secrets masked
//! except in the answer that created or rotated them, header values masked
//! except for an admin asking with `?reveal=headers`.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

use super::errors::{ApiError, ApiResult};
use super::extract::{Caller, IdParam, json_value, query_map, typed};
use super::validate::{self, Prepared};
use super::{ApiState, secrets};
use crate::config::{EndpointConfig, Role};
use crate::index::Endpoint;
use crate::index::endpoint::pattern_matches;

/// Endpoints in one create request at most.
const MAX_CREATE: usize = 1000;

pub mod rotate;
pub mod test_event;

pub use rotate::rotate;
pub use test_event::test;

type AppState = State<Arc<ApiState>>;

/// The endpoint `id`, or 404.
pub(super) fn existing(state: &ApiState, id: &str) -> ApiResult<Arc<Endpoint>> {
    state.store.get(id).ok_or_else(|| ApiError::no_endpoint(id))
}

/// The JSON shown for a stored endpoint.
pub(super) fn shown(p: &Prepared) -> Value {
    if p.generated_secret {
        secrets::revealed_json(&p.config)
    } else {
        secrets::masked_json(&p.config)
    }
}

/// `GET /healthz`: the process is up.
pub async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// The answer of `GET /healthz`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Health {
    /// `ok`.
    pub status: &'static str,
}

/// The answer of `GET /readyz` (200 when ready, else 503).
#[derive(Debug, Serialize, JsonSchema)]
pub struct Ready {
    /// Endpoints loaded, consuming, and no partition stalled.
    pub ready: bool,
    /// The endpoints were read from the store.
    pub endpoints_loaded: bool,
    /// The consumer has its assignment.
    pub consuming: bool,
    /// Assigned partitions whose due records are not being consumed.
    pub stalled_partitions: u64,
}

/// `GET /readyz`: the registry is loaded from the store, the consumer has
/// its assignment, and no assigned partition is stalled.
pub async fn readyz(State(state): AppState) -> Response {
    let loaded = state.store.is_loaded();
    let health = (state.consuming)();
    let ready = loaded && health.assigned && health.stalled_partitions == 0;
    let body = Ready {
        ready,
        endpoints_loaded: loaded,
        consuming: health.assigned,
        stalled_partitions: health.stalled_partitions,
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// `GET /v1/openapi.json`.
pub async fn openapi(State(state): AppState) -> Json<Value> {
    Json((*state.openapi).clone())
}

/// Reads one endpoint object of a create request.
fn new_config(item: Value, prefix: &str) -> ApiResult<EndpointConfig> {
    let Value::Object(mut object) = item else {
        let field = if prefix.is_empty() {
            "body".to_string()
        } else {
            prefix.trim_end_matches('.').to_string()
        };
        return Err(ApiError::bad_request(field, "must be an endpoint object"));
    };
    if !object.contains_key("id") {
        object.insert("id".into(), Value::String(new_id("ep_")));
    }
    typed(Value::Object(object), prefix)
}

/// A random id: `prefix` + 16 hex digits.
pub(super) fn new_id(prefix: &str) -> String {
    format!("{prefix}{:016x}", rand::random::<u64>())
}

/// `POST /v1/endpoints`: one endpoint object or an array of them.
pub async fn create(State(state): AppState, body: Bytes) -> ApiResult<Response> {
    let value = json_value(&body)?;
    let (items, many) = match value {
        Value::Array(items) => (items, true),
        other => (vec![other], false),
    };
    if items.is_empty() || items.len() > MAX_CREATE {
        return Err(ApiError::bad_request(
            "body",
            format!("must hold 1 to {MAX_CREATE} endpoints"),
        ));
    }
    let mut configs = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let prefix = if many {
            format!("[{i}].")
        } else {
            String::new()
        };
        configs.push((new_config(item, &prefix)?, prefix));
    }
    let prepared = create_all(&state, configs).await?;
    let shown: Vec<Value> = prepared.iter().map(shown).collect();
    let body = if many {
        Value::Array(shown)
    } else {
        shown.into_iter().next().unwrap_or(Value::Null)
    };
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// Validates and stores new endpoints (ids must be free); `prefix` of each
/// names its place in the request.
pub(super) async fn create_all(
    state: &ApiState,
    configs: Vec<(EndpointConfig, String)>,
) -> ApiResult<Vec<Prepared>> {
    let mut prepared = Vec::with_capacity(configs.len());
    let mut ids = std::collections::HashSet::new();
    for (config, prefix) in configs {
        if let Some(name) = secrets::masked_header(&config.headers) {
            return Err(ApiError::bad_request(
                format!("{prefix}headers.{name}"),
                "is a masked value; give the header's value",
            ));
        }
        if !ids.insert(config.id.clone()) {
            return Err(ApiError::bad_request(
                format!("{prefix}id"),
                format!("`{}` appears twice in this request", config.id),
            ));
        }
        refuse_unmatched(state, &config.events, &prefix)?;
        prepared.push(validate::new_endpoint(config, &state.settings, &prefix).await?);
    }
    let _write = state.store.write_lock().await;
    for (i, p) in prepared.iter().enumerate() {
        if state.store.get(&p.config.id).is_some() {
            let field = if prepared.len() > 1 {
                format!("[{i}].id")
            } else {
                "id".into()
            };
            return Err(ApiError::conflict(field, &p.config.id));
        }
    }
    let configs: Vec<EndpointConfig> = prepared.iter().map(|p| p.config.clone()).collect();
    state.store.put(&configs).await?;
    for p in &prepared {
        tracing::info!(endpoint = %p.config.id, "endpoint created");
    }
    Ok(prepared)
}

/// Refuses event patterns that can match no type the configured sources
/// produce (`source::types`; the file only warns).
fn refuse_unmatched(state: &ApiState, events: &[String], prefix: &str) -> ApiResult<()> {
    match crate::source::types::unmatched(events, &state.event_types) {
        Some(why) => Err(ApiError::bad_request(format!("{prefix}events"), why)),
        None => Ok(()),
    }
}

/// `GET /v1/event-types`: per input topic, its preset and the event types
/// its platform documents (`open`: it may produce others too).
pub async fn event_types(State(state): AppState) -> Json<EventTypes> {
    Json(EventTypes {
        sources: state.event_types.to_vec(),
    })
}

/// The answer of `GET /v1/event-types`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct EventTypes {
    /// One entry per input topic.
    pub sources: Vec<crate::source::types::SourceTypes>,
}

/// `GET /v1/endpoints?device=&group=&tenant=&event=`.
pub async fn list(
    State(state): AppState,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Vec<Value>>> {
    let q = query_map(query.as_deref());
    let filter = |name: &str| q.get(name).filter(|v| !v.is_empty()).map(String::as_str);
    let (device, group, tenant, event) = (
        filter("device"),
        filter("group"),
        filter("tenant"),
        filter("event"),
    );
    let snapshot = state.store.registry().snapshot();
    let mut found: Vec<&Arc<Endpoint>> = snapshot
        .endpoints()
        .iter()
        .filter(|e| {
            let c = &e.config;
            device.is_none_or(|d| c.devices.iter().any(|x| x == d))
                && group.is_none_or(|g| c.groups.iter().any(|x| x == g))
                && tenant.is_none_or(|t| &*c.tenant == t)
                && event.is_none_or(|t| c.events.iter().any(|p| pattern_matches(p, t)))
        })
        .collect();
    found.sort_by(|a, b| a.id().cmp(b.id()));
    Ok(Json(
        found
            .iter()
            .map(|e| secrets::masked_json(&e.config))
            .collect(),
    ))
}

/// `GET /v1/endpoints/{id}?reveal=headers`: header values in the clear
/// for admins who ask; masked otherwise.
pub async fn get(
    State(state): AppState,
    IdParam(id): IdParam,
    Caller(role): Caller,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Value>> {
    let reveal = reveal_headers(query.as_deref(), role)?;
    let config = &existing(&state, &id)?.config;
    Ok(Json(if reveal {
        secrets::headers_revealed_json(config)
    } else {
        secrets::masked_json(config)
    }))
}

/// Whether `?reveal=headers` asks for header values, and the caller may
/// see them (admins only: 403 for viewers; 400 for another value).
fn reveal_headers(query: Option<&str>, role: Option<Role>) -> ApiResult<bool> {
    match query_map(query).get("reveal").map(String::as_str) {
        None => Ok(false),
        Some("headers") if role == Some(Role::Admin) => Ok(true),
        Some("headers") => Err(ApiError::reveal_forbidden()),
        Some(_) => Err(ApiError::bad_request("reveal", "must be `headers`")),
    }
}

/// Stores `incoming` in place of endpoint `id` (the write lock held). A
/// masked header value in it keeps the stored one.
pub(super) async fn replace(
    state: &ApiState,
    id: &str,
    incoming: impl FnOnce(&EndpointConfig) -> ApiResult<EndpointConfig>,
) -> ApiResult<Prepared> {
    let _write = state.store.write_lock().await;
    let current = existing(state, id)?;
    let mut incoming = incoming(&current.config)?;
    secrets::keep_masked_headers(&current.config.headers, &mut incoming.headers).map_err(
        |name| {
            ApiError::bad_request(
                format!("headers.{name}"),
                "is a masked value, and the endpoint has no such header to keep; give its value",
            )
        },
    )?;
    if incoming.events != current.config.events {
        refuse_unmatched(state, &incoming.events, "")?;
    }
    let prepared = validate::replacement(&current.config, incoming, &state.settings).await?;
    state
        .store
        .put(std::slice::from_ref(&prepared.config))
        .await?;
    tracing::info!(endpoint = %id, "endpoint updated");
    Ok(prepared)
}

/// `PUT /v1/endpoints/{id}`: the whole endpoint (the id may be left out).
pub async fn put(
    State(state): AppState,
    IdParam(id): IdParam,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let value = json_value(&body)?;
    let Value::Object(mut object) = value else {
        return Err(ApiError::bad_request("body", "must be an endpoint object"));
    };
    object
        .entry("id")
        .or_insert_with(|| Value::String(id.clone()));
    let config: EndpointConfig = typed(Value::Object(object), "")?;
    let prepared = replace(&state, &id, |_| Ok(config)).await?;
    Ok(Json(shown(&prepared)))
}

/// `PATCH /v1/endpoints/{id}`: a JSON merge patch (RFC 7396).
pub async fn patch(
    State(state): AppState,
    IdParam(id): IdParam,
    body: Bytes,
) -> ApiResult<Json<Value>> {
    let patch = json_value(&body)?;
    if !patch.is_object() {
        return Err(ApiError::bad_request(
            "body",
            "must be a JSON object (a merge patch)",
        ));
    }
    let mut patch = patch;
    // `active` (the CMDB's name) patches `enabled`.
    if let Some(object) = patch.as_object_mut()
        && !object.contains_key("enabled")
        && let Some(active) = object.remove("active")
    {
        object.insert("enabled".into(), active);
    }
    let prepared = replace(&state, &id, |current| {
        let mut merged = serde_json::to_value(current)
            .map_err(|e| ApiError::bad_request("body", e.to_string()))?;
        merge_patch(&mut merged, &patch);
        typed(merged, "")
    })
    .await?;
    Ok(Json(shown(&prepared)))
}

/// RFC 7396: objects merge, `null` removes, anything else replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(serde_json::Map::new());
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// `DELETE /v1/endpoints/{id}`.
pub async fn delete(State(state): AppState, IdParam(id): IdParam) -> ApiResult<StatusCode> {
    let _write = state.store.write_lock().await;
    existing(&state, &id)?;
    state.store.delete(&[id.as_str()]).await?;
    tracing::info!(endpoint = %id, "endpoint deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn set_enabled(state: &ApiState, id: &str, enabled: bool) -> ApiResult<Json<Value>> {
    let prepared = replace(state, id, |current| {
        Ok(EndpointConfig {
            enabled,
            disabled: None,
            ..current.clone()
        })
    })
    .await?;
    Ok(Json(shown(&prepared)))
}

/// `POST /v1/endpoints/{id}/enable`.
pub async fn enable(State(state): AppState, IdParam(id): IdParam) -> ApiResult<Json<Value>> {
    set_enabled(&state, &id, true).await
}

/// `POST /v1/endpoints/{id}/disable`.
pub async fn disable(State(state): AppState, IdParam(id): IdParam) -> ApiResult<Json<Value>> {
    set_enabled(&state, &id, false).await
}

/// `GET /v1/endpoints/{id}/stats`: counts by outcome, latency percentiles.
pub async fn stats(State(state): AppState, IdParam(id): IdParam) -> ApiResult<Json<EndpointStats>> {
    existing(&state, &id)?;
    let stats = state.store.registry().activity(&id).stats();
    Ok(Json(EndpointStats { id, stats }))
}

/// The answer of `GET /v1/endpoints/{id}/stats`.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "Stats")]
pub struct EndpointStats {
    /// The endpoint.
    pub id: String,
    /// Its counts and latencies.
    #[serde(flatten)]
    pub stats: crate::index::activity::ActivityStats,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut target = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1]});
        merge_patch(
            &mut target,
            &json!({"a": "z", "c": {"f": null}, "l": [2, 3]}),
        );
        assert_eq!(target, json!({"a": "z", "c": {"d": "e"}, "l": [2, 3]}));
    }

    #[test]
    fn only_admins_asking_for_headers_see_them() {
        assert_eq!(reveal_headers(None, Some(Role::Viewer)), Ok(false));
        assert_eq!(reveal_headers(Some("x=1"), Some(Role::Admin)), Ok(false));
        assert_eq!(
            reveal_headers(Some("reveal=headers"), Some(Role::Admin)),
            Ok(true)
        );
        let viewer = reveal_headers(Some("reveal=headers"), Some(Role::Viewer)).unwrap_err();
        assert_eq!(viewer.status, StatusCode::FORBIDDEN);
        let other = reveal_headers(Some("reveal=secret"), Some(Role::Admin)).unwrap_err();
        assert_eq!(
            (other.status, other.body.field.as_deref()),
            (StatusCode::BAD_REQUEST, Some("reveal"))
        );
    }
}
