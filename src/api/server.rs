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
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

mod conn;
use conn::{Conn, Tracked, Watched};

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
mod tests;
