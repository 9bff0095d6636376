//! An endpoint's way out, validated and prepared: the `Authorization` it
//! sends (basic, bearer) or the OAuth2 client it fetches tokens as, its TLS
//! material (client certificate, CA) and its proxy choice.
//!
//! Owns the rules of `auth`, `tls` and `proxy` (the same for the
//! configuration file and the API: errors name the field) and the
//! fingerprints `deliver` keys its clients and token caches by. Pure: PEM
//! is parsed and a client key checked against its certificate here, but
//! nothing is connected or read.
//!
//! Why this file is long: an endpoint's authentication, TLS material and proxy
//! are validated together (a client certificate needs its key, a proxy its
//! scheme), with the secrets masked the same way.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::Url;
use reqwest::header::HeaderValue;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use super::endpoint::{is_localhost_name, literal_ip};
use crate::config::{
    AuthConfig, ClientAuth, EndpointConfig, FieldError, NO_PROXY, OAuth2Config, TlsConfig,
    proxy_url_problem,
};
use crate::guard as ssrf;

/// What an endpoint needs beyond the shared clients.
#[derive(Clone)]
pub struct Egress {
    /// How requests authenticate (none: no `Authorization` of hookstream's).
    pub auth: Option<Auth>,
    /// Client certificate and extra trusted CAs (none: the shared clients').
    pub tls: Option<TlsMaterial>,
    /// Which proxy requests take.
    pub proxy: ProxyChoice,
    /// Fingerprint of `tls` and `proxy`: endpoints with the same one share
    /// an HTTP client (and its connections).
    pub client_key: [u8; 16],
}

impl Egress {
    /// Whether the endpoint needs an HTTP client of its own kind (TLS
    /// material, or a proxy choice other than `delivery.proxy`).
    pub fn needs_own_client(&self) -> bool {
        self.tls.is_some() || !matches!(self.proxy, ProxyChoice::Inherit)
    }
}

/// How a request authenticates to the receiver.
#[derive(Clone)]
pub enum Auth {
    /// A fixed `Authorization` value (`Basic …`, `Bearer …`), marked
    /// sensitive.
    Header(HeaderValue),
    /// OAuth2 client credentials: a token fetched and cached by `deliver`.
    OAuth2(Box<OAuth2Client>),
}

/// An OAuth2 client, ready to request tokens.
#[derive(Clone)]
pub struct OAuth2Client {
    /// The token endpoint.
    pub token_url: Url,
    /// The client id.
    pub client_id: String,
    /// The client secret (resolved from the environment when so given).
    pub client_secret: String,
    /// `scope` of the request.
    pub scope: Option<String>,
    /// `audience` of the request.
    pub audience: Option<String>,
    /// Where the credentials go.
    pub client_auth: ClientAuth,
    /// Fingerprint of all of the above and the endpoint's id: a token is
    /// cached under it, so a changed client fetches a new one.
    pub cache_key: [u8; 16],
}

/// PEM texts a client is built from, checked.
#[derive(Clone)]
pub struct TlsMaterial {
    /// The client certificate chain followed by its key (what
    /// `reqwest::Identity::from_pem` reads).
    pub identity_pem: Option<Vec<u8>>,
    /// Extra trusted CA certificates.
    pub ca_pem: Option<Vec<u8>>,
}

/// Which proxy an endpoint's requests take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyChoice {
    /// `delivery.proxy`, or none when it is empty.
    Inherit,
    /// No proxy (`proxy = "none"`), whatever `delivery.proxy` says.
    Direct,
    /// This proxy.
    Via(Url),
}

/// Checks and prepares `auth`, `tls` and `proxy` of `config`; `None` when
/// it sets none of them. `env` resolves the `*_env` secrets.
pub fn prepare(
    config: &EndpointConfig,
    url: &Url,
    allow_private: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<Egress>, FieldError> {
    if config.auth.is_none() && config.tls.is_none() && config.proxy.is_none() {
        return Ok(None);
    }
    let auth = match config.auth.as_deref() {
        Some(auth) => Some(prepare_auth(config, auth, allow_private, env)?),
        None => None,
    };
    let tls = match config.tls.as_deref() {
        Some(tls) => Some(prepare_tls(tls, url)?),
        None => None,
    };
    let proxy = match config.proxy.as_deref().map(String::as_str) {
        None => ProxyChoice::Inherit,
        Some(NO_PROXY) => ProxyChoice::Direct,
        Some(text) => {
            if let Some(why) = proxy_url_problem(text, false) {
                return Err(FieldError::new(
                    "proxy",
                    format!("{why}; or \"{NO_PROXY}\" for no proxy"),
                ));
            }
            ProxyChoice::Via(Url::parse(text).map_err(|e| FieldError::new("proxy", e.to_string()))?)
        }
    };
    let mut h = Sha256::new();
    for part in [
        config.tls.as_ref().and_then(|t| t.client_cert.as_deref()),
        config.tls.as_ref().and_then(|t| t.client_key.as_deref()),
        config.tls.as_ref().and_then(|t| t.ca.as_deref()),
        config.proxy.as_deref().map(String::as_str),
    ] {
        feed(&mut h, part);
    }
    Ok(Some(Egress {
        auth,
        tls,
        proxy,
        client_key: first_16(h),
    }))
}

/// Feeds an optional text to a fingerprint, so that `None`, `""` and
/// neighbouring fields never run together.
fn feed(h: &mut Sha256, part: Option<&str>) {
    match part {
        None => h.update([0u8]),
        Some(text) => {
            h.update([1u8]);
            h.update((text.len() as u64).to_le_bytes());
            h.update(text.as_bytes());
        }
    }
}

fn first_16(h: Sha256) -> [u8; 16] {
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize()[..16]);
    out
}

/// A secret given inline or as the name of an environment variable
/// (exactly one); `field` is the inline key's dotted name.
fn secret_of(
    field: &str,
    inline: &Option<String>,
    from_env: &Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<String, FieldError> {
    match (inline, from_env) {
        (Some(_), Some(_)) => Err(FieldError::new(
            format!("{field}_env"),
            format!("set either `{field}` or `{field}_env`, not both"),
        )),
        (Some(value), None) if value.is_empty() => Err(FieldError::new(field, "is empty")),
        (Some(value), None) => Ok(value.clone()),
        (None, Some(var)) => env(var).filter(|v| !v.is_empty()).ok_or_else(|| {
            FieldError::new(
                format!("{field}_env"),
                format!("environment variable `{var}` is not set"),
            )
        }),
        (None, None) => Err(FieldError::new(
            field,
            format!("is required (or `{field}_env`, or `{field}_file` in the configuration file)"),
        )),
    }
}

/// Visible ASCII without spaces: what a token may hold to travel in a
/// header unchanged.
fn is_token_text(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_graphic())
}

fn has_control(text: &str) -> bool {
    text.chars().any(char::is_control)
}

fn prepare_auth(
    config: &EndpointConfig,
    auth: &AuthConfig,
    allow_private: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Auth, FieldError> {
    let kinds = [
        ("basic", auth.basic.is_some()),
        ("bearer", auth.bearer.is_some()),
        ("oauth2", auth.oauth2.is_some()),
    ];
    let set: Vec<&str> = kinds.iter().filter(|k| k.1).map(|k| k.0).collect();
    match set.as_slice() {
        [] => {
            return Err(FieldError::new(
                "auth",
                "needs one of `basic`, `bearer` or `oauth2`",
            ));
        }
        [_] => {}
        [first, second, ..] => {
            return Err(FieldError::new(
                format!("auth.{second}"),
                format!("`auth.{first}` is set too; an endpoint authenticates one way"),
            ));
        }
    }
    if let Some(name) = config
        .headers
        .keys()
        .find(|name| name.eq_ignore_ascii_case("authorization"))
    {
        return Err(FieldError::new(
            format!("headers.{name}"),
            "is what `auth` sends; give one of them",
        ));
    }
    if let Some(basic) = &auth.basic {
        if basic.username.is_empty() || basic.username.contains(':') || has_control(&basic.username)
        {
            return Err(FieldError::new(
                "auth.basic.username",
                "must be non-empty, without `:` or control characters (RFC 7617)",
            ));
        }
        let password = secret_of(
            "auth.basic.password",
            &basic.password,
            &basic.password_env,
            env,
        )?;
        if has_control(&password) {
            return Err(FieldError::new(
                "auth.basic.password",
                "has control characters",
            ));
        }
        let encoded = BASE64.encode(format!("{}:{password}", basic.username));
        return sensitive(&format!("Basic {encoded}"), "auth.basic.password");
    }
    if let Some(bearer) = &auth.bearer {
        let token = secret_of("auth.bearer.token", &bearer.token, &bearer.token_env, env)?;
        if !is_token_text(&token) {
            return Err(FieldError::new(
                "auth.bearer.token",
                "must be visible ASCII without spaces (RFC 6750)",
            ));
        }
        return sensitive(&format!("Bearer {token}"), "auth.bearer.token");
    }
    match &auth.oauth2 {
        Some(oauth) => {
            prepare_oauth2(config, oauth, allow_private, env).map(|c| Auth::OAuth2(Box::new(c)))
        }
        None => Err(FieldError::new(
            "auth",
            "needs one of `basic`, `bearer` or `oauth2`",
        )),
    }
}

fn sensitive(value: &str, field: &str) -> Result<Auth, FieldError> {
    let mut value = HeaderValue::from_str(value)
        .map_err(|_| FieldError::new(field, "has characters a header cannot carry"))?;
    value.set_sensitive(true);
    Ok(Auth::Header(value))
}

/// The token endpoint's URL: absolute, http(s) (plain http only where the
/// endpoint allows it), with a host and no credentials, and not private
/// unless private destinations are allowed.
fn token_url(
    config: &EndpointConfig,
    oauth: &OAuth2Config,
    allow_private: bool,
) -> Result<Url, FieldError> {
    let field = "auth.oauth2.token_url";
    let token_url = Url::parse(&oauth.token_url)
        .map_err(|e| FieldError::new(field, format!("is not an absolute URL: {e}")))?;
    match token_url.scheme() {
        "https" => {}
        "http" if config.allow_http || allow_private => {}
        "http" => {
            return Err(FieldError::new(
                field,
                "plain http needs `allow_http = true` on the endpoint",
            ));
        }
        other => {
            return Err(FieldError::new(
                field,
                format!("scheme `{other}` is not http or https"),
            ));
        }
    }
    if token_url.host().is_none() {
        return Err(FieldError::new(field, "has no host"));
    }
    if !token_url.username().is_empty() || token_url.password().is_some() {
        return Err(FieldError::new(
            field,
            "must not carry credentials (use `client_id` and `client_secret`)",
        ));
    }
    if !allow_private {
        if let Some(ip) = literal_ip(&token_url)
            && let Some(class) = ssrf::forbidden_class(ip)
        {
            return Err(FieldError::new(
                field,
                format!("points at a {class} address ({ip}); allow_private_destinations is off"),
            ));
        }
        if let Some(url::Host::Domain(name)) = token_url.host()
            && is_localhost_name(name)
        {
            return Err(FieldError::new(
                field,
                "points at localhost; allow_private_destinations is off",
            ));
        }
    }
    Ok(token_url)
}

fn prepare_oauth2(
    config: &EndpointConfig,
    oauth: &OAuth2Config,
    allow_private: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<OAuth2Client, FieldError> {
    let token_url = token_url(config, oauth, allow_private)?;
    if oauth.client_id.is_empty() || has_control(&oauth.client_id) {
        return Err(FieldError::new(
            "auth.oauth2.client_id",
            "must be non-empty, without control characters",
        ));
    }
    let client_secret = secret_of(
        "auth.oauth2.client_secret",
        &oauth.client_secret,
        &oauth.client_secret_env,
        env,
    )?;
    if has_control(&client_secret) {
        return Err(FieldError::new(
            "auth.oauth2.client_secret",
            "has control characters",
        ));
    }
    for (name, value) in [("scope", &oauth.scope), ("audience", &oauth.audience)] {
        if value
            .as_deref()
            .is_some_and(|v| v.is_empty() || has_control(v))
        {
            return Err(FieldError::new(
                format!("auth.oauth2.{name}"),
                "must be non-empty, without control characters (leave it out for none)",
            ));
        }
    }
    let cache_key = token_cache_key(config, oauth, &token_url, &client_secret);
    Ok(OAuth2Client {
        token_url,
        client_id: oauth.client_id.clone(),
        client_secret,
        scope: oauth.scope.clone(),
        audience: oauth.audience.clone(),
        client_auth: oauth.client_auth,
        cache_key,
    })
}

/// What tells one cached token from another: the endpoint and every
/// setting the token endpoint sees, hashed (the secret never kept in it).
fn token_cache_key(
    config: &EndpointConfig,
    oauth: &OAuth2Config,
    token_url: &Url,
    client_secret: &str,
) -> [u8; 16] {
    let mut h = Sha256::new();
    for part in [
        Some(config.id.as_str()),
        Some(token_url.as_str()),
        Some(oauth.client_id.as_str()),
        Some(client_secret),
        oauth.scope.as_deref(),
        oauth.audience.as_deref(),
        Some(match oauth.client_auth {
            ClientAuth::Basic => "basic",
            ClientAuth::Post => "post",
        }),
    ] {
        feed(&mut h, part);
    }
    first_16(h)
}

/// The certificates of a PEM text (at least one).
fn certificates(field: &str, pem: &str) -> Result<Vec<CertificateDer<'static>>, FieldError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| FieldError::new(field, format!("is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(FieldError::new(
            field,
            "holds no `-----BEGIN CERTIFICATE-----` block",
        ));
    }
    Ok(certs)
}

fn prepare_tls(tls: &TlsConfig, url: &Url) -> Result<TlsMaterial, FieldError> {
    if url.scheme() != "https" {
        return Err(FieldError::new(
            "tls",
            "applies to https:// URLs only (this endpoint's URL is plain http)",
        ));
    }
    let identity_pem = match (&tls.client_cert, &tls.client_key) {
        (None, None) => None,
        (Some(_), None) => {
            return Err(FieldError::new(
                "tls.client_key",
                "is required with `tls.client_cert`",
            ));
        }
        (None, Some(_)) => {
            return Err(FieldError::new(
                "tls.client_cert",
                "is required with `tls.client_key`",
            ));
        }
        (Some(cert), Some(key)) => {
            let chain = certificates("tls.client_cert", cert)?;
            let private = PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|_| {
                FieldError::new(
                    "tls.client_key",
                    "holds no PEM private key (PKCS#8, PKCS#1 or SEC1)",
                )
            })?;
            let provider = rustls::crypto::ring::default_provider();
            rustls::sign::CertifiedKey::from_der(chain, private, &provider).map_err(|e| {
                FieldError::new(
                    "tls.client_key",
                    format!("does not fit `tls.client_cert`: {e}"),
                )
            })?;
            let mut pem = cert.trim_end().as_bytes().to_vec();
            pem.push(b'\n');
            pem.extend_from_slice(key.as_bytes());
            Some(pem)
        }
    };
    let ca_pem = match &tls.ca {
        None => None,
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates("tls.ca", ca)? {
                roots.add(cert).map_err(|e| {
                    FieldError::new("tls.ca", format!("holds a certificate that is no CA: {e}"))
                })?;
            }
            Some(ca.as_bytes().to_vec())
        }
    };
    if identity_pem.is_none() && ca_pem.is_none() {
        return Err(FieldError::new(
            "tls",
            "needs `client_cert` and `client_key`, or `ca`",
        ));
    }
    Ok(TlsMaterial {
        identity_pem,
        ca_pem,
    })
}

#[cfg(test)]
mod tests;
