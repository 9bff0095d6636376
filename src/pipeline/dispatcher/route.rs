//! The dispatcher's routing: a record whose gate opened goes to every
//! matching endpoint (an input event, after its payload filters) or to its
//! one endpoint (a retry), each delivery to that endpoint's sender, or
//! deferred to a tier when the sender cannot take it now, or dead-lettered
//! at once when it cannot be delivered at all.
//!
//! Works on the dispatcher's own state; offsets and rebalances are
//! [`super`]'s and [`super::rebalance`]'s.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::core::{AckToken, PartitionId};
use crate::core::{InputEvent, Payload, Polled, Reason, RetryMeta};
use crate::deliver::refusal::Admission;
use crate::deliver::sender::{Delivery, EnqueueError, Sender};
use crate::index::filter::{Filter, empty_root};
use crate::index::{RouteKey, Slot};
use crate::retry::copies::CopyKey;
use crate::wire::headers::{History, now_ms};

use super::{Dispatcher, ENQUEUE_PATIENCE};

impl Dispatcher {
    /// Routes one record whose gate is open.
    pub(super) async fn dispatch(&mut self, polled: Polled) {
        self.refresh();
        let partition = polled.partition();
        self.topic_metrics[partition.topic as usize]
            .consumed
            .increment(1);
        tracing::trace!(
            topic = %self.source.topics().name(partition.topic),
            partition = partition.partition,
            offset = polled.offset(),
            "dispatching"
        );
        match polled {
            Polled::Input(event) => {
                self.stats.consumed.fetch_add(1, Ordering::Relaxed);
                self.dispatch_input(event).await;
            }
            Polled::Invalid(record, why) => {
                self.stats.consumed.fetch_add(1, Ordering::Relaxed);
                self.topic_metrics[partition.topic as usize]
                    .invalid
                    .increment(1);
                self.stats.invalid.fetch_add(1, Ordering::Relaxed);
                self.dead_letter_now(
                    &Payload::Invalid(record),
                    partition,
                    Reason::InvalidEvent,
                    &why.to_string(),
                );
            }
            Polled::Retry(event) => {
                self.stats.retries_consumed.fetch_add(1, Ordering::Relaxed);
                if let Some(token) = self.tracker.register(partition, event.record.offset, 1) {
                    let (meta, tier) = (event.meta.clone(), event.tier);
                    self.dispatch_retry(Payload::Retry(event), tier, &meta, token)
                        .await;
                }
            }
            Polled::BadRetry(record) => {
                self.stats.retries_consumed.fetch_add(1, Ordering::Relaxed);
                let why = record.why.clone();
                self.dead_letter_now(
                    &Payload::Invalid(record),
                    partition,
                    Reason::InvalidEvent,
                    &why,
                );
            }
            Polled::Batch(batch) => {
                self.stats
                    .retries_consumed
                    .fetch_add(batch.entries.len() as u64, Ordering::Relaxed);
                let outcomes = u32::try_from(batch.entries.len()).unwrap_or(u32::MAX);
                if let Some(token) = self.tracker.register(partition, batch.offset, outcomes) {
                    for entry in batch.entries {
                        let meta = entry.meta.clone();
                        self.dispatch_retry(Payload::Entry(entry), batch.tier, &meta, token)
                            .await;
                    }
                }
            }
            Polled::Unreadable(record) => {
                // A stand-in for a record librdkafka could not decode: its
                // dead letter settles the offset.
                let error = record.error.clone();
                self.dead_letter_now(
                    &Payload::Unreadable(record),
                    partition,
                    Reason::UnreadableRecord,
                    &error,
                );
            }
        }
        self.after_dispatch();
    }

    /// Routes a retry (a single record, or an entry of a deferral batch,
    /// registered under `token`) of tier `tier` to its one endpoint, or
    /// dead-letters it when its endpoint was deleted or answered 410 Gone
    /// (a disabled endpoint's sender holds it); settles a copy of a
    /// delivery let through before without sending it.
    pub(super) async fn dispatch_retry(
        &mut self,
        event: Payload,
        tier: usize,
        h: &RetryMeta,
        token: AckToken,
    ) {
        if let Some(lag) = self.tier_due_lag.get(tier) {
            lag.record(((now_ms() - h.due_ms).max(0) as f64) / 1000.0);
        }
        let slot = self.index.slot_of(&h.endpoint);
        // A lane record of an ordered endpoint is not checked for copies: a
        // revoke drops what waits in its device's line unsent, and the
        // same process may read it again once the partition comes back.
        let in_line = Some(tier) == self.writer.tiers().lane()
            && slot.is_some_and(|s| self.in_line(s, &event));
        if let Some(hop) = h.hop
            && !in_line
            && !self
                .copies
                .first_sighting(CopyKey::new(&event.source(), &h.endpoint, hop))
        {
            // Another record of this delivery at this hop was let through
            // by this process: it reaches its own outcome.
            self.metrics.copies_skipped.increment(1);
            self.tracker.complete(token);
            return;
        }
        let history = History {
            endpoint: &h.endpoint,
            attempt: h.attempt,
            first_ms: h.first_ms,
            ..History::default()
        };
        if let Admission::Refuse(refusal) =
            Admission::of(slot.map(|s| self.index.endpoint(s).as_ref()))
        {
            self.dead_letter_settling(token, &event, history, refusal.reason, refusal.why);
            return;
        }
        if let Some(slot) = slot {
            let partition = event.partition();
            let delivery = Delivery {
                attempt: h.attempt,
                first_ms: Some(h.first_ms),
                event,
                token,
                line: None,
            };
            match in_line {
                true => self.dispatch_in_line(slot, partition, delivery).await,
                false => self.enqueue(slot, delivery).await,
            }
        }
    }

    pub(super) async fn dispatch_input(&mut self, event: Arc<InputEvent>) {
        let fields = &event.fields;
        // Device → group: learned from events that name both, looked up
        // for events that name only the device.
        let devices = self.registry.devices();
        let mut known = None;
        if let Some(device) = fields.device() {
            if fields.group().is_some() || fields.tenant().is_some() {
                devices.learn(device, fields.group(), fields.tenant());
            } else if !devices.is_empty() {
                known = devices.get(device);
            }
        }
        let key = RouteKey {
            event_type: fields.event_type(),
            device: fields.device(),
            group: fields
                .group()
                .or(known.as_ref().and_then(|k| k.group.as_deref())),
            tenant: fields
                .tenant()
                .or(known.as_ref().and_then(|k| k.tenant.as_deref())),
        };
        self.index.matches(&key, &mut self.slots);
        self.apply_filters(&event);
        let Some(token) = self.tracker.register(
            event.record.partition,
            event.record.offset,
            self.slots.len() as u32,
        ) else {
            return;
        };
        let payload = Payload::Input(event);
        for i in 0..self.slots.len() {
            let slot = self.slots[i];
            if self.in_line(slot, &payload) {
                self.park_on_lane(slot, &payload, token);
                continue;
            }
            let delivery = Delivery {
                event: payload.clone(),
                token,
                attempt: 0,
                first_ms: None,
                line: None,
            };
            self.enqueue(slot, delivery).await;
        }
    }

    /// Drops the matched endpoints whose payload filter the event fails;
    /// the body is parsed once, and only when a filter reads it.
    pub(super) fn apply_filters(&mut self, event: &InputEvent) {
        let index = &self.index;
        let filtered = |slot: &Slot| index.endpoint(*slot).filter();
        if !self.slots.iter().any(|s| filtered(s).is_some()) {
            return;
        }
        let header = |name: &str| event.record.headers.get(name);
        let reads_body = self
            .slots
            .iter()
            .filter_map(filtered)
            .any(Filter::reads_body);
        let slots = &mut self.slots;
        let mut keep = |root: simd_json::tape::Value<'_, '_>| {
            slots.retain(|slot| filtered(slot).is_none_or(|f| f.matches(root, &header)));
        };
        match reads_body {
            true => self
                .filter_parser
                .with_body(&event.record.body, |root| match root {
                    Some(root) => keep(root),
                    None => empty_root(keep),
                }),
            false => empty_root(keep),
        }
    }

    /// Queues a delivery, or defers it without using an attempt when the
    /// endpoint cannot take it now: its circuit is open (deferred until it
    /// half-opens) or its queue stayed full (deferred to the first tier). A
    /// busy endpoint that keeps taking from its queue gets up to
    /// [`ENQUEUE_PATIENCE`] of back-pressure first. A disabled endpoint's
    /// deliveries are queued too, behind what its queue holds, so that its
    /// sender holds them on the backlog tier in order (at once when the
    /// queue stays full).
    pub(super) async fn enqueue(&mut self, slot: Slot, delivery: Delivery) {
        let sender = self.sender(slot);
        let held = sender.admission() == Admission::Hold;
        if !held && let Some(delay) = sender.circuit().defer_lazily(now_ms) {
            sender.defer(delivery, delay, "circuit open");
            return;
        }
        match sender.enqueue(delivery, ENQUEUE_PATIENCE).await {
            Ok(()) => {}
            Err(EnqueueError::Full(d)) if held => sender.hold(d),
            Err(EnqueueError::Full(d)) => {
                let first_tier = self.writer.tiers().delay(0);
                sender.defer(d, first_tier, "endpoint queue full");
            }
            Err(EnqueueError::Closed(_)) => {
                // Shutdown: left unsettled, consumed again after a restart.
            }
        }
    }

    /// The sender of `slot`, made on its first delivery.
    pub(super) fn sender(&mut self, slot: Slot) -> Arc<Sender> {
        if let Some(sender) = &self.senders[slot as usize] {
            return Arc::clone(sender);
        }
        let endpoint = self.index.endpoint(slot);
        let sender = Arc::new(Sender::new(
            Arc::clone(endpoint),
            &self.deps,
            self.registry.activity(endpoint.id()),
        ));
        self.by_id
            .insert(endpoint.id().to_string(), Arc::clone(&sender));
        self.senders[slot as usize] = Some(Arc::clone(&sender));
        self.count_senders();
        sender
    }

    /// Registers a record needing one outcome and dead-letters it.
    pub(super) fn dead_letter_now(
        &mut self,
        event: &Payload,
        partition: PartitionId,
        reason: Reason,
        detail: &str,
    ) {
        let offset = match event {
            Payload::Invalid(r) => r.record.offset,
            Payload::Unreadable(u) => u.record.offset,
            Payload::Input(e) => e.record.offset,
            Payload::Retry(e) => e.record.offset,
            Payload::Entry(e) => e.offset,
        };
        let Some(token) = self.tracker.register(partition, offset, 1) else {
            return;
        };
        self.dead_letter_settling(token, event, History::default(), reason, detail);
    }

    /// Dead-letters a record registered under `token`; one outcome of the
    /// token settles once the dead letter is stored.
    pub(super) fn dead_letter_settling(
        &mut self,
        token: AckToken,
        event: &Payload,
        history: History<'_>,
        reason: Reason,
        detail: &str,
    ) {
        let history = History {
            first_ms: if history.first_ms == 0 {
                now_ms()
            } else {
                history.first_ms
            },
            last_status: if history.last_status.is_empty() {
                reason.as_str()
            } else {
                history.last_status
            },
            last_error: detail,
            ..history
        };
        let acks = self.acks.clone();
        self.writer.dead_letter(
            event,
            &history,
            reason,
            Box::new(move |_| {
                let _ = acks.send(token.into());
            }),
        );
    }
}
