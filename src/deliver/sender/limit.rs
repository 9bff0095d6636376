//! An adaptive endpoint's limit on requests in flight: the AIMD controller
//! of [`crate::deliver::adaptive`] applied to the sender's semaphore, and
//! its gauge.
//!
//! Pure bookkeeping over the semaphore; what an attempt showed is the
//! worker's to report ([`Observed`]).

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;

use crate::deliver::adaptive::{AimdController, AimdSettings, Change, Signal};

/// An endpoint's adaptive concurrency: the controller the worker asks
/// before each attempt and each finished attempt informs.
pub(super) struct Adaptive {
    pub(super) controller: Mutex<AimdController>,
    /// Wakes the worker waiting for the limit to admit a request.
    pub(super) released: Notify,
    /// `hookstream_endpoint_concurrency_limit`: this sender adds its
    /// limit's changes.
    pub(super) gauge: metrics::Gauge,
}

/// What an attempt said about the endpoint's capacity.
#[derive(Debug, Clone, Copy)]
pub(super) struct Observed {
    /// Sending to the end of the answer.
    pub(super) latency: Duration,
    pub(super) signal: Signal,
}

impl Adaptive {
    pub(super) fn new(settings: AimdSettings, gauge: metrics::Gauge) -> Self {
        let controller = AimdController::new(settings);
        gauge.increment(f64::from(controller.limit()));
        Self {
            controller: Mutex::new(controller),
            released: Notify::new(),
            gauge,
        }
    }

    pub(super) fn controller(&self) -> MutexGuard<'_, AimdController> {
        crate::core::lock(&self.controller)
    }

    /// Waits until the limit admits one more request in flight.
    pub(super) async fn admit(&self) {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            // Registered before looking, so a release in between wakes it.
            released.as_mut().enable();
            if self.controller().try_start() {
                return;
            }
            released.await;
        }
    }

    /// An admitted request ended: `observed` when an attempt was made
    /// (`None`: refused, deferred, or its task panicked).
    pub(super) fn finish(&self, endpoint: &str, observed: Option<Observed>) {
        let (before, after, change) = {
            let mut c = self.controller();
            let before = c.limit();
            let (latency, signal) =
                observed.map_or((Duration::ZERO, Signal::Neutral), |o| (o.latency, o.signal));
            let change = c.finish(std::time::Instant::now(), latency, signal);
            (before, c.limit(), change)
        };
        if after != before {
            self.gauge.increment(f64::from(after) - f64::from(before));
            if matches!(
                change,
                Some(Change::DecreasedOnBackPressure | Change::DecreasedOnLatency)
            ) {
                tracing::debug!(endpoint, from = before, to = after, why = ?change, "adaptive concurrency decreased");
            }
        }
        self.released.notify_one();
    }
}

impl Drop for Adaptive {
    fn drop(&mut self) {
        // The series shows the limits of live senders.
        self.gauge.decrement(f64::from(self.controller().limit()));
    }
}
