//! The lean client for plain `http://` destinations over HTTP/1.1: its own
//! connections, pooled here, each driven by the attempt that holds it.
//!
//! Owns the connections and their resolver (the SSRF guard when private
//! destinations are not allowed; IP literals never reach a resolver,
//! `request::send_attempt` checks them). Profiles of one event per POST
//! showed reqwest spending per request what the exchange itself needs in
//! user space, then hyper's client connection two hand-offs between tasks
//! (a channel to the connection's task, a oneshot back), a `Request` and a
//! response `HeaderMap` built and dropped, and the wake-ups of a task per
//! connection. Here a request takes an idle connection of its host from a
//! list (or opens one), writes its head and body in one vectored write,
//! reads the answer in the attempt ([`conn`]), and gives the connection
//! back once the answer was read to its end. The format is [`wire`]'s.
//! TLS and HTTP/2 destinations go through reqwest
//! ([`super::client::HttpClients`]).

mod conn;
pub mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::Uri;
use http::uri::Authority;

use self::conn::Conn;
pub use self::conn::{BodyEnd, MAX_RESPONSE_BODY};
pub use self::wire::ResponseHead;
use crate::guard as ssrf;

/// Idle connections kept per host at most.
const MAX_IDLE_PER_HOST: usize = 1024;
/// How long a connection may stay idle before it is closed.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How long opening a connection may take (every address of the host
/// together).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How often idle connections of every host are looked over (on the next
/// give-back after this long).
const SWEEP_EVERY: Duration = Duration::from_secs(30);

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum PlainError {
    /// The URI names no host (cannot happen for a validated endpoint).
    #[error("the URL names no host")]
    NoHost,
    /// The host's name did not resolve, or the SSRF guard refused an
    /// address it resolved to.
    #[error("resolving {host}")]
    Resolve {
        /// The name.
        host: String,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// No address of the host took the connection.
    #[error("tcp connect error to {addr}")]
    Connect {
        /// The last address tried.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Opening the connection took longer than [`CONNECT_TIMEOUT`].
    #[error("tcp connect timed out after {CONNECT_TIMEOUT:?}")]
    ConnectTimeout,
    /// Writing the request or reading the answer failed.
    #[error("http/1.1 exchange")]
    Io(#[source] std::io::Error),
    /// The receiver closed the connection before its answer ended.
    #[error("http/1.1 exchange: connection closed before the answer ended")]
    Closed,
    /// The answer is not HTTP/1.1.
    #[error("http/1.1 exchange")]
    Answer(#[source] wire::WireError),
}

impl PlainError {
    /// Whether no connection could be opened (nothing was sent).
    pub fn is_connect(&self) -> bool {
        matches!(
            self,
            Self::NoHost | Self::Resolve { .. } | Self::Connect { .. } | Self::ConnectTimeout
        )
    }
}

/// The pooled HTTP/1.1 client for `http://` URLs.
#[derive(Clone)]
pub struct PlainClient {
    pool: Arc<Pool>,
}

impl std::fmt::Debug for PlainClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlainClient")
            .field("guarded", &self.pool.guarded)
            .finish_non_exhaustive()
    }
}

struct Pool {
    guarded: bool,
    idle: Mutex<Idle>,
}

#[derive(Default)]
struct Idle {
    /// Idle connections by host (`host:port` as the URL writes it), the
    /// most recently used last.
    by_host: HashMap<Box<str>, Vec<IdleConnection>>,
    last_sweep: Option<Instant>,
}

struct IdleConnection {
    conn: Conn,
    since: Instant,
}

/// An answer whose head was read, on the connection it came on: read its
/// body with [`Answered::finish`], which gives the connection back when
/// it may be reused. Dropped unfinished, the connection is closed.
pub struct Answered<'a> {
    pool: &'a Pool,
    host: &'a str,
    conn: Conn,
    /// The answer's head.
    pub head: ResponseHead,
}

impl Answered<'_> {
    /// Reads (a bounded amount of) the body and gives the connection back
    /// if it ended cleanly. An error is the body's: the status stands.
    pub async fn finish(mut self) -> Result<(), PlainError> {
        if self.conn.read_body(&self.head).await? == BodyEnd::Reusable {
            self.pool.give_back(self.host, self.conn);
        }
        Ok(())
    }
}

impl Pool {
    /// Returns `conn` to `host`'s idle list, and every [`SWEEP_EVERY`]
    /// closes the connections idle too long.
    fn give_back(&self, host: &str, mut conn: Conn) {
        conn.trim();
        let now = Instant::now();
        let Ok(mut idle) = self.idle.lock() else {
            return;
        };
        let entry = IdleConnection { conn, since: now };
        match idle.by_host.get_mut(host) {
            Some(list) if list.len() < MAX_IDLE_PER_HOST => list.push(entry),
            Some(_) => {}
            None => {
                idle.by_host.insert(host.into(), vec![entry]);
            }
        }
        if idle
            .last_sweep
            .is_none_or(|at| now.duration_since(at) >= SWEEP_EVERY)
        {
            idle.last_sweep = Some(now);
            idle.by_host.retain(|_, list| {
                list.retain(|c| now.duration_since(c.since) < IDLE_TIMEOUT && c.conn.is_usable());
                !list.is_empty()
            });
        }
    }

    /// An idle connection of `host` that is still open.
    fn checkout(&self, host: &str) -> Option<Conn> {
        loop {
            let idle = {
                let mut idle = self.idle.lock().ok()?;
                idle.by_host.get_mut(host)?.pop()?
            };
            if idle.since.elapsed() < IDLE_TIMEOUT && idle.conn.is_usable() {
                return Some(idle.conn);
            }
        }
    }
}

/// Builds the plain client: TCP_NODELAY, HTTP/1.1 only, the SSRF guard on
/// resolved names when `guarded`.
pub fn build(guarded: bool) -> PlainClient {
    PlainClient {
        pool: Arc::new(Pool {
            guarded,
            idle: Mutex::new(Idle::default()),
        }),
    }
}

impl PlainClient {
    /// POSTs `body` to `uri` (absolute, as the endpoint's) on an idle
    /// connection of its host, or a new one, and reads the answer's head.
    /// `write_head` writes the request's head, given its target (origin
    /// form) and host; [`wire::write_request_head`] writes one from a
    /// `HeaderMap`.
    pub async fn send<'a>(
        &'a self,
        uri: &'a Uri,
        write_head: impl FnOnce(&mut Vec<u8>, (&str, &str)),
        body: &[u8],
    ) -> Result<Answered<'a>, PlainError> {
        let authority = uri.authority().ok_or(PlainError::NoHost)?;
        let host = authority.as_str();
        let target = uri.path_and_query().map_or("/", |p| p.as_str());
        let mut conn = match self.pool.checkout(host) {
            Some(conn) => conn,
            None => self.connect(authority).await?,
        };
        conn.head.clear();
        write_head(&mut conn.head, (target, host));
        let head = conn.exchange(body).await?;
        Ok(Answered {
            pool: &self.pool,
            host,
            conn,
            head,
        })
    }

    /// Opens a connection to `authority`.
    async fn connect(&self, authority: &Authority) -> Result<Conn, PlainError> {
        let port = authority.port_u16().unwrap_or(80);
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, async {
            let addrs = self.resolve(authority.host(), port).await?;
            let mut last = None;
            for addr in addrs {
                match tokio::net::TcpStream::connect(addr).await {
                    Ok(stream) => return Ok(stream),
                    Err(source) => last = Some(PlainError::Connect { addr, source }),
                }
            }
            Err(last.unwrap_or_else(|| PlainError::Resolve {
                host: authority.host().to_string(),
                source: "no address".into(),
            }))
        })
        .await
        .map_err(|_| PlainError::ConnectTimeout)??;
        Ok(Conn::new(stream))
    }

    /// The addresses of `host`: an IP literal as it is, a name through the
    /// system resolver and, when guarded, the SSRF guard.
    async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, PlainError> {
        let literal = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = literal.parse::<std::net::IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        let failed = |source: BoxError| PlainError::Resolve {
            host: host.to_string(),
            source,
        };
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| failed(Box::new(e)))?
            .collect();
        if self.pool.guarded {
            ssrf::check_all(host, &addrs).map_err(|e| failed(Box::new(e)))?;
        }
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests;
