//! Writes to the ordered lane (`<prefix>.ordered`): deliveries of
//! `ordering = "per_device"` endpoints, gathered like deferrals into the
//! endpoint's partition, in the order they come.
//!
//! Part of the [`OutcomeWriter`]; what the lane's records mean is the
//! dispatcher's business (`pipeline::lines`).

use std::time::Duration;

use crate::core::Payload;
use crate::retry::records::{Completion, Deferral};
use crate::wire::headers::now_ms;

use super::{DeferralOf, OutcomeWriter};

/// `hookstream-last-error` of a record on the ordered lane.
pub(super) const LANE: &str = "ordered: delivered from the ordered lane, one per device at a time";

impl OutcomeWriter {
    /// Writes a delivery of an `ordering = "per_device"` endpoint to the
    /// ordered lane (due at once; its attempts and first attempt as given),
    /// gathered like deferrals: one device's events keep their order, since
    /// one endpoint's go to one partition in the order they come here;
    /// `done` runs once it is stored.
    pub fn to_lane(
        &self,
        event: &Payload,
        endpoint: &str,
        attempt: u32,
        first_ms: i64,
        done: Completion,
    ) {
        let Some(tier) = self.inner.tiers.lane() else {
            // The pipeline always has a lane; without one the delivery
            // still gets there, unordered, through the first tier.
            return self.defer(
                event,
                DeferralOf {
                    endpoint,
                    attempt,
                    first_ms,
                    delay: Duration::ZERO,
                    due_ms: None,
                    why: LANE,
                },
                done,
            );
        };
        let entry = Deferral {
            event: event.clone(),
            attempt,
            first_ms,
            due_ms: now_ms(),
            why: LANE,
            done,
        };
        if let Some(full) = self.inner.gather(tier, endpoint, entry) {
            self.inner.send_batch(full);
        }
    }
}
