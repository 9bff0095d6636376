//! Request signing and verification for the five schemes of SPEC §4.
//!
//! Pure: keys in, header values out. Keys are derived once per endpoint and
//! the keyed HMAC state is cloned per request, so the secret is never
//! re-hashed on the hot path. Never logs or formats a secret.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::digest::block_api::CoreProxy;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// An HMAC keyed and ready, without the block buffer of [`HmacSha256`]
/// (80 bytes instead of 144; one per endpoint and key).
type KeyedState = hmac::block_api::HmacCore<Sha256>;

pub use crate::config::SignatureScheme;

/// Why a secret cannot be used. Never contains the secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    /// The scheme signs, but no secret was given.
    #[error("a secret is required for signature scheme `{0}`")]
    Missing(SignatureScheme),
    /// `standard` secrets are `whsec_` + base64.
    #[error("is not valid base64 after `whsec_`")]
    NotBase64,
    /// `mender` secrets are hex.
    #[error("is not valid hex (scheme `mender` uses a hex-encoded key)")]
    NotHex,
    /// Zero-length key.
    #[error("decodes to an empty key")]
    Empty,
}

/// Derives the HMAC key bytes of `secret` for `scheme`.
pub fn derive_key(scheme: SignatureScheme, secret: &str) -> Result<Vec<u8>, SecretError> {
    let key = match scheme {
        SignatureScheme::Standard => {
            let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
            BASE64.decode(encoded).map_err(|_| SecretError::NotBase64)?
        }
        SignatureScheme::Mender => hex::decode(secret).map_err(|_| SecretError::NotHex)?,
        SignatureScheme::Openmdm | SignatureScheme::Github => secret.as_bytes().to_vec(),
        SignatureScheme::None => return Ok(Vec::new()),
    };
    if key.is_empty() {
        return Err(SecretError::Empty);
    }
    Ok(key)
}

/// Header names written by the signers, lowercase as sent on the wire.
pub mod header {
    /// Delivery id, stable across retries.
    pub const WEBHOOK_ID: &str = "webhook-id";
    /// Unix seconds of the attempt.
    pub const WEBHOOK_TIMESTAMP: &str = "webhook-timestamp";
    /// Standard Webhooks signature.
    pub const WEBHOOK_SIGNATURE: &str = "webhook-signature";
    /// Mender algorithm name.
    pub const MEN_ALGORITHM: &str = "x-men-algorithm";
    /// Mender signature.
    pub const MEN_SIGNATURE: &str = "x-men-signature";
    /// OpenMDM event type.
    pub const OPENMDM_EVENT: &str = "x-openmdm-event";
    /// OpenMDM delivery id: the event's id.
    pub const OPENMDM_DELIVERY: &str = "x-openmdm-delivery";
    /// OpenMDM timestamp: the event's time, ISO 8601 with milliseconds.
    pub const OPENMDM_TIMESTAMP: &str = "x-openmdm-timestamp";
    /// OpenMDM signature.
    pub const OPENMDM_SIGNATURE: &str = "x-openmdm-signature";
    /// GitHub event type.
    pub const GITHUB_EVENT: &str = "x-github-event";
    /// GitHub delivery id.
    pub const GITHUB_DELIVERY: &str = "x-github-delivery";
    /// GitHub signature.
    pub const GITHUB_SIGNATURE: &str = "x-hub-signature-256";
}

/// Value of `X-Men-Algorithm`.
pub const MENDER_ALGORITHM: &str = "MEN-HMAC-SHA256-Payload";

/// What one request is signed over.
#[derive(Debug, Clone, Copy)]
pub struct SignInput<'a> {
    /// The `webhook-id` of the delivery.
    pub webhook_id: &'a str,
    /// Unix seconds of this attempt.
    pub timestamp: i64,
    /// The exact request body.
    pub body: &'a [u8],
    /// Event type (for the `X-*-Event` headers).
    pub event_type: &'a str,
    /// The event's id (OpenMDM's `X-OpenMDM-Delivery`: receivers dedupe
    /// on it).
    pub event_id: &'a str,
    /// The event's own time, else its first attempt's, unix ms
    /// (`X-OpenMDM-Timestamp`): the same on every attempt.
    pub event_time_ms: i64,
}

/// Signs requests for one endpoint: the current key and, during a rotation,
/// the previous one.
#[derive(Clone)]
pub struct Signer {
    scheme: SignatureScheme,
    /// Boxed slice, not `Vec`: one per endpoint, 100 000 of them.
    keys: Box<[KeyedState]>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("scheme", &self.scheme)
            .field("keys", &self.keys.len())
            .finish()
    }
}

impl Signer {
    /// A signer for `scheme` with the current secret and an optional previous
    /// one that keeps signing during a rotation grace period.
    pub fn new(
        scheme: SignatureScheme,
        secret: Option<&str>,
        previous: Option<&str>,
    ) -> Result<Self, SecretError> {
        if scheme == SignatureScheme::None {
            return Ok(Self {
                scheme,
                keys: Box::default(),
            });
        }
        let secret = secret.ok_or(SecretError::Missing(scheme))?;
        let mut keys = vec![keyed(&derive_key(scheme, secret)?).decompose().0];
        if let Some(previous) = previous {
            keys.push(keyed(&derive_key(scheme, previous)?).decompose().0);
        }
        Ok(Self {
            scheme,
            keys: keys.into_boxed_slice(),
        })
    }

    /// The scheme this signer writes.
    pub fn scheme(&self) -> SignatureScheme {
        self.scheme
    }

    /// Calls `emit(name, value)` for every scheme-specific header.
    /// `webhook-id` and `webhook-timestamp` are written by the caller for every
    /// scheme.
    pub fn sign(&self, input: &SignInput<'_>, mut emit: impl FnMut(&'static str, String)) {
        match self.scheme {
            SignatureScheme::None => {}
            SignatureScheme::Standard => {
                let mut value = String::with_capacity(48 * self.keys.len());
                for (i, key) in self.keys.iter().enumerate() {
                    let mut mac = resume(key);
                    mac.update(input.webhook_id.as_bytes());
                    mac.update(b".");
                    mac.update(itoa::Buffer::new().format(input.timestamp).as_bytes());
                    mac.update(b".");
                    mac.update(input.body);
                    if i > 0 {
                        value.push(' ');
                    }
                    value.push_str("v1,");
                    BASE64.encode_string(mac.finalize().into_bytes(), &mut value);
                }
                emit(header::WEBHOOK_SIGNATURE, value);
            }
            SignatureScheme::Mender => {
                emit(header::MEN_ALGORITHM, MENDER_ALGORITHM.to_string());
                emit(header::MEN_SIGNATURE, self.body_hex(input.body));
            }
            SignatureScheme::Openmdm => {
                emit(header::OPENMDM_EVENT, input.event_type.to_string());
                emit(header::OPENMDM_DELIVERY, input.event_id.to_string());
                emit(header::OPENMDM_TIMESTAMP, iso_millis(input.event_time_ms));
                emit(
                    header::OPENMDM_SIGNATURE,
                    format!("sha256={}", self.body_hex(input.body)),
                );
            }
            SignatureScheme::Github => {
                emit(header::GITHUB_EVENT, input.event_type.to_string());
                emit(header::GITHUB_DELIVERY, input.webhook_id.to_string());
                emit(
                    header::GITHUB_SIGNATURE,
                    format!("sha256={}", self.body_hex(input.body)),
                );
            }
        }
    }

    /// Hex HMAC of the body under the current key.
    fn body_hex(&self, body: &[u8]) -> String {
        let Some(key) = self.keys.first() else {
            return String::new();
        };
        let mut mac = resume(key);
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }
}

/// A MAC continuing from a keyed state.
fn resume(state: &KeyedState) -> HmacSha256 {
    HmacSha256::compose(state.clone(), Default::default())
}

fn keyed(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable!("HMAC accepts keys of every length"),
    }
}

/// ISO 8601 in UTC with milliseconds, as OpenMDM writes its timestamps.
fn iso_millis(unix_ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Why a received request does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A header the scheme needs is absent.
    #[error("missing header `{0}`")]
    MissingHeader(&'static str),
    /// The header is there but malformed.
    #[error("header `{0}` is malformed")]
    Malformed(&'static str),
    /// No signature matches the body under the secret.
    #[error("signature does not match")]
    Mismatch,
    /// The secret cannot be used with the scheme.
    #[error("secret {0}")]
    Secret(#[from] SecretError),
}

/// Verifies a received request. `header` looks a header up by lowercase name.
pub fn verify(
    scheme: SignatureScheme,
    secret: &str,
    header: &dyn Fn(&str) -> Option<String>,
    body: &[u8],
) -> Result<(), VerifyError> {
    if scheme == SignatureScheme::None {
        return Ok(());
    }
    let mut mac = keyed(&derive_key(scheme, secret)?);
    match scheme {
        SignatureScheme::None => Ok(()),
        SignatureScheme::Standard => {
            let id =
                header(header::WEBHOOK_ID).ok_or(VerifyError::MissingHeader(header::WEBHOOK_ID))?;
            let ts = header(header::WEBHOOK_TIMESTAMP)
                .ok_or(VerifyError::MissingHeader(header::WEBHOOK_TIMESTAMP))?;
            let sigs = header(header::WEBHOOK_SIGNATURE)
                .ok_or(VerifyError::MissingHeader(header::WEBHOOK_SIGNATURE))?;
            mac.update(id.as_bytes());
            mac.update(b".");
            mac.update(ts.trim().as_bytes());
            mac.update(b".");
            mac.update(body);
            let mut any = false;
            for sig in sigs.split_whitespace() {
                let Some(encoded) = sig.strip_prefix("v1,") else {
                    continue;
                };
                any = true;
                if let Ok(raw) = BASE64.decode(encoded)
                    && mac.clone().verify_slice(&raw).is_ok()
                {
                    return Ok(());
                }
            }
            if any {
                Err(VerifyError::Mismatch)
            } else {
                Err(VerifyError::Malformed(header::WEBHOOK_SIGNATURE))
            }
        }
        SignatureScheme::Mender => {
            let sig = header(header::MEN_SIGNATURE)
                .ok_or(VerifyError::MissingHeader(header::MEN_SIGNATURE))?;
            let raw = hex::decode(sig.trim())
                .map_err(|_| VerifyError::Malformed(header::MEN_SIGNATURE))?;
            mac.update(body);
            mac.verify_slice(&raw).map_err(|_| VerifyError::Mismatch)
        }
        SignatureScheme::Openmdm | SignatureScheme::Github => {
            let name = if scheme == SignatureScheme::Openmdm {
                header::OPENMDM_SIGNATURE
            } else {
                header::GITHUB_SIGNATURE
            };
            let sig = header(name).ok_or(VerifyError::MissingHeader(name))?;
            let hex_part = sig
                .trim()
                .strip_prefix("sha256=")
                .ok_or(VerifyError::Malformed(name))?;
            let raw = hex::decode(hex_part).map_err(|_| VerifyError::Malformed(name))?;
            mac.update(body);
            mac.verify_slice(&raw).map_err(|_| VerifyError::Mismatch)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// The shared vectors, embedded so the tests run from any directory.
    const VECTORS: &str = include_str!("../tests/data/signatures.json");

    fn vectors() -> Vec<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_str(VECTORS).unwrap();
        v["vectors"].as_array().unwrap().clone()
    }

    fn sign_to_map(signer: &Signer, input: &SignInput<'_>) -> HashMap<String, String> {
        let mut out = HashMap::new();
        signer.sign(input, |k, v| {
            out.insert(k.to_string(), v);
        });
        out
    }

    #[test]
    fn every_shared_vector_signs_and_verifies() {
        let all = vectors();
        assert_eq!(all.len(), 4);
        for v in all {
            let scheme = SignatureScheme::parse(v["scheme"].as_str().unwrap()).unwrap();
            let secret = v["secret"].as_str().unwrap();
            let body = v["body"].as_str().unwrap().as_bytes();
            let id = v["webhook_id"].as_str().unwrap_or("msg_x");
            let ts = v["webhook_timestamp"].as_i64().unwrap_or(1_700_000_000);
            let signer = Signer::new(scheme, Some(secret), None).unwrap();
            let input = SignInput {
                webhook_id: id,
                timestamp: ts,
                body,
                event_type: "device-provisioned",
                event_id: "evt-1",
                event_time_ms: ts * 1000,
            };
            let got = sign_to_map(&signer, &input);
            let expected = v["headers"].as_object().unwrap();
            for (name, value) in expected {
                let lower = name.to_ascii_lowercase();
                if lower == header::WEBHOOK_ID || lower == header::WEBHOOK_TIMESTAMP {
                    continue;
                }
                assert_eq!(
                    got.get(&lower),
                    value.as_str().map(str::to_string).as_ref(),
                    "{scheme} {name}"
                );
            }
            let headers: HashMap<String, String> = expected
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str().unwrap().to_string()))
                .chain(got.clone())
                .collect();
            verify(scheme, secret, &|n| headers.get(n).cloned(), body).unwrap();
            let mut tampered = body.to_vec();
            tampered.push(b' ');
            assert_eq!(
                verify(scheme, secret, &|n| headers.get(n).cloned(), &tampered),
                Err(VerifyError::Mismatch)
            );
        }
    }

    #[test]
    fn rotation_signs_with_both_keys_and_either_verifies() {
        let new = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let old = "whsec_dGhlIHByZXZpb3VzIGtleQ==";
        let signer = Signer::new(SignatureScheme::Standard, Some(new), Some(old)).unwrap();
        let input = SignInput {
            webhook_id: "msg_1",
            timestamp: 1,
            body: b"{}",
            event_type: "t",
            event_id: "evt-1",
            event_time_ms: 1000,
        };
        let mut headers = sign_to_map(&signer, &input);
        assert_eq!(headers[header::WEBHOOK_SIGNATURE].split(' ').count(), 2);
        headers.insert(header::WEBHOOK_ID.into(), "msg_1".into());
        headers.insert(header::WEBHOOK_TIMESTAMP.into(), "1".into());
        for secret in [new, old] {
            verify(
                SignatureScheme::Standard,
                secret,
                &|n| headers.get(n).cloned(),
                b"{}",
            )
            .unwrap();
        }
    }

    #[test]
    fn openmdm_and_github_carry_event_and_delivery() {
        let input = SignInput {
            webhook_id: "wh_1",
            timestamp: 1_776_254_400,
            body: b"{}",
            event_type: "device.enrolled",
            event_id: "7f3e9c20-9a8f-4e2a-8e29-4b5f0a3c0d10",
            event_time_ms: 1_776_254_400_000,
        };
        let o = sign_to_map(
            &Signer::new(SignatureScheme::Openmdm, Some("s"), None).unwrap(),
            &input,
        );
        assert_eq!(o[header::OPENMDM_EVENT], "device.enrolled");
        // OpenMDM: the event's id and the event's own time, ms precision.
        assert_eq!(
            o[header::OPENMDM_DELIVERY],
            "7f3e9c20-9a8f-4e2a-8e29-4b5f0a3c0d10"
        );
        assert_eq!(o[header::OPENMDM_TIMESTAMP], "2026-04-15T12:00:00.000Z");
        let g = sign_to_map(
            &Signer::new(SignatureScheme::Github, Some("s"), None).unwrap(),
            &input,
        );
        assert_eq!(g[header::GITHUB_EVENT], "device.enrolled");
        assert_eq!(g[header::GITHUB_DELIVERY], "wh_1");
    }

    #[test]
    fn bad_secrets_are_refused_without_echoing_them() {
        let e = Signer::new(SignatureScheme::Mender, Some("zz-secret"), None).unwrap_err();
        assert_eq!(e, SecretError::NotHex);
        assert!(!e.to_string().contains("zz-secret"));
        assert_eq!(
            Signer::new(SignatureScheme::Standard, Some("whsec_***"), None).unwrap_err(),
            SecretError::NotBase64
        );
        assert_eq!(
            Signer::new(SignatureScheme::Github, None, None).unwrap_err(),
            SecretError::Missing(SignatureScheme::Github)
        );
        assert!(Signer::new(SignatureScheme::None, None, None).is_ok());
    }

    #[test]
    fn missing_headers_are_named() {
        let e = verify(SignatureScheme::Github, "s", &|_| None, b"x").unwrap_err();
        assert_eq!(e, VerifyError::MissingHeader(header::GITHUB_SIGNATURE));
    }
}
