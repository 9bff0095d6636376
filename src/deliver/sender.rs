//! Per-endpoint senders: a bounded queue, a rate limit, a concurrency limit,
//! and the task that turns each queued delivery into attempts and a durable
//! outcome.
//!
//! Owns what happens to one delivery from dequeue to settled: send, classify,
//! dead-letter when it will not be delivered, then report the ack token.
//! It never commits offsets and never touches other endpoints' queues.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

use super::classify::Verdict;
use super::client::HttpClients;
use super::request::{Outgoing, send_attempt, webhook_id};
use crate::commit::AckToken;
use crate::index::Endpoint;
use crate::metrics::EndpointMetrics;
use crate::retry::dlq::{DeadLetterWriter, History, event_id, now_ms};
use crate::source::event::Event;

/// One event for one endpoint, and the token to hand back once settled.
#[derive(Debug)]
pub struct Delivery {
    /// The shared event.
    pub event: Arc<Event>,
    /// Settles the event's offset for this endpoint.
    pub token: AckToken,
}

/// Counters of what a sender did, for progress displays and tests.
#[derive(Debug, Default)]
pub struct EndpointStats {
    /// Deliveries answered 2xx.
    pub delivered: AtomicU64,
    /// Deliveries written to the DLQ.
    pub dead_lettered: AtomicU64,
    /// HTTP attempts made.
    pub attempts: AtomicU64,
    /// Attempts that did not deliver.
    pub failed_attempts: AtomicU64,
}

/// Everything an attempt task needs, shared by the sender's tasks.
struct Shared {
    endpoint: Arc<Endpoint>,
    clients: HttpClients,
    dlq: DeadLetterWriter,
    acks: mpsc::UnboundedSender<AckToken>,
    retry_after_cap: Duration,
    metrics: EndpointMetrics,
    stats: Arc<EndpointStats>,
    /// Set when the endpoint answered 410 Gone.
    gone: AtomicBool,
}

/// Services a sender needs from the pipeline.
#[derive(Debug, Clone)]
pub struct SenderDeps {
    /// Pooled HTTP clients.
    pub clients: HttpClients,
    /// Dead-letter writer.
    pub dlq: DeadLetterWriter,
    /// Where settled ack tokens go.
    pub acks: mpsc::UnboundedSender<AckToken>,
    /// Cap of `Retry-After`.
    pub retry_after_cap: Duration,
    /// Label series per endpoint.
    pub per_endpoint_labels: bool,
}

/// Handle to a running sender.
#[derive(Debug)]
pub struct Sender {
    queue: mpsc::Sender<Delivery>,
    stats: Arc<EndpointStats>,
    task: JoinHandle<()>,
}

impl Sender {
    /// Starts the sender of `endpoint`.
    pub fn spawn(endpoint: Arc<Endpoint>, deps: &SenderDeps) -> Self {
        let (tx, rx) = mpsc::channel(endpoint.config.queue_size as usize);
        let stats = Arc::new(EndpointStats::default());
        let limiter = endpoint.config.rate_limit.map(|rl| {
            let period = Duration::from_secs_f64(1.0 / rl.per_second).max(Duration::from_nanos(1));
            let burst = NonZeroU32::new(rl.burst).unwrap_or(NonZeroU32::MIN);
            let quota = Quota::with_period(period)
                .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
                .allow_burst(burst);
            RateLimiter::direct(quota)
        });
        let permits = Arc::new(Semaphore::new(endpoint.config.max_concurrency as usize));
        let shared = Arc::new(Shared {
            metrics: EndpointMetrics::new(endpoint.id(), deps.per_endpoint_labels),
            endpoint,
            clients: deps.clients.clone(),
            dlq: deps.dlq.clone(),
            acks: deps.acks.clone(),
            retry_after_cap: deps.retry_after_cap,
            stats: Arc::clone(&stats),
            gone: AtomicBool::new(false),
        });
        let task = tokio::spawn(run(shared, rx, limiter, permits));
        Self {
            queue: tx,
            stats,
            task,
        }
    }

    /// Queues a delivery, waiting while the queue is full.
    pub async fn enqueue(&self, delivery: Delivery) -> Result<(), Delivery> {
        self.queue.send(delivery).await.map_err(|e| e.0)
    }

    /// What the sender did so far.
    pub fn stats(&self) -> &Arc<EndpointStats> {
        &self.stats
    }

    /// Stops taking deliveries; queued ones are dropped unsettled (they will
    /// be consumed again after the offsets that were committed).
    pub fn abort(&self) {
        self.task.abort();
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn run(
    shared: Arc<Shared>,
    mut queue: mpsc::Receiver<Delivery>,
    limiter: Option<DefaultDirectRateLimiter>,
    permits: Arc<Semaphore>,
) {
    while let Some(delivery) = queue.recv().await {
        if let Some(limiter) = &limiter
            && limiter.check().is_err()
        {
            shared.metrics.rate_limited.increment(1);
            limiter.until_ready().await;
        }
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            deliver(&shared, delivery).await;
            drop(permit);
        });
    }
}

/// Attempts one delivery and settles it.
async fn deliver(shared: &Shared, delivery: Delivery) {
    let Delivery { event, token } = delivery;
    let endpoint = &shared.endpoint;
    let event_type = event
        .fields
        .as_ref()
        .map(|f| f.event_type.as_str())
        .unwrap_or_default();
    let id = event_id(&event);
    let mut history = History {
        endpoint: endpoint.id().to_string(),
        attempt: 0,
        first_ms: now_ms(),
        last_status: String::new(),
        last_error: String::new(),
    };
    if shared.gone.load(Ordering::Relaxed) {
        history.last_error = "endpoint was disabled after answering 410 Gone".into();
        dead_letter(shared, &event, &history, "endpoint_disabled").await;
        let _ = shared.acks.send(token);
        return;
    }
    let wid = webhook_id(&id, endpoint.id());
    let report = send_attempt(
        &shared.clients,
        endpoint,
        Outgoing {
            body: &event.body,
            webhook_id: &wid,
            event_type,
        },
        shared.retry_after_cap,
    )
    .await;
    history.attempt = 1;
    history.last_status = report.last_status;
    history.last_error = report.last_error;
    shared.stats.attempts.fetch_add(1, Ordering::Relaxed);
    shared.metrics.response(report.status);
    shared.metrics.duration.record(report.latency.as_secs_f64());
    match report.verdict {
        Verdict::Delivered => {
            shared.stats.delivered.fetch_add(1, Ordering::Relaxed);
            shared.metrics.delivered.increment(1);
        }
        Verdict::Retry { .. } => {
            shared.stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
            // Retry tiers are not wired yet: one attempt is all there is.
            dead_letter(shared, &event, &history, "exhausted").await;
        }
        Verdict::Gone => {
            shared.stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
            if !shared.gone.swap(true, Ordering::Relaxed) {
                tracing::warn!(endpoint = %endpoint.id(), "endpoint answered 410 Gone: disabled");
            }
            dead_letter(shared, &event, &history, "gone").await;
        }
        Verdict::DeadLetter(reason) => {
            shared.stats.failed_attempts.fetch_add(1, Ordering::Relaxed);
            dead_letter(shared, &event, &history, &reason).await;
        }
    }
    let _ = shared.acks.send(token);
}

async fn dead_letter(shared: &Shared, event: &Event, history: &History, reason: &str) {
    shared.dlq.write(event, history, reason).await;
    shared.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
    shared.metrics.dead_lettered.increment(1);
}
