//! The benchmark's receiver: a lean HTTP/1.1 server on 127.0.0.1 that
//! answers 204 at once and counts requests and events with atomics only.
//! It runs on a runtime of its own ([`OwnRuntime`]), so its CPU time is
//! counted apart from the pipeline's.
//!
//! Events are counted by their `"sent_ns":` keys (every bench event has
//! one), so a batched request (a JSON array) counts every event in it. When latency sampling is on, bodies
//! carrying `"sent_ns":<unix ns>` give produce-to-receive latencies.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::cpu::OwnRuntime;

/// Counters of a [`FastReceiver`].
#[derive(Debug)]
pub struct Counts {
    /// Requests answered.
    pub requests: AtomicU64,
    /// Events received (counted by `"sent_ns":` keys).
    pub events: AtomicU64,
    /// Nanoseconds after `epoch` of the first request.
    pub first_ns: AtomicU64,
    /// Nanoseconds after `epoch` of the latest request.
    pub last_ns: AtomicU64,
    /// Collect produce-to-receive latencies.
    pub sample_latency: AtomicBool,
    /// Latencies in microseconds, while sampling.
    pub latencies_us: Mutex<Vec<u64>>,
    /// Sampled events that arrived before their `sent_ns` (a due time, for
    /// retries): must stay zero.
    pub early: AtomicU64,
    /// A device (`dev-<n>`) whose requests are answered 503 and not
    /// counted (`u64::MAX`: none): scenario (k)'s failing device.
    pub failing_device: AtomicU64,
    /// Requests answered 503 for the failing device.
    pub failed: AtomicU64,
    epoch: Instant,
}

impl Counts {
    fn new() -> Self {
        Self {
            requests: AtomicU64::new(0),
            events: AtomicU64::new(0),
            first_ns: AtomicU64::new(u64::MAX),
            last_ns: AtomicU64::new(0),
            sample_latency: AtomicBool::new(false),
            latencies_us: Mutex::new(Vec::new()),
            early: AtomicU64::new(0),
            failing_device: AtomicU64::new(NO_DEVICE),
            failed: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    /// Zeroes the counters.
    pub fn reset(&self) {
        self.requests.store(0, Ordering::SeqCst);
        self.events.store(0, Ordering::SeqCst);
        self.first_ns.store(u64::MAX, Ordering::SeqCst);
        self.last_ns.store(0, Ordering::SeqCst);
        self.early.store(0, Ordering::SeqCst);
        self.failing_device.store(NO_DEVICE, Ordering::SeqCst);
        self.failed.store(0, Ordering::SeqCst);
        if let Ok(mut l) = self.latencies_us.lock() {
            l.clear();
        }
    }

    /// Percentiles (ms) of the sampled latencies, one per `quantiles` entry.
    pub fn latency_percentiles_ms<const N: usize>(&self, quantiles: [f64; N]) -> [f64; N] {
        let mut l = self
            .latencies_us
            .lock()
            .map(|l| l.clone())
            .unwrap_or_default();
        l.sort_unstable();
        quantiles.map(|q| {
            let i = ((l.len() as f64 * q) as usize).min(l.len().saturating_sub(1));
            l.get(i).map_or(0.0, |v| *v as f64 / 1000.0)
        })
    }

    /// Seconds from the first to the latest request.
    pub fn busy_secs(&self) -> f64 {
        let first = self.first_ns.load(Ordering::SeqCst);
        let last = self.last_ns.load(Ordering::SeqCst);
        if first == u64::MAX || last <= first {
            return 0.0;
        }
        (last - first) as f64 / 1e9
    }
}

/// [`Counts::failing_device`] when no device fails.
pub const NO_DEVICE: u64 = u64::MAX;

/// Whether `body` is an event of device `dev-<device>` (the bench's
/// events name it as `"id":"dev-<n>",`).
fn is_of_device(body: &[u8], device: u64) -> bool {
    let marker = format!(r#""id":"dev-{device}","#);
    body.windows(marker.len()).any(|w| w == marker.as_bytes())
}

/// A running lean receiver.
#[derive(Debug)]
pub struct FastReceiver {
    addr: SocketAddr,
    counts: Arc<Counts>,
    runtime: OwnRuntime,
}

/// Worker threads of the receiver's runtime.
const RECEIVER_THREADS: usize = 2;

impl FastReceiver {
    /// Starts on an ephemeral port of 127.0.0.1, on threads of its own.
    pub fn start() -> Result<Self> {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").context("binding the bench receiver")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let counts = Arc::new(Counts::new());
        let runtime = OwnRuntime::start("bench-receiver", RECEIVER_THREADS)?;
        serve_http1(&runtime, listener, Arc::clone(&counts), handle);
        Ok(Self {
            addr,
            counts,
            runtime,
        })
    }

    /// CPU seconds the receiver's threads used so far.
    pub fn cpu_secs(&self) -> f64 {
        self.runtime.cpu_secs()
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    /// Its counters.
    pub fn counts(&self) -> &Arc<Counts> {
        &self.counts
    }
}

fn count_events(body: &[u8]) -> u64 {
    const KEY: &[u8] = b"\"sent_ns\":";
    body.windows(KEY.len()).filter(|w| *w == KEY).count().max(1) as u64
}

fn sent_ns(body: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"sent_ns\":";
    let start = body.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits: Vec<u8> = body[start..]
        .iter()
        .copied()
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

/// Serves HTTP/1.1 on `listener` from `runtime`, one task per
/// connection, each request answered by `answer` with `state`: the lean
/// server of the bench's receivers.
pub(super) fn serve_http1<S, F, Fut>(
    runtime: &OwnRuntime,
    listener: std::net::TcpListener,
    state: Arc<S>,
    answer: F,
) where
    S: Send + Sync + 'static,
    F: Fn(Request<Incoming>, Arc<S>) -> Fut + Copy + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send + 'static,
{
    runtime.handle().spawn(async move {
        let Ok(listener) = TcpListener::from_std(listener) else {
            return;
        };
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                let service = service_fn(move |req| answer(req, Arc::clone(&state)));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
}

async fn handle(
    req: Request<Incoming>,
    counts: Arc<Counts>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let failing = counts.failing_device.load(Ordering::Relaxed);
    if failing != NO_DEVICE && is_of_device(&body, failing) {
        counts.failed.fetch_add(1, Ordering::Relaxed);
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
        return Ok(response);
    }
    let now = counts.epoch.elapsed().as_nanos() as u64;
    counts.first_ns.fetch_min(now, Ordering::SeqCst);
    counts.last_ns.fetch_max(now, Ordering::SeqCst);
    counts.requests.fetch_add(1, Ordering::Relaxed);
    counts
        .events
        .fetch_add(count_events(&body), Ordering::Relaxed);
    if counts.sample_latency.load(Ordering::Relaxed)
        && let Some(sent) = sent_ns(&body)
    {
        let wall = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        if wall < sent {
            counts.early.fetch_add(1, Ordering::Relaxed);
        }
        let latency_us = wall.saturating_sub(sent) / 1_000;
        if let Ok(mut l) = counts.latencies_us.lock() {
            l.push(latency_us);
        }
    }
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = hyper::StatusCode::NO_CONTENT;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_is_found_by_its_whole_id() {
        let body = super::super::events::device_event_body(7, 0, 1000);
        assert!(is_of_device(body.as_bytes(), 7));
        assert!(!is_of_device(body.as_bytes(), 70));
        let other = super::super::events::device_event_body(71, 0, 1000);
        assert!(!is_of_device(other.as_bytes(), 7));
    }

    #[test]
    fn counts_events_in_single_and_batched_bodies() {
        assert_eq!(
            count_events(br#"{"id":"a","data":{"id":"d"},"sent_ns":0}"#),
            1
        );
        assert_eq!(
            count_events(br#"[{"sent_ns":1},{"sent_ns":2},{"sent_ns":3}]"#),
            3
        );
        assert_eq!(
            sent_ns(br#"{"id":"a","sent_ns":1700000000000000000}"#),
            Some(1_700_000_000_000_000_000)
        );
        assert_eq!(sent_ns(b"{}"), None);
    }
}
