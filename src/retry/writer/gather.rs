//! Deferrals gathered per tier and endpoint for [`super::BATCH_LINGER`]
//! into one batch record: added, flushed when full or lingered, written.
//!
//! Part of the writer's [`Inner`]; what a batch record holds is
//! [`crate::retry::records`]'s business.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;

use crate::retry::records::{Body, Deferral, DeferralBatch, Target, Write};
use crate::wire::batch::MAX_ENTRY_BYTES;

use super::Inner;

impl Inner {
    pub(super) fn gathering(
        &self,
    ) -> std::sync::MutexGuard<'_, Vec<HashMap<Arc<str>, DeferralBatch>>> {
        crate::core::lock(&self.gathering)
    }

    /// Adds a deferral to its endpoint's batch for `tier`; returns the batch
    /// when it is full. One too large to share is written alone at once.
    pub(super) fn gather(
        &self,
        tier: usize,
        endpoint: &str,
        deferral: Deferral,
    ) -> Option<Box<DeferralBatch>> {
        let event = &deferral.event;
        let size = event.body().len()
            + event.key().map_or(0, Bytes::len)
            + event.headers().byte_len()
            + 512;
        let mut gathering = self.gathering();
        if size > MAX_ENTRY_BYTES {
            // What the endpoint gathered before it goes first: one
            // endpoint's records keep their order (per-device ordering
            // relies on it). Written under the lock, as flushes are.
            if let Some(earlier) = gathering.get_mut(tier).and_then(|b| b.remove(endpoint)) {
                self.send_batch(Box::new(earlier));
            }
            self.send_alone(tier, endpoint, deferral);
            return None;
        }
        let Some(batches) = gathering.get_mut(tier) else {
            // (Not a tier of this writer: cannot happen, as `tier` comes
            // from `tier_for`; written alone rather than lost.)
            drop(gathering);
            self.send_alone(
                tier.min(self.tiers.len().saturating_sub(1)),
                endpoint,
                deferral,
            );
            return None;
        };
        if batches.is_empty() {
            // The first batch since the last flush: the batch task writes
            // this round after BATCH_LINGER.
            self.batch_started.notify_one();
        }
        let full = match batches.get_mut(endpoint) {
            Some(batch) => batch.add(deferral),
            None => {
                let mut batch = DeferralBatch::new(tier, Arc::from(endpoint));
                let full = batch.add(deferral);
                batches.insert(Arc::clone(&batch.endpoint), batch);
                full
            }
        };
        if full {
            batches.remove(endpoint).map(Box::new)
        } else {
            None
        }
    }

    /// Writes every batch gathered so far.
    /// Written under the lock: a deferral gathered meanwhile cannot be
    /// written before the batches it follows.
    pub(super) fn flush_deferrals(&self) {
        let mut gathering = self.gathering();
        for batches in gathering.iter_mut() {
            for (_, batch) in batches.drain() {
                self.send_batch(Box::new(batch));
            }
        }
    }

    /// Writes a batch: as one record, or as a single retry record when it
    /// holds one deferral.
    pub(super) fn send_batch(&self, mut batch: Box<DeferralBatch>) {
        if batch.entries.len() == 1
            && let Some(deferral) = batch.entries.pop()
        {
            self.send_alone(batch.tier, &batch.endpoint, deferral);
            return;
        }
        if batch.entries.is_empty() {
            return;
        }
        batch.value = Bytes::from(batch.encoder.take_value());
        let headers = batch.headers();
        let write = Box::new(Write {
            target: Target::Tier(batch.tier),
            partition: self.endpoint_partition(batch.tier, &batch.endpoint),
            payload: Body::Deferrals(batch),
            reason: None,
            failures: 0,
        });
        self.send(write, Some(headers));
    }
}
