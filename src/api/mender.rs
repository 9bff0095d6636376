//! Mender-compatible webhook integrations, following the management API of
//! Mender's iot-manager service (`/api/management/v1/iot-manager/...`), so
//! Mender's UI and clients can manage hookstream endpoints and read their
//! activity.
//!
//! An integration `{provider: "webhook", credentials: {type: "http", http:
//! {url, secret}}, description, scope}` is an endpoint with a `scope`
//! (`deviceauth` unless given), its URL, the `mender` signature with the hex
//! secret (no signature without one, as Mender), the description as its
//! name. Integrations are the endpoints that have a scope. The events
//! listing is the durable activity log grouped by event: the event as sent
//! with `delivery_statuses` (the latest attempt per integration). What
//! differs from iot-manager is in docs/api.md ("Mender integrations").

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::ApiState;
use super::activity::{flag_param, payloads, recent_attempts};
use super::errors::{ApiError, ApiResult};
use super::extract::{IdParam, json_value, query_map, typed};
use super::handlers::{create_all, existing, replace};
use super::mainflux::uuid;
use crate::config::{EndpointConfig, Scope};
use crate::index::activity::{AttemptRecord, Outcome};
use crate::sign::SignatureScheme;

type AppState = State<Arc<ApiState>>;

/// Where integrations live.
const INTEGRATIONS: &str = "/api/management/v1/iot-manager/integrations";
/// Events listed at most (`page` × `per_page`).
const MAX_EVENTS: usize = 1000;
/// A secret as Mender shows it.
const OMITTED: &str = "<omitted>";

/// `credentials.http` as written: where to POST and the signing secret.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpCredentials {
    /// The receiver's URL.
    url: String,
    /// Hex; signs `X-Men-Signature` (no signature without one).
    #[serde(default)]
    #[schemars(pattern(r"^[0-9a-f]{1,64}$"))]
    secret: Option<String>,
}

/// An integration's `credentials` as written (and the body of
/// `PUT .../credentials`).
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "MenderCredentials")]
pub struct Credentials {
    /// `http`, the one type hookstream takes.
    #[serde(rename = "type")]
    #[schemars(extend("enum" = ["http"]))]
    kind: String,
    /// The receiver.
    #[serde(default)]
    http: Option<HttpCredentials>,
}

/// An integration as Mender clients register it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "MenderIntegrationInput")]
pub struct IntegrationInput {
    /// Its id (generated when left out).
    #[serde(default)]
    id: Option<String>,
    /// `webhook`, the one provider hookstream takes.
    #[schemars(extend("enum" = ["webhook"]))]
    provider: String,
    /// Where to send and how to sign.
    credentials: Credentials,
    /// Shown as the endpoint's name.
    #[serde(default)]
    #[schemars(length(max = 1024))]
    description: Option<String>,
    /// The event set (default `deviceauth`).
    #[serde(default)]
    scope: Option<Scope>,
}

/// An endpoint as Mender shows an integration.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "MenderIntegration")]
pub struct Integration {
    /// Its id (the endpoint's).
    id: String,
    /// Always `webhook`.
    #[schemars(extend("enum" = ["webhook"]))]
    provider: &'static str,
    /// Where it sends.
    credentials: ShownCredentials,
    /// The endpoint's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    /// Its event set.
    scope: Option<Scope>,
}

/// `credentials` as Mender shows them: the secret left out.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "MenderShownCredentials")]
pub struct ShownCredentials {
    /// Always `http`.
    #[serde(rename = "type")]
    #[schemars(extend("enum" = ["http"]))]
    kind: &'static str,
    /// The receiver.
    http: ShownHttp,
}

/// `credentials.http` as Mender shows it.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ShownHttp {
    /// The receiver's URL.
    url: String,
    /// `<omitted>` when the integration has a secret.
    #[serde(skip_serializing_if = "Option::is_none")]
    secret: Option<&'static str>,
}

fn integration(c: &EndpointConfig) -> Integration {
    Integration {
        id: c.id.clone(),
        provider: "webhook",
        credentials: ShownCredentials {
            kind: "http",
            http: ShownHttp {
                url: c.url.clone(),
                secret: (c.secret.is_some() || c.secret_env.is_some()).then_some(OMITTED),
            },
        },
        description: (!c.name.is_empty()).then(|| c.name.to_string()),
        scope: c.scope,
    }
}

/// One event of `GET .../events`: the event as sent, with the latest
/// attempt of every integration it went to.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "MenderEvent")]
pub struct Event {
    /// The event as sent (`id`, `type`, `data`, `time`).
    #[serde(flatten)]
    event: Map<String, Value>,
    /// The latest attempt per integration.
    delivery_statuses: Vec<DeliveryStatus>,
}

/// One integration's latest attempt at an event.
#[derive(Debug, Serialize, JsonSchema)]
pub struct DeliveryStatus {
    /// The integration.
    integration_id: String,
    /// It answered 2xx.
    success: bool,
    /// The HTTP status, if an answer arrived.
    #[serde(skip_serializing_if = "Option::is_none")]
    status_code: Option<u16>,
    /// What went wrong.
    #[serde(skip_serializing_if = "String::is_empty")]
    error: String,
}

/// The URL and secret of `credentials` (field names under `credentials`).
fn http_of(credentials: Credentials) -> ApiResult<HttpCredentials> {
    if credentials.kind != "http" {
        return Err(ApiError::bad_request(
            "credentials.type",
            "must be \"http\" (hookstream serves webhook integrations only)",
        ));
    }
    let http = credentials
        .http
        .ok_or_else(|| ApiError::bad_request("credentials.http", "is required"))?;
    if let Some(secret) = &http.secret {
        let hex_ok = !secret.is_empty()
            && secret.len() <= 64
            && secret
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex_ok && secret != OMITTED {
            return Err(ApiError::bad_request(
                "credentials.http.secret",
                "must be 1 to 64 lower-case hexadecimal digits",
            ));
        }
    }
    Ok(http)
}

/// Applies URL and secret to `config` (a secret of `<omitted>` keeps the
/// current one).
fn set_credentials(config: &mut EndpointConfig, http: HttpCredentials) {
    config.allow_http = http.url.starts_with("http:");
    config.url = http.url;
    match http.secret.as_deref() {
        Some(OMITTED) => {}
        Some(secret) => {
            config.signature = SignatureScheme::Mender;
            config.secret = Some(secret.into());
        }
        None => {
            config.signature = SignatureScheme::None;
            config.secret = None;
        }
    }
}

/// `page` and `per_page` (Mender's defaults 1 and 20).
fn paging(q: &std::collections::HashMap<String, String>) -> ApiResult<(usize, usize)> {
    let number = |name: &str, default: usize| -> ApiResult<usize> {
        match q.get(name) {
            None => Ok(default),
            Some(t) => t
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_EVENTS).contains(n))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        name,
                        format!("must be a whole number from 1 to {MAX_EVENTS}"),
                    )
                }),
        }
    };
    let (page, per_page) = (number("page", 1)?, number("per_page", 20)?);
    if page.saturating_mul(per_page) > MAX_EVENTS {
        return Err(ApiError::bad_request(
            "page",
            format!("page × per_page must be at most {MAX_EVENTS}"),
        ));
    }
    Ok((page, per_page))
}

/// `POST .../integrations`: 201 with `Location`, no body (as iot-manager).
pub async fn create(State(state): AppState, body: Bytes) -> ApiResult<Response> {
    let input: IntegrationInput = typed(json_value(&body)?, "")?;
    if input.provider != "webhook" {
        return Err(ApiError::bad_request(
            "provider",
            "must be \"webhook\" (hookstream serves webhook integrations only)",
        ));
    }
    if input.description.as_ref().is_some_and(|d| d.len() > 1024) {
        return Err(ApiError::bad_request(
            "description",
            "must be at most 1024 characters",
        ));
    }
    let http = http_of(input.credentials)?;
    if http.secret.as_deref() == Some(OMITTED) {
        return Err(ApiError::bad_request(
            "credentials.http.secret",
            "is a masked value; give the secret",
        ));
    }
    let mut config = EndpointConfig::new(input.id.unwrap_or_else(uuid), "");
    config.scope = Some(input.scope.unwrap_or(Scope::Deviceauth));
    config.name = input.description.unwrap_or_default().into();
    set_credentials(&mut config, http);
    let created = create_all(&state, vec![(config, String::new())]).await?;
    let id = created
        .first()
        .map(|p| p.config.id.clone())
        .unwrap_or_default();
    let mut response = StatusCode::CREATED.into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("{INTEGRATIONS}/{id}")) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

/// `GET .../integrations?page=&per_page=`: integrations by id.
pub async fn list(
    State(state): AppState,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Vec<Integration>>> {
    let (page, per_page) = paging(&query_map(query.as_deref()))?;
    let snapshot = state.store.registry().snapshot();
    let mut found: Vec<&EndpointConfig> = snapshot
        .endpoints()
        .iter()
        .map(|e| &e.config)
        .filter(|c| c.scope.is_some())
        .collect();
    found.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(Json(
        found
            .into_iter()
            .skip((page - 1) * per_page)
            .take(per_page)
            .map(integration)
            .collect(),
    ))
}

/// The integration `id` (an endpoint with a scope), or 404.
fn existing_integration(state: &ApiState, id: &str) -> ApiResult<Arc<crate::index::Endpoint>> {
    let endpoint = existing(state, id)?;
    if endpoint.config.scope.is_none() {
        return Err(ApiError::no_endpoint(id));
    }
    Ok(endpoint)
}

/// `GET .../integrations/{id}`.
pub async fn get(State(state): AppState, IdParam(id): IdParam) -> ApiResult<Json<Integration>> {
    Ok(Json(integration(
        &existing_integration(&state, &id)?.config,
    )))
}

/// `DELETE .../integrations/{id}`.
pub async fn delete(State(state): AppState, IdParam(id): IdParam) -> ApiResult<StatusCode> {
    let _write = state.store.write_lock().await;
    existing_integration(&state, &id)?;
    state.store.delete(&[id.as_str()]).await?;
    tracing::info!(endpoint = %id, "integration deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT .../integrations/{id}/credentials`: new URL and secret.
pub async fn set_credentials_route(
    State(state): AppState,
    IdParam(id): IdParam,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let credentials: Credentials = typed(json_value(&body)?, "")?;
    let http = http_of(credentials)?;
    existing_integration(&state, &id)?;
    replace(&state, &id, |current| {
        let mut config = current.clone();
        set_credentials(&mut config, http);
        Ok(config)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// One event of the listing: the event as sent, with its delivery statuses.
fn event_of(record: &AttemptRecord, payload: Value, statuses: Vec<DeliveryStatus>) -> Event {
    let mut event = match payload {
        Value::Object(map) => map,
        _ => match json!({
            "id": record.event_id,
            "type": record.event_type,
            "time": humantime::format_rfc3339_millis(
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(record.time_ms.max(0) as u64)
            ).to_string(),
            "data": null,
        }) {
            Value::Object(map) => map,
            _ => Map::new(),
        },
    };
    event.remove("delivery_statuses");
    Event {
        event,
        delivery_statuses: statuses,
    }
}

fn status_of(record: &AttemptRecord) -> DeliveryStatus {
    DeliveryStatus {
        integration_id: record.endpoint.clone(),
        success: record.outcome == Outcome::Delivered,
        status_code: record.status,
        error: record.error.clone(),
    }
}

/// `GET /api/management/v1/iot-manager/events?page=&per_page=&integration_id=`:
/// recent events, newest first, each with the latest attempt of every
/// integration it went to (from the durable activity log).
pub async fn events(
    State(state): AppState,
    RawQuery(query): RawQuery,
) -> ApiResult<Json<Vec<Event>>> {
    let q = query_map(query.as_deref());
    let (page, per_page) = paging(&q)?;
    let with_data = !flag_param(q.get("omit_data"), "omit_data")?;
    let ids: Vec<String> = match q.get("integration_id") {
        Some(id) => vec![existing_integration(&state, id)?.config.id.clone()],
        None => state
            .store
            .registry()
            .snapshot()
            .endpoints()
            .iter()
            .filter(|e| e.config.scope.is_some())
            .map(|e| e.config.id.clone())
            .collect(),
    };
    let wanted = page * per_page;
    let mut records = Vec::new();
    for id in &ids {
        records.extend(recent_attempts(&state, id, wanted).await);
    }
    records.sort_by_key(|r| std::cmp::Reverse(r.time_ms));
    // Newest attempt per event and integration; events in order of their
    // newest attempt.
    let mut order: Vec<String> = Vec::new();
    let mut latest: BTreeMap<String, Vec<AttemptRecord>> = BTreeMap::new();
    for r in records {
        let entry = latest.entry(r.event_id.clone()).or_insert_with(|| {
            order.push(r.event_id.clone());
            Vec::new()
        });
        if !entry.iter().any(|e| e.endpoint == r.endpoint) {
            entry.push(r);
        }
    }
    let page_ids: Vec<&String> = order
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .collect();
    let firsts: Vec<AttemptRecord> = page_ids
        .iter()
        .filter_map(|id| latest.get(*id).and_then(|v| v.first().cloned()))
        .collect();
    let bodies = if with_data {
        payloads(&state, &firsts).await
    } else {
        vec![Value::Null; firsts.len()]
    };
    let shown = firsts
        .iter()
        .zip(bodies)
        .map(|(first, body)| {
            let statuses = latest
                .get(&first.event_id)
                .map(|v| v.iter().map(status_of).collect())
                .unwrap_or_default();
            event_of(first, body, statuses)
        })
        .collect();
    Ok(Json(shown))
}
