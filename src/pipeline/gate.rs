//! Partition gates: which consumed records may be dispatched now, and which
//! partitions must be paused in Kafka.
//!
//! A partition's gate closes for three reasons: back-pressure (too many events
//! in flight: every partition waits), retry due times (the head record of
//! a retry-tier partition is not due yet: that partition waits until it is,
//! paused in Kafka until [`RESUME_AHEAD_MS`] before its last held record is
//! due)
//! and full device lines (an ordered-lane partition with too many
//! deliveries waiting behind their devices' retries: that partition waits
//! until they drain, its records parked on Kafka).
//! Records that arrive while a gate is closed are held in order. Pure: no
//! Kafka, no clock; the dispatcher passes `now` in and applies the pause
//! changes this type computes. One timer (the earliest due time) serves all
//! waiting partitions, however large the retry backlog.

use std::collections::VecDeque;

use foldhash::HashMap;

use crate::core::PartitionId;

/// How long back-pressure holds arriving records before it pauses Kafka.
/// A resumed partition can wait up to a second for librdkafka's next fetch:
/// pausing and resuming at every crossing of `max_in_flight` made that
/// second the pipeline's pace when `max_in_flight` was small against the
/// rate (bench (i) with `max_in_flight = 2000`: 3 k events/s, a pause and a
/// resume every second). Short spells hold what arrives instead; long ones
/// still stop the fetching.
pub const FLOW_PAUSE_AFTER_MS: i64 = 250;

/// A partition waiting for a retry's due time is resumed this long before
/// the last record it holds is due, so the records behind are fetched
/// while the held ones wait, not after: a resumed partition joins
/// librdkafka's next fetch request only once the one outstanding returns,
/// which a broker holds for up to `fetch.wait.max.ms` when the member's
/// other partitions are idle (the retry member's wait on the embedded
/// broker, [`crate::kafka::RETRY_FETCH_WAIT_EMBEDDED_MS`], is below this).
/// Records due within this are held instead of paused for; what the gates
/// hold is then at most this long's worth of a tier partition.
pub const RESUME_AHEAD_MS: i64 = 75;

/// A record the gates can hold.
pub trait Gated {
    /// Its partition.
    fn partition(&self) -> PartitionId;
    /// Unix ms before which it must not be dispatched (retry records).
    fn due_ms(&self) -> Option<i64>;
}

#[derive(Debug)]
struct Gate<T> {
    held: VecDeque<T>,
    /// The head is a retry not due before this time.
    waiting_until: Option<i64>,
    /// Its device lines are full (ordered lane).
    blocked: bool,
    /// What Kafka was last told.
    paused: bool,
    /// Unix ms when Kafka was last told (or the partition was assigned).
    since_ms: i64,
}

impl<T> Gate<T> {
    fn new(now_ms: i64) -> Self {
        Self {
            held: VecDeque::new(),
            waiting_until: None,
            blocked: false,
            paused: false,
            since_ms: now_ms,
        }
    }
}

/// The gates of every assigned partition.
#[derive(Debug)]
pub struct PartitionGates<T> {
    gates: HashMap<PartitionId, Gate<T>>,
    flow_paused: bool,
    /// When `pause_changes` first saw the flow closed.
    flow_closed_at: Option<i64>,
    /// Whether Kafka was told to pause for back-pressure.
    flow_in_kafka: bool,
    held: usize,
    /// Something changed that may need a pause or resume.
    dirty: bool,
    /// Earliest `waiting_until`, kept current while not dirty.
    next_due: Option<i64>,
    /// When the earliest partition paused for a due time is resumed
    /// ([`RESUME_AHEAD_MS`] before its last held record is due).
    next_resume: Option<i64>,
}

impl<T> Default for PartitionGates<T> {
    fn default() -> Self {
        Self {
            gates: HashMap::default(),
            flow_paused: false,
            flow_closed_at: None,
            flow_in_kafka: false,
            held: 0,
            dirty: false,
            next_due: None,
            next_resume: None,
        }
    }
}

/// Partitions whose Kafka pause state must change.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PauseChanges {
    /// Pause these.
    pub pause: Vec<PartitionId>,
    /// Resume these.
    pub resume: Vec<PartitionId>,
}

impl PauseChanges {
    /// Nothing to change.
    pub fn is_empty(&self) -> bool {
        self.pause.is_empty() && self.resume.is_empty()
    }
}

impl<T: Gated> PartitionGates<T> {
    /// No gates yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A newly assigned partition (open unless the flow is paused; Kafka
    /// assigns it unpaused, so a paused flow shows up in `pause_changes`).
    pub fn assign(&mut self, partition: PartitionId, now_ms: i64) {
        if let Some(old) = self.gates.insert(partition, Gate::new(now_ms)) {
            self.held -= old.held.len();
        }
        self.dirty = true;
    }

    /// A revoked partition: its held records are dropped (they were never
    /// registered; the next owner consumes them again). Returns how many.
    pub fn revoke(&mut self, partition: PartitionId) -> usize {
        let dropped = self.gates.remove(&partition).map_or(0, |g| g.held.len());
        self.held -= dropped;
        self.dirty = true;
        dropped
    }

    /// A record arrived. Returns it when it may be dispatched now; otherwise
    /// it is held, or dropped when its partition is not assigned (revoked
    /// while it was on its way: the next owner consumes it again).
    pub fn offer(&mut self, record: T, now_ms: i64) -> Option<T> {
        let flow_paused = self.flow_paused;
        let gate = self.gates.get_mut(&record.partition())?;
        let closed =
            flow_paused || gate.blocked || !gate.held.is_empty() || gate.waiting_until.is_some();
        if !closed {
            match record.due_ms() {
                Some(due) if due > now_ms => {
                    gate.waiting_until = Some(due);
                    self.dirty = true;
                }
                _ => return Some(record),
            }
        } else if !gate.paused
            && gate.waiting_until.is_some()
            && record
                .due_ms()
                .is_some_and(|due| due.saturating_sub(RESUME_AHEAD_MS) > now_ms)
        {
            // Fetched while resumed ahead of a due time, and not due soon
            // itself: pause again.
            self.dirty = true;
        }
        gate.held.push_back(record);
        self.held += 1;
        None
    }

    /// The next held record that may go now: flow open, partition due.
    pub fn pop_ready(&mut self, now_ms: i64) -> Option<T> {
        if self.flow_paused || self.held == 0 {
            return None;
        }
        for gate in self.gates.values_mut() {
            if gate.blocked || gate.waiting_until.is_some_and(|due| due > now_ms) {
                continue;
            }
            if gate.waiting_until.take().is_some() {
                self.dirty = true;
            }
            let Some(front) = gate.held.front() else {
                continue;
            };
            if let Some(due) = front.due_ms()
                && due > now_ms
            {
                gate.waiting_until = Some(due);
                self.dirty = true;
                continue;
            }
            self.held -= 1;
            return gate.held.pop_front();
        }
        None
    }

    /// The consumer paused `partition` by itself (the poll thread pauses
    /// behind a retry that is not due, to stop prefetching at once): the
    /// gate counts it as paused, so it is resumed once nothing holds it,
    /// whatever the gates decided meanwhile.
    pub fn paused_by_consumer(&mut self, partition: PartitionId) {
        if let Some(gate) = self.gates.get_mut(&partition) {
            gate.paused = true;
            self.dirty = true;
        }
    }

    /// Closes (or opens) the gate of `partition` because its device lines
    /// are full (or have room again).
    pub fn set_blocked(&mut self, partition: PartitionId, blocked: bool) {
        if let Some(gate) = self.gates.get_mut(&partition)
            && gate.blocked != blocked
        {
            gate.blocked = blocked;
            self.dirty = true;
        }
    }

    /// Closes (or opens) every gate for back-pressure.
    pub fn set_flow_paused(&mut self, paused: bool) {
        self.dirty |= self.flow_paused != paused;
        self.flow_paused = paused;
    }

    /// Whether back-pressure closed the gates.
    pub fn flow_paused(&self) -> bool {
        self.flow_paused
    }

    /// The earliest due time of a waiting partition.
    pub fn next_due(&self) -> Option<i64> {
        if self.dirty {
            self.gates.values().filter_map(|g| g.waiting_until).min()
        } else {
            self.next_due
        }
    }

    /// Records held across partitions.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Assigned partitions, and how many of them Kafka was told to pause
    /// and how many wait for a retry's due time.
    pub fn counts(&self) -> (usize, usize, usize) {
        let paused = self.gates.values().filter(|g| g.paused).count();
        let waiting = self
            .gates
            .values()
            .filter(|g| g.waiting_until.is_some())
            .count();
        (self.gates.len(), paused, waiting)
    }

    /// Partitions to pause or resume so Kafka matches the gates; records
    /// the new state as applied at `now_ms`. Back-pressure pauses Kafka
    /// only once the flow has been closed for [`FLOW_PAUSE_AFTER_MS`], so
    /// the caller asks again while it is closed; a partition waiting for a
    /// due time stays paused until [`RESUME_AHEAD_MS`] before its last held
    /// record is due, so the caller asks again at [`Self::next_resume`].
    pub fn pause_changes(&mut self, now_ms: i64) -> PauseChanges {
        let mut changes = PauseChanges::default();
        self.flow_closed_at = match (self.flow_paused, self.flow_closed_at) {
            (false, _) => None,
            (true, None) => Some(now_ms),
            (true, since) => since,
        };
        let flow_pauses = self
            .flow_closed_at
            .is_some_and(|since| now_ms - since >= FLOW_PAUSE_AFTER_MS);
        let resume_due = self.next_resume.is_some_and(|at| at <= now_ms);
        if !self.dirty && flow_pauses == self.flow_in_kafka && !resume_due {
            return changes;
        }
        self.dirty = false;
        self.flow_in_kafka = flow_pauses;
        self.next_due = self.gates.values().filter_map(|g| g.waiting_until).min();
        self.next_resume = None;
        for (p, gate) in &mut self.gates {
            // Waiting for a due time: paused until the last record held is
            // due soon (records behind it are due no earlier, tier records
            // being written in due order).
            let resume_at = gate
                .waiting_until
                .and_then(|_| gate.held.back())
                .and_then(Gated::due_ms)
                .map(|due| due.saturating_sub(RESUME_AHEAD_MS))
                .filter(|at| *at > now_ms);
            let want = flow_pauses || gate.blocked || resume_at.is_some();
            if let Some(at) = resume_at
                && !flow_pauses
                && !gate.blocked
            {
                self.next_resume = Some(self.next_resume.map_or(at, |n| n.min(at)));
            }
            if want != gate.paused {
                gate.paused = want;
                gate.since_ms = now_ms;
                if want {
                    changes.pause.push(*p);
                } else {
                    changes.resume.push(*p);
                }
            }
        }
        changes.pause.sort_unstable();
        changes.resume.sort_unstable();
        changes
    }

    /// When a partition paused for a due time is to be resumed (ask
    /// [`Self::pause_changes`] again then).
    pub fn next_resume(&self) -> Option<i64> {
        self.next_resume
    }

    /// Undoes what `pause_changes` recorded for `partitions` after the
    /// call telling Kafka failed (`paused`: the call was a pause), so the
    /// next `pause_changes` asks again.
    pub fn pause_call_failed(&mut self, partitions: &[PartitionId], paused: bool) {
        self.dirty = true;
        for p in partitions {
            if let Some(g) = self.gates.get_mut(p) {
                g.paused = !paused;
            }
        }
    }

    /// Partitions that should be fetching: Kafka was told to resume them
    /// (or never paused them) at least `min_ms` before `now_ms`, and the
    /// gates hold nothing of theirs. One of them whose fetch position does
    /// not move while records wait behind it is stalled.
    pub fn expected_to_fetch(&self, now_ms: i64, min_ms: i64) -> Vec<PartitionId> {
        if self.flow_paused || self.dirty {
            return Vec::new();
        }
        self.gates
            .iter()
            .filter(|(_, g)| {
                !g.paused
                    && !g.blocked
                    && g.waiting_until.is_none()
                    && g.held.is_empty()
                    && now_ms - g.since_ms >= min_ms
            })
            .map(|(p, _)| *p)
            .collect()
    }
}

#[cfg(test)]
mod tests;
