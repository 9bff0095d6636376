//! The lean client for plain `http://` destinations over HTTP/1.1: hyper's
//! connections, pooled here, without reqwest's layers or hyper-util's
//! pool.
//!
//! Owns the connections and their resolver (the SSRF guard when private
//! destinations are not allowed; IP literals never reach a resolver,
//! `request::send_attempt` checks them). Profiles of one event per POST
//! showed reqwest spending per request what the exchange itself needs in
//! user space (a URL parse of every response, a copy of the header map, a
//! clone of its whole connector, boxed futures and timers), then
//! hyper-util's pool a lazy connect future built and dropped, a checkout
//! future and pool-key hashing per request. Here a request takes an idle
//! connection of its host from a list (or opens one), and gives it back
//! once its answer was read to the end. TLS and HTTP/2 destinations go
//! through reqwest ([`super::client::HttpClients`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery};
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;

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
    /// The exchange failed after the connection was open.
    #[error("http/1.1 exchange")]
    Http(#[source] hyper::Error),
}

impl PlainError {
    /// Whether no connection could be opened (nothing was sent).
    pub fn is_connect(&self) -> bool {
        !matches!(self, Self::Http(_))
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
    sender: SendRequest<Full<Bytes>>,
    since: Instant,
}

/// A connection lent to one exchange: [`Lease::give_back`] once its
/// answer was read to the end, or dropped (closing the connection) when it
/// was not.
pub struct Lease {
    pool: Arc<Pool>,
    host: Box<str>,
    sender: SendRequest<Full<Bytes>>,
}

impl Lease {
    /// Returns the connection to its host's idle list.
    pub fn give_back(self) {
        if self.sender.is_closed() {
            return;
        }
        let now = Instant::now();
        let Ok(mut idle) = self.pool.idle.lock() else {
            return;
        };
        let list = idle.by_host.entry(self.host).or_default();
        if list.len() < MAX_IDLE_PER_HOST {
            list.push(IdleConnection {
                sender: self.sender,
                since: now,
            });
        }
        if idle
            .last_sweep
            .is_none_or(|at| now.duration_since(at) >= SWEEP_EVERY)
        {
            idle.last_sweep = Some(now);
            idle.by_host.retain(|_, list| {
                list.retain(|c| {
                    now.duration_since(c.since) < IDLE_TIMEOUT && !c.sender.is_closed()
                });
                !list.is_empty()
            });
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
    /// Sends `request` (its URI absolute, as the endpoint's) on an idle
    /// connection of its host, or a new one. A reused connection the peer
    /// closed before the request went out is replaced once, as hyper-util
    /// did. The caller reads the answer's body and then gives the lease
    /// back.
    pub async fn send(
        &self,
        mut request: Request<Full<Bytes>>,
    ) -> Result<(Response<Incoming>, Lease), PlainError> {
        let authority = request
            .uri()
            .authority()
            .cloned()
            .ok_or(PlainError::NoHost)?;
        let origin_form = request
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *request.uri_mut() = Uri::from(origin_form);
        let host_header =
            HeaderValue::from_str(authority.as_str()).map_err(|_| PlainError::NoHost)?;
        request
            .headers_mut()
            .insert(http::header::HOST, host_header);
        let host: Box<str> = authority.as_str().into();
        loop {
            let (mut sender, reused) = match self.checkout(&host).await {
                Some(sender) => (sender, true),
                None => (self.connect(&authority).await?, false),
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let lease = Lease {
                        pool: Arc::clone(&self.pool),
                        host,
                        sender,
                    };
                    return Ok((response, lease));
                }
                Err(mut failed) => match failed.take_message() {
                    // Not sent: the idle connection was closed meanwhile.
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(PlainError::Http(failed.into_error())),
                },
            }
        }
    }

    /// An idle connection of `host` that is still open and ready.
    async fn checkout(&self, host: &str) -> Option<SendRequest<Full<Bytes>>> {
        loop {
            let idle = {
                let mut idle = self.pool.idle.lock().ok()?;
                let list = idle.by_host.get_mut(host)?;
                list.pop()?
            };
            if idle.since.elapsed() >= IDLE_TIMEOUT || idle.sender.is_closed() {
                continue;
            }
            let mut sender = idle.sender;
            // Ready at once, or soon after the previous answer's end was
            // processed; an error means the connection is gone.
            if sender.ready().await.is_ok() {
                return Some(sender);
            }
        }
    }

    /// Opens a connection to `authority` and starts driving it.
    async fn connect(&self, authority: &Authority) -> Result<SendRequest<Full<Bytes>>, PlainError> {
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
        // Small requests go out at once.
        let _ = stream.set_nodelay(true);
        let (sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(PlainError::Http)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "plain http connection ended");
            }
        });
        Ok(sender)
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
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A receiver on 127.0.0.1 answering 200 "ok" to each request; `close` ends
    /// each connection after its first answer, without saying so (as a
    /// receiver whose keep-alive timer fires does). Counts connections.
    async fn receiver(close: bool) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut seen = Vec::new();
                    let mut buf = [0u8; 4096];
                    loop {
                        let Ok(n) = socket.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buf[..n]);
                        // One request: head and its 5-byte body.
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            if seen.len() < end + 4 + 5 {
                                break;
                            }
                            seen.drain(..end + 4 + 5);
                            if socket
                                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                                .await
                                .is_err()
                            {
                                return;
                            }
                            if close {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (base, accepted)
    }

    fn request(base: &str) -> Request<Full<Bytes>> {
        let mut r = Request::new(Full::new(Bytes::from_static(b"hello")));
        *r.method_mut() = http::Method::POST;
        *r.uri_mut() = format!("{base}/in?x=1").parse().unwrap();
        r
    }

    async fn exchange(client: &PlainClient, base: &str, give_back: bool) -> u16 {
        let (response, lease) = client.send(request(base)).await.expect("an answer");
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.expect("the body");
        assert_eq!(body.to_bytes(), Bytes::from_static(b"ok"));
        if give_back {
            lease.give_back();
        }
        status
    }

    #[tokio::test]
    async fn sequential_requests_share_one_connection() {
        let (base, accepted) = receiver(false).await;
        let client = build(false);
        for _ in 0..20 {
            assert_eq!(exchange(&client, &base, true).await, 200);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_receiver_closed_is_replaced_and_nothing_fails() {
        let (base, accepted) = receiver(true).await;
        let client = build(false);
        for _ in 0..20 {
            assert_eq!(exchange(&client, &base, true).await, 200);
            // The receiver's close arrives while the connection is idle (a
            // close racing a request that was already written is a failed
            // attempt, for any client).
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 20);
    }

    #[tokio::test]
    async fn a_connection_not_given_back_is_not_reused() {
        let (base, accepted) = receiver(false).await;
        let client = build(false);
        assert_eq!(exchange(&client, &base, false).await, 200);
        assert_eq!(exchange(&client, &base, true).await, 200);
        assert_eq!(exchange(&client, &base, true).await, 200);
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let err = build(false)
            .send(request(&base))
            .await
            .err()
            .expect("refused");
        assert!(err.is_connect(), "{err:?}");
        assert!(matches!(err, PlainError::Connect { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn a_guarded_client_refuses_names_resolving_to_loopback() {
        let (base, accepted) = receiver(false).await;
        let port = base.rsplit(':').next().unwrap();
        let err = build(true)
            .send(request(&format!("http://localhost:{port}")))
            .await
            .err()
            .expect("refused by the guard");
        assert!(matches!(err, PlainError::Resolve { .. }), "{err:?}");
        assert_eq!(accepted.load(Ordering::SeqCst), 0);
    }
}
