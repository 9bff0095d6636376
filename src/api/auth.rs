//! Bearer-token authentication with the two roles of SPEC §6: `admin`
//! reads and writes, `viewer` reads.
//!
//! Tokens are compared in constant time: the presented token and every
//! configured one are hashed (SHA-256, so lengths do not leak) and compared
//! with `subtle`, always against every configured token. Tokens are never
//! logged.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConstantTimeEq};

use super::errors::ApiError;
use crate::config::{ApiConfig, Role};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (health, readiness, the OpenAPI document).
    Public,
    /// Viewer or admin tokens.
    Viewer,
    /// Admin tokens only.
    Admin,
}

/// The configured tokens, as digests.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<([u8; 32], Role)>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("count", &self.entries.len())
            .finish()
    }
}

fn digest(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

impl Tokens {
    /// Tokens from `[api].tokens`; `env` reads `token_env`. Tokens whose
    /// variable is unset or empty are skipped; their descriptions (never
    /// the tokens) are returned for a warning.
    pub fn from_config(
        api: &ApiConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> (Self, Vec<String>) {
        let mut entries = Vec::new();
        let mut skipped = Vec::new();
        for (i, t) in api.tokens.iter().enumerate() {
            let value = match (&t.token, &t.token_env) {
                (Some(token), _) => Some(token.clone()),
                (None, Some(var)) => env(var),
                (None, None) => None,
            };
            match value {
                Some(v) if !v.is_empty() => entries.push((digest(v.as_bytes()), t.role)),
                _ => skipped.push(match &t.token_env {
                    Some(var) => format!("api.tokens[{i}] (environment variable {var} is not set)"),
                    None => format!("api.tokens[{i}] (empty)"),
                }),
            }
        }
        (Self { entries }, skipped)
    }

    /// Tokens given directly (tests, embedding).
    pub fn new<'a>(tokens: impl IntoIterator<Item = (&'a str, Role)>) -> Self {
        Self {
            entries: tokens
                .into_iter()
                .map(|(t, role)| (digest(t.as_bytes()), role))
                .collect(),
        }
    }

    /// The role of `presented`, comparing against every token in constant
    /// time.
    pub fn role_of(&self, presented: &str) -> Option<Role> {
        let wanted = digest(presented.as_bytes());
        let mut admin = Choice::from(0);
        let mut viewer = Choice::from(0);
        for (token, role) in &self.entries {
            let same = token.ct_eq(&wanted);
            match role {
                Role::Admin => admin |= same,
                Role::Viewer => viewer |= same,
            }
        }
        if bool::from(admin) {
            Some(Role::Admin)
        } else if bool::from(viewer) {
            Some(Role::Viewer)
        } else {
            None
        }
    }

    /// Whether a request with `authorization` may use a route of `access`.
    pub fn check(&self, access: Access, authorization: Option<&str>) -> Result<(), ApiError> {
        self.authorize(access, authorization).map(|_| ())
    }

    /// The caller's role when a request with `authorization` may use a
    /// route of `access` (`None` on public routes, where no token is
    /// read).
    pub fn authorize(
        &self,
        access: Access,
        authorization: Option<&str>,
    ) -> Result<Option<Role>, ApiError> {
        if access == Access::Public {
            return Ok(None);
        }
        let token = authorization
            .and_then(|h| {
                let (scheme, token) = h.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            })
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ApiError::unauthorized("missing bearer token (Authorization: Bearer <token>)")
            })?;
        match (self.role_of(token), access) {
            (None, _) => Err(ApiError::unauthorized("invalid token")),
            (Some(Role::Viewer), Access::Admin) => Err(ApiError::forbidden()),
            (Some(role), _) => Ok(Some(role)),
        }
    }
}

/// The state of one route's guard.
#[derive(Debug, Clone)]
pub struct Guard {
    /// Configured tokens.
    pub tokens: Arc<Tokens>,
    /// What the route needs.
    pub access: Access,
}

/// Middleware: answers 401/403 before the handler reads anything, and
/// leaves the caller's [`Role`] in the request's extensions for handlers
/// that show more to admins.
pub async fn guard(State(guard): State<Guard>, mut request: Request, next: Next) -> Response {
    let authorization = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match guard.tokens.authorize(guard.access, authorization) {
        Ok(role) => {
            if let Some(role) = role {
                request.extensions_mut().insert(role);
            }
            next.run(request).await
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    #[test]
    fn roles_and_statuses() {
        let t = Tokens::new([("adm1n", Role::Admin), ("v1ew", Role::Viewer)]);
        assert_eq!(t.role_of("adm1n"), Some(Role::Admin));
        assert_eq!(t.role_of("v1ew"), Some(Role::Viewer));
        assert_eq!(t.role_of("adm1"), None);
        let status = |access, header: Option<&str>| t.check(access, header).err().map(|e| e.status);
        assert_eq!(status(Access::Public, None), None);
        assert_eq!(status(Access::Viewer, None), Some(StatusCode::UNAUTHORIZED));
        assert_eq!(
            status(Access::Viewer, Some("Basic adm1n")),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(
            status(Access::Viewer, Some("Bearer nope")),
            Some(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(status(Access::Viewer, Some("Bearer v1ew")), None);
        assert_eq!(
            status(Access::Admin, Some("Bearer v1ew")),
            Some(StatusCode::FORBIDDEN)
        );
        assert_eq!(status(Access::Admin, Some("bearer adm1n")), None);
        assert_eq!(
            t.authorize(Access::Viewer, Some("Bearer adm1n")),
            Ok(Some(Role::Admin))
        );
        assert_eq!(
            t.authorize(Access::Viewer, Some("Bearer v1ew")),
            Ok(Some(Role::Viewer))
        );
        assert_eq!(t.authorize(Access::Public, Some("Bearer v1ew")), Ok(None));
    }

    #[test]
    fn unset_token_variables_are_skipped_by_name() {
        let api = ApiConfig::default();
        let env = |name: &str| (name == "HOOKSTREAM_ADMIN_TOKEN").then(|| "s3cret".to_string());
        let (tokens, skipped) = Tokens::from_config(&api, &env);
        assert_eq!(tokens.role_of("s3cret"), Some(Role::Admin));
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].contains("HOOKSTREAM_VIEWER_TOKEN"));
    }
}
