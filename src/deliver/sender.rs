//! Per-endpoint senders: a bounded queue, a rate limit, a concurrency limit,
//! and the worker that turns each queued delivery into attempts and a
//! durable outcome. The worker runs only while deliveries are queued, so an
//! index of 100 000 mostly idle endpoints holds no task or channel for each.
//!
//! Owns what happens to one delivery from dequeue to settled: send, classify,
//! then a durable outcome (delivered, retry scheduled on a delay tier, or
//! dead-lettered), then report the ack token. It never commits offsets and
//! never touches other endpoints' queues.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use futures::FutureExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::panic::AssertUnwindSafe;
use tokio::sync::{Notify, Semaphore, mpsc};

use arc_swap::ArcSwap;

use super::client::HttpClients;
use super::host::HostLimits;
use super::refusal::Refusal;
use super::request::{Outgoing, send_attempt, webhook_id};
use crate::config::RateLimitConfig;
use crate::core::AckToken;
use crate::core::Payload;
use crate::core::Reason;
use crate::index::Endpoint;
use crate::index::activity::{AttemptRecord, EndpointActivity, Outcome};
use crate::index::attempt_log::AttemptLog;
use crate::metrics::EndpointMetrics;
use crate::outcome::circuit::Circuit;
use crate::outcome::classify::{EndpointHealth, Verdict};
use crate::outcome::policy::{self, Decision, Tried};
use crate::retry::writer::{Completion, DeferralOf, OutcomeWriter, Stored};
use crate::wire::headers::{History, now_ms};

/// One event for one endpoint, and the token to hand back once settled.
#[derive(Debug)]
pub struct Delivery {
    /// The shared event.
    pub event: Payload,
    /// Settles the event's offset for this endpoint.
    pub token: AckToken,
    /// Attempts counted so far (0 for a fresh event).
    pub attempt: u32,
    /// Unix ms of the first attempt (`None` for a fresh event).
    pub first_ms: Option<i64>,
}

/// Why a delivery was not queued.
#[derive(Debug)]
pub enum EnqueueError {
    /// The endpoint's queue is full: defer it.
    Full(Delivery),
    /// The sender stopped (shutdown).
    Closed(Delivery),
}

/// The deliveries waiting for one endpoint, and whether a worker is
/// taking from them.
#[derive(Debug, Default)]
struct Queue {
    items: VecDeque<Delivery>,
    /// A worker task is running; it ends when it finds the queue empty.
    worker: bool,
    /// The pipeline stopped: nothing more is queued.
    closed: bool,
}

/// Everything a sender's tasks share. This is all an endpoint costs while
/// nothing is queued for it: no task, no channel.
struct Shared {
    /// The endpoint's current settings (swapped when it changes).
    endpoint: ArcSwap<Endpoint>,
    /// Set when the endpoint was deleted: what is still queued is
    /// dead-lettered as `endpoint_deleted`.
    deleted: AtomicBool,
    deps: Arc<SenderDeps>,
    metrics: Arc<EndpointMetrics>,
    activity: Arc<EndpointActivity>,
    /// Set when the endpoint answered 410 Gone.
    gone: AtomicBool,
    /// Set once a panic of this sender was logged.
    panic_logged: AtomicBool,
    /// Opens after repeated failures.
    circuit: Circuit,
    /// Unix ms of the latest dequeue: a sender that stops taking from its
    /// queue is stalled, not just busy.
    last_dequeue_ms: AtomicI64,
    queue: Mutex<Queue>,
    /// Most deliveries queued at once.
    capacity: usize,
    /// Wakes an enqueue waiting for room.
    room: Notify,
    /// Wakes a worker waiting to fill a batch.
    arrivals: Notify,
    /// Boxed: most endpoints have none, and a sender is made for each
    /// endpoint in use.
    limiter: Option<Box<DefaultDirectRateLimiter>>,
    /// Requests in flight.
    permits: Arc<Semaphore>,
    /// Requests in flight to the endpoint's host, shared with every other
    /// endpoint there.
    host_slots: ArcSwap<Semaphore>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("endpoint", &self.endpoint.load().id())
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        crate::core::lock(&self.queue)
    }

    /// Moves up to `max` queued deliveries into `batch`. With `end_if_empty`
    /// and nothing queued, the worker is marked gone (under the same lock an
    /// enqueue checks, so a delivery is never left without a worker) and
    /// `false` comes back.
    fn take(&self, batch: &mut Vec<Delivery>, max: usize, end_if_empty: bool) -> bool {
        let mut q = self.queue();
        if q.items.is_empty() {
            if end_if_empty {
                q.worker = false;
                // An idle endpoint keeps no queue memory.
                q.items = VecDeque::new();
                return false;
            }
            return true;
        }
        let n = (max - batch.len()).min(q.items.len());
        batch.extend(q.items.drain(..n));
        drop(q);
        self.last_dequeue_ms.store(now_ms(), Ordering::Relaxed);
        self.room.notify_one();
        true
    }
}

pub use crate::outcome::policy::RetryPolicy;

/// Services every sender shares, built once per pipeline.
#[derive(Debug)]
pub struct SenderDeps {
    /// Pooled HTTP clients.
    pub clients: HttpClients,
    /// Requests in flight per destination host.
    pub hosts: HostLimits,
    /// Retry and DLQ writer.
    pub writer: OutcomeWriter,
    /// Where settled ack tokens go.
    pub acks: mpsc::UnboundedSender<AckToken>,
    /// Retry policy.
    pub policy: RetryPolicy,
    /// Label series per endpoint.
    pub per_endpoint_labels: bool,
    /// First open interval of circuit breakers (doubling up to the backoff
    /// maximum).
    pub circuit_base: Duration,
    /// The handles all endpoints share when series are not labelled per
    /// endpoint (registered on first use).
    pub shared_metrics: OnceLock<Arc<EndpointMetrics>>,
    /// Called once when an endpoint answers 410 Gone (the service stores it
    /// disabled; without one it is disabled in this sender only).
    pub on_gone: Option<GoneHook>,
    /// The durable activity log (`None` when `topics.attempts_log` is off).
    pub attempt_log: Option<Arc<AttemptLog>>,
    /// Start a W3C trace for records that carry none
    /// (`delivery.start_traces`).
    pub start_traces: bool,
}

/// What to do when an endpoint answers 410 Gone: called with its id.
#[derive(Clone)]
pub struct GoneHook(pub Arc<dyn Fn(&str) + Send + Sync>);

impl std::fmt::Debug for GoneHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GoneHook")
    }
}

impl SenderDeps {
    /// The metric handles of `endpoint_id`.
    fn metrics_for(&self, endpoint_id: &str) -> Arc<EndpointMetrics> {
        if self.per_endpoint_labels {
            return Arc::new(EndpointMetrics::new(endpoint_id, true));
        }
        Arc::clone(
            self.shared_metrics
                .get_or_init(|| Arc::new(EndpointMetrics::new(endpoint_id, false))),
        )
    }
}

/// Handle to one endpoint's sender. A worker task runs only while
/// deliveries are queued, so idle endpoints cost a few hundred bytes.
#[derive(Debug)]
pub struct Sender {
    shared: Arc<Shared>,
}

impl Sender {
    /// The sender of `endpoint`, recording into `activity`.
    pub fn new(
        endpoint: Arc<Endpoint>,
        deps: &Arc<SenderDeps>,
        activity: Arc<EndpointActivity>,
    ) -> Self {
        let limiter = endpoint
            .config
            .rate_limit
            .as_deref()
            .map(|rl| Box::new(RateLimiter::direct(rate_quota(rl))));
        let shared = Arc::new(Shared {
            metrics: deps.metrics_for(endpoint.id()),
            capacity: (endpoint.config.queue_size as usize).max(1),
            permits: Arc::new(Semaphore::new(endpoint.config.max_concurrency as usize)),
            host_slots: ArcSwap::new(deps.hosts.slots_for(&endpoint.url)),
            endpoint: ArcSwap::new(endpoint),
            deleted: AtomicBool::new(false),
            deps: Arc::clone(deps),
            activity,
            gone: AtomicBool::new(false),
            panic_logged: AtomicBool::new(false),
            circuit: Circuit::new(deps.circuit_base, deps.policy.backoff.max()),
            last_dequeue_ms: AtomicI64::new(now_ms()),
            queue: Mutex::new(Queue::default()),
            room: Notify::new(),
            arrivals: Notify::new(),
            limiter,
        });
        Self { shared }
    }

    /// The endpoint as this sender currently sends to it.
    pub fn endpoint(&self) -> Arc<Endpoint> {
        self.shared.endpoint.load_full()
    }

    /// Whether `endpoint` can take over this sender in place: the queue,
    /// concurrency, rate limit and batching it was built with are the same.
    pub fn fits(&self, endpoint: &Endpoint) -> bool {
        let mine = self.shared.endpoint.load();
        let (a, b) = (&mine.config, &endpoint.config);
        a.queue_size == b.queue_size
            && a.max_concurrency == b.max_concurrency
            && a.rate_limit == b.rate_limit
            && a.batch == b.batch
    }

    /// Sends to the endpoint's new settings from the next attempt on.
    /// A rewritten endpoint (a new `Arc`, e.g. re-enabled through the API)
    /// also clears the "answered 410 Gone" state.
    pub fn update(&self, endpoint: Arc<Endpoint>) {
        if self.shared.endpoint.load().url.origin() != endpoint.url.origin() {
            self.shared
                .host_slots
                .store(self.shared.deps.hosts.slots_for(&endpoint.url));
        }
        let old = self.shared.endpoint.swap(Arc::clone(&endpoint));
        if !Arc::ptr_eq(&old, &endpoint) && self.shared.gone.swap(false, Ordering::Relaxed) {
            tracing::info!(endpoint = %endpoint.id(), "endpoint changed after 410 Gone: delivering again");
        }
    }

    /// The endpoint was deleted: whatever is still queued is dead-lettered
    /// (`endpoint_deleted`); the worker ends when the queue is empty.
    pub fn retire(&self) {
        self.shared.deleted.store(true, Ordering::Release);
    }

    /// Queues a delivery, waiting up to `patience` for room while the
    /// sender is making progress. A sender that took nothing from its queue
    /// for `patience` is stalled: `Full` comes back at once, for deferral.
    pub async fn enqueue(
        &self,
        delivery: Delivery,
        patience: Duration,
    ) -> Result<(), EnqueueError> {
        let mut delivery = match self.try_enqueue(delivery) {
            Err(EnqueueError::Full(d)) => d,
            other => return other,
        };
        let stalled_for = now_ms() - self.shared.last_dequeue_ms.load(Ordering::Relaxed);
        if stalled_for >= patience.as_millis() as i64 {
            return Err(EnqueueError::Full(delivery));
        }
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            let room = self.shared.room.notified();
            tokio::pin!(room);
            // Registered before looking, so a dequeue in between wakes it.
            room.as_mut().enable();
            delivery = match self.try_enqueue(delivery) {
                Err(EnqueueError::Full(d)) => d,
                other => return other,
            };
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                return Err(EnqueueError::Full(delivery));
            }
        }
    }

    /// Queues a delivery if there is room, starting a worker if none runs.
    pub fn try_enqueue(&self, delivery: Delivery) -> Result<(), EnqueueError> {
        let start_worker = {
            let mut q = self.shared.queue();
            if q.closed {
                return Err(EnqueueError::Closed(delivery));
            }
            if q.items.len() >= self.shared.capacity {
                return Err(EnqueueError::Full(delivery));
            }
            if q.items.capacity() == 0 {
                // Most endpoints of a large index see one delivery at a
                // time; a VecDeque would start with room for four.
                q.items.reserve_exact(1);
            }
            q.items.push_back(delivery);
            !std::mem::replace(&mut q.worker, true)
        };
        if start_worker {
            let now = now_ms();
            let previous = self.shared.last_dequeue_ms.swap(now, Ordering::Relaxed);
            // A worker lingers only for a stream (the endpoint took a
            // delivery moments ago), not for an endpoint hit once in a while.
            let linger = now - previous <= STREAM_GAP_MS;
            spawn_worker(Arc::clone(&self.shared), linger);
        } else {
            self.shared.arrivals.notify_one();
        }
        Ok(())
    }

    /// Whether the sender holds nothing worth keeping at `now_ms` and has
    /// not been used for `idle_ms`: no queued delivery, no worker, no
    /// attempt in flight, a clean circuit, no 410 Gone, and a rate limit (if
    /// any) that has refilled. Dropping it then loses nothing; the next
    /// delivery makes a new one.
    pub fn is_idle(&self, now_ms: i64, idle_ms: i64) -> bool {
        let shared = &self.shared;
        let endpoint = shared.endpoint.load();
        let refill_ms = endpoint.config.rate_limit.as_deref().map_or(0, refill_ms);
        if now_ms - shared.last_dequeue_ms.load(Ordering::Relaxed) < idle_ms.max(refill_ms)
            || shared.gone.load(Ordering::Relaxed)
            || !shared.circuit.is_clean()
            || shared.permits.available_permits() < endpoint.config.max_concurrency as usize
        {
            return false;
        }
        let q = shared.queue();
        q.items.is_empty() && !q.worker && !q.closed
    }

    /// The endpoint's circuit breaker.
    pub fn circuit(&self) -> &Circuit {
        &self.shared.circuit
    }

    /// Moves a delivery the endpoint cannot take now to the retry tier for
    /// `delay`, without using an attempt, and settles it once stored.
    pub fn defer(&self, delivery: Delivery, delay: Duration, why: &'static str) {
        defer(&self.shared, delivery, delay, why);
    }

    /// What the sender did so far.
    pub fn activity(&self) -> &Arc<EndpointActivity> {
        &self.shared.activity
    }

    /// Stops taking deliveries; queued ones are dropped unsettled (they will
    /// be consumed again after the offsets that were committed).
    pub fn abort(&self) {
        let mut q = self.shared.queue();
        q.closed = true;
        q.items.clear();
    }
}

/// The longest period between two requests a rate limit may ask for: the
/// limiter counts in nanoseconds, and a period times a burst must stay far
/// from overflowing (`rate_limit` is validated to 0.001/s and 100 000 at
/// most; this holds whatever reaches here).
const MAX_RATE_PERIOD: Duration = Duration::from_secs(24 * 3600);

/// The rate limiter quota of `rl`: one request per `1 / per_second`
/// (between 1 ns and [`MAX_RATE_PERIOD`]), `burst` at once (at least 1,
/// at most [`crate::config::limits::RATE_BURST`]). Never panics, whatever
/// the numbers (NaN and infinities included).
pub fn rate_quota(rl: &RateLimitConfig) -> Quota {
    let seconds = 1.0 / rl.per_second;
    let period = Duration::try_from_secs_f64(seconds)
        .unwrap_or(if seconds > 0.0 {
            MAX_RATE_PERIOD
        } else {
            Duration::from_nanos(1)
        })
        .clamp(Duration::from_nanos(1), MAX_RATE_PERIOD);
    let burst = rl.burst.clamp(1, crate::config::limits::RATE_BURST.max);
    let burst = NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
        .allow_burst(burst)
}

/// How long (ms) a rate limit of `rl` takes to refill its burst, at most a
/// day (an idle sender is kept that long so dropping it frees no extra
/// burst).
pub fn refill_ms(rl: &RateLimitConfig) -> i64 {
    let ms = f64::from(rl.burst) / rl.per_second * 1000.0;
    if ms.is_nan() {
        0
    } else {
        ms.clamp(0.0, MAX_RATE_PERIOD.as_millis() as f64) as i64
    }
}

/// How long an idle worker of a streaming endpoint waits for more before
/// it ends.
const WORKER_LINGER: Duration = Duration::from_millis(50);

/// Deliveries this close together (ms) make a stream.
const STREAM_GAP_MS: i64 = 1_000;

/// The worker: takes deliveries (in batches when configured), waits for the
/// rate limit and a concurrency permit, and starts each attempt. It ends as
/// soon as the queue stayed empty for [`WORKER_LINGER`].
async fn work(shared: Arc<Shared>, linger: bool) {
    let batch = shared.endpoint.load().config.batch;
    let max_events = batch.max_events.max(1) as usize;
    let max_wait = batch.max_wait.get();
    loop {
        let mut hand = InHand::new(&shared, Vec::with_capacity(1));
        loop {
            let arrived = shared.arrivals.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            shared.take(&mut hand.deliveries, max_events, false);
            if !hand.deliveries.is_empty() {
                break;
            }
            // Lingers a moment so a steady stream does not start a worker
            // per delivery; then ends unless something arrived meanwhile.
            if !linger || tokio::time::timeout(WORKER_LINGER, arrived).await.is_err() {
                if !shared.take(&mut hand.deliveries, max_events, true) {
                    return;
                }
                break;
            }
        }
        if hand.deliveries.len() < max_events && !max_wait.is_zero() {
            fill_batch(&shared, &mut hand.deliveries, max_events, max_wait).await;
        }
        // While the circuit is open, queued deliveries move to the retry
        // tier at once instead of waiting for a permit behind failing
        // attempts: the queue keeps draining, so whoever enqueues (the
        // dispatcher, for every endpoint) is never held up by this one.
        let now = now_ms();
        if shared.circuit.open_for(now).is_some() {
            while let Some(delivery) = hand.pop() {
                let delay = shared.circuit.defer_for(now).unwrap_or_default();
                defer(&shared, delivery, delay, "circuit open");
            }
            continue;
        }
        if let Some(limiter) = &shared.limiter
            && limiter.check().is_err()
        {
            shared.metrics.rate_limited.increment(1);
            limiter.until_ready().await;
        }
        let Ok(permit) = Arc::clone(&shared.permits).acquire_owned().await else {
            // Never closed; were it, this would be shutdown: the deliveries
            // are consumed again after a restart.
            hand.abandon();
            return;
        };
        // The host's slot is taken here, not in the attempt's task, so what
        // waits for a busy host is this worker, not a task per delivery.
        // (The semaphore is never closed; closed would only lift the limit.)
        let host_slot = shared.host_slots.load_full().acquire_owned().await.ok();
        let batch = hand.hand_over();
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let attempt = AssertUnwindSafe(deliver(&shared, batch))
                .catch_unwind()
                .await;
            if let Err(panic) = attempt {
                panicked(&shared, panic.as_ref());
            }
            drop((permit, host_slot));
        });
    }
}

/// Starts a worker for `shared`'s queue, supervised: a worker that panics
/// is counted and logged, its deliveries in hand are dead-lettered (see
/// [`InHand`]), and a new worker takes over what is still queued.
fn spawn_worker(shared: Arc<Shared>, linger: bool) {
    tokio::spawn(async move {
        let result = AssertUnwindSafe(work(Arc::clone(&shared), linger))
            .catch_unwind()
            .await;
        if let Err(panic) = result {
            panicked(&shared, panic.as_ref());
            // The worker flag is still set: clear it, or start another
            // worker for what is queued (each panic dead-letters what the
            // worker held, so this ends).
            let restart = {
                let mut q = shared.queue();
                if q.items.is_empty() || q.closed {
                    q.worker = false;
                    false
                } else {
                    true
                }
            };
            if restart {
                spawn_worker(shared, false);
            }
        }
    });
}

/// Counts a panic in `shared`'s sender and logs the first one.
fn panicked(shared: &Shared, panic: &(dyn std::any::Any + Send)) {
    let message = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string());
    shared.metrics.panics.increment(1);
    if !shared.panic_logged.swap(true, Ordering::Relaxed) {
        tracing::error!(
            endpoint = %shared.endpoint.load().id(),
            panic = %message,
            "the endpoint's sender panicked: what it held is dead-lettered as internal_error and it carries on (logged once per sender; hookstream_sender_panics_total counts them)"
        );
    }
}

/// Deliveries a task holds that have no outcome yet. Handing one on (to
/// the writer, to an attempt's task, to the acks) takes it out; whatever is
/// still here when the holder is dropped, which only happens when it
/// unwinds from a panic, is dead-lettered as `internal_error`. So a panic
/// never leaves a delivery without an outcome (its partition could not
/// commit past it until a restart).
struct InHand {
    shared: Arc<Shared>,
    deliveries: Vec<Delivery>,
}

impl InHand {
    fn new(shared: &Arc<Shared>, deliveries: Vec<Delivery>) -> Self {
        Self {
            shared: Arc::clone(shared),
            deliveries,
        }
    }

    /// Takes the last delivery out, to hand it on.
    fn pop(&mut self) -> Option<Delivery> {
        self.deliveries.pop()
    }

    /// Takes every delivery out, to hand them on together.
    fn hand_over(&mut self) -> Vec<Delivery> {
        std::mem::take(&mut self.deliveries)
    }

    /// Lets go of the deliveries without an outcome (shutdown: they are
    /// consumed again after a restart).
    fn abandon(&mut self) {
        self.deliveries.clear();
    }
}

impl Drop for InHand {
    fn drop(&mut self) {
        let endpoint = self.shared.endpoint.load_full();
        for d in self.deliveries.drain(..) {
            let h = History {
                endpoint: endpoint.id(),
                attempt: d.attempt,
                first_ms: d.first_ms.unwrap_or_else(now_ms),
                last_status: Reason::InternalError.as_str(),
                last_error: "an internal error (panic) in the endpoint's sender",
            };
            dead_letter(&self.shared, d, &h, Reason::InternalError);
        }
    }
}

/// Adds queued deliveries to `batch` until it holds `max` or `max_wait`
/// passed since the first.
async fn fill_batch(shared: &Shared, batch: &mut Vec<Delivery>, max: usize, max_wait: Duration) {
    let deadline = tokio::time::Instant::now() + max_wait;
    while batch.len() < max {
        let arrived = shared.arrivals.notified();
        tokio::pin!(arrived);
        arrived.as_mut().enable();
        shared.take(batch, max, false);
        if batch.len() >= max || tokio::time::timeout_at(deadline, arrived).await.is_err() {
            break;
        }
    }
}

/// Attempts one request for a batch (usually of one) and settles every
/// delivery in it: at once when delivered, else once its retry or dead
/// letter is stored.
async fn deliver(shared: &Arc<Shared>, batch: Vec<Delivery>) {
    let mut hand = InHand::new(shared, batch);
    let endpoint = shared.endpoint.load_full();
    let endpoint = &endpoint;
    let now = now_ms();
    let history = |d: &Delivery| History {
        endpoint: endpoint.id(),
        attempt: d.attempt,
        first_ms: d.first_ms.unwrap_or(now),
        last_status: "",
        last_error: "",
    };
    let refusal = if shared.deleted.load(Ordering::Acquire) {
        Some(Refusal::DELETED)
    } else if shared.gone.load(Ordering::Relaxed) {
        Some(Refusal::GONE)
    } else {
        Refusal::of(Some(endpoint))
    };
    if let Some(refusal) = refusal {
        while let Some(d) = hand.pop() {
            let h = History {
                last_status: refusal.reason.as_str(),
                last_error: refusal.why,
                ..history(&d)
            };
            dead_letter(shared, d, &h, refusal.reason);
        }
        return;
    }
    if shared.circuit.open_for(now).is_some() {
        while let Some(mut d) = hand.pop() {
            d.first_ms = Some(d.first_ms.unwrap_or(now));
            let delay = shared.circuit.defer_for(now).unwrap_or_default();
            defer(shared, d, delay, "circuit open");
        }
        return;
    }
    super::faults::maybe_panic(endpoint.id());
    let shaped = shape_all(shared, endpoint, &mut hand, now);
    if hand.deliveries.is_empty() {
        return;
    }
    let policy = endpoint_policy(shared, endpoint);
    let joined_ids = hand
        .deliveries
        .iter()
        .map(|d| d.event.id())
        .collect::<Vec<_>>()
        .join(",");
    let wid = webhook_id(&joined_ids, endpoint.id());
    let first_type = hand.deliveries[0].event.event_type();
    let kind = if hand
        .deliveries
        .iter()
        .all(|d| d.event.event_type() == first_type)
    {
        first_type
    } else {
        "batch"
    };
    let first = &hand.deliveries[0];
    let event_id = if hand.deliveries.len() == 1 {
        first.event.id()
    } else {
        std::borrow::Cow::Borrowed(wid.as_str())
    };
    let event_time_ms = first
        .event
        .time_ms()
        .unwrap_or(first.first_ms.unwrap_or(now));
    let shaped = super::shape::join(shaped);
    // A batch carries the trace of its first event.
    let trace = super::trace::for_record(
        |name| first.event.headers().get(name),
        &first.event.id(),
        shared.deps.start_traces,
    );
    let report = send_attempt(
        &shared.deps.clients,
        endpoint,
        Outgoing {
            body: &shaped.body,
            webhook_id: &wid,
            event_type: kind,
            event_id: &event_id,
            event_time_ms,
            content_type: shaped.content_type,
            cloudevent_source: shaped.cloudevent_source.as_deref(),
            trace: trace.as_ref(),
        },
        &policy.rules,
        policy.backoff.max(),
    )
    .await;
    shared.metrics.response(report.status);
    shared.metrics.duration.record(report.latency.as_secs_f64());
    let decided_ms = now_ms();
    let decide = |d: &Delivery| {
        let tried = Tried {
            attempt: d.attempt,
            first_ms: d.first_ms.unwrap_or(now),
        };
        let decision =
            policy::after_attempt(&report.verdict, tried, &policy, decided_ms, rand::random());
        (tried, decision)
    };
    let first = &hand.deliveries[0];
    let (outcome, reason) = logged_outcome(decide(first).1);
    let record = AttemptRecord {
        time_ms: now,
        endpoint: endpoint.id().to_string(),
        event_id: joined_ids,
        event_type: kind.to_string(),
        webhook_id: wid,
        attempt: first.attempt + 1,
        status: report.status,
        outcome,
        reason,
        latency_ms: report.latency.as_secs_f64() * 1000.0,
        error: report.last_error.clone(),
        source: match &hand.deliveries[..] {
            [only] => String::from_utf8_lossy(&only.event.source()).into_owned(),
            _ => String::new(),
        },
    };
    if let Some(log) = &shared.deps.attempt_log {
        log_attempts(log, &hand.deliveries, &record, &decide);
    }
    shared.activity.record_attempt(record);
    match report.verdict.endpoint_health() {
        EndpointHealth::Failing => {
            if shared.circuit.record_failure(now_ms()) {
                tracing::warn!(endpoint = %endpoint.id(), "circuit opened after repeated failures: deferring deliveries");
            }
        }
        EndpointHealth::Answering => shared.circuit.record_success(),
        // A local failure says nothing about the endpoint.
        EndpointHealth::Unknown => {}
    }
    if matches!(report.verdict, Verdict::Defer) {
        tracing::debug!(endpoint = %endpoint.id(), error = %report.last_error, "attempt not made for a local reason: deferring");
    }
    if matches!(report.verdict, Verdict::Delivered) {
        count(shared, Outcome::Delivered, hand.deliveries.len() as u64);
    }
    while let Some(d) = hand.pop() {
        let (tried, decision) = decide(&d);
        let h = History {
            attempt: decision.attempt(tried),
            first_ms: tried.first_ms,
            last_status: &report.last_status,
            last_error: &report.last_error,
            ..history(&d)
        };
        carry_out(shared, endpoint, d, &h, decision);
    }
}

/// Does what the policy decided for one delivery: settle it, or store it on
/// a tier or the DLQ (it settles once stored).
fn carry_out(
    shared: &Arc<Shared>,
    endpoint: &Endpoint,
    d: Delivery,
    history: &History<'_>,
    decision: Decision,
) {
    match decision {
        Decision::Delivered => {
            let age = d.event.consumed_at().elapsed().as_secs_f64()
                + retry_age_secs(&d.event, history.first_ms);
            shared.metrics.end_to_end.record(age);
            let _ = shared.deps.acks.send(d.token);
        }
        Decision::Retry { delay, .. } => {
            let done = settle(shared, d.token, Outcome::RetryScheduled);
            shared.deps.writer.retry(&d.event, history, delay, done);
        }
        // No attempt used, due one first circuit interval from now (not
        // random, so due times on the tier partition rise in write order,
        // as for circuit deferrals).
        Decision::Defer { delay } => defer(shared, d, delay, LOCAL_FAILURE),
        Decision::DeadLetter { reason, .. } => dead_letter(shared, d, history, reason),
        Decision::Disable { .. } => {
            if !shared.gone.swap(true, Ordering::Relaxed) {
                tracing::warn!(endpoint = %endpoint.id(), "endpoint answered 410 Gone: disabled");
                if let Some(hook) = &shared.deps.on_gone {
                    (hook.0)(endpoint.id());
                }
            }
            dead_letter(shared, d, history, Reason::Gone);
        }
    }
}

/// Shapes each delivery's event for `endpoint` (`deliver::shape`), in
/// order; a delivery whose event has nothing where the endpoint's payload
/// pointer looks is dead-lettered as `invalid_event` (no attempt could
/// succeed) and leaves the batch.
fn shape_all(
    shared: &Arc<Shared>,
    endpoint: &Endpoint,
    hand: &mut InHand,
    now: i64,
) -> Vec<super::shape::Shaped> {
    let config = endpoint.config.payload.as_deref();
    let mut shaped = Vec::with_capacity(hand.deliveries.len());
    let mut i = 0;
    while i < hand.deliveries.len() {
        let d = &hand.deliveries[i];
        match super::shape::shape_event(config, &d.event, d.first_ms.unwrap_or(now)) {
            Ok(body) => {
                shaped.push(body);
                i += 1;
            }
            Err(e) => {
                let d = hand.deliveries.remove(i);
                let why = e.to_string();
                let h = History {
                    endpoint: endpoint.id(),
                    attempt: d.attempt,
                    first_ms: d.first_ms.unwrap_or(now),
                    last_status: Reason::InvalidEvent.as_str(),
                    last_error: &why,
                };
                dead_letter(shared, d, &h, Reason::InvalidEvent);
            }
        }
    }
    shaped
}

/// The endpoint's retry policy: `[delivery]`'s, changed by its `retry`
/// (checked when the endpoint was accepted; should it fail here, the
/// default applies).
fn endpoint_policy(shared: &Shared, endpoint: &Endpoint) -> RetryPolicy {
    shared
        .deps
        .policy
        .for_endpoint(endpoint.config.retry.as_deref())
        .unwrap_or(shared.deps.policy)
}

/// How the activity log labels a decision: the outcome and, for a dead
/// letter, its reason (`exhausted` when a retryable failure has no retry
/// left).
fn logged_outcome(decision: Decision) -> (Outcome, Option<String>) {
    match decision {
        Decision::Delivered => (Outcome::Delivered, None),
        Decision::Retry { .. } => (Outcome::RetryScheduled, None),
        Decision::Defer { .. } => (Outcome::Deferred, None),
        Decision::DeadLetter { reason, .. } => {
            (Outcome::DeadLettered, Some(reason.as_str().to_string()))
        }
        Decision::Disable { .. } => (
            Outcome::DeadLettered,
            Some(Reason::Gone.as_str().to_string()),
        ),
    }
}

/// Writes one durable activity record per delivery of the attempt
/// (`record` describes the attempt; each delivery has its own event and
/// outcome).
fn log_attempts(
    log: &AttemptLog,
    deliveries: &[Delivery],
    record: &AttemptRecord,
    decide: &dyn Fn(&Delivery) -> (Tried, Decision),
) {
    if let [_] = deliveries {
        log.write(record);
        return;
    }
    for d in deliveries {
        let (outcome, reason) = logged_outcome(decide(d).1);
        let source = d.event.source();
        log.write(&AttemptRecord {
            event_id: d.event.id().into_owned(),
            event_type: d.event.event_type().to_string(),
            attempt: d.attempt + 1,
            outcome,
            reason,
            source: String::from_utf8_lossy(&source).into_owned(),
            ..record.clone()
        });
    }
}

/// Why a delivery was deferred after a local failure (`hookstream-last-error`).
const LOCAL_FAILURE: &str =
    "local failure (no descriptor, buffer or memory for a connection): no attempt used";

/// Seconds between the first attempt and this consumption, for retries (the
/// end-to-end clock starts at the first consumption).
fn retry_age_secs(event: &Payload, first_ms: i64) -> f64 {
    if !event.is_retry() {
        return 0.0;
    }
    let consumed_ms = now_ms() - event.consumed_at().elapsed().as_millis() as i64;
    ((consumed_ms - first_ms).max(0) as f64) / 1000.0
}

/// Counts `n` deliveries with `outcome` in the activity log and metrics.
fn count(shared: &Shared, outcome: Outcome, n: u64) {
    shared.activity.count(outcome, n);
    let metric = match outcome {
        Outcome::Delivered => &shared.metrics.delivered,
        Outcome::RetryScheduled => &shared.metrics.retry_scheduled,
        Outcome::DeadLettered => &shared.metrics.dead_lettered,
        Outcome::Deferred => &shared.metrics.deferred,
    };
    metric.increment(n);
}

/// What runs once a delivery's outcome record is stored: count it (as
/// `on_tier` when it went to a retry tier, as dead-lettered when it went
/// to the DLQ) and settle its token.
fn settle(shared: &Arc<Shared>, token: AckToken, on_tier: Outcome) -> Completion {
    let shared = Arc::clone(shared);
    Box::new(move |stored| {
        let outcome = match stored {
            Stored::Retry { .. } => on_tier,
            Stored::DeadLetter => Outcome::DeadLettered,
        };
        count(&shared, outcome, 1);
        let _ = shared.deps.acks.send(token);
    })
}

/// Moves a delivery to the retry tier for `delay` without using an
/// attempt; it settles once stored.
fn defer(shared: &Arc<Shared>, delivery: Delivery, delay: Duration, why: &'static str) {
    let endpoint = shared.endpoint.load();
    let deferral = DeferralOf {
        endpoint: endpoint.id(),
        attempt: delivery.attempt,
        first_ms: delivery.first_ms.unwrap_or_else(now_ms),
        delay,
        why,
    };
    let done = settle(shared, delivery.token, Outcome::Deferred);
    shared.deps.writer.defer(&delivery.event, deferral, done);
}

/// Dead-letters a delivery; it settles once stored.
fn dead_letter(shared: &Arc<Shared>, delivery: Delivery, history: &History<'_>, reason: Reason) {
    let done = settle(shared, delivery.token, Outcome::DeadLettered);
    shared
        .deps
        .writer
        .dead_letter(&delivery.event, history, reason, done);
}
