//! Turning what a client sent into an endpoint worth storing: the rules of
//! [`Endpoint::build`] (the same as for the configuration file), secrets
//! (generated when missing, kept when a client sends back the mask, never
//! read from this server's environment on a client's behalf), and the SSRF
//! guard at save time, which also resolves host names.

use std::time::Duration;

use reqwest::Url;

use super::ApiSettings;
use super::errors::ApiError;
use super::secrets;
use crate::config::EndpointConfig;
use crate::guard as ssrf;
use crate::index::{Endpoint, FieldError};
use crate::sign::SignatureScheme;

/// How long a save waits for a name to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);

/// An endpoint ready to store.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// What to store.
    pub config: EndpointConfig,
    /// Whether hookstream made up its secret in this request (the response
    /// then shows it, once).
    pub generated_secret: bool,
}

/// A new endpoint. `prefix` goes before field names (`[2].`).
pub async fn new_endpoint(
    mut config: EndpointConfig,
    settings: &ApiSettings,
    prefix: &str,
) -> Result<Prepared, ApiError> {
    if config.secret_env.is_some() {
        return Err(secret_env_refused(prefix));
    }
    if config.secret.as_deref().is_some_and(secrets::is_masked) {
        return Err(ApiError::bad_request(
            format!("{prefix}secret"),
            "is a masked value; give the secret or leave it out to have one generated",
        ));
    }
    refuse_env_secrets(&config, None, prefix)?;
    secrets::keep_masked_egress(None, &mut config).map_err(|field| {
        ApiError::bad_request(
            format!("{prefix}{field}"),
            "is a masked value; give its value",
        )
    })?;
    // A rotation is started with rotate-secret, not written directly.
    config.previous_secret = None;
    config.previous_secret_expires_at = None;
    let generated_secret = fill_secret(&mut config);
    check(&config, settings, prefix).await?;
    Ok(Prepared {
        config,
        generated_secret,
    })
}

/// `incoming` replacing `existing` (PUT, PATCH, Mainflux PUT). A missing
/// or masked secret keeps the current one; a new secret ends any rotation
/// grace period; `secret_env` may only be kept as it is.
pub async fn replacement(
    existing: &EndpointConfig,
    mut incoming: EndpointConfig,
    settings: &ApiSettings,
) -> Result<Prepared, ApiError> {
    if incoming.id != existing.id {
        return Err(ApiError::bad_request(
            "id",
            "differs from the id in the path (ids cannot change)",
        ));
    }
    refuse_env_secrets(&incoming, Some(existing), "")?;
    secrets::keep_masked_egress(Some(existing), &mut incoming).map_err(|field| {
        ApiError::bad_request(
            field,
            "is a masked value, and the endpoint has no such value to keep; give its value",
        )
    })?;
    let keep_secret = incoming.secret.as_deref().is_none_or(secrets::is_masked);
    if keep_secret {
        if incoming.secret_env.is_some() && incoming.secret_env != existing.secret_env {
            return Err(secret_env_refused(""));
        }
        incoming.secret = existing.secret.clone();
        incoming.secret_env = existing.secret_env.clone();
        incoming.previous_secret = existing.previous_secret.clone();
        incoming.previous_secret_expires_at = existing.previous_secret_expires_at.clone();
    } else {
        if incoming.secret_env.is_some() && incoming.secret_env != existing.secret_env {
            return Err(secret_env_refused(""));
        }
        incoming.secret_env = None;
        incoming.previous_secret = None;
        incoming.previous_secret_expires_at = None;
    }
    let generated_secret = fill_secret(&mut incoming);
    check(&incoming, settings, "").await?;
    Ok(Prepared {
        config: incoming,
        generated_secret,
    })
}

/// Refuses `auth`'s `*_env` names through the API unless `existing` has
/// the same one (it came from the configuration file and is kept).
fn refuse_env_secrets(
    config: &EndpointConfig,
    existing: Option<&EndpointConfig>,
    prefix: &str,
) -> Result<(), ApiError> {
    let Some(auth) = &config.auth else {
        return Ok(());
    };
    let kept = existing
        .and_then(|e| e.auth.as_deref())
        .map(|a| a.env_names())
        .unwrap_or_default();
    for named in auth.env_names() {
        if !kept.contains(&named) {
            return Err(ApiError::bad_request(
                format!("{prefix}{}", named.0),
                "is not accepted through the API (it would read this server's environment); \
                 give the value itself",
            ));
        }
    }
    Ok(())
}

fn secret_env_refused(prefix: &str) -> ApiError {
    ApiError::bad_request(
        format!("{prefix}secret_env"),
        "is not accepted through the API (it would read this server's environment); \
         give `secret` or leave it out to have one generated",
    )
}

/// Generates a secret when the scheme signs and none is set.
fn fill_secret(config: &mut EndpointConfig) -> bool {
    if config.signature != SignatureScheme::None
        && config.secret.is_none()
        && config.secret_env.is_none()
    {
        config.secret = secrets::generate(config.signature).map(Into::into);
        return true;
    }
    false
}

/// The configuration file's rules, then the save-time SSRF check.
pub async fn check(
    config: &EndpointConfig,
    settings: &ApiSettings,
    prefix: &str,
) -> Result<(), ApiError> {
    let env = |name: &str| std::env::var(name).ok();
    let endpoint = Endpoint::build(
        config.clone(),
        settings.allow_private,
        settings.default_timeout,
        &env,
    )
    .map_err(|e| ApiError::field(prefix, e))?;
    if !settings.allow_private {
        resolves_publicly(endpoint.url())
            .await
            .map_err(|e| ApiError::field(prefix, e))?;
        if let Some(crate::index::egress::Auth::OAuth2(oauth)) =
            endpoint.egress().and_then(|e| e.auth.as_ref())
        {
            resolves_publicly(&oauth.token_url).await.map_err(|e| {
                ApiError::field(prefix, FieldError::new("auth.oauth2.token_url", e.message))
            })?;
        }
    }
    Ok(())
}

/// Refuses a host name that resolves to a forbidden address now. A name
/// that does not resolve is accepted: the connect-time guard checks every
/// address whenever it is used.
pub async fn resolves_publicly(url: &Url) -> Result<(), FieldError> {
    let Some(url::Host::Domain(name)) = url.host() else {
        return Ok(());
    };
    let name = name.trim_end_matches('.');
    let port = url.port_or_known_default().unwrap_or(443);
    let lookup = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, port))).await;
    let addrs: Vec<std::net::SocketAddr> = match lookup {
        Ok(Ok(addrs)) => addrs.collect(),
        Ok(Err(e)) => {
            tracing::debug!(host = %name, error = %e, "host does not resolve now; the connect-time guard applies");
            return Ok(());
        }
        Err(_) => return Ok(()),
    };
    ssrf::check_all(name, &addrs).map_err(|refused| FieldError {
        field: "url".into(),
        message: format!(
            "`{name}` resolves to a {} address ({}); allow_private_destinations is off",
            refused.class, refused.ip
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_resolving_to_loopback_are_refused() {
        // /etc/hosts maps localhost on every machine.
        let url = Url::parse("https://localhost:8443/in").unwrap();
        let err = resolves_publicly(&url).await.unwrap_err();
        assert_eq!(err.field, "url");
        assert!(err.message.contains("loopback"), "{}", err.message);
        // Literals are the literal check's business (no lookup, no query).
        let literal = Url::parse("https://93.184.216.34/").unwrap();
        resolves_publicly(&literal).await.unwrap();
    }
}
