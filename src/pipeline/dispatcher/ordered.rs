//! The dispatcher's side of `ordering = "per_device"`: an input event for
//! such an endpoint goes to the ordered lane (`<prefix>.ordered`, the
//! endpoint's partition) instead of its sender; a lane record goes into its
//! device's line ([`crate::pipeline::lines`]), one delivery per device
//! under way; a ticket ending lets the line's next delivery go, and a
//! delivery that waited in place (retry backoff, open circuit, disabled
//! endpoint) comes back here to be queued again.
//!
//! Why a lane and not the input partition: the lane is one partition per
//! endpoint, read by one member of the tier group, so one process sees all
//! of an endpoint's ordered deliveries in order, whichever instance read
//! the input, and a restart or rebalance reads them again from the
//! endpoint's oldest unsettled one.

use std::sync::Arc;

use crate::core::{AckToken, PartitionId, Payload};
use crate::deliver::refusal::Admission;
use crate::deliver::sender::{Delivery, LineReturn};
use crate::index::Slot;
use crate::wire::headers::{History, now_ms};

use super::Dispatcher;
use crate::config::DeliveryOrder;
use crate::pipeline::lines::LineKey;

impl Dispatcher {
    /// Whether deliveries of `event` to `slot` go through its device's line:
    /// the endpoint orders per device and the event has a device or key.
    pub(super) fn in_line(&self, slot: Slot, event: &Payload) -> bool {
        self.index.endpoint(slot).config.ordering == DeliveryOrder::PerDevice
            && event.ordering_key().is_some()
    }

    /// Writes an input event's delivery to `slot` onto the ordered lane;
    /// one outcome of `token` settles once it is stored there.
    pub(super) fn park_on_lane(&mut self, slot: Slot, event: &Payload, token: AckToken) {
        let acks = self.acks.clone();
        let endpoint = Arc::clone(self.index.endpoint(slot));
        self.writer.to_lane(
            event,
            endpoint.id(),
            0,
            now_ms(),
            Box::new(move |_| {
                let _ = acks.send(token.into());
            }),
        );
    }

    /// Puts a lane record's delivery to `slot` into its device's line: sent
    /// now when the line is free, else it waits (and a partition whose
    /// lines are full stops being read).
    pub(super) async fn dispatch_in_line(
        &mut self,
        slot: Slot,
        partition: PartitionId,
        delivery: Delivery,
    ) {
        let Some(device) = delivery.event.ordering_key() else {
            return self.enqueue(slot, delivery).await;
        };
        let key = LineKey {
            partition,
            endpoint: Arc::from(self.index.endpoint(slot).id()),
            device: device.into(),
        };
        if let Some(free) = self.lines.admit(key, delivery) {
            self.enqueue(slot, free).await;
        }
        if self.lines.is_full(partition) {
            tracing::debug!(
                ?partition,
                "device lines of an ordered-lane partition are full: pausing it"
            );
            self.gates.set_blocked(partition, true);
        }
    }

    /// A line's ticket ended (the next delivery of the line goes) or a
    /// delivery that waited in place is due again (queued once more, if
    /// its line still belongs here).
    pub(super) async fn line_returned(&mut self, returned: LineReturn) {
        self.refresh();
        match returned {
            LineReturn::Done(id) => {
                let partition = self.lines.partition_of(id);
                if let Some((endpoint, next)) = self.lines.done(id) {
                    self.send_in_line(&endpoint, next).await;
                }
                if let Some(p) = partition
                    && self.lines.has_room(p)
                {
                    self.gates.set_blocked(p, false);
                }
            }
            LineReturn::Again(delivery) => {
                let Some(endpoint) = delivery
                    .line
                    .as_ref()
                    .and_then(|t| self.lines.endpoint_of(t.id()))
                else {
                    // Its partition was revoked: dropped unsettled, the
                    // next owner reads it again.
                    return;
                };
                self.send_in_line(&endpoint, delivery).await;
            }
        }
        self.after_dispatch();
    }

    /// Queues a line's delivery on its endpoint's sender, or dead-letters
    /// it when the endpoint was deleted or answered 410 Gone (its ticket
    /// then ends, and the line's next delivery meets the same).
    async fn send_in_line(&mut self, endpoint: &str, delivery: Delivery) {
        let slot = self.index.slot_of(endpoint);
        if let Admission::Refuse(refusal) =
            Admission::of(slot.map(|s| self.index.endpoint(s).as_ref()))
        {
            let history = History {
                endpoint,
                attempt: delivery.attempt,
                first_ms: delivery.first_ms.unwrap_or_else(now_ms),
                ..History::default()
            };
            self.dead_letter_settling(
                delivery.token,
                &delivery.event,
                history,
                refusal.reason,
                refusal.why,
            );
            return;
        }
        if let Some(slot) = slot {
            self.enqueue(slot, delivery).await;
        }
    }
}
