//! Sample webhook receivers: small real HTTP servers on 127.0.0.1 that answer
//! with a chosen behaviour and check every signature they receive.
//!
//! Used by `hookstream demo` and `hookstream bench`, and by tests that need a
//! receiver (tests check signatures themselves from the recorded requests).

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::sign::{SignatureScheme, header, verify};

/// How a receiver answers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Behaviour {
    /// 200 to everything.
    Healthy,
    /// 503 to a share of requests (0.0..=1.0), 200 to the rest.
    Flaky(f64),
    /// Always this status.
    Status(u16),
    /// 200 after a delay.
    Slow(Duration),
    /// This status after a delay.
    SlowStatus(Duration, u16),
    /// `status` (with an optional `Retry-After`) to the first `times`
    /// requests of each webhook-id, then 200.
    FailFirst {
        /// Failures per webhook-id.
        times: u32,
        /// Status of the failures.
        status: u16,
        /// `Retry-After` sent with them.
        retry_after: Option<&'static str>,
    },
    /// A receiver of limited capacity: 200 after `delay` while at most
    /// `capacity` requests are being answered, 503 at once beyond that.
    Overloaded {
        /// Requests answered at once.
        capacity: u64,
        /// Time each accepted request takes.
        delay: Duration,
    },
    /// [`Overloaded`](Self::Overloaded), with an outage (503 to everything)
    /// of `outage` at the start of every `period` of the wall clock.
    Flapping {
        /// Length of a cycle.
        period: Duration,
        /// Outage at the start of each cycle.
        outage: Duration,
        /// Requests answered at once outside outages.
        capacity: u64,
        /// Time each accepted request takes.
        delay: Duration,
    },
    /// Turns, every `phase` of the wall clock, through four behaviours:
    /// healthy (200), down (503), slow (200 after a second), and resetting
    /// (the connection is closed without an answer).
    Cycling {
        /// How long each behaviour lasts.
        phase: Duration,
    },
    /// `status` to everything until [`Receiver::recover`] is called, then
    /// 200: a receiver that is down for a while and comes back.
    Outage {
        /// Status answered while down.
        status: u16,
    },
    /// [`Outage`](Self::Outage) for one device only: `status` to the
    /// requests whose body contains `marker` (say `"id":"dev-3"`) until
    /// [`Receiver::recover`] is called, 200 to every other request.
    DeviceOutage {
        /// What the failing device's bodies contain.
        marker: &'static str,
        /// Status answered to them while down.
        status: u16,
    },
}

/// The connection was closed without an answer ([`Behaviour::Cycling`]).
#[derive(Debug)]
struct Reset;

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection reset by the receiver")
    }
}

impl std::error::Error for Reset {}

/// One recorded request.
#[derive(Debug, Clone)]
pub struct ReceivedRequest {
    /// Lowercase header names and values.
    pub headers: Vec<(String, String)>,
    /// The exact body.
    pub body: Bytes,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// Status answered.
    pub status: u16,
    /// When the request arrived.
    pub received_at: std::time::Instant,
}

impl ReceivedRequest {
    /// A header by lowercase name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What a receiver saw.
#[derive(Debug, Default)]
pub struct ReceiverLog {
    /// Requests received.
    pub requests: AtomicU64,
    /// Requests being answered right now.
    pub in_progress: AtomicU64,
    /// Most requests ever answered at once.
    pub max_in_progress: AtomicU64,
    /// Requests whose signature verified.
    pub verified: AtomicU64,
    /// Requests whose signature did not verify.
    pub bad_signatures: AtomicU64,
    /// webhook-ids answered 2xx.
    pub accepted: Mutex<HashSet<String>>,
    /// Every request, when recording is on.
    pub recorded: Mutex<Vec<ReceivedRequest>>,
    /// Requests per webhook-id (for `FailFirst`).
    pub attempts: Mutex<std::collections::HashMap<String, u32>>,
    /// Set by [`Receiver::recover`] (for `Outage`).
    pub recovered: AtomicBool,
}

impl ReceiverLog {
    /// Distinct webhook-ids answered 2xx.
    pub fn accepted_count(&self) -> usize {
        self.accepted.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// A copy of the recorded requests.
    pub fn recorded(&self) -> Vec<ReceivedRequest> {
        self.recorded.lock().map(|r| r.clone()).unwrap_or_default()
    }
}

/// Settings of a receiver.
#[derive(Debug, Clone)]
pub struct ReceiverSpec {
    /// How it answers.
    pub behaviour: Behaviour,
    /// Scheme and secret it verifies with (`None`: no verification).
    pub verify_with: Option<(SignatureScheme, String)>,
    /// Keep every request in memory.
    pub record: bool,
}

/// A running receiver.
#[derive(Debug)]
pub struct Receiver {
    addr: SocketAddr,
    log: Arc<ReceiverLog>,
    task: JoinHandle<()>,
}

impl Receiver {
    /// Starts a receiver on an ephemeral port of 127.0.0.1.
    pub async fn start(spec: ReceiverSpec) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding a receiver on 127.0.0.1")?;
        let addr = listener.local_addr()?;
        let log = Arc::new(ReceiverLog::default());
        let spec = Arc::new(spec);
        let task = {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let log = Arc::clone(&log);
                    let spec = Arc::clone(&spec);
                    tokio::spawn(async move {
                        let service =
                            service_fn(move |req| handle(req, Arc::clone(&spec), Arc::clone(&log)));
                        let _ = auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
            })
        };
        Ok(Self { addr, log, task })
    }

    /// `http://127.0.0.1:<port>/<path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{}", self.addr, path.trim_start_matches('/'))
    }

    /// What it saw.
    pub fn log(&self) -> &Arc<ReceiverLog> {
        &self.log
    }

    /// Ends a [`Behaviour::Outage`]: 200 to every request from now on.
    pub fn recover(&self) {
        self.log.recovered.store(true, Ordering::SeqCst);
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(
    req: Request<Incoming>,
    spec: Arc<ReceiverSpec>,
    log: Arc<ReceiverLog>,
) -> Result<Response<Full<Bytes>>, Reset> {
    let version = format!("{:?}", req.version());
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let received_at = std::time::Instant::now();
    log.requests.fetch_add(1, Ordering::Relaxed);
    let now_in_progress = log.in_progress.fetch_add(1, Ordering::SeqCst) + 1;
    log.max_in_progress
        .fetch_max(now_in_progress, Ordering::SeqCst);
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    if let Some((scheme, secret)) = &spec.verify_with {
        match verify(*scheme, secret, &find, &body) {
            Ok(()) => log.verified.fetch_add(1, Ordering::Relaxed),
            Err(_) => log.bad_signatures.fetch_add(1, Ordering::Relaxed),
        };
    }
    let (status, retry_after_header) =
        match answer(&spec.behaviour, &find, &body, &log, now_in_progress).await {
            Ok(answer) => answer,
            Err(Reset) => {
                log.in_progress.fetch_sub(1, Ordering::SeqCst);
                return Err(Reset);
            }
        };
    if (200..300).contains(&status)
        && let Some(id) = find(header::WEBHOOK_ID)
        && let Ok(mut accepted) = log.accepted.lock()
    {
        accepted.insert(id);
    }
    if spec.record
        && let Ok(mut recorded) = log.recorded.lock()
    {
        recorded.push(ReceivedRequest {
            headers,
            body,
            version,
            status,
            received_at,
        });
    }
    log.in_progress.fetch_sub(1, Ordering::SeqCst);
    let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(v) = retry_after_header {
        response.headers_mut().insert(
            hyper::header::RETRY_AFTER,
            hyper::header::HeaderValue::from_static(v),
        );
    }
    Ok(response)
}

/// The status (and `Retry-After`) `behaviour` answers a request with,
/// after the delay it calls for; `Err` to reset the connection instead.
///
/// Long on purpose: one arm per [`Behaviour`], a few lines each.
async fn answer(
    behaviour: &Behaviour,
    find: &(dyn Fn(&str) -> Option<String> + Sync),
    body: &[u8],
    log: &ReceiverLog,
    now_in_progress: u64,
) -> Result<(u16, Option<&'static str>), Reset> {
    let mut retry_after_header = None;
    let status = match *behaviour {
        Behaviour::FailFirst {
            times,
            status,
            retry_after,
        } => {
            let id = find(header::WEBHOOK_ID).unwrap_or_default();
            let seen = match log.attempts.lock() {
                Ok(mut a) => {
                    let n = a.entry(id).or_default();
                    *n += 1;
                    *n
                }
                Err(_) => 1,
            };
            if seen <= times {
                retry_after_header = retry_after;
                status
            } else {
                200
            }
        }
        Behaviour::Healthy => 200,
        Behaviour::Status(code) => code,
        Behaviour::Slow(delay) => {
            tokio::time::sleep(delay).await;
            200
        }
        Behaviour::SlowStatus(delay, code) => {
            tokio::time::sleep(delay).await;
            code
        }
        Behaviour::Flapping {
            period,
            outage,
            capacity,
            delay,
        } => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            let in_cycle = now % period.as_millis().max(1);
            if in_cycle < outage.as_millis() || now_in_progress > capacity {
                503
            } else {
                tokio::time::sleep(delay).await;
                200
            }
        }
        Behaviour::Cycling { phase } => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis();
            match (now / phase.as_millis().max(1)) % 4 {
                0 => 200,
                1 => 503,
                2 => {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    200
                }
                _ => return Err(Reset),
            }
        }
        Behaviour::Overloaded { capacity, delay } => {
            if now_in_progress > capacity {
                503
            } else {
                tokio::time::sleep(delay).await;
                200
            }
        }
        Behaviour::Outage { status } => {
            if log.recovered.load(Ordering::SeqCst) {
                200
            } else {
                status
            }
        }
        Behaviour::DeviceOutage { marker, status } => {
            let down = !log.recovered.load(Ordering::SeqCst);
            let m = marker.as_bytes();
            if down && !m.is_empty() && body.windows(m.len()).any(|w| w == m) {
                status
            } else {
                200
            }
        }
        Behaviour::Flaky(share) => {
            if rand::random::<f64>() < share {
                503
            } else {
                200
            }
        }
    };
    Ok((status, retry_after_header))
}
