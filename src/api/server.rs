//! The API's connections: the accept loop, the cap on connections held at
//! once, the header and idle timeouts, and the graceful stop.
//!
//! Owns sockets and their lifetimes only; what a request means is the
//! router's business ([`super::router`]). The rules, all from `[api]`:
//!
//! - At most `max_connections` accepted connections are held. A connection
//!   accepted beyond that makes room: the connection that has waited
//!   longest without a request in progress (idle keep-alive, or no complete
//!   request head yet) is closed, though never within [`Grace`] of its
//!   accept or of its last response, nor before the server read what it
//!   sent (so a client that sends its request at once is never closed to
//!   make room). When every connection
//!   is busy with a request, the newcomer waits up to `header_timeout` for
//!   a slot and is closed if none frees. While the accept loop waits,
//!   further connections wait in the kernel's listen backlog, where they
//!   hold no descriptor of this process.
//! - A connection must send a complete request head within
//!   `header_timeout` of its accept, or of the first byte after an idle
//!   period; else it is closed.
//! - A keep-alive connection with nothing in progress is closed after
//!   `idle_timeout`.
//!
//! Closing means dropping the socket: the client reads end of file. No
//! timer runs per request; each connection has one task that sleeps until
//! its next deadline.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// The connection limits of `[api]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// `api.max_connections`.
    pub max_connections: usize,
    /// `api.header_timeout`.
    pub header_timeout: Duration,
    /// `api.idle_timeout`.
    pub idle_timeout: Duration,
}

/// What a connection is doing, as its deadline sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for a complete request head (since the accept, or since the
    /// first byte after an idle period): `header_timeout` applies.
    Head,
    /// Between requests, nothing received: `idle_timeout` applies.
    Idle,
    /// A request is in progress: no deadline here (handlers bound their
    /// own work, [`super::body`] bounds the body).
    Busy,
}

impl Phase {
    const fn bits(self) -> u64 {
        match self {
            Self::Head => 0,
            Self::Idle => 1,
            Self::Busy => 2,
        }
    }

    const fn from_bits(bits: u64) -> Self {
        match bits {
            0 => Self::Head,
            1 => Self::Idle,
            _ => Self::Busy,
        }
    }
}

/// Bits of the packed state that hold the phase.
const PHASE_SHIFT: u32 = 62;
/// How often the accept loop, waiting for a slot, looks for another
/// connection to close (the one it chose may have started a request).
const EVICT_RETRY: Duration = Duration::from_millis(50);
/// How long a connection is safe from being closed to make room after its
/// accept or its last response. What bounds how fast a flood can turn
/// connections over (at most `max_connections` per `read`): the faster,
/// the less often the kernel's listen backlog overflows and a client's
/// connection attempt has to be retransmitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grace {
    /// Once the server has read from the connection (so a request head
    /// sent at once is read, and the connection is busy).
    pub read: Duration,
    /// Before the server read from it at all (its task may not have run
    /// yet on a busy machine).
    pub unread: Duration,
}

impl Grace {
    /// 50 ms once read, 250 ms before; neither above half of
    /// `header_timeout`.
    pub fn for_header_timeout(header_timeout: Duration) -> Self {
        let most = header_timeout / 2;
        Self {
            read: Duration::from_millis(50).min(most),
            unread: Duration::from_millis(250).min(most),
        }
    }
}

/// One accepted connection, shared by its task, its socket wrapper, its
/// requests and the accept loop (which may ask it to make room). Times are
/// milliseconds since the server's `epoch`, passed in, so that the state
/// machine is pure.
#[derive(Debug)]
struct Conn {
    /// Phase (top two bits) and when it began, in one word so that both
    /// are read together.
    state: AtomicU64,
    /// Requests whose response has not been sent completely.
    in_flight: AtomicU32,
    /// Whether the server has read from the socket yet.
    read: AtomicBool,
    /// Set by the accept loop: close unless a request is in progress.
    evict: Notify,
    epoch: Instant,
}

impl Conn {
    /// A connection accepted at `at_ms`: waiting for its first head.
    fn new(epoch: Instant, at_ms: u64) -> Self {
        let conn = Self {
            state: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            read: AtomicBool::new(false),
            evict: Notify::new(),
            epoch,
        };
        conn.set(Phase::Head, at_ms);
        conn
    }

    /// Milliseconds since `epoch`.
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn set(&self, phase: Phase, at_ms: u64) {
        let since = at_ms & ((1 << PHASE_SHIFT) - 1);
        self.state
            .store((phase.bits() << PHASE_SHIFT) | since, Ordering::Release);
    }

    /// The phase and when it began.
    fn get(&self) -> (Phase, u64) {
        let state = self.state.load(Ordering::Acquire);
        let phase = if self.in_flight.load(Ordering::Acquire) > 0 {
            Phase::Busy
        } else {
            Phase::from_bits(state >> PHASE_SHIFT)
        };
        (phase, state & ((1 << PHASE_SHIFT) - 1))
    }

    /// Bytes arrived at `at_ms`: after an idle period they start a head.
    fn received(&self, at_ms: u64) {
        let state = self.state.load(Ordering::Acquire);
        if Phase::from_bits(state >> PHASE_SHIFT) == Phase::Idle {
            self.set(Phase::Head, at_ms);
        }
    }

    /// A request head arrived at `at_ms`: the connection is busy until its
    /// response is sent (the guard's drop).
    fn begin(self: &Arc<Self>, at_ms: u64) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.set(Phase::Busy, at_ms);
        InFlight(Arc::clone(self))
    }

    /// A response was sent at `at_ms`: idle once none is left.
    fn finish(&self, at_ms: u64) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.set(Phase::Idle, at_ms);
        }
    }

    /// When its current phase runs out, in ms since `epoch` (`None`:
    /// busy, no deadline).
    fn deadline_ms(&self, limits: &ConnectionLimits) -> Option<u64> {
        let (phase, since) = self.get();
        let allowed = match phase {
            Phase::Head => limits.header_timeout,
            Phase::Idle => limits.idle_timeout,
            Phase::Busy => return None,
        };
        Some(since + allowed.as_millis() as u64)
    }

    /// [`deadline_ms`](Self::deadline_ms) as an instant.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        self.deadline_ms(limits)
            .map(|ms| self.epoch + Duration::from_millis(ms))
    }

    /// Whether the accept loop may close it to make room.
    fn evictable(&self) -> bool {
        self.get().0 != Phase::Busy
    }

    /// The server read from the socket (whether or not bytes came).
    fn polled(&self) {
        if !self.read.load(Ordering::Relaxed) {
            self.read.store(true, Ordering::Release);
        }
    }

    /// When its grace ends, if it has no request in progress: the phase's
    /// start and when it may be closed to make room.
    fn evictable_from(&self, grace: &Grace) -> Option<(u64, u64)> {
        match self.get() {
            (Phase::Busy, _) => None,
            (_, since) => {
                let wait = if self.read.load(Ordering::Acquire) {
                    grace.read
                } else {
                    grace.unread
                };
                Some((since, since + wait.as_millis() as u64))
            }
        }
    }
}

/// A request in progress on a connection; dropped with its response body,
/// that is once the response was written (or the connection broke).
#[derive(Debug)]
struct InFlight(Arc<Conn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.finish(self.0.now_ms());
    }
}

/// A response body that keeps its request in flight until it is dropped.
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The socket of a connection, telling the connection when bytes arrive.
struct Watched {
    stream: TcpStream,
    conn: Arc<Conn>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.stream).poll_read(cx, buf);
        self.conn.polled();
        if buf.filled().len() > before {
            let now = self.conn.now_ms();
            self.conn.received(now);
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// The connections held, by id, for the accept loop to choose from when
/// it must make room.
#[derive(Debug, Default)]
struct Held {
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
}

impl Held {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        crate::core::lock(&self.conns)
    }

    /// Asks the connection that has waited longest without a request in
    /// progress, among those whose [`Grace`] is over at `now_ms`, to close.
    fn evict_oldest(&self, now_ms: u64, grace: &Grace) -> Eviction {
        let conns = self.lock();
        let mut oldest: Option<(u64, &Arc<Conn>)> = None;
        let mut first_free: Option<u64> = None;
        for conn in conns.values() {
            let Some((since, free_at)) = conn.evictable_from(grace) else {
                continue;
            };
            if free_at > now_ms {
                first_free = Some(first_free.map_or(free_at, |at| at.min(free_at)));
            } else if oldest.is_none_or(|(s, _)| since < s) {
                oldest = Some((since, conn));
            }
        }
        match (oldest, first_free) {
            (Some((_, conn)), _) => {
                conn.evict.notify_one();
                Eviction::Asked
            }
            (None, Some(at_ms)) => Eviction::TooYoung { at_ms },
            (None, None) => Eviction::AllBusy,
        }
    }
}

/// A connection's place among the held ones and its slot, both given back
/// when dropped: when its task ends, and also if it panicked.
struct Registered {
    held: Arc<Held>,
    id: u64,
    _slot: OwnedSemaphorePermit,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.held.lock().remove(&self.id);
    }
}

/// What [`Held::evict_oldest`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Eviction {
    /// The longest-waiting connection was asked to close.
    Asked,
    /// The longest-waiting connection may be closed from `at_ms` on.
    TooYoung {
        /// Milliseconds since the server's epoch.
        at_ms: u64,
    },
    /// Every connection has a request in progress.
    AllBusy,
}

/// Serves `router` on `listener` under `limits` until `stop` turns true;
/// then stops accepting, lets requests in progress finish, and returns once
/// every connection is closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let held = Arc::new(Held::default());
    let epoch = Instant::now();
    let mut tasks = JoinSet::new();
    let mut next_id = 0u64;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            Some(ended) = tasks.join_next() => {
                if let Err(e) = ended
                    && e.is_panic()
                {
                    tracing::error!("an API connection's task panicked; the connection is closed");
                }
                continue;
            }
            _ = stop.wait_for(|stop| *stop) => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                accept_failed(&e).await;
                continue;
            }
        };
        let Some(permit) = make_room(&slots, &held, epoch, &limits).await else {
            tracing::debug!(
                "API connection closed unanswered: all {} connections stayed busy with requests",
                limits.max_connections
            );
            close_quietly(stream);
            continue;
        };
        let conn = Arc::new(Conn::new(epoch, epoch.elapsed().as_millis() as u64));
        next_id += 1;
        held.lock().insert(next_id, Arc::clone(&conn));
        let registered = Registered {
            held: Arc::clone(&held),
            id: next_id,
            _slot: permit,
        };
        let router = router.clone();
        let stop = stop.clone();
        tasks.spawn(async move {
            serve_connection(stream, conn, router, limits, stop).await;
            drop(registered);
        });
    }
    drop(listener);
    while tasks.join_next().await.is_some() {}
}

/// A slot for a new connection: at once when one is free; else after
/// closing the connection that has waited longest without a request (once
/// its grace is over), or when a request ends, within `header_timeout`.
/// `None` when none freed.
async fn make_room(
    slots: &Arc<Semaphore>,
    held: &Held,
    epoch: Instant,
    limits: &ConnectionLimits,
) -> Option<OwnedSemaphorePermit> {
    if let Ok(permit) = Arc::clone(slots).try_acquire_owned() {
        return Some(permit);
    }
    let grace = Grace::for_header_timeout(limits.header_timeout);
    let deadline = Instant::now() + limits.header_timeout;
    loop {
        let now_ms = epoch.elapsed().as_millis() as u64;
        let look_again = match held.evict_oldest(now_ms, &grace) {
            Eviction::TooYoung { at_ms } => epoch + Duration::from_millis(at_ms),
            Eviction::Asked | Eviction::AllBusy => Instant::now() + EVICT_RETRY,
        };
        match tokio::time::timeout_at(look_again.min(deadline), Arc::clone(slots).acquire_owned())
            .await
        {
            Ok(permit) => return permit.ok(),
            Err(_) if Instant::now() >= deadline => return None,
            Err(_) => {}
        }
    }
}

/// Closes a connection that was never served, reading first what it sent
/// already (up to 64 KiB): closing a socket with unread data resets the
/// connection, and the client should read a plain end of file.
fn close_quietly(stream: TcpStream) {
    let mut scratch = [0u8; 4096];
    for _ in 0..16 {
        match stream.try_read(&mut scratch) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
    drop(stream);
}

/// An accept that failed. Per-connection errors are skipped; running out
/// of descriptors or memory pauses accepting for a moment (the pending
/// connections wait in the backlog) instead of spinning.
async fn accept_failed(e: &std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::warn!(error = %e, "the management API could not accept a connection; pausing 100 ms");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Serves one connection until it ends, runs out of time, is asked to
/// make room while nothing is in progress, or the server stops.
async fn serve_connection(
    stream: TcpStream,
    conn: Arc<Conn>,
    router: Router,
    limits: ConnectionLimits,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(Watched {
        stream,
        conn: Arc::clone(&conn),
    });
    let inner = TowerToHyperService::new(router);
    let requests = Arc::clone(&conn);
    let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
        let in_flight = requests.begin(requests.now_ms());
        let answer = hyper::service::Service::call(&inner, request);
        async move {
            let response = answer.await?;
            Ok::<_, Infallible>(response.map(|body| {
                Body::new(Tracked {
                    body,
                    _in_flight: in_flight,
                })
            }))
        }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    let mut stopping = false;
    loop {
        let deadline = conn.deadline(&limits);
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at).await,
                // Busy: look again once an idle period could have run out.
                None => tokio::time::sleep(limits.idle_timeout.min(limits.header_timeout)).await,
            }
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::trace!(error = %e, "API connection ended with an error");
                }
                return;
            }
            _ = sleep => {
                if conn.deadline(&limits).is_some_and(|at| at <= Instant::now()) {
                    let phase = conn.get().0;
                    tracing::debug!(?phase, "API connection closed: it ran out of time");
                    return;
                }
            }
            _ = conn.evict.notified() => {
                if conn.evictable() {
                    tracing::debug!("API connection closed to make room for a new one");
                    return;
                }
            }
            _ = stop.wait_for(|stop| *stop), if !stopping => {
                stopping = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: ConnectionLimits = ConnectionLimits {
        max_connections: 4,
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
    };

    fn notified(c: &Conn) -> bool {
        futures::FutureExt::now_or_never(c.evict.notified()).is_some()
    }

    #[test]
    fn phases_decide_deadlines() {
        let conn = Arc::new(Conn::new(Instant::now(), 1_000));
        assert_eq!(
            conn.deadline_ms(&LIMITS),
            Some(11_000),
            "a new connection has header_timeout for its head"
        );
        conn.received(4_000);
        assert_eq!(
            conn.deadline_ms(&LIMITS),
            Some(11_000),
            "bytes of the first head do not extend it"
        );
        let request = conn.begin(5_000);
        assert_eq!(conn.deadline_ms(&LIMITS), None, "busy: no deadline");
        assert!(!conn.evictable());
        std::mem::forget(request);
        conn.finish(6_000);
        assert_eq!(conn.deadline_ms(&LIMITS), Some(66_000), "idle_timeout");
        assert!(conn.evictable());
        conn.received(9_000);
        assert_eq!(
            conn.deadline_ms(&LIMITS),
            Some(19_000),
            "the first byte after an idle period starts a head"
        );
        conn.received(12_000);
        assert_eq!(conn.deadline_ms(&LIMITS), Some(19_000));

        // Two requests at once (HTTP/2): busy until both ended.
        let (a, b) = (conn.begin(20_000), conn.begin(20_000));
        drop(a);
        assert_eq!(conn.deadline_ms(&LIMITS), None);
        drop(b);
        assert_eq!(conn.get().0, Phase::Idle, "the guard's drop ends it");
    }

    #[test]
    fn the_longest_waiting_connection_without_a_request_makes_room() {
        let grace = Grace {
            read: Duration::from_millis(10),
            unread: Duration::from_millis(50),
        };
        let epoch = Instant::now();
        let held = Held::default();
        let busy = Arc::new(Conn::new(epoch, 0));
        let _request = busy.begin(5);
        let older = Arc::new(Conn::new(epoch, 10));
        let newer = Arc::new(Conn::new(epoch, 20));
        let idle = Arc::new(Conn::new(epoch, 1));
        std::mem::forget(idle.begin(2));
        idle.finish(30);
        for c in [&busy, &older, &newer, &idle] {
            c.polled();
        }
        for (id, c) in [(1, &busy), (2, &newer), (3, &older), (4, &idle)] {
            held.lock().insert(id, Arc::clone(c));
        }
        assert_eq!(
            held.evict_oldest(15, &grace),
            Eviction::TooYoung { at_ms: 20 },
            "within its grace"
        );
        assert!(!notified(&older));
        assert_eq!(held.evict_oldest(20, &grace), Eviction::Asked);
        assert!(notified(&older), "waiting for its head since 10");
        assert!(!notified(&newer) && !notified(&busy) && !notified(&idle));
        held.lock().remove(&3);
        assert_eq!(held.evict_oldest(100, &grace), Eviction::Asked);
        assert!(notified(&newer), "since 20, before the idle one (30)");
        held.lock().retain(|id, _| *id == 1);
        assert_eq!(
            held.evict_oldest(100, &grace),
            Eviction::AllBusy,
            "only a busy one left"
        );
        assert!(!notified(&busy));
    }

    #[test]
    fn a_connection_not_read_yet_keeps_the_longer_grace() {
        let grace = Grace {
            read: Duration::from_millis(10),
            unread: Duration::from_millis(50),
        };
        let epoch = Instant::now();
        let held = Held::default();
        let unread = Arc::new(Conn::new(epoch, 0));
        let read = Arc::new(Conn::new(epoch, 5));
        read.polled();
        held.lock().insert(1, Arc::clone(&unread));
        held.lock().insert(2, Arc::clone(&read));
        assert_eq!(
            held.evict_oldest(20, &grace),
            Eviction::Asked,
            "the one read is free from 15"
        );
        assert!(notified(&read) && !notified(&unread));
        held.lock().remove(&2);
        assert_eq!(
            held.evict_oldest(20, &grace),
            Eviction::TooYoung { at_ms: 50 },
            "its task has not run yet"
        );
        assert_eq!(
            Grace::for_header_timeout(Duration::from_secs(10)),
            Grace {
                read: Duration::from_millis(50),
                unread: Duration::from_millis(250)
            }
        );
        assert_eq!(
            Grace::for_header_timeout(Duration::from_millis(100)).unread,
            Duration::from_millis(50),
            "at most half the header timeout"
        );
    }
}
