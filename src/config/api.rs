//! `[api]`: the management API's listener, limits and tokens, as plain data
//! with its defaults and the ranges of its limits.

use serde::{Deserialize, Serialize};

use super::{ConfigError, HumanDuration};

/// `[api]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Listen address; empty disables the API.
    pub listen: String,
    /// Bearer tokens.
    pub tokens: Vec<TokenConfig>,
    /// How long the previous secret keeps signing beside the new one after
    /// `POST /v1/endpoints/{id}/rotate-secret`.
    pub rotation_grace: HumanDuration,
    /// Most API connections held at once ([`API_MAX_CONNECTIONS`]). A
    /// connection beyond it closes the one that has waited longest without
    /// a request in progress, or waits up to `header_timeout` for a request
    /// to finish and is closed if none does.
    pub max_connections: usize,
    /// Longest time a connection may take to send a complete request head
    /// (from its accept, or from the first byte after an idle period)
    /// ([`API_TIMEOUTS`]).
    pub header_timeout: HumanDuration,
    /// Longest time a keep-alive connection may stay idle between requests
    /// ([`API_TIMEOUTS`]).
    pub idle_timeout: HumanDuration,
    /// Longest time a request body may take to arrive once its head has
    /// ([`API_TIMEOUTS`]); slower bodies are answered 408.
    pub body_timeout: HumanDuration,
    /// Largest request body accepted ([`API_MAX_BODY_BYTES`]); larger ones
    /// are answered 413.
    pub max_body_bytes: usize,
}

/// The range of `api.max_connections`.
pub const API_MAX_CONNECTIONS: std::ops::RangeInclusive<usize> = 1..=1_000_000;

/// The range of `api.header_timeout`, `api.idle_timeout` and
/// `api.body_timeout`: 100 ms to 1 h.
pub const API_TIMEOUTS: std::ops::RangeInclusive<HumanDuration> =
    HumanDuration::from_millis(100)..=HumanDuration::from_secs(3600);

/// The range of `api.max_body_bytes`: 1 KiB to 256 MiB.
pub const API_MAX_BODY_BYTES: std::ops::RangeInclusive<usize> = 1024..=256 * 1024 * 1024;

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            tokens: vec![
                TokenConfig {
                    token_file: None,
                    token_env: Some("HOOKSTREAM_ADMIN_TOKEN".into()),
                    token: None,
                    role: Role::Admin,
                },
                TokenConfig {
                    token_file: None,
                    token_env: Some("HOOKSTREAM_VIEWER_TOKEN".into()),
                    token: None,
                    role: Role::Viewer,
                },
            ],
            rotation_grace: HumanDuration::from_secs(24 * 3600),
            max_connections: 1024,
            header_timeout: HumanDuration::from_secs(10),
            idle_timeout: HumanDuration::from_secs(60),
            body_timeout: HumanDuration::from_secs(30),
            max_body_bytes: 1024 * 1024,
        }
    }
}

impl ApiConfig {
    /// Checks the grace period and the connection limits, naming the key.
    pub(super) fn validate_limits(&self) -> Result<(), ConfigError> {
        if self.rotation_grace.get().is_zero() {
            return Err(ConfigError::new("api.rotation_grace", "must be above 0"));
        }
        if !API_MAX_CONNECTIONS.contains(&self.max_connections) {
            return Err(ConfigError::new(
                "api.max_connections",
                format!(
                    "must be from {} to {}",
                    API_MAX_CONNECTIONS.start(),
                    API_MAX_CONNECTIONS.end()
                ),
            ));
        }
        for (key, value) in [
            ("api.header_timeout", self.header_timeout),
            ("api.idle_timeout", self.idle_timeout),
            ("api.body_timeout", self.body_timeout),
        ] {
            if !API_TIMEOUTS.contains(&value) {
                return Err(ConfigError::new(
                    key,
                    format!(
                        "must be from {} to {}",
                        API_TIMEOUTS.start(),
                        API_TIMEOUTS.end()
                    ),
                ));
            }
        }
        if !API_MAX_BODY_BYTES.contains(&self.max_body_bytes) {
            return Err(ConfigError::new(
                "api.max_body_bytes",
                format!(
                    "must be from {} to {} (1 KiB to 256 MiB)",
                    API_MAX_BODY_BYTES.start(),
                    API_MAX_BODY_BYTES.end()
                ),
            ));
        }
        Ok(())
    }
}

/// One API token, from the environment or inline.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// Environment variable holding the token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// The token itself (prefer `token_env` or `token_file`).
    #[serde(default)]
    pub token: Option<String>,
    /// A file holding the token (trailing newline dropped), read when the
    /// configuration is loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<String>,
    /// What the token may do.
    pub role: Role,
}

/// API roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads and writes.
    Admin,
    /// Reads only.
    Viewer,
}
