//! Request bodies: read once, whole, before a handler sees them, within
//! `[api].max_body_bytes` (else 413) and `[api].body_timeout` (else 408),
//! both naming the field `body`.
//!
//! Applied only to the routes that take a body, inside the token check, so
//! nobody without a token makes the server buffer anything.

use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::http::header::{CONNECTION, CONTENT_LENGTH};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::errors::ApiError;

/// The body limits of `[api]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyLimits {
    /// `api.max_body_bytes`.
    pub max_bytes: usize,
    /// `api.body_timeout`.
    pub timeout: Duration,
}

/// Middleware: reads the whole body within the limits, then calls the
/// handler with it. A refusal closes the connection (what is left of the
/// body is never read).
pub async fn read_whole(
    State(limits): State<BodyLimits>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.max_bytes as u64) {
        return closing(ApiError::body_too_large(limits.max_bytes));
    }
    let read = tokio::time::timeout(
        limits.timeout,
        Limited::new(body, limits.max_bytes).collect(),
    )
    .await;
    match read {
        Ok(Ok(collected)) => {
            let request = Request::from_parts(parts, Body::from(collected.to_bytes()));
            next.run(request).await
        }
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => {
            closing(ApiError::body_too_large(limits.max_bytes))
        }
        Ok(Err(e)) => closing(ApiError::bad_request(
            "body",
            format!("could not be read: {e}"),
        )),
        Err(_) => closing(ApiError::body_timeout(limits.timeout)),
    }
}

/// `error` with `Connection: close`: the rest of the body stays unread.
fn closing(error: ApiError) -> Response {
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}
