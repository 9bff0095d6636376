//! The pooled HTTP clients every sender shares.
//!
//! Owns client construction only: connection pooling, HTTP/1.1 and HTTP/2
//! (ALPN over TLS, prior knowledge for `http_version = "http2"` on plain
//! http), rustls, no redirects, the egress proxy (`delivery.proxy`, an
//! endpoint's `proxy`), and the SSRF guard as the DNS resolver when private
//! destinations are not allowed and no proxy is in the way (through a
//! proxy, `request` checks the destination itself: the client resolves
//! only the proxy's name). Plain `http://` over HTTP/1.1 without a proxy
//! goes through the lean client of [`super::plain`]; the rest through
//! reqwest.
//!
//! An endpoint with TLS material (client certificate, CA) or a proxy choice
//! of its own gets a client built for that setting, kept in a cache keyed
//! by the setting's fingerprint and the protocol flavour: endpoints with
//! the same setting share one client and its connections, and a client
//! unused for [`IDLE_CLIENT`] is dropped when another is built.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use reqwest::Url;
use reqwest::header::HeaderValue;

use super::oauth::TokenCache;
use super::plain::{self, PlainClient};
use crate::config::{DeliveryConfig, HttpVersion};
use crate::guard::GuardedResolver;
use crate::index::Endpoint;
use crate::index::egress::{ProxyChoice, TlsMaterial};

/// How long a client built for one endpoint setting is kept unused.
pub const IDLE_CLIENT: Duration = Duration::from_secs(600);

/// Where an endpoint's requests go first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route<'a> {
    /// Straight to the destination.
    Direct,
    /// Through this proxy (CONNECT for https, absolute-form for http).
    Proxy(&'a Url),
}

/// The route of an endpoint with proxy choice `choice` (`None`: it made
/// none) when `delivery.proxy` is `global`.
pub fn route<'a>(choice: Option<&'a ProxyChoice>, global: Option<&'a Url>) -> Route<'a> {
    match choice {
        Some(ProxyChoice::Via(url)) => Route::Proxy(url),
        Some(ProxyChoice::Direct) => Route::Direct,
        Some(ProxyChoice::Inherit) | None => global.map_or(Route::Direct, Route::Proxy),
    }
}

/// A client built for one endpoint setting, and when it was last used.
#[derive(Debug)]
struct OwnClient {
    client: reqwest::Client,
    used: Instant,
}

/// Clients built for endpoint settings, by protocol flavour and the
/// setting's fingerprint.
type OwnClients = HashMap<(HttpVersion, [u8; 16]), OwnClient>;

/// What a client is built from.
struct Build<'a> {
    user_agent: &'a str,
    version: HttpVersion,
    guarded: bool,
    proxy: Option<&'a Url>,
    tls: Option<&'a TlsMaterial>,
}

impl Build<'_> {
    fn client(&self) -> Result<reqwest::Client> {
        let mut b = reqwest::Client::builder()
            .user_agent(self.user_agent)
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .pool_max_idle_per_host(1024)
            .pool_idle_timeout(Duration::from_secs(90))
            .connect_timeout(Duration::from_secs(10));
        b = match self.version {
            HttpVersion::Auto => b,
            HttpVersion::Http1 => b.http1_only(),
            HttpVersion::Http2 => b.http2_prior_knowledge(),
        };
        b = match self.proxy {
            // The proxy's own address is the operator's choice (it may be
            // private): no guard on the names this client resolves.
            Some(proxy) => b.proxy(
                reqwest::Proxy::all(proxy.as_str())
                    .with_context(|| format!("the proxy `{}`", proxy.host_str().unwrap_or("")))?,
            ),
            None if self.guarded => b.no_proxy().dns_resolver(Arc::new(GuardedResolver)),
            None => b.no_proxy(),
        };
        if let Some(tls) = self.tls {
            if let Some(pem) = &tls.identity_pem {
                b = b.identity(
                    reqwest::Identity::from_pem(pem).context("the client certificate and key")?,
                );
            }
            if let Some(pem) = &tls.ca_pem {
                b = b.tls_certs_merge(
                    reqwest::Certificate::from_pem_bundle(pem).context("the CA certificates")?,
                );
            }
        }
        b.build().context("building the HTTP client")
    }
}

/// One client per protocol flavour; all share the same settings.
#[derive(Debug, Clone)]
pub struct HttpClients {
    auto: reqwest::Client,
    http1: reqwest::Client,
    http2: reqwest::Client,
    plain: PlainClient,
    user_agent: HeaderValue,
    guarded: bool,
    /// `delivery.proxy`, parsed.
    proxy: Option<Url>,
    /// Clients of endpoints with TLS material or a proxy of their own.
    own: Arc<Mutex<OwnClients>>,
    /// OAuth2 tokens of the endpoints that use them.
    tokens: Arc<TokenCache>,
}

impl HttpClients {
    /// Builds the clients of `delivery` (its user agent, proxy and SSRF
    /// guard: with `allow_private_destinations` off every name is resolved
    /// through the guard, or checked by `request` before a proxy gets it).
    pub fn new(delivery: &DeliveryConfig) -> Result<Self> {
        // reqwest is built without a bundled crypto provider; use ring.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let guarded = !delivery.allow_private_destinations;
        let proxy = match delivery.proxy.as_str() {
            "" => None,
            text => Some(Url::parse(text).context("delivery.proxy")?),
        };
        let build = |version| {
            Build {
                user_agent: &delivery.user_agent,
                version,
                guarded,
                proxy: proxy.as_ref(),
                tls: None,
            }
            .client()
        };
        Ok(Self {
            auto: build(HttpVersion::Auto)?,
            http1: build(HttpVersion::Http1)?,
            http2: build(HttpVersion::Http2)?,
            plain: plain::build(guarded),
            user_agent: HeaderValue::from_str(&delivery.user_agent)
                .context("the user agent is no valid header value")?,
            guarded,
            proxy,
            own: Arc::default(),
            tokens: Arc::default(),
        })
    }

    /// The shared client for an endpoint's `http_version`.
    pub fn for_version(&self, version: HttpVersion) -> &reqwest::Client {
        match version {
            HttpVersion::Auto => &self.auto,
            HttpVersion::Http1 => &self.http1,
            HttpVersion::Http2 => &self.http2,
        }
    }

    /// The client for `endpoint` in protocol flavour `version`: the shared
    /// one, or the one built for its TLS material or proxy choice (built
    /// on first use; an error says why it could not be).
    pub fn for_endpoint(
        &self,
        endpoint: &Endpoint,
        version: HttpVersion,
    ) -> Result<Cow<'_, reqwest::Client>, String> {
        let Some(egress) = endpoint.egress().filter(|e| e.needs_own_client()) else {
            return Ok(Cow::Borrowed(self.for_version(version)));
        };
        let now = Instant::now();
        let key = (version, egress.client_key);
        let mut own = crate::core::lock(&self.own);
        if let Some(found) = own.get_mut(&key) {
            found.used = now;
            return Ok(Cow::Owned(found.client.clone()));
        }
        let client = Build {
            user_agent: self.user_agent.to_str().unwrap_or("hookstream"),
            version,
            guarded: self.guarded,
            proxy: match self.route(endpoint) {
                Route::Proxy(url) => Some(url),
                Route::Direct => None,
            },
            tls: egress.tls.as_ref(),
        }
        .client()
        .map_err(|e| format!("{e:#}"))?;
        own.retain(|_, c| now.duration_since(c.used) < IDLE_CLIENT);
        own.insert(
            key,
            OwnClient {
                client: client.clone(),
                used: now,
            },
        );
        Ok(Cow::Owned(client))
    }

    /// Where `endpoint`'s requests go first.
    pub fn route<'a>(&'a self, endpoint: &'a Endpoint) -> Route<'a> {
        route(endpoint.egress().map(|e| &e.proxy), self.proxy.as_ref())
    }

    /// How many clients of endpoint settings are kept now (tests).
    pub fn own_clients(&self) -> usize {
        crate::core::lock(&self.own).len()
    }

    /// The OAuth2 token cache.
    pub fn tokens(&self) -> &TokenCache {
        &self.tokens
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_proxy_choice_overrides_delivery_proxy() {
        let global = Url::parse("http://127.0.0.1:3128").unwrap();
        let own = Url::parse("http://10.0.0.9:8080").unwrap();
        let via = ProxyChoice::Via(own.clone());
        assert_eq!(route(None, None), Route::Direct);
        assert_eq!(route(None, Some(&global)), Route::Proxy(&global));
        assert_eq!(
            route(Some(&ProxyChoice::Inherit), Some(&global)),
            Route::Proxy(&global)
        );
        assert_eq!(
            route(Some(&ProxyChoice::Direct), Some(&global)),
            Route::Direct
        );
        assert_eq!(route(Some(&via), Some(&global)), Route::Proxy(&own));
        assert_eq!(route(Some(&via), None), Route::Proxy(&own));
    }
}
