//! The pooled HTTP clients every sender shares.
//!
//! Owns client construction only: connection pooling, HTTP/1.1 and HTTP/2
//! (ALPN over TLS, prior knowledge for `http_version = "http2"` on plain
//! http), rustls, no redirects, no proxies, and the SSRF guard as the DNS
//! resolver when private destinations are not allowed. Plain `http://`
//! over HTTP/1.1 goes through the lean client of [`super::plain`]; the
//! rest through reqwest.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use reqwest::header::HeaderValue;

use super::plain::{self, PlainClient};
use crate::config::HttpVersion;
use crate::guard::GuardedResolver;

/// One client per protocol flavour; all share the same settings.
#[derive(Debug, Clone)]
pub struct HttpClients {
    auto: reqwest::Client,
    http1: reqwest::Client,
    http2: reqwest::Client,
    plain: PlainClient,
    user_agent: HeaderValue,
    guarded: bool,
}

impl HttpClients {
    /// Builds the clients. With `allow_private` false every name is resolved
    /// through the SSRF guard.
    pub fn new(user_agent: &str, allow_private: bool) -> Result<Self> {
        // reqwest is built without a bundled crypto provider; use ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let build = |version: HttpVersion| -> Result<reqwest::Client> {
            let mut b = reqwest::Client::builder()
                .user_agent(user_agent)
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .tcp_nodelay(true)
                .pool_max_idle_per_host(1024)
                .pool_idle_timeout(Duration::from_secs(90))
                .connect_timeout(Duration::from_secs(10));
            b = match version {
                HttpVersion::Auto => b,
                HttpVersion::Http1 => b.http1_only(),
                HttpVersion::Http2 => b.http2_prior_knowledge(),
            };
            if !allow_private {
                b = b.dns_resolver(Arc::new(GuardedResolver));
            }
            b.build().context("building the HTTP client")
        };
        Ok(Self {
            auto: build(HttpVersion::Auto)?,
            http1: build(HttpVersion::Http1)?,
            http2: build(HttpVersion::Http2)?,
            plain: plain::build(!allow_private),
            user_agent: HeaderValue::from_str(user_agent)
                .context("the user agent is no valid header value")?,
            guarded: !allow_private,
        })
    }

    /// The client for an endpoint's `http_version`.
    pub fn for_version(&self, version: HttpVersion) -> &reqwest::Client {
        match version {
            HttpVersion::Auto => &self.auto,
            HttpVersion::Http1 => &self.http1,
            HttpVersion::Http2 => &self.http2,
        }
    }

    /// The lean client for `http://` over HTTP/1.1.
    pub fn plain(&self) -> &PlainClient {
        &self.plain
    }

    /// The `User-Agent` the clients send.
    pub fn user_agent(&self) -> &HeaderValue {
        &self.user_agent
    }

    /// Whether the SSRF guard is on.
    pub fn guarded(&self) -> bool {
        self.guarded
    }
}
