//! How requests leave for an endpoint besides their URL: the credentials
//! its receiver asks for (`auth`: basic, bearer, OAuth2 client
//! credentials), the TLS material of the connection (`tls`: a client
//! certificate, a CA to trust) and the egress proxy (`proxy`, and
//! `delivery.proxy` for every endpoint).
//!
//! Plain data and the masks of its secrets. `index::egress` validates it
//! and prepares it; `deliver` uses it. Ranges are in [`super::limits`];
//! `*_file` keys are read into their value by [`super::resolve`] before
//! the tables become these structs.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::limits::*;

/// `auth`: how hookstream authenticates to the receiver: exactly one of
/// basic, bearer, oauth2.
// `index::egress` checks that exactly one is set.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct AuthConfig {
    /// HTTP Basic (RFC 7617).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub basic: Option<BasicAuth>,
    /// A static bearer token (RFC 6750).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer: Option<BearerAuth>,
    /// OAuth2 client credentials (RFC 6749 §4.4): a token fetched from
    /// `token_url`, cached until it expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth2: Option<OAuth2Config>,
}

/// `auth.basic = { username, password | password_env | password_file }`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// The user id (no `:`).
    #[schemars(length(min = AUTH_NAME_LEN.min, max = AUTH_NAME_LEN.max))]
    pub username: String,
    /// The password; answers show it masked (`****`), and a masked value
    /// written back keeps the stored one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = SECRET_LEN.min, max = SECRET_LEN.max))]
    pub password: Option<String>,
    /// Environment variable holding the password (configuration file only;
    /// the API keeps but never sets it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = ENV_NAME_LEN.max))]
    pub password_env: Option<String>,
}

/// `auth.bearer = { token | token_env | token_file }`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BearerAuth {
    /// The token sent as `Authorization: Bearer <token>` (visible ASCII,
    /// no spaces); masked in answers like `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = BEARER_TOKEN_LEN.min, max = BEARER_TOKEN_LEN.max))]
    pub token: Option<String>,
    /// Environment variable holding the token (configuration file only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = ENV_NAME_LEN.max))]
    pub token_env: Option<String>,
}

/// `auth.oauth2 = { token_url, client_id, client_secret | client_secret_env
/// | client_secret_file, scope, audience, client_auth }`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OAuth2Config {
    /// The authorization server's token endpoint (https; http as for the
    /// endpoint's url). The SSRF guard checks it.
    #[schemars(length(min = URL_LEN.min, max = URL_LEN.max))]
    pub token_url: String,
    /// The client id.
    #[schemars(length(min = AUTH_NAME_LEN.min, max = AUTH_NAME_LEN.max))]
    pub client_id: String,
    /// The client secret; masked in answers like `password`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = SECRET_LEN.min, max = SECRET_LEN.max))]
    pub client_secret: Option<String>,
    /// Environment variable holding the client secret (configuration file
    /// only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = ENV_NAME_LEN.max))]
    pub client_secret_env: Option<String>,
    /// `scope` of the token request (space-separated), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = OAUTH_PARAM_LEN.min, max = OAUTH_PARAM_LEN.max))]
    pub scope: Option<String>,
    /// `audience` of the token request (Auth0, Okta), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = OAUTH_PARAM_LEN.min, max = OAUTH_PARAM_LEN.max))]
    pub audience: Option<String>,
    /// How the client authenticates to the token endpoint.
    #[serde(default)]
    pub client_auth: ClientAuth,
}

/// How an OAuth2 client sends its credentials to the token endpoint
/// (RFC 6749 §2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// HTTP Basic with the form-encoded id and secret
    /// (`client_secret_basic`, which every server must support).
    #[default]
    Basic,
    /// `client_id` and `client_secret` in the form body
    /// (`client_secret_post`).
    Post,
}

/// `tls = { client_cert, client_key, ca }` (each inline PEM, or a
/// `*_file` naming a PEM file).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The client certificate chain (PEM), leaf first: presented when the
    /// receiver asks for one (mTLS). Needs `client_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = PEM_LEN.min, max = PEM_LEN.max))]
    pub client_cert: Option<String>,
    /// The client certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1);
    /// masked in answers, and a masked value written back keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = PEM_LEN.min, max = PEM_LEN.max))]
    pub client_key: Option<String>,
    /// CA certificates (PEM) trusted for this endpoint besides the
    /// system's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = PEM_LEN.min, max = PEM_LEN.max))]
    pub ca: Option<String>,
}

/// An endpoint's `proxy`: a proxy URL, or [`NO_PROXY`] to go direct even
/// when `delivery.proxy` is set.
pub const NO_PROXY: &str = "none";

/// The fields of an endpoint that a `*_file` key may fill (`<field>_file`),
/// read when the configuration file is loaded.
pub const FILE_FIELDS: [&str; 7] = [
    "secret",
    "auth.basic.password",
    "auth.bearer.token",
    "auth.oauth2.client_secret",
    "tls.client_cert",
    "tls.client_key",
    "tls.ca",
];

impl AuthConfig {
    /// The secret values (password, token, client secret), by field name.
    pub fn secrets_mut(&mut self) -> Vec<(&'static str, &mut Option<String>)> {
        let mut out = Vec::new();
        if let Some(b) = &mut self.basic {
            out.push(("auth.basic.password", &mut b.password));
        }
        if let Some(b) = &mut self.bearer {
            out.push(("auth.bearer.token", &mut b.token));
        }
        if let Some(o) = &mut self.oauth2 {
            out.push(("auth.oauth2.client_secret", &mut o.client_secret));
        }
        out
    }

    /// The environment variables named in place of a secret, by field name.
    pub fn env_names(&self) -> Vec<(&'static str, &str)> {
        let mut out = Vec::new();
        if let Some(v) = self.basic.as_ref().and_then(|b| b.password_env.as_deref()) {
            out.push(("auth.basic.password_env", v));
        }
        if let Some(v) = self.bearer.as_ref().and_then(|b| b.token_env.as_deref()) {
            out.push(("auth.bearer.token_env", v));
        }
        if let Some(v) = self
            .oauth2
            .as_ref()
            .and_then(|o| o.client_secret_env.as_deref())
        {
            out.push(("auth.oauth2.client_secret_env", v));
        }
        out
    }

    /// Every secret value replaced by `mask`.
    pub fn mask_secrets(&mut self, mask: &str) {
        for (_, value) in self.secrets_mut() {
            if value.is_some() {
                *value = Some(mask.to_string());
            }
        }
    }
}

impl TlsConfig {
    /// The private key replaced by `mask` (certificates are public).
    pub fn mask_secrets(&mut self, mask: &str) {
        if self.client_key.is_some() {
            self.client_key = Some(mask.to_string());
        }
    }
}

/// Why `text` is no proxy URL (`None` when it is one): an absolute
/// `http://` or `https://` URL with a host and nothing after the
/// authority; credentials only where `credentials` allows them.
pub fn proxy_url_problem(text: &str, credentials: bool) -> Option<String> {
    let url = match url::Url::parse(text) {
        Ok(url) => url,
        Err(e) => return Some(format!("is not an absolute URL: {e}")),
    };
    if !matches!(url.scheme(), "http" | "https") {
        return Some(format!(
            "scheme `{}` is not http or https (a proxy is `http://host:port`)",
            url.scheme()
        ));
    }
    if url.host().is_none() {
        return Some("has no host".into());
    }
    if !(url.path().is_empty() || url.path() == "/") || url.query().is_some() {
        return Some("must be `scheme://host:port` without a path or query".into());
    }
    if !credentials && (!url.username().is_empty() || url.password().is_some()) {
        return Some(
            "must not carry credentials here (give a proxy that needs them in `delivery.proxy`)"
                .into(),
        );
    }
    None
}

/// A proxy URL with its password (if any) replaced by `mask`, for views
/// of the configuration. Text that is no URL is shown as it is.
pub fn masked_proxy(proxy: &str, mask: &str) -> String {
    match url::Url::parse(proxy) {
        Ok(mut url) if url.password().is_some() => {
            let _ = url.set_password(Some(mask));
            url.to_string()
        }
        _ => proxy.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_hide_passwords_tokens_client_secrets_and_keys_only() {
        let mut auth = AuthConfig {
            basic: Some(BasicAuth {
                username: "hooks".into(),
                password: Some("pw".into()),
                password_env: None,
            }),
            ..Default::default()
        };
        auth.mask_secrets("****");
        let basic = auth.basic.as_ref().unwrap();
        assert_eq!(basic.password.as_deref(), Some("****"));
        assert_eq!(basic.username, "hooks");
        let mut tls = TlsConfig {
            client_cert: Some("CERT".into()),
            client_key: Some("KEY".into()),
            ca: Some("CA".into()),
        };
        tls.mask_secrets("****");
        assert_eq!(tls.client_key.as_deref(), Some("****"));
        assert_eq!(tls.client_cert.as_deref(), Some("CERT"));
        assert_eq!(
            masked_proxy("http://u:p4ss@proxy.internal:3128", "****"),
            "http://u:****@proxy.internal:3128/"
        );
        assert_eq!(
            masked_proxy("http://127.0.0.1:3128", "****"),
            "http://127.0.0.1:3128"
        );
    }

    #[test]
    fn a_proxy_url_is_http_or_https_with_a_host_and_nothing_after_it() {
        assert_eq!(proxy_url_problem("http://127.0.0.1:3128", false), None);
        assert_eq!(
            proxy_url_problem("https://proxy.internal:8443/", false),
            None
        );
        assert_eq!(
            proxy_url_problem("http://u:p@proxy.internal:3128", true),
            None
        );
        for (text, words) in [
            ("socks5://proxy.internal:1080", "scheme `socks5`"),
            ("proxy.internal:3128", "scheme"),
            ("http://proxy.internal:3128/path", "without a path"),
            ("http://proxy.internal:3128/?q=1", "without a path"),
            ("http://u:p@proxy.internal:3128", "credentials"),
            ("", "absolute URL"),
        ] {
            let why = proxy_url_problem(text, false).unwrap_or_default();
            assert!(why.contains(words), "{text}: {why}");
        }
    }

    #[test]
    fn a_bad_delivery_proxy_stops_loading_naming_the_key() {
        let load = |proxy: &str| {
            let text = format!("[delivery]\nproxy = \"{proxy}\"\n");
            super::super::Config::from_toml_with_env(&text, &|_| None)
        };
        load("http://user:pw@127.0.0.1:3128").unwrap();
        let err = load("socks5://127.0.0.1:1080").unwrap_err();
        assert_eq!(err.key, "delivery.proxy");
        let err = load(&format!("http://{}.example:1", "a".repeat(3000))).unwrap_err();
        assert_eq!(err.key, "delivery.proxy");
    }
}
