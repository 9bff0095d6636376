//! The dispatcher's partitions across rebalances and pauses: a revoke
//! drains (waits for its partitions' outcomes up to a deadline) and then
//! answers the consumer thread with their final offsets; pause and resume
//! decisions of the gates are applied to Kafka; partitions that should be
//! fetching and are not are found and resumed.
//!
//! Works on the dispatcher's own state; routing is [`super::route`]'s.

use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::mpsc;

use crate::core::{PartitionId, Settled};
use crate::source::inbound::RevokeReply;
use crate::wire::headers::now_ms;

use super::{Dispatcher, STALL_AFTER, Timing};

/// A revoke waiting for its partitions to settle.
pub(super) struct Draining {
    pub(super) partitions: Vec<PartitionId>,
    pub(super) deadline: Instant,
    /// Lost, not revoked: no final offsets are answered.
    pub(super) lost: bool,
    pub(super) reply: RevokeReply,
}

impl Dispatcher {
    /// Takes newly assigned partitions: tracked from their committed
    /// offsets, gates open, fetch progress fresh.
    pub(super) fn assign(&mut self, partitions: &[PartitionId]) {
        if self.source.joined() {
            self.stats.assigned.store(true, Ordering::Release);
        }
        let now = now_ms();
        for p in partitions {
            self.tracker.assign(*p);
            self.gates.assign(*p, now);
            self.source.progress().forget(*p);
        }
        self.count_partitions(partitions, 1);
    }

    /// Starts draining revoked partitions. Lost partitions belong to
    /// another member already: nothing of theirs is waited for or
    /// committed. Of revoked ones, what is settled now is answered at once,
    /// before the drain: the group may move on (and refuse commits) while
    /// in-flight deliveries finish.
    pub(super) fn start_revoke(
        &mut self,
        partitions: Vec<PartitionId>,
        lost: bool,
        reply: RevokeReply,
        acks: &mut mpsc::UnboundedReceiver<Settled>,
        timing: Timing,
    ) -> Draining {
        let deadline = if lost {
            Instant::now()
        } else {
            self.take_acks(acks);
            let early = self.tracker.committable_of(&partitions);
            tracing::debug!(?early, "revoke: settled offsets before the drain");
            let _ = reply.send(early);
            Instant::now() + timing.drain_timeout
        };
        Draining {
            partitions,
            deadline,
            lost,
            reply,
        }
    }

    /// Tells Kafka which partitions to pause or resume.
    pub(super) fn apply_pauses(&mut self) {
        let changes = self.gates.pause_changes(now_ms());
        if changes.is_empty() {
            return;
        }
        if !changes.pause.is_empty()
            && let Err(e) = self.source.pause(&changes.pause)
        {
            tracing::warn!(error = %e, "pausing partitions failed; will retry");
            self.gates.pause_call_failed(&changes.pause, true);
        }
        if !changes.resume.is_empty()
            && let Err(e) = self.source.resume(&changes.resume)
        {
            tracing::warn!(error = %e, "resuming partitions failed; will retry");
            self.gates.pause_call_failed(&changes.resume, false);
        }
    }

    pub(super) fn finish_revoke(&mut self, d: Draining, settled: bool) {
        if !settled && !d.lost {
            tracing::warn!(
                partitions = d.partitions.len(),
                "revoke drain deadline reached; unsettled records will be delivered again"
            );
        }
        let mut offsets = Vec::with_capacity(d.partitions.len());
        for p in &d.partitions {
            self.gates.revoke(*p);
            self.lines.revoke(*p);
            self.source.progress().forget(*p);
            if let Some(o) = self.tracker.revoke(*p)
                && !d.lost
            {
                offsets.push((*p, o));
            }
        }
        tracing::debug!(
            ?offsets,
            settled,
            lost = d.lost,
            "revoked partitions settled"
        );
        self.count_partitions(&d.partitions, -1);
        self.count_commits(offsets.len());
        let _ = d.reply.send(offsets);
        self.after_settle();
    }

    /// Finds assigned partitions that should be fetching and are not: the
    /// gate is open (Kafka was told to resume it, or never to pause it,
    /// [`STALL_AFTER`] ago, and nothing of it is held), and for
    /// [`STALL_AFTER`] its fetcher has not been running or records have
    /// waited behind a fetch position that did not move. Such a partition is counted (metric, readiness),
    /// logged and resumed: a retry tier left paused would hold its
    /// deferred deliveries for ever.
    pub(super) fn check_stalls(&mut self) {
        let stall_ms = STALL_AFTER.as_millis() as i64;
        let stalled: Vec<PartitionId> = self
            .gates
            .expected_to_fetch(now_ms(), stall_ms)
            .into_iter()
            .filter(|p| {
                self.source
                    .progress()
                    .get(*p)
                    .is_some_and(|f| f.stuck(Instant::now(), STALL_AFTER))
            })
            .collect();
        self.stats
            .stalled_partitions
            .store(stalled.len() as u64, Ordering::Relaxed);
        self.metrics.stalled.set(stalled.len() as f64);
        if stalled.is_empty() {
            return;
        }
        let names: Vec<String> = stalled
            .iter()
            .map(|p| format!("{}[{}]", self.source.topics().name(p.topic), p.partition))
            .collect();
        tracing::warn!(
            partitions = ?names,
            "partitions stalled: open for 15 s, but not fetching or not moving past waiting records; resuming them"
        );
        if let Err(e) = self.source.resume(&stalled) {
            tracing::warn!(error = %e, "resuming stalled partitions failed");
        }
    }
}
