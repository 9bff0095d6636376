//! API errors as SPEC §6 fixes them: 400 `{"error", "field"}` naming the
//! offending field, 401 missing or invalid token, 403 viewer writing (or
//! asking to see header values), 404 unknown id; 408 and 413 (field
//! `body`) for a body too slow or too large, 409 for an id that exists,
//! 503 when the store cannot write.
//!
//! Messages never carry a secret: they come from validation (which names
//! fields, not values) or from the broker client.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::index::FieldError;
use crate::index::store::StoreError;

/// The JSON body of every error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[schemars(rename = "Error")]
pub struct ErrorBody {
    /// What went wrong.
    pub error: String,
    /// The offending field (400 always has one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// An error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Body.
    pub body: ErrorBody,
}

impl ApiError {
    fn new(status: StatusCode, error: impl Into<String>, field: Option<String>) -> Self {
        Self {
            status,
            body: ErrorBody {
                error: error.into(),
                field,
            },
        }
    }

    /// 400 about `field`.
    pub fn bad_request(field: impl Into<String>, error: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error, Some(field.into()))
    }

    /// 401.
    pub fn unauthorized(error: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, error, None)
    }

    /// 403.
    pub fn forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "this token may only read (role viewer)",
            None,
        )
    }

    /// 404 for endpoint `id`.
    pub fn no_endpoint(id: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            format!("no endpoint with id `{id}`"),
            None,
        )
    }

    /// 404 for a path that is no route.
    pub fn no_route() -> Self {
        Self::new(StatusCode::NOT_FOUND, "no such route", None)
    }

    /// 405 for a route that exists with other methods.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed on this route",
            None,
        )
    }

    /// 413: the request body is larger than `api.max_body_bytes`.
    pub fn body_too_large(max_bytes: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("is larger than {max_bytes} bytes (api.max_body_bytes)"),
            Some("body".into()),
        )
    }

    /// 408: the request body did not arrive within `api.body_timeout`.
    pub fn body_timeout(timeout: std::time::Duration) -> Self {
        Self::new(
            StatusCode::REQUEST_TIMEOUT,
            format!("did not arrive within {timeout:?} (api.body_timeout)"),
            Some("body".into()),
        )
    }

    /// 403: revealing header values takes an admin token.
    pub fn reveal_forbidden() -> Self {
        Self::new(
            StatusCode::FORBIDDEN,
            "revealing header values (reveal=headers) takes an admin token",
            None,
        )
    }

    /// 409: `id` is taken.
    pub fn conflict(field: impl Into<String>, id: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            format!("an endpoint with id `{id}` exists (use PUT or PATCH to change it)"),
            Some(field.into()),
        )
    }

    /// A field error, with `prefix` (e.g. `[2].`) before the field name.
    pub fn field(prefix: &str, e: FieldError) -> Self {
        Self::bad_request(format!("{prefix}{}", e.field), e.message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string(), None)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// Handler results.
pub type ApiResult<T> = Result<T, ApiError>;
