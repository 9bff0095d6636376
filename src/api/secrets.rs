//! Secrets as the API handles them: signing secrets (generated when not
//! given, shown once, masked on every read), custom header values
//! (where API keys go: masked on every read, shown only to an admin who
//! asks for them with `?reveal=headers`), and the secrets of `auth` and
//! `tls` (passwords, tokens, client secrets, private keys: masked on every
//! read, never shown again). A masked value sent back keeps the stored
//! one.
//!
//! Pure apart from the random source. Never logs.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as BASE64, URL_SAFE_NO_PAD};

use crate::config::EndpointConfig;
use crate::sign::SignatureScheme;

/// What a masked secret shows in place of the key.
const MASK: &str = "****";

/// A new random secret in the form `scheme` expects: `whsec_` + base64 of
/// 32 random bytes (`standard`), 32 random bytes in hex (`mender`), 32
/// random bytes in URL-safe base64 (`openmdm`, `github`); `None` for `none`.
pub fn generate(scheme: SignatureScheme) -> Option<String> {
    let bytes: [u8; 32] = rand::random();
    match scheme {
        SignatureScheme::Standard => Some(format!("whsec_{}", BASE64.encode(bytes))),
        SignatureScheme::Mender => Some(hex::encode(bytes)),
        SignatureScheme::Openmdm | SignatureScheme::Github => Some(URL_SAFE_NO_PAD.encode(bytes)),
        SignatureScheme::None => None,
    }
}

/// `whsec_****` for Standard Webhooks secrets, `****` for others.
pub fn mask(secret: &str) -> String {
    if secret.starts_with("whsec_") {
        format!("whsec_{MASK}")
    } else {
        MASK.to_string()
    }
}

/// Whether `value` is what [`mask`] shows (a client sent back what it read).
pub fn is_masked(value: &str) -> bool {
    value == MASK || value == format!("whsec_{MASK}")
}

/// Every header value replaced by the mask.
fn mask_headers(headers: &mut BTreeMap<String, String>) {
    for value in headers.values_mut() {
        *value = MASK.to_string();
    }
}

/// The secrets of `auth` and `tls` replaced by the mask.
fn mask_egress(config: &mut EndpointConfig) {
    if let Some(auth) = &mut config.auth {
        auth.mask_secrets(MASK);
    }
    if let Some(tls) = &mut config.tls {
        tls.mask_secrets(MASK);
    }
}

/// Puts the stored value back in place of every masked secret of
/// `incoming`'s `auth` and `tls` (`stored`: the endpoint it replaces, if
/// any). The error is the field of a masked secret with no stored value.
pub fn keep_masked_egress(
    stored: Option<&EndpointConfig>,
    incoming: &mut EndpointConfig,
) -> Result<(), &'static str> {
    if let Some(auth) = &mut incoming.auth {
        let mut stored_auth = stored
            .and_then(|s| s.auth.as_deref().cloned())
            .unwrap_or_default();
        let kept: Vec<(&str, Option<String>)> = stored_auth
            .secrets_mut()
            .into_iter()
            .map(|(field, value)| (field, value.clone()))
            .collect();
        for (field, value) in auth.secrets_mut() {
            if value.as_deref().is_some_and(is_masked) {
                match kept
                    .iter()
                    .find(|(f, _)| *f == field)
                    .and_then(|(_, v)| v.clone())
                {
                    Some(v) => *value = Some(v),
                    None => return Err(field),
                }
            }
        }
    }
    if let Some(tls) = &mut incoming.tls
        && tls.client_key.as_deref().is_some_and(is_masked)
    {
        let kept = stored
            .and_then(|s| s.tls.as_ref())
            .and_then(|t| t.client_key.clone());
        match kept {
            Some(key) => tls.client_key = Some(key),
            None => return Err("tls.client_key"),
        }
    }
    Ok(())
}

/// The endpoint as JSON with its secrets and header values masked.
pub fn masked_json(config: &EndpointConfig) -> serde_json::Value {
    let mut masked = config.clone();
    mask_egress(&mut masked);
    masked.secret = masked.secret.as_deref().map(|s| mask(s).into());
    masked.previous_secret = masked.previous_secret.as_deref().map(|s| mask(s).into());
    mask_headers(&mut masked.headers);
    serde_json::to_value(&masked).unwrap_or(serde_json::Value::Null)
}

/// The endpoint as JSON with its current secret in the clear (create and
/// rotate responses only); the previous secret and header values stay
/// masked.
pub fn revealed_json(config: &EndpointConfig) -> serde_json::Value {
    let mut shown = config.clone();
    shown.previous_secret = shown.previous_secret.as_deref().map(|s| mask(s).into());
    mask_headers(&mut shown.headers);
    mask_egress(&mut shown);
    serde_json::to_value(&shown).unwrap_or(serde_json::Value::Null)
}

/// The endpoint as JSON with its header values in the clear and its
/// secrets masked (`GET /v1/endpoints/{id}?reveal=headers`, admins only).
pub fn headers_revealed_json(config: &EndpointConfig) -> serde_json::Value {
    let mut shown = config.clone();
    shown.secret = shown.secret.as_deref().map(|s| mask(s).into());
    shown.previous_secret = shown.previous_secret.as_deref().map(|s| mask(s).into());
    mask_egress(&mut shown);
    serde_json::to_value(&shown).unwrap_or(serde_json::Value::Null)
}

/// Header values as a Mainflux webhook shows them: masked.
pub fn masked_headers(headers: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let mut masked = headers.clone();
    mask_headers(&mut masked);
    masked
}

/// The name of a header in `headers` whose value is the mask (a new
/// endpoint has no stored value to keep).
pub fn masked_header(headers: &BTreeMap<String, String>) -> Option<&str> {
    headers
        .iter()
        .find(|(_, value)| value.as_str() == MASK)
        .map(|(name, _)| name.as_str())
}

/// Puts the stored value back in place of every masked value in
/// `incoming` (a client sent back what it read). Header names compare
/// without case, as HTTP does; the incoming spelling is kept. The error is
/// the name of a masked header that `stored` does not have.
pub fn keep_masked_headers(
    stored: &BTreeMap<String, String>,
    incoming: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    for (name, value) in incoming.iter_mut() {
        if value != MASK {
            continue;
        }
        let kept = stored.get(name).or_else(|| {
            stored
                .iter()
                .find(|(stored_name, _)| stored_name.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        });
        match kept {
            Some(kept) => value.clone_from(kept),
            None => return Err(name.clone()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::derive_key;

    #[test]
    fn generated_secrets_fit_their_scheme_and_differ() {
        for scheme in SignatureScheme::ALL {
            let Some(secret) = generate(scheme) else {
                assert_eq!(scheme, SignatureScheme::None);
                continue;
            };
            let key = derive_key(scheme, &secret).unwrap();
            assert!(key.len() >= 32, "{scheme}: {} key bytes", key.len());
            assert_ne!(generate(scheme), Some(secret));
        }
        assert!(
            generate(SignatureScheme::Standard)
                .unwrap()
                .starts_with("whsec_")
        );
        assert_eq!(generate(SignatureScheme::Mender).unwrap().len(), 64);
    }

    #[test]
    fn masks_hide_the_key() {
        let mut c = EndpointConfig::new("a", "https://x.example/");
        c.secret = Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into());
        c.previous_secret = Some("deadbeef".into());
        let text = masked_json(&c).to_string();
        assert!(
            !text.contains("MfKQ9r8") && !text.contains("deadbeef"),
            "{text}"
        );
        assert!(text.contains("whsec_****"));
        assert!(is_masked("whsec_****") && is_masked("****") && !is_masked("whsec_x"));
        let shown = revealed_json(&c).to_string();
        assert!(shown.contains("MfKQ9r8") && !shown.contains("deadbeef"));
    }

    #[test]
    fn auth_and_tls_secrets_are_masked_in_every_view_and_kept_when_sent_back() {
        let mut c = EndpointConfig::new("a", "https://x.example/");
        c.auth = Some(Box::new(crate::config::AuthConfig {
            oauth2: Some(crate::config::OAuth2Config {
                token_url: "https://auth.example/token".into(),
                client_id: "cid".into(),
                client_secret: Some("cl1ent-s3cret".into()),
                ..Default::default()
            }),
            ..Default::default()
        }));
        c.tls = Some(Box::new(crate::config::TlsConfig {
            client_cert: Some("CERT".into()),
            client_key: Some("PRIVATE-K3Y".into()),
            ca: None,
        }));
        for shown in [
            masked_json(&c),
            revealed_json(&c),
            headers_revealed_json(&c),
        ] {
            assert_eq!(shown["auth"]["oauth2"]["client_secret"], "****");
            assert_eq!(shown["auth"]["oauth2"]["client_id"], "cid");
            assert_eq!(shown["tls"]["client_key"], "****");
            assert_eq!(shown["tls"]["client_cert"], "CERT");
        }
        let mut back: EndpointConfig = serde_json::from_value(masked_json(&c)).unwrap();
        keep_masked_egress(Some(&c), &mut back).unwrap();
        assert_eq!(back, c);
        let mut new: EndpointConfig = serde_json::from_value(masked_json(&c)).unwrap();
        assert_eq!(
            keep_masked_egress(None, &mut new),
            Err("auth.oauth2.client_secret")
        );
    }

    #[test]
    fn header_values_are_masked_unless_revealed() {
        let mut c = EndpointConfig::new("a", "https://x.example/");
        c.secret = Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into());
        c.headers
            .insert("Authorization".into(), "Bearer k3y-s3cret".into());
        c.headers.insert("X-Api-Key".into(), "abc123".into());
        for shown in [masked_json(&c), revealed_json(&c)] {
            assert_eq!(shown["headers"]["Authorization"], "****");
            assert_eq!(shown["headers"]["X-Api-Key"], "****");
            let text = shown.to_string();
            assert!(!text.contains("k3y-s3cret") && !text.contains("abc123"));
        }
        let revealed = headers_revealed_json(&c);
        assert_eq!(revealed["headers"]["Authorization"], "Bearer k3y-s3cret");
        assert_eq!(revealed["secret"], "whsec_****", "secrets stay masked");
        assert_eq!(masked_headers(&c.headers)["X-Api-Key"], "****");
    }

    #[test]
    fn masked_header_values_sent_back_keep_the_stored_ones() {
        let stored: BTreeMap<String, String> = [
            ("Authorization".to_string(), "Bearer k3y".to_string()),
            ("X-Team".to_string(), "fleet".to_string()),
        ]
        .into();
        let mut incoming: BTreeMap<String, String> = [
            ("authorization".to_string(), MASK.to_string()),
            ("X-Team".to_string(), "ops".to_string()),
            ("X-New".to_string(), "v".to_string()),
        ]
        .into();
        keep_masked_headers(&stored, &mut incoming).unwrap();
        assert_eq!(incoming["authorization"], "Bearer k3y");
        assert_eq!(incoming["X-Team"], "ops", "a new value replaces");
        assert_eq!(incoming["X-New"], "v");
        assert!(
            !incoming.contains_key("Authorization"),
            "the incoming spelling is kept"
        );
        let mut unknown: BTreeMap<String, String> =
            [("X-Other".to_string(), MASK.to_string())].into();
        assert_eq!(
            keep_masked_headers(&stored, &mut unknown),
            Err("X-Other".to_string())
        );
        assert_eq!(masked_header(&unknown), Some("X-Other"));
        assert_eq!(masked_header(&stored), None);
    }
}
