//! `POST /v1/endpoints/{id}/rotate`: a new signing secret, the old one kept
//! valid for `api.rotation_grace` on schemes that carry two signatures.
//!
//! Works through the store only; what the secret looks like is
//! [`crate::api::secrets`]'s business.

use std::time::SystemTime;

use axum::Json;
use axum::extract::State;
use schemars::JsonSchema;
use serde::Serialize;

use super::{AppState, existing};
use crate::api::errors::{ApiError, ApiResult};
use crate::api::extract::IdParam;
use crate::api::{secrets, validate};
use crate::sign::SignatureScheme;

/// The answer of `rotate-secret`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Rotated {
    /// The endpoint.
    pub id: String,
    /// The new secret, in the clear (shown this once).
    pub secret: String,
    /// Until when the previous secret signs too (RFC 3339); null for
    /// schemes that carry one signature (no overlap).
    pub previous_secret_expires_at: Option<String>,
    /// Whether requests carry both signatures for a while (`standard`
    /// only).
    pub overlap: bool,
    /// What the receiver has to do, in words.
    pub note: String,
}

/// Whether a scheme's requests can carry the signatures of two secrets
/// (Standard Webhooks' space-separated list); the others have room for one.
fn carries_two_signatures(scheme: SignatureScheme) -> bool {
    scheme == SignatureScheme::Standard
}

/// `POST /v1/endpoints/{id}/rotate-secret`: a new secret. With `standard`
/// the old one keeps signing beside it for `[api].rotation_grace`; the
/// other schemes carry one signature, so the new secret signs alone from
/// now on and the answer says so.
pub async fn rotate(State(state): AppState, IdParam(id): IdParam) -> ApiResult<Json<Rotated>> {
    let _write = state.store.write_lock().await;
    let current = existing(&state, &id)?;
    let mut config = current.config.clone();
    let Some(secret) = secrets::generate(config.signature) else {
        return Err(ApiError::bad_request(
            "signature",
            "is `none`: this endpoint signs nothing, so it has no secret to rotate",
        ));
    };
    let overlap = carries_two_signatures(config.signature);
    let old = match (&config.secret, &config.secret_env) {
        (Some(s), _) => Some(s.clone()),
        (None, Some(var)) => std::env::var(&**var).ok().map(Into::into),
        (None, None) => None,
    }
    .filter(|_| overlap);
    let until = SystemTime::now() + state.settings.rotation_grace;
    let until_text = humantime::format_rfc3339_seconds(until).to_string();
    config.previous_secret_expires_at = old.as_ref().map(|_| until_text.as_str().into());
    config.previous_secret = old;
    config.secret = Some(secret.as_str().into());
    config.secret_env = None;
    validate::check(&config, &state.settings, "").await?;
    state.store.put(std::slice::from_ref(&config)).await?;
    let note = if overlap {
        format!(
            "requests carry signatures by the new and the previous secret until {until_text}; \
             switch the receiver to the new secret before then"
        )
    } else {
        format!(
            "`{}` carries one signature: requests are signed with the new secret only, from now \
             on (no overlap); the receiver must switch at once (or accept either secret while \
             it switches)",
            config.signature
        )
    };
    tracing::info!(endpoint = %id, overlap, "secret rotated");
    Ok(Json(Rotated {
        id,
        previous_secret_expires_at: config
            .previous_secret_expires_at
            .as_deref()
            .map(str::to_string),
        secret,
        overlap,
        note,
    }))
}
