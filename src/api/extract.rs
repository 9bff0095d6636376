//! Reading requests: JSON bodies, path ids, query parameters and the
//! caller's role, with every failure turned into a 400 that names its
//! field.
//!
//! serde's messages are cut down to the kind of a wrong value (never the
//! value itself, which may be a secret).

use std::collections::HashMap;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::errors::ApiError;
use crate::config::Role;

/// The `{id}` (or `{thing_id}`, `{group_id}`) segment of a route.
#[derive(Debug, Clone)]
pub struct IdParam(pub String);

impl<S: Send + Sync> FromRequestParts<S> for IdParam {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(id)) => Ok(Self(id)),
            Err(_) => Err(ApiError::bad_request("id", "is not valid UTF-8 text")),
        }
    }
}

/// The role of the caller's token, as the token check found it (`None` on
/// public routes).
#[derive(Debug, Clone, Copy)]
pub struct Caller(pub Option<Role>);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Self(parts.extensions.get::<Role>().copied()))
    }
}

/// The query string as name → value (the last value of a repeated name).
pub fn query_map(raw: Option<&str>) -> HashMap<String, String> {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .into_owned()
        .collect()
}

/// Parses a JSON document; the error names the field (`field_prefix` goes
/// before it, e.g. `[2].`).
pub fn json_value(body: &[u8]) -> Result<serde_json::Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("body", "a JSON body is required"));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(
            "body",
            format!("is not valid JSON: {}", clean(&e.to_string())),
        )
    })
}

/// Deserialises the JSON object `value` into `T`, naming the offending
/// field on failure.
pub fn typed<T: DeserializeOwned>(
    value: serde_json::Value,
    field_prefix: &str,
) -> Result<T, ApiError> {
    if !value.is_object() {
        // serde would read a struct from an array too; the API takes objects.
        let field = match field_prefix.trim_end_matches('.') {
            "" => "body",
            prefix => prefix,
        };
        return Err(ApiError::bad_request(field, "must be a JSON object"));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let message = clean(&e.inner().to_string());
        let field = if path == "." || path.is_empty() {
            named_in(&message).unwrap_or_default()
        } else {
            path
        };
        let field = match (field_prefix, field.as_str()) {
            ("", "") => "body".to_string(),
            (prefix, "") => prefix.trim_end_matches('.').to_string(),
            (prefix, f) => format!("{prefix}{f}"),
        };
        ApiError::bad_request(field, message)
    })
}

/// The field a serde message names: "missing field `url`", "unknown field `x`".
fn named_in(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let len = message[start..].find('`')?;
    Some(message[start..start + len].to_string())
}

/// Drops the offending value from serde messages ("invalid type: string
/// \"...\", expected u32" → "invalid type: string, expected u32").
fn clean(message: &str) -> String {
    for lead in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(lead)
            && let Some(comma) = rest.find(", expected")
        {
            let kind = rest[..comma]
                .split([' ', '`', '"'])
                .next()
                .unwrap_or("value");
            return format!("{lead}{kind}{}", &rest[comma..]);
        }
    }
    message.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EndpointConfig;

    #[test]
    fn errors_name_fields_and_not_values() {
        let e = typed::<EndpointConfig>(serde_json::json!({"id": "a"}), "").unwrap_err();
        assert_eq!(e.body.field.as_deref(), Some("url"));
        let e = typed::<EndpointConfig>(
            serde_json::json!({"id": "a", "url": "https://x/", "max_concurrency": "s3cret"}),
            "[1].",
        )
        .unwrap_err();
        assert_eq!(e.body.field.as_deref(), Some("[1].max_concurrency"));
        assert!(!e.body.error.contains("s3cret"), "{}", e.body.error);
        let e = typed::<EndpointConfig>(
            serde_json::json!({"id": "a", "url": "https://x/", "colour": 1}),
            "",
        )
        .unwrap_err();
        assert_eq!(e.body.field.as_deref(), Some("colour"));
        let e = typed::<EndpointConfig>(serde_json::json!([1]), "").unwrap_err();
        assert_eq!(e.body.field.as_deref(), Some("body"));
        assert_eq!(
            json_value(b"  ").unwrap_err().body.field.as_deref(),
            Some("body")
        );
        assert_eq!(
            json_value(b"{").unwrap_err().body.field.as_deref(),
            Some("body")
        );
    }
}
