//! One accepted connection's state: its phase (waiting for a request head,
//! idle, busy) and when that began, packed in one word, the request in
//! flight that keeps it busy, and the socket wrapper that reports bytes read.
//!
//! Pure state and wrappers: the accept loop and the deadlines' task are in
//! [`super`]; times are milliseconds since the server's epoch, passed in.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use hyper::body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{ConnectionLimits, Grace};

/// What a connection is doing, as its deadline sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
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
    pub(super) const fn bits(self) -> u64 {
        match self {
            Self::Head => 0,
            Self::Idle => 1,
            Self::Busy => 2,
        }
    }

    pub(super) const fn from_bits(bits: u64) -> Self {
        match bits {
            0 => Self::Head,
            1 => Self::Idle,
            _ => Self::Busy,
        }
    }
}

/// Bits of the packed state that hold the phase.
pub(super) const PHASE_SHIFT: u32 = 62;

/// One accepted connection, shared by its task, its socket wrapper, its
/// requests and the accept loop (which may ask it to make room). Times are
/// milliseconds since the server's `epoch`, passed in, so that the state
/// machine is pure.
#[derive(Debug)]
pub(super) struct Conn {
    /// Phase (top two bits) and when it began, in one word so that both
    /// are read together.
    pub(super) state: AtomicU64,
    /// Requests whose response has not been sent completely.
    pub(super) in_flight: AtomicU32,
    /// Whether the server has read from the socket yet.
    pub(super) read: AtomicBool,
    /// Set by the accept loop: close unless a request is in progress.
    pub(super) evict: Notify,
    pub(super) epoch: Instant,
}

impl Conn {
    /// A connection accepted at `at_ms`: waiting for its first head.
    pub(super) fn new(epoch: Instant, at_ms: u64) -> Self {
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
    pub(super) fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    pub(super) fn set(&self, phase: Phase, at_ms: u64) {
        let since = at_ms & ((1 << PHASE_SHIFT) - 1);
        self.state
            .store((phase.bits() << PHASE_SHIFT) | since, Ordering::Release);
    }

    /// The phase and when it began.
    pub(super) fn get(&self) -> (Phase, u64) {
        let state = self.state.load(Ordering::Acquire);
        let phase = if self.in_flight.load(Ordering::Acquire) > 0 {
            Phase::Busy
        } else {
            Phase::from_bits(state >> PHASE_SHIFT)
        };
        (phase, state & ((1 << PHASE_SHIFT) - 1))
    }

    /// Bytes arrived at `at_ms`: after an idle period they start a head.
    pub(super) fn received(&self, at_ms: u64) {
        let state = self.state.load(Ordering::Acquire);
        if Phase::from_bits(state >> PHASE_SHIFT) == Phase::Idle {
            self.set(Phase::Head, at_ms);
        }
    }

    /// A request head arrived at `at_ms`: the connection is busy until its
    /// response is sent (the guard's drop).
    pub(super) fn begin(self: &Arc<Self>, at_ms: u64) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.set(Phase::Busy, at_ms);
        InFlight(Arc::clone(self))
    }

    /// A response was sent at `at_ms`: idle once none is left.
    pub(super) fn finish(&self, at_ms: u64) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.set(Phase::Idle, at_ms);
        }
    }

    /// When its current phase runs out, in ms since `epoch` (`None`:
    /// busy, no deadline).
    pub(super) fn deadline_ms(&self, limits: &ConnectionLimits) -> Option<u64> {
        let (phase, since) = self.get();
        let allowed = match phase {
            Phase::Head => limits.header_timeout,
            Phase::Idle => limits.idle_timeout,
            Phase::Busy => return None,
        };
        Some(since + allowed.as_millis() as u64)
    }

    /// [`deadline_ms`](Self::deadline_ms) as an instant.
    pub(super) fn deadline(&self, limits: &ConnectionLimits) -> Option<Instant> {
        self.deadline_ms(limits)
            .map(|ms| self.epoch + Duration::from_millis(ms))
    }

    /// Whether the accept loop may close it to make room.
    pub(super) fn evictable(&self) -> bool {
        self.get().0 != Phase::Busy
    }

    /// The server read from the socket (whether or not bytes came).
    pub(super) fn polled(&self) {
        if !self.read.load(Ordering::Relaxed) {
            self.read.store(true, Ordering::Release);
        }
    }

    /// When its grace ends, if it has no request in progress: the phase's
    /// start and when it may be closed to make room.
    pub(super) fn evictable_from(&self, grace: &Grace) -> Option<(u64, u64)> {
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
pub(super) struct InFlight(Arc<Conn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.finish(self.0.now_ms());
    }
}

/// A response body that keeps its request in flight until it is dropped.
pub(super) struct Tracked {
    pub(super) body: Body,
    pub(super) _in_flight: InFlight,
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
pub(super) struct Watched {
    pub(super) stream: TcpStream,
    pub(super) conn: Arc<Conn>,
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
