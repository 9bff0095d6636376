//! Signing secrets as the API handles them: generated when not given,
//! shown once, masked on every read.
//!
//! Pure apart from the random source. Never logs.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD as BASE64, URL_SAFE_NO_PAD};

use crate::config::EndpointConfig;
use crate::deliver::sign::SignatureScheme;

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

/// The endpoint as JSON with its secrets masked.
pub fn masked_json(config: &EndpointConfig) -> serde_json::Value {
    let mut masked = config.clone();
    masked.secret = masked.secret.as_deref().map(mask);
    masked.previous_secret = masked.previous_secret.as_deref().map(mask);
    serde_json::to_value(&masked).unwrap_or(serde_json::Value::Null)
}

/// The endpoint as JSON with its current secret in the clear (create and
/// rotate responses only); the previous secret stays masked.
pub fn revealed_json(config: &EndpointConfig) -> serde_json::Value {
    let mut shown = config.clone();
    shown.previous_secret = shown.previous_secret.as_deref().map(mask);
    serde_json::to_value(&shown).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::sign::derive_key;

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
}
