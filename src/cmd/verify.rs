//! `hookstream verify`: checks a received webhook's signature.

use crate::sign::{SignatureScheme, verify as verify_signature};

/// Verifies `body` with `headers` (`NAME:VALUE` strings) under `secret`.
/// `Ok(Err(reason))` means the request does not verify.
pub fn verify(
    scheme: &str,
    secret: &str,
    headers: &[String],
    body: &[u8],
) -> Result<Result<(), String>, super::CommandError> {
    let scheme = SignatureScheme::parse(scheme).ok_or_else(|| {
        super::CommandError::Usage(format!(
            "--scheme: `{scheme}` is not one of standard, mender, openmdm, github, none"
        ))
    })?;
    let mut parsed = Vec::with_capacity(headers.len());
    for h in headers {
        let (name, value) = h.split_once(':').ok_or_else(|| {
            super::CommandError::Usage(format!("--header: `{h}` is not NAME:VALUE"))
        })?;
        parsed.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    let lookup = |name: &str| {
        parsed
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    Ok(verify_signature(scheme, secret, &lookup, body).map_err(|e| e.to_string()))
}
