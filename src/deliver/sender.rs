//! Per-endpoint senders: a bounded queue, a rate limit, a concurrency limit
//! (fixed, or adaptive below it: [`super::adaptive`]), and the worker that
//! turns each queued delivery into attempts and a durable outcome. The
//! worker runs only while deliveries are queued, so an index of 100 000
//! mostly idle endpoints holds no task or channel for each.
//!
//! Owns what happens to one delivery from dequeue to settled: send, classify,
//! then a durable outcome (delivered, retry scheduled on a delay tier, or
//! dead-lettered, or held on the backlog tier while the endpoint is
//! disabled: [`held`]), then report the ack token. It never commits offsets
//! and never touches other endpoints' queues.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{Notify, Semaphore, mpsc};

use arc_swap::ArcSwap;

use super::adaptive::AimdSettings;
use super::client::HttpClients;
use super::host::HostLimits;
use super::refusal::Admission;
use crate::config::{DisableCause, RateLimitConfig};
use crate::core::Payload;
use crate::core::{AckToken, Settled};
use crate::index::Endpoint;
use crate::index::activity::EndpointActivity;
use crate::index::attempt_log::AttemptLog;
use crate::metrics::EndpointMetrics;
use crate::outcome::circuit::Circuit;
use crate::retry::writer::OutcomeWriter;
use crate::wire::headers::now_ms;

mod attempt;
mod held;
mod limit;
mod line;
mod queue;
mod slots;
mod worker;

use attempt::defer;
use held::hold;
use limit::Adaptive;
pub use line::{LineReturn, LineTicket};
use queue::{Queue, Refused, Taken};
use worker::{STREAM_GAP_MS, spawn_worker};

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
    /// Its place in its device's line (`ordering = "per_device"`): it
    /// waits in memory instead of going to a tier, and ending lets the
    /// device's next delivery go.
    pub line: Option<LineTicket>,
}

/// Why a delivery was not queued.
#[derive(Debug)]
pub enum EnqueueError {
    /// The endpoint's queue is full: defer it.
    Full(Delivery),
    /// The sender stopped (shutdown).
    Closed(Delivery),
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
    /// Set when this sender disabled the endpoint after failing for
    /// `auto_disable.after`: deliveries are held from then on, before the
    /// store's write comes back (and should it fail).
    auto_disabled: AtomicBool,
    /// Unix ms of the first failed attempt of the current unbroken run of
    /// failed attempts (0: the last attempt did not fail). This instance's
    /// view: every instance keeps its own.
    failing_since_ms: AtomicI64,
    /// Set once a panic of this sender was logged.
    panic_logged: AtomicBool,
    /// Opens after repeated failures.
    circuit: Circuit,
    /// Unix ms of the latest dequeue: a sender that stops taking from its
    /// queue is stalled, not just busy.
    last_dequeue_ms: AtomicI64,
    queue: Mutex<Queue<Delivery>>,
    /// Most deliveries queued at once.
    capacity: usize,
    /// Wakes an enqueue waiting for room.
    room: Notify,
    /// Wakes a worker waiting to fill a batch.
    arrivals: Notify,
    /// Boxed: most endpoints have none, and a sender is made for each
    /// endpoint in use.
    limiter: Option<Box<DefaultDirectRateLimiter>>,
    /// Requests in flight (`max_concurrency` of them at most).
    permits: Arc<Semaphore>,
    /// The adaptive limit below `max_concurrency`, for an endpoint with
    /// `adaptive_concurrency` (boxed: most endpoints have none, and pay a
    /// null pointer for it).
    adaptive: Option<Box<Adaptive>>,
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
    fn queue(&self) -> MutexGuard<'_, Queue<Delivery>> {
        crate::core::lock(&self.queue)
    }

    /// Moves up to `max` queued deliveries into `batch`. With `end_if_empty`
    /// and nothing queued, the worker is marked gone (under the same lock an
    /// enqueue checks, so a delivery is never left without a worker) and
    /// `false` comes back.
    fn take(&self, batch: &mut Vec<Delivery>, max: usize, end_if_empty: bool) -> bool {
        match self.queue().take(batch, max, end_if_empty) {
            Taken::WorkerEnded => false,
            Taken::Nothing => true,
            Taken::Some(_) => {
                self.last_dequeue_ms.store(now_ms(), Ordering::Relaxed);
                self.room.notify_one();
                true
            }
        }
    }

    /// Unix ms of the latest take that moved deliveries (see
    /// [`Shared::take`]): the worker's clock reading for what it took.
    fn last_taken_ms(&self) -> i64 {
        self.last_dequeue_ms.load(Ordering::Relaxed)
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
    pub acks: mpsc::UnboundedSender<Settled>,
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
    /// Called once when this instance disables an endpoint (it answered
    /// 410 Gone, or failed every attempt for `auto_disable.after`): the
    /// service stores it disabled; without a hook it is disabled in this
    /// sender only.
    pub on_disable: Option<DisableHook>,
    /// The durable activity log (`None` when `topics.attempts_log` is off).
    pub attempt_log: Option<Arc<AttemptLog>>,
    /// Start a W3C trace for records that carry none
    /// (`delivery.start_traces`).
    pub start_traces: bool,
}

/// The function behind a [`DisableHook`]: the endpoint's id and why.
pub type DisableFn = dyn Fn(&str, DisableCause) + Send + Sync;

/// What to do when this instance disables an endpoint: called with its id
/// and why.
#[derive(Clone)]
pub struct DisableHook(pub Arc<DisableFn>);

impl std::fmt::Debug for DisableHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DisableHook")
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
        let metrics = deps.metrics_for(endpoint.id());
        let adaptive = endpoint.config.adaptive_concurrency.as_deref().map(|a| {
            let settings = AimdSettings::new(a, endpoint.config.max_concurrency);
            Box::new(Adaptive::new(settings, metrics.adaptive_limit()))
        });
        let shared = Arc::new(Shared {
            metrics,
            adaptive,
            capacity: (endpoint.config.queue_size as usize).max(1),
            permits: Arc::new(Semaphore::new(endpoint.config.max_concurrency as usize)),
            host_slots: ArcSwap::new(deps.hosts.slots_for(endpoint.url())),
            endpoint: ArcSwap::new(endpoint),
            deleted: AtomicBool::new(false),
            deps: Arc::clone(deps),
            activity,
            gone: AtomicBool::new(false),
            auto_disabled: AtomicBool::new(false),
            failing_since_ms: AtomicI64::new(0),
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
            && a.adaptive_concurrency == b.adaptive_concurrency
            && a.rate_limit == b.rate_limit
            && a.batch == b.batch
    }

    /// Sends to the endpoint's new settings from the next attempt on.
    /// A rewritten endpoint (a new `Arc`, e.g. re-enabled through the API)
    /// also clears the "answered 410 Gone" and "disabled after failing"
    /// states of this sender; one enabled again (or saved again after a
    /// 410) starts afresh: a closed circuit and no run of failures.
    pub fn update(&self, endpoint: Arc<Endpoint>) {
        let shared = &self.shared;
        if shared.endpoint.load().url().origin() != endpoint.url().origin() {
            shared
                .host_slots
                .store(shared.deps.hosts.slots_for(endpoint.url()));
        }
        let old = shared.endpoint.swap(Arc::clone(&endpoint));
        if Arc::ptr_eq(&old, &endpoint) {
            return;
        }
        let was_gone = shared.gone.swap(false, Ordering::Relaxed);
        if was_gone {
            tracing::info!(endpoint = %endpoint.id(), "endpoint changed after 410 Gone: delivering again");
        }
        // The stored settings decide from now on (an endpoint this sender
        // disabled is stored disabled by now; should that write have
        // failed, the run of failures goes on, and its next failed attempt
        // disables it again).
        shared.auto_disabled.store(false, Ordering::Relaxed);
        if endpoint.config.enabled && (!old.config.enabled || was_gone) {
            shared.failing_since_ms.store(0, Ordering::Relaxed);
            shared.circuit.record_success();
            tracing::info!(endpoint = %endpoint.id(), "endpoint enabled: delivering again (deliveries kept while it was disabled come back at their next recheck)");
        }
    }

    /// What a delivery queued now would meet: sent, held on the backlog
    /// tier (disabled), or refused (deleted, 410 Gone).
    pub fn admission(&self) -> Admission {
        self.shared.admission()
    }

    /// Holds a delivery of a disabled endpoint on the backlog tier until
    /// its next recheck (or dead-letters it, `endpoint_disabled`, beyond
    /// the backlog's cap); it settles once stored.
    pub fn hold(&self, delivery: Delivery) {
        hold(&self.shared, delivery, now_ms());
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
        let pushed = self.shared.queue().push(delivery, self.shared.capacity);
        let start_worker = match pushed {
            Ok(start) => start,
            Err(Refused::Full(d)) => return Err(EnqueueError::Full(d)),
            Err(Refused::Closed(d)) => return Err(EnqueueError::Closed(d)),
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
    /// attempt in flight, a clean circuit, no 410 Gone, not disabled here
    /// after failing, and a rate limit (if
    /// any) that has refilled. Dropping it then loses nothing; the next
    /// delivery makes a new one.
    pub fn is_idle(&self, now_ms: i64, idle_ms: i64) -> bool {
        let shared = &self.shared;
        let endpoint = shared.endpoint.load();
        let refill_ms = endpoint.config.rate_limit.as_deref().map_or(0, refill_ms);
        // An adaptive limit is kept a while: a new sender would learn it
        // again from `initial`.
        let keep_ms = if shared.adaptive.is_some() {
            ADAPTIVE_KEEP_MS
        } else {
            0
        };
        if now_ms - shared.last_dequeue_ms.load(Ordering::Relaxed)
            < idle_ms.max(refill_ms).max(keep_ms)
            || shared.gone.load(Ordering::Relaxed)
            || shared.auto_disabled.load(Ordering::Relaxed)
            || !shared.circuit.is_clean()
            || shared.permits.available_permits() < endpoint.config.max_concurrency as usize
        {
            return false;
        }
        shared.queue().is_idle()
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
        self.shared.queue().close();
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

/// How long (ms) an idle sender with adaptive concurrency is kept, with the
/// limit it learned, after its last delivery.
const ADAPTIVE_KEEP_MS: i64 = 60_000;
