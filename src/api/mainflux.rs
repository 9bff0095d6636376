//! Mainflux/Magistrala-compatible webhook routes (SPEC §6), so clients of
//! Mainflux's webhooks service can manage hookstream endpoints unchanged.
//!
//! A Mainflux webhook `{name, url, headers, metadata}` of thing `T` is an
//! endpoint with `devices = [T]`, every event type, no signature (Mainflux
//! webhooks are unsigned), plain http allowed when its URL says so; the
//! SSRF guard still applies. Ids are UUIDs as in Mainflux. Answers are
//! bare arrays and objects as the Mainflux documentation shows them, and
//! every route is served under the gateway prefix `/svcwebhooks` too.
//! `group_id` is the thing's group from the device directory (learned from
//! the events, see [`crate::index::devices`]), or `""` while unknown; a
//! group's webhooks are those of its known things (and endpoints with the
//! group in `groups`). What a GET answers can be PUT back: `thing_id` and
//! `group_id` are accepted (the thing must be the webhook's). Header values
//! are masked (`****`) on every answer; sent back masked, they keep the
//! stored value.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::errors::{ApiError, ApiResult};
use super::extract::{IdParam, json_value, typed};
use super::handlers::{create_all, existing, replace};
use super::{ApiState, secrets};
use crate::config::EndpointConfig;
use crate::sign::SignatureScheme;

type AppState = State<Arc<ApiState>>;

/// A webhook as Mainflux clients send it.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "MainfluxWebhookInput")]
#[schemars(example = webhook_example())]
pub struct WebhookInput {
    /// Its id (generated when left out).
    #[serde(default)]
    id: Option<String>,
    /// Its name.
    #[schemars(length(min = 1, max = 254))]
    name: String,
    /// Where to POST the thing's messages.
    url: String,
    /// Extra request headers; a masked value (`****`) keeps the stored
    /// value of that header.
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// Key-value pairs for your own use, stored and returned.
    #[serde(default)]
    metadata: Option<serde_json::Map<String, Value>>,
    /// As a GET answered it; must be the webhook's thing.
    #[serde(default)]
    thing_id: Option<String>,
    /// As a GET answered it; ignored (the group is the thing's, not the
    /// webhook's, so it is not stored).
    #[serde(default)]
    #[allow(dead_code)]
    group_id: Option<String>,
}

/// The API document's example of a webhook.
fn webhook_example() -> Value {
    serde_json::json!({"name": "fleet events", "url": "https://hooks.example.com/mainflux"})
}

/// The body of a create: a bare array of webhooks, or `{"webhooks": [...]}`.
// Documentation only: `create` reads the body by hand so errors name the
// item.
#[derive(Deserialize, JsonSchema)]
#[serde(untagged)]
#[schemars(rename = "MainfluxWebhooksCreate")]
#[allow(dead_code)]
pub enum WebhooksCreate {
    /// A bare array.
    List(#[schemars(length(min = 1, max = 1000))] Vec<WebhookInput>),
    /// Wrapped.
    Wrapped {
        /// The webhooks.
        #[schemars(length(min = 1, max = 1000))]
        webhooks: Vec<WebhookInput>,
    },
}

/// A webhook as Mainflux clients read it.
#[derive(Debug, Clone, Serialize, JsonSchema)]
#[schemars(rename = "MainfluxWebhook")]
pub struct Webhook {
    /// Its id.
    id: String,
    /// The thing whose messages it receives.
    thing_id: String,
    /// The thing's group, when known.
    group_id: String,
    /// Its name.
    name: String,
    /// Where it POSTs.
    url: String,
    /// Extra request headers, values masked (`****`).
    headers: BTreeMap<String, String>,
    /// Key-value pairs stored with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<serde_json::Map<String, Value>>,
}

impl Webhook {
    fn of(state: &ApiState, c: &EndpointConfig) -> Self {
        let thing_id = c.devices.first().cloned().unwrap_or_default();
        let group_id = state
            .store
            .registry()
            .devices()
            .group_of(&thing_id)
            .or_else(|| c.groups.first().cloned())
            .unwrap_or_default();
        Self {
            id: c.id.clone(),
            thing_id,
            group_id,
            name: c.name.to_string(),
            url: c.url.clone(),
            headers: secrets::masked_headers(&c.headers),
            metadata: c.metadata.as_deref().cloned(),
        }
    }
}

/// A Mainflux-style UUID (v4 layout).
pub(super) fn uuid() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

fn apply(config: &mut EndpointConfig, input: WebhookInput, field: &str) -> ApiResult<()> {
    if input.name.is_empty() {
        return Err(ApiError::bad_request(
            format!("{field}name"),
            "must not be empty",
        ));
    }
    if let Some(thing) = &input.thing_id
        && config.devices.first() != Some(thing)
    {
        return Err(ApiError::bad_request(
            format!("{field}thing_id"),
            "is not the webhook's thing",
        ));
    }
    config.allow_http = input.url.starts_with("http:");
    config.name = input.name.into();
    config.url = input.url;
    config.headers = input.headers;
    config.metadata = input.metadata.map(Box::new);
    Ok(())
}

/// `POST /things/{thing_id}/webhooks`: an array of webhooks, or
/// `{"webhooks": [...]}`.
pub async fn create(
    State(state): AppState,
    IdParam(thing): IdParam,
    body: Bytes,
) -> ApiResult<Response> {
    let items = match json_value(&body)? {
        Value::Array(items) => items,
        Value::Object(mut o) if o.len() == 1 && o.contains_key("webhooks") => {
            match o.remove("webhooks") {
                Some(Value::Array(items)) => items,
                _ => {
                    return Err(ApiError::bad_request(
                        "webhooks",
                        "must be an array of webhooks",
                    ));
                }
            }
        }
        _ => {
            return Err(ApiError::bad_request(
                "body",
                "must be an array of webhooks or {\"webhooks\": [...]}",
            ));
        }
    };
    if items.is_empty() || items.len() > 1000 {
        return Err(ApiError::bad_request(
            "webhooks",
            "must hold 1 to 1000 webhooks",
        ));
    }
    let mut configs = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let prefix = format!("webhooks[{i}].");
        let input: WebhookInput = typed(item, &prefix)?;
        let mut config = EndpointConfig::new(input.id.clone().unwrap_or_else(uuid), "");
        config.devices = vec![thing.clone()];
        config.signature = SignatureScheme::None;
        apply(&mut config, input, &prefix)?;
        configs.push((config, prefix));
    }
    let created = create_all(&state, configs).await?;
    let webhooks: Vec<Webhook> = created
        .iter()
        .map(|p| Webhook::of(&state, &p.config))
        .collect();
    Ok((StatusCode::CREATED, Json(webhooks)).into_response())
}

fn listed(state: &ApiState, keep: impl Fn(&EndpointConfig) -> bool) -> Json<Vec<Webhook>> {
    let snapshot = state.store.registry().snapshot();
    let mut webhooks: Vec<Webhook> = snapshot
        .endpoints()
        .iter()
        .filter(|e| keep(&e.config))
        .map(|e| Webhook::of(state, &e.config))
        .collect();
    webhooks.sort_by(|a, b| a.id.cmp(&b.id));
    Json(webhooks)
}

/// `GET /things/{thing_id}/webhooks`.
pub async fn list_by_thing(State(state): AppState, IdParam(thing): IdParam) -> Json<Vec<Webhook>> {
    listed(&state, |c| c.devices.contains(&thing))
}

/// `GET /groups/{group_id}/webhooks`: the webhooks of the group's known
/// things, and endpoints restricted to the group.
pub async fn list_by_group(State(state): AppState, IdParam(group): IdParam) -> Json<Vec<Webhook>> {
    let things: HashSet<String> = state
        .store
        .registry()
        .devices()
        .devices_in(&group)
        .into_iter()
        .collect();
    listed(&state, |c| {
        c.groups.contains(&group) || c.devices.iter().any(|d| things.contains(d))
    })
}

/// `GET /webhooks/{id}`.
pub async fn get(State(state): AppState, IdParam(id): IdParam) -> ApiResult<Json<Webhook>> {
    Ok(Json(Webhook::of(&state, &existing(&state, &id)?.config)))
}

/// `PUT /webhooks/{id}`: new name, URL and headers (a masked header value
/// keeps the stored one).
pub async fn update(
    State(state): AppState,
    IdParam(id): IdParam,
    body: Bytes,
) -> ApiResult<Json<Webhook>> {
    let mut input: WebhookInput = typed(json_value(&body)?, "")?;
    if input.id.as_ref().is_some_and(|given| *given != id) {
        return Err(ApiError::bad_request(
            "id",
            "differs from the id in the path",
        ));
    }
    input.id = None;
    let prepared = replace(&state, &id, |current| {
        let mut config = current.clone();
        apply(&mut config, input, "")?;
        Ok(config)
    })
    .await?;
    Ok(Json(Webhook::of(&state, &prepared.config)))
}

/// The body of `DELETE /webhooks`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(rename = "MainfluxRemove")]
pub struct RemoveRequest {
    /// The webhooks to delete (all or none).
    #[schemars(length(min = 1))]
    webhook_ids: Vec<String>,
}

/// `DELETE /webhooks` with `{"webhook_ids": [...]}`: all or nothing.
pub async fn remove(State(state): AppState, body: Bytes) -> ApiResult<StatusCode> {
    let request: RemoveRequest = typed(json_value(&body)?, "")?;
    if request.webhook_ids.is_empty() {
        return Err(ApiError::bad_request(
            "webhook_ids",
            "must name at least one webhook",
        ));
    }
    let _write = state.store.write_lock().await;
    for id in &request.webhook_ids {
        existing(&state, id)?;
    }
    let ids: Vec<&str> = request.webhook_ids.iter().map(String::as_str).collect();
    state.store.delete(&ids).await?;
    tracing::info!(endpoints = ?ids, "webhooks deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    #[test]
    fn uuids_look_like_uuids() {
        let id = super::uuid();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4");
        assert_eq!(id.matches('-').count(), 4);
    }
}
