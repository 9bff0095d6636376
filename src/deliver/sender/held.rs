//! What a sender does with deliveries its endpoint cannot take now, and
//! how an endpoint that keeps failing gets disabled: the sender's
//! admission (send, hold, refuse), this instance's run of failed attempts,
//! the auto-disable (counted, logged, stored through the
//! [`super::DisableHook`]), and the hold of a disabled endpoint's
//! deliveries on the backlog tier (or their dead letter beyond
//! `delivery.disabled_backlog.max_age`).
//!
//! Decides nothing itself: [`crate::deliver::refusal::Admission`] and
//! [`crate::outcome::policy::after_attempt`] do; this carries their answers
//! out with the sender's writer. It never sends a request, never commits
//! offsets and never touches other endpoints' queues.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::attempt::{Settling, carry_out, count, dead_letter, endpoint_policy, settle};
use super::line::wait_in_place;
use super::worker::InHand;
use super::{Delivery, Shared};
use crate::config::DisableCause;
use crate::core::Reason;
use crate::deliver::refusal::{Admission, Refusal};
use crate::index::Endpoint;
use crate::index::activity::Outcome;
use crate::outcome::classify::{EndpointHealth, Verdict};
use crate::outcome::policy::{self, Decision, Tried};
use crate::retry::writer::DeferralOf;
use crate::wire::headers::{History, now_ms};

impl Shared {
    /// What a delivery meets now: this sender's own states first (deleted,
    /// 410 Gone, disabled here after failing), then the stored settings.
    pub(super) fn admission(&self) -> Admission {
        if self.deleted.load(Ordering::Acquire) {
            return Admission::Refuse(Refusal::DELETED);
        }
        if self.gone.load(Ordering::Relaxed) {
            return Admission::Refuse(Refusal::GONE);
        }
        let endpoint = self.endpoint.load();
        if self.auto_disabled.load(Ordering::Relaxed) && endpoint.config.enabled {
            return Admission::Hold;
        }
        Admission::of(Some(&endpoint))
    }
}

/// This instance's run of failed attempts to the endpoint, updated with an
/// attempt (made at `now`) whose verdict says `health`: returns when the
/// run began before this attempt (`None`: the last attempt did not fail).
/// A failure starts the run if none is going on; an answer ends it.
pub(super) fn failing_run(shared: &Shared, health: EndpointHealth, now: i64) -> Option<i64> {
    match health {
        // Already set: the run began then; unset: it begins now.
        EndpointHealth::Failing => shared
            .failing_since_ms
            .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire)
            .err(),
        EndpointHealth::Answering => {
            shared.failing_since_ms.store(0, Ordering::Release);
            None
        }
        EndpointHealth::Unknown => None,
    }
}

/// Disables the endpoint after it failed every attempt for
/// `auto_disable.after`, once per sender: held here at once, stored
/// disabled through the hook (every instance then holds), counted and
/// logged.
pub(super) fn auto_disable(shared: &Shared, endpoint: &Endpoint) {
    // Stored disabled already (an attempt that was in flight meanwhile).
    if !shared.endpoint.load().config.enabled {
        return;
    }
    if shared.auto_disabled.swap(true, Ordering::Relaxed) {
        return;
    }
    let since = shared.failing_since_ms.load(Ordering::Acquire);
    let failing_s = (now_ms() - since).max(0) / 1000;
    shared.metrics.auto_disabled.increment(1);
    tracing::warn!(
        endpoint = %endpoint.id(),
        failing_s,
        "endpoint failed every attempt for delivery.auto_disable.after: disabled; its deliveries are kept on the retry tiers until it is enabled again (up to delivery.disabled_backlog.max_age)"
    );
    if let Some(hook) = &shared.deps.on_disable {
        (hook.0)(endpoint.id(), DisableCause::Failing);
    }
}

/// Deals with a batch its endpoint cannot take (deleted or 410 Gone:
/// dead-lettered; disabled otherwise: held on the backlog tier, in queue
/// order). Returns whether it did, i.e. the batch is not to be sent.
pub(super) fn set_aside(shared: &Arc<Shared>, hand: &mut InHand, now: i64) -> bool {
    match shared.admission() {
        Admission::Send => false,
        Admission::Refuse(refusal) => {
            let endpoint = shared.endpoint.load_full();
            while let Some(d) = hand.pop() {
                let h = History {
                    endpoint: endpoint.id(),
                    attempt: d.attempt,
                    first_ms: d.first_ms.unwrap_or(now),
                    last_status: refusal.reason.as_str(),
                    last_error: refusal.why,
                };
                dead_letter(shared, d, &h, refusal.reason);
            }
            true
        }
        Admission::Hold => {
            // Popped from the back: reversed first, so held in order.
            hand.deliveries.reverse();
            while let Some(d) = hand.pop() {
                hold(shared, d, now);
            }
            true
        }
    }
}

/// Why a held delivery waits (`hookstream-last-error` of its tier record).
const HELD: &str = "endpoint disabled: kept on its backlog until it is enabled again";

/// What a dead letter of a delivery kept beyond the backlog's cap says.
const HELD_TOO_LONG: &str = "the endpoint is disabled and the delivery was kept longer than delivery.disabled_backlog.max_age";

/// Holds a delivery of a disabled endpoint, as the policy decides for
/// [`Verdict::Disabled`]: on the backlog tier until the next recheck, or,
/// older than the backlog's cap, on the DLQ as `endpoint_disabled` with the
/// attempts it made. It settles once stored.
pub(super) fn hold(shared: &Arc<Shared>, mut delivery: Delivery, now: i64) {
    let endpoint = shared.endpoint.load_full();
    let tried = Tried {
        attempt: delivery.attempt,
        first_ms: delivery.first_ms.unwrap_or(now),
    };
    delivery.first_ms = Some(tried.first_ms);
    let policy = endpoint_policy(shared, &endpoint);
    match policy::after_attempt(&Verdict::Disabled, tried, None, &policy, now, || 0.0) {
        Decision::Hold { until_ms } => hold_until(shared, delivery, until_ms),
        decision => {
            let h = History {
                endpoint: endpoint.id(),
                attempt: decision.attempt(tried),
                first_ms: tried.first_ms,
                last_status: Reason::EndpointDisabled.as_str(),
                last_error: HELD_TOO_LONG,
            };
            let mut settling = Settling::new(shared, 1, std::time::Instant::now());
            carry_out(shared, &endpoint, delivery, &h, decision, &mut settling);
        }
    }
}

/// Writes a delivery to the backlog tier (the tier of the recheck
/// interval), due at `until_ms`, without using an attempt; it settles once
/// stored.
/// A delivery in its device's line waits in memory until then instead.
pub(super) fn hold_until(shared: &Arc<Shared>, delivery: Delivery, until_ms: i64) {
    if delivery.line.is_some() {
        count(shared, Outcome::Deferred, 1);
        let wait = Duration::from_millis((until_ms - now_ms()).max(0) as u64);
        return wait_in_place(delivery, wait);
    }
    let endpoint = shared.endpoint.load();
    let deferral = DeferralOf {
        endpoint: endpoint.id(),
        attempt: delivery.attempt,
        first_ms: delivery.first_ms.unwrap_or_else(now_ms),
        delay: shared.deps.policy.disabled.backlog_recheck,
        due_ms: Some(until_ms),
        why: HELD,
    };
    let done = settle(shared, delivery.token, Outcome::Deferred);
    shared.deps.writer.defer(&delivery.event, deferral, done);
}
