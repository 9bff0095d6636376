//! The lean client for plain `http://` destinations over HTTP/1.1: hyper's
//! pooled client on hyper's own connector, without reqwest's layers.
//!
//! Owns construction of that client and its resolver (the SSRF guard when
//! private destinations are not allowed; IP literals never reach a
//! resolver, `request::send_attempt` checks them). Profiles of one event per
//! POST showed reqwest spending per request what the exchange itself needs
//! in user space: a URL parse of every response (its redirect layer), a
//! copy of the header map, a clone of its whole connector, boxed futures
//! and timers. TLS and HTTP/2 destinations still go through reqwest
//! ([`super::client::HttpClients`]).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::guard as ssrf;

/// hyper's pooled HTTP/1.1 client for `http://` URLs.
pub type PlainClient = Client<HttpConnector<Resolver>, Full<Bytes>>;

/// Builds the plain client: the pool and timeouts of the reqwest clients
/// (`super::client`), TCP_NODELAY, HTTP/1.1 only.
pub fn build(guarded: bool) -> PlainClient {
    let mut connector = HttpConnector::new_with_resolver(Resolver { guarded });
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(10)));
    Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_max_idle_per_host(1024)
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector)
}

/// Resolves names with the system resolver and, when `guarded`, refuses
/// any answer holding a forbidden address ([`ssrf::check_all`]).
#[derive(Debug, Clone, Copy)]
pub struct Resolver {
    guarded: bool,
}

/// What a lookup gives the connector.
pub type Addrs = std::vec::IntoIter<SocketAddr>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Name> for Resolver {
    type Response = Addrs;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Addrs, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let guarded = self.guarded;
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| Box::new(e) as BoxError)?
                .collect();
            if guarded {
                ssrf::check_all(&host, &addrs).map_err(|e| Box::new(e) as BoxError)?;
            }
            Ok(addrs.into_iter())
        })
    }
}
