//! The sender's worker: runs while deliveries are queued, takes batches
//! under the rate and concurrency limits, drives its attempts itself (no
//! task per attempt), and survives a panic in one (the panicked
//! deliveries are dead-lettered).
//!
//! Owns the queue's consumption only; an attempt and its outcome are
//! [`super::attempt`]'s.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::FutureExt;
use std::future::{Future, poll_fn};
use std::panic::AssertUnwindSafe;

use crate::core::Reason;
use crate::wire::headers::{History, now_ms};

use super::attempt::{dead_letter, defer, deliver};
use super::held::set_aside;
use super::slots::AttemptSlots;
use super::{Delivery, Shared};

/// How long an idle worker of a streaming endpoint waits for more before
/// it ends.
pub(super) const WORKER_LINGER: Duration = Duration::from_millis(50);

/// Deliveries this close together (ms) make a stream.
pub(super) const STREAM_GAP_MS: i64 = 1_000;

/// Awaits `step` while driving the attempts in flight. (The worker drives
/// them itself: a task per attempt cost a spawn, its scheduling and its
/// removal, about 4 % of the delivery workers' CPU in bench (a).)
async fn driving<F: Future<Output = ()>, T>(
    attempts: &mut AttemptSlots<F>,
    step: impl Future<Output = T>,
) -> T {
    tokio::pin!(step);
    loop {
        tokio::select! {
            biased;
            done = &mut step => return done,
            _ = poll_fn(|cx| attempts.poll_ended(cx)), if !attempts.is_idle() => {}
        }
    }
}

/// Waits for a delivery to arrive while driving the attempts in flight;
/// once they are done, lingers a moment (with `linger`) so a steady stream
/// does not start a worker per delivery. `false`: nothing arrived, and no
/// attempt is in flight.
async fn await_arrival<F: Future<Output = ()>>(
    attempts: &mut AttemptSlots<F>,
    mut arrived: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
    linger: bool,
) -> bool {
    while !attempts.is_idle() {
        tokio::select! {
            biased;
            () = arrived.as_mut() => return true,
            _ = poll_fn(|cx| attempts.poll_ended(cx)) => {}
        }
    }
    linger && tokio::time::timeout(WORKER_LINGER, arrived).await.is_ok()
}

/// The worker: takes deliveries (in batches when configured), waits for the
/// rate limit and a concurrency permit, and starts each attempt, driving
/// every attempt it started. It ends once the queue stayed empty for
/// [`WORKER_LINGER`] and its attempts are done.
pub(super) async fn work(shared: Arc<Shared>, linger: bool) {
    let batch = shared.endpoint.load().config.batch;
    let max_events = batch.max_events.max(1) as usize;
    let max_wait = batch.max_wait.get();
    let mut attempts = AttemptSlots::new();
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
            if !await_arrival(&mut attempts, arrived.as_mut(), linger).await {
                if !shared.take(&mut hand.deliveries, max_events, true) {
                    return;
                }
                break;
            }
        }
        let filling = hand.deliveries.len() < max_events && !max_wait.is_zero();
        if filling {
            let fill = fill_batch(&shared, &mut hand.deliveries, max_events, max_wait);
            driving(&mut attempts, fill).await;
        }
        // Refused and held deliveries (a deleted or disabled endpoint) and,
        // while the circuit is open, every queued delivery move to the DLQ
        // or a retry tier at once instead of waiting for a permit behind
        // failing attempts: the queue keeps draining, so whoever enqueues
        // (the dispatcher, for every endpoint) is never held up by this one.
        // The take's clock reading, unless a batch was waited for since.
        let now = if filling {
            now_ms()
        } else {
            shared.last_taken_ms()
        };
        if set_aside(&shared, &mut hand, now) {
            continue;
        }
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
            driving(&mut attempts, limiter.until_ready()).await;
        }
        if let Some(adaptive) = &shared.adaptive {
            driving(&mut attempts, adaptive.admit()).await;
        }
        // Permits come back as this worker's attempts end: it drives them
        // while it waits.
        let permit = Arc::clone(&shared.permits).acquire_owned();
        let Ok(permit) = driving(&mut attempts, permit).await else {
            // Never closed; were it, this would be shutdown: the deliveries
            // are consumed again after a restart.
            if let Some(adaptive) = &shared.adaptive {
                adaptive.finish(shared.endpoint.load().id(), None);
            }
            hand.abandon();
            return;
        };
        // The host's slot is taken here, not in the attempt, so what waits
        // for a busy host is this worker, not each delivery.
        // (The semaphore is never closed; closed would only lift the limit.)
        let host_slot = shared.host_slots.load_full().acquire_owned();
        let host_slot = driving(&mut attempts, host_slot).await.ok();
        // Polled at once: its request goes out while the next is taken, as
        // a spawned task's would.
        attempts.start(attempt(
            Arc::clone(&shared),
            hand.hand_over(),
            permit,
            host_slot,
        ));
    }
}

/// An attempt of `batch`, holding `permit` and `host_slot` until it ends;
/// a panic in it is caught (see [`panicked`]).
async fn attempt(
    shared: Arc<Shared>,
    batch: Vec<Delivery>,
    permit: tokio::sync::OwnedSemaphorePermit,
    host_slot: Option<tokio::sync::OwnedSemaphorePermit>,
) {
    let attempt = AssertUnwindSafe(deliver(&shared, batch))
        .catch_unwind()
        .await;
    let observed = match attempt {
        Ok(observed) => observed,
        Err(panic) => {
            panicked(&shared, panic.as_ref());
            None
        }
    };
    if let Some(adaptive) = &shared.adaptive {
        adaptive.finish(shared.endpoint.load().id(), observed);
    }
    drop((permit, host_slot));
}

/// Starts a worker for `shared`'s queue, supervised: a worker that panics
/// is counted and logged, its deliveries in hand are dead-lettered (see
/// [`InHand`]), and a new worker takes over what is still queued.
pub(super) fn spawn_worker(shared: Arc<Shared>, linger: bool) {
    tokio::spawn(async move {
        let result = AssertUnwindSafe(work(Arc::clone(&shared), linger))
            .catch_unwind()
            .await;
        if let Err(panic) = result {
            panicked(&shared, panic.as_ref());
            // The worker flag is still set: clear it, or start another
            // worker for what is queued (each panic dead-letters what the
            // worker held, so this ends).
            let restart = shared.queue().restart_after_panic();
            if restart {
                spawn_worker(shared, false);
            }
        }
    });
}

/// Counts a panic in `shared`'s sender and logs the first one.
pub(super) fn panicked(shared: &Shared, panic: &(dyn std::any::Any + Send)) {
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
pub(super) struct InHand {
    pub(super) shared: Arc<Shared>,
    pub(super) deliveries: Vec<Delivery>,
}

impl InHand {
    pub(super) fn new(shared: &Arc<Shared>, deliveries: Vec<Delivery>) -> Self {
        Self {
            shared: Arc::clone(shared),
            deliveries,
        }
    }

    /// Takes the last delivery out, to hand it on.
    pub(super) fn pop(&mut self) -> Option<Delivery> {
        self.deliveries.pop()
    }

    /// Takes every delivery out, to hand them on together.
    pub(super) fn hand_over(&mut self) -> Vec<Delivery> {
        std::mem::take(&mut self.deliveries)
    }

    /// Lets go of the deliveries without an outcome (shutdown: they are
    /// consumed again after a restart).
    pub(super) fn abandon(&mut self) {
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
pub(super) async fn fill_batch(
    shared: &Shared,
    batch: &mut Vec<Delivery>,
    max: usize,
    max_wait: Duration,
) {
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
