//! An endpoint's destination: its URL checked when the endpoint is saved,
//! parsed again when it is first sent to (an idle endpoint never is, and
//! 100 000 of them must fit), and the IP it names literally.
//!
//! Pure: no I/O (names are resolved, and checked, when connecting).

use std::net::IpAddr;

use reqwest::Url;

use super::is_localhost_name;
use crate::config::{EndpointConfig, FieldError};
use crate::guard as ssrf;

/// An endpoint's destination, parsed: for reqwest, and for the lean HTTP/1.1
/// client, which takes an `http::Uri`.
pub(super) struct Target {
    pub(super) url: Url,
    /// `None` when the URL is no valid request target for `http` (the
    /// lean client then answers with a local failure).
    pub(super) uri: Option<http::Uri>,
    /// The fixed part of the lean client's request head, built by the
    /// sender on first use (the index does not know the format).
    pub(super) fixed_head: std::sync::OnceLock<Box<[u8]>>,
}

impl Target {
    pub(super) fn of(text: &str) -> Self {
        let url = Url::parse(text).unwrap_or_else(|e| {
            // Cannot happen: `build` parsed the same text. A reserved name
            // (RFC 6761) that never resolves keeps it from going anywhere.
            tracing::error!(error = %e, "an endpoint URL that parsed once no longer parses");
            Url::parse("https://unparsable.invalid/").unwrap_or_else(|_| unreachable!())
        });
        let uri = url.as_str().parse().ok();
        Self {
            url,
            uri,
            fixed_head: std::sync::OnceLock::new(),
        }
    }
}

/// The IP a URL names literally (parsed once, kept by the `Url`).
pub(crate) fn literal_ip(url: &Url) -> Option<IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    }
}

/// `url`: absolute, http(s) (plain http only when allowed), without
/// credentials, with a host; not a private or loopback destination when
/// those are refused.
pub(super) fn check_url(config: &EndpointConfig, allow_private: bool) -> Result<Url, FieldError> {
    let url = Url::parse(&config.url)
        .map_err(|e| FieldError::new("url", format!("is not an absolute URL: {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" if config.allow_http || allow_private => {}
        "http" => {
            return Err(FieldError::new(
                "url",
                "plain http needs `allow_http = true` on the endpoint",
            ));
        }
        other => {
            return Err(FieldError::new(
                "url",
                format!("scheme `{other}` is not http or https"),
            ));
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(FieldError::new(
            "url",
            "must not carry credentials (use headers)",
        ));
    }
    if url.host().is_none() {
        return Err(FieldError::new("url", "has no host"));
    }
    let literal_ip = literal_ip(&url);
    if !allow_private {
        if let Some(ip) = literal_ip
            && let Some(class) = ssrf::forbidden_class(ip)
        {
            return Err(FieldError::new(
                "url",
                format!("points at a {class} address ({ip}); allow_private_destinations is off"),
            ));
        }
        if let Some(url::Host::Domain(name)) = url.host()
            && is_localhost_name(name)
        {
            return Err(FieldError::new(
                "url",
                "points at localhost; allow_private_destinations is off",
            ));
        }
    }
    Ok(url)
}
