//! One attempt of a batch and its outcome: refused or held before sending,
//! deferred while the circuit is open, shaped, sent, classified, and the
//! policy's decision carried out (delivered, retry, dead letter), logged
//! in the activity log.
//!
//! Works on one batch in hand; the queue and its limits are the worker's.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::config::DisableCause;
use crate::core::Payload;
use crate::core::Reason;
use crate::core::{AckToken, Settled, SourceRef};
use crate::deliver::adaptive::Signal;
use crate::deliver::request::{Outgoing, send_attempt, webhook_id};
use crate::deliver::shape::Shaped;
use crate::index::Endpoint;
use crate::index::activity::{AttemptLine, Outcome};
use crate::index::attempt_lines::{AttemptLines, EventFields};
use crate::index::attempt_log::AttemptLog;
use crate::outcome::classify::{EndpointHealth, Verdict};
use crate::outcome::policy::{self, Decision, Tried};
use crate::retry::writer::{Completion, DeferralOf, Stored};
use crate::wire::headers::{History, now_ms};

use super::held::{auto_disable, failing_run, hold_until, set_aside};
use super::limit::Observed;
use super::line::wait_in_place;
use super::worker::InHand;
use super::{Delivery, RetryPolicy, Shared};

/// Attempts one request for a batch (usually of one) and settles every
/// delivery in it: at once when delivered, else once its retry or dead
/// letter is stored. Says what the attempt showed of the endpoint's
/// capacity (`None` when no attempt was made).
///
/// Long on purpose: the steps of one attempt in their order (set aside,
/// circuit, shape, send, classify, decide, carry out, log), each a few
/// lines over the same batch in hand.
pub(super) async fn deliver(shared: &Arc<Shared>, batch: Vec<Delivery>) -> Option<Observed> {
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
    if set_aside(shared, &mut hand, now) {
        return None;
    }
    if shared.circuit.open_for(now).is_some() {
        while let Some(mut d) = hand.pop() {
            d.first_ms = Some(d.first_ms.unwrap_or(now));
            let delay = shared.circuit.defer_for(now).unwrap_or_default();
            defer(shared, d, delay, "circuit open");
        }
        return None;
    }
    crate::deliver::faults::maybe_panic(endpoint.id());
    let shaped = shape_all(shared, endpoint, &mut hand, now);
    if hand.deliveries.is_empty() {
        return None;
    }
    let policy = endpoint_policy(shared, endpoint);
    let joined_ids = match &hand.deliveries[..] {
        [only] => only.event.id(),
        all => std::borrow::Cow::Owned(
            all.iter()
                .map(|d| d.event.id())
                .collect::<Vec<_>>()
                .join(","),
        ),
    };
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
    // A single event's own id; a batch's, its webhook id.
    let event_id: &str = if hand.deliveries.len() == 1 {
        &joined_ids
    } else {
        &wid
    };
    let event_time_ms = first
        .event
        .time_ms()
        .unwrap_or(first.first_ms.unwrap_or(now));
    let shaped = crate::deliver::shape::join(with_consumed(&hand.deliveries, shaped));
    // A batch carries the trace of its first event.
    let trace = crate::deliver::trace::for_record(
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
            event_id,
            event_time_ms,
            // The attempt's clock reading, microseconds old: no await since.
            timestamp: now.div_euclid(1000),
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
    let failing_since = failing_run(shared, report.verdict.endpoint_health(), now);
    let decide = |d: &Delivery| {
        let tried = Tried {
            attempt: d.attempt,
            first_ms: d.first_ms.unwrap_or(now),
        };
        let decision = policy::after_attempt(
            &report.verdict,
            tried,
            failing_since,
            &policy,
            decided_ms,
            rand::random::<f64>,
        );
        (tried, decision)
    };
    let first = &hand.deliveries[0];
    let (outcome, reason) = logged_outcome(decide(first).1);
    let line = AttemptLine {
        time_ms: now,
        endpoint: endpoint.id(),
        event_id: &joined_ids,
        event_type: kind,
        webhook_id: &wid,
        attempt: first.attempt + 1,
        status: report.status,
        outcome,
        reason,
        latency_ms: report.latency.as_secs_f64() * 1000.0,
        error: &report.last_error,
        source: match &hand.deliveries[..] {
            [only] => only.event.source_ref(),
            _ => SourceRef::Kept(&[]),
        },
    };
    if let Some(log) = &shared.deps.attempt_log {
        log_attempts(log, &hand.deliveries, &line, &decide);
    }
    shared.activity.record_attempt(&line);
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
    let mut settling = Settling::new(shared, hand.deliveries.len(), report.ended);
    while let Some(d) = hand.pop() {
        let (tried, decision) = decide(&d);
        let h = History {
            attempt: decision.attempt(tried),
            first_ms: tried.first_ms,
            last_status: &report.last_status,
            last_error: &report.last_error,
            ..history(&d)
        };
        carry_out(shared, endpoint, d, &h, decision, &mut settling);
    }
    drop(settling);
    Some(Observed {
        latency: report.latency,
        signal: Signal::of(report.status, report.failure),
    })
}

/// How one attempt's deliveries settle: their end-to-end ages end at one
/// clock reading, and the delivered ones' tokens reach the dispatcher in
/// one message when the attempt is done, when this is dropped (also when
/// a panic unwinds through it: what was delivered still settles).
pub(super) struct Settling<'a> {
    shared: &'a Shared,
    at: Instant,
    delivered: Vec<AckToken>,
}

impl<'a> Settling<'a> {
    /// Settling for an attempt of up to `deliveries` deliveries that
    /// ended `at`.
    pub(super) fn new(shared: &'a Shared, deliveries: usize, at: Instant) -> Self {
        Self {
            shared,
            at,
            delivered: Vec::with_capacity(deliveries),
        }
    }
}

impl Drop for Settling<'_> {
    fn drop(&mut self) {
        if let Some(settled) = Settled::of(std::mem::take(&mut self.delivered)) {
            let _ = self.shared.deps.acks.send(settled);
        }
    }
}

/// Does what the policy decided for one delivery: settle it (through
/// `settling`), or store it on a tier or the DLQ (it settles once stored).
pub(super) fn carry_out(
    shared: &Arc<Shared>,
    endpoint: &Endpoint,
    d: Delivery,
    history: &History<'_>,
    decision: Decision,
    settling: &mut Settling<'_>,
) {
    match decision {
        Decision::Delivered => {
            let age = settling
                .at
                .saturating_duration_since(d.event.consumed_at())
                .as_secs_f64()
                + retry_age_secs(&d.event, history.first_ms);
            shared.metrics.end_to_end.record(age);
            settling.delivered.push(d.token);
        }
        Decision::Retry { delay, .. } if d.line.is_some() => {
            // Its device's line waits with it, in memory: a tier would let
            // the device's later events overtake it.
            count(shared, Outcome::RetryScheduled, 1);
            let d = Delivery {
                attempt: history.attempt,
                first_ms: Some(history.first_ms),
                ..d
            };
            wait_in_place(d, delay);
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
                if let Some(hook) = &shared.deps.on_disable {
                    (hook.0)(endpoint.id(), DisableCause::Gone);
                }
            }
            dead_letter(shared, d, history, Reason::Gone);
        }
        Decision::AutoDisable { hold_until_ms, .. } => {
            auto_disable(shared, endpoint);
            match hold_until_ms {
                Some(until_ms) => hold_until(shared, d, until_ms),
                None => dead_letter(shared, d, history, Reason::EndpointDisabled),
            }
        }
        Decision::Hold { until_ms } => hold_until(shared, d, until_ms),
    }
}

/// Shapes each delivery's event for `endpoint` (`deliver::shape`), in
/// order; a delivery whose event has nothing where the endpoint's payload
/// pointer looks is dead-lettered as `invalid_event` (no attempt could
/// succeed) and leaves the batch. An event sent as consumed is `None`
/// here, to borrow once the batch is settled ([`with_consumed`]).
pub(super) fn shape_all(
    shared: &Arc<Shared>,
    endpoint: &Endpoint,
    hand: &mut InHand,
    now: i64,
) -> Vec<Option<Shaped<'static>>> {
    let config = endpoint.config.payload.as_deref();
    let mut shaped = Vec::with_capacity(hand.deliveries.len());
    let mut i = 0;
    while i < hand.deliveries.len() {
        let d = &hand.deliveries[i];
        match crate::deliver::shape::shape_event(config, &d.event, d.first_ms.unwrap_or(now)) {
            Ok(body) => {
                shaped.push(match body.body {
                    Cow::Borrowed(_) => None,
                    Cow::Owned(bytes) => Some(Shaped {
                        body: Cow::Owned(bytes),
                        ..body
                    }),
                });
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

/// The shaped bodies of `deliveries` in order: those [`shape_all`] made,
/// and the events sent as consumed borrowed.
fn with_consumed<'a>(
    deliveries: &'a [Delivery],
    shaped: Vec<Option<Shaped<'static>>>,
) -> Vec<Shaped<'a>> {
    shaped
        .into_iter()
        .zip(deliveries)
        .map(|(s, d)| s.unwrap_or_else(|| crate::deliver::shape::as_consumed(&d.event)))
        .collect()
}

/// The endpoint's retry policy: `[delivery]`'s, changed by its `retry`
/// (checked when the endpoint was accepted; should it fail here, the
/// default applies).
pub(super) fn endpoint_policy(shared: &Shared, endpoint: &Endpoint) -> RetryPolicy {
    shared
        .deps
        .policy
        .for_endpoint(endpoint.config.retry.as_deref())
        .unwrap_or(shared.deps.policy)
}

/// How the activity log labels a decision: the outcome and, for a dead
/// letter, its reason (`exhausted` when a retryable failure has no retry
/// left).
pub(super) fn logged_outcome(decision: Decision) -> (Outcome, Option<&'static str>) {
    match decision {
        Decision::Delivered => (Outcome::Delivered, None),
        Decision::Retry { .. } => (Outcome::RetryScheduled, None),
        Decision::Defer { .. } => (Outcome::Deferred, None),
        Decision::DeadLetter { reason, .. } => (Outcome::DeadLettered, Some(reason.as_str())),
        Decision::Disable { .. } => (Outcome::DeadLettered, Some(Reason::Gone.as_str())),
        Decision::Hold { .. }
        | Decision::AutoDisable {
            hold_until_ms: Some(_),
            ..
        } => (Outcome::Deferred, None),
        Decision::AutoDisable {
            hold_until_ms: None,
            ..
        } => (
            Outcome::DeadLettered,
            Some(Reason::EndpointDisabled.as_str()),
        ),
    }
}

/// Writes one durable activity record per delivery of the attempt
/// (`record` describes the attempt; each delivery has its own event and
/// outcome).
pub(super) fn log_attempts(
    log: &AttemptLog,
    deliveries: &[Delivery],
    line: &AttemptLine<'_>,
    decide: &dyn Fn(&Delivery) -> (Tried, Decision),
) {
    if let [_] = deliveries {
        log.write(line);
        return;
    }
    let mut lines = AttemptLines::new(line, deliveries.len());
    for d in deliveries {
        let (outcome, reason) = logged_outcome(decide(d).1);
        lines.push(EventFields {
            event_id: &d.event.id(),
            event_type: d.event.event_type(),
            attempt: d.attempt + 1,
            outcome,
            reason,
            source: d.event.source_ref(),
        });
    }
    log.write_lines(&lines);
}

/// Why a delivery was deferred after a local failure (`hookstream-last-error`).
pub(super) const LOCAL_FAILURE: &str =
    "local failure (no descriptor, buffer or memory for a connection): no attempt used";

/// Seconds between the first attempt and this consumption, for retries (the
/// end-to-end clock starts at the first consumption).
pub(super) fn retry_age_secs(event: &Payload, first_ms: i64) -> f64 {
    if !event.is_retry() {
        return 0.0;
    }
    let consumed_ms = now_ms() - event.consumed_at().elapsed().as_millis() as i64;
    ((consumed_ms - first_ms).max(0) as f64) / 1000.0
}

/// Counts `n` deliveries with `outcome` in the activity log and metrics.
pub(super) fn count(shared: &Shared, outcome: Outcome, n: u64) {
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
pub(super) fn settle(shared: &Arc<Shared>, token: AckToken, on_tier: Outcome) -> Completion {
    let shared = Arc::clone(shared);
    Box::new(move |stored| {
        let outcome = match stored {
            Stored::Retry { .. } => on_tier,
            Stored::DeadLetter => Outcome::DeadLettered,
        };
        count(&shared, outcome, 1);
        let _ = shared.deps.acks.send(token.into());
    })
}

/// Moves a delivery to the retry tier for `delay` without using an
/// attempt; it settles once stored.
/// A delivery in its device's line waits in memory instead.
pub(super) fn defer(shared: &Arc<Shared>, delivery: Delivery, delay: Duration, why: &'static str) {
    if delivery.line.is_some() {
        count(shared, Outcome::Deferred, 1);
        return wait_in_place(delivery, delay);
    }
    let endpoint = shared.endpoint.load();
    let deferral = DeferralOf {
        endpoint: endpoint.id(),
        attempt: delivery.attempt,
        first_ms: delivery.first_ms.unwrap_or_else(now_ms),
        delay,
        due_ms: None,
        why,
    };
    let done = settle(shared, delivery.token, Outcome::Deferred);
    shared.deps.writer.defer(&delivery.event, deferral, done);
}

/// Dead-letters a delivery; it settles once stored.
pub(super) fn dead_letter(
    shared: &Arc<Shared>,
    delivery: Delivery,
    history: &History<'_>,
    reason: Reason,
) {
    let done = settle(shared, delivery.token, Outcome::DeadLettered);
    shared
        .deps
        .writer
        .dead_letter(&delivery.event, history, reason, done);
}
