//! Out-of-order acknowledgement tracking: which offset of each partition may
//! be committed.
//!
//! Pure bookkeeping, no Kafka. A record is registered with the number of
//! durable outcomes it needs (one per matched endpoint; zero when nothing
//! matched). Outcomes complete in any order; the committable offset of a
//! partition is one past the highest offset below which every record is
//! settled. Each assignment of a partition gets a new epoch, so outcomes of
//! work started before a revoke never touch the tracker of a later
//! assignment.

use std::collections::VecDeque;

use foldhash::HashMap;

use crate::core::{AckToken, PartitionId};

/// Settlement state of one partition.
#[derive(Debug, Default)]
pub struct PartitionAcks {
    /// Registered, unsettled-or-not-yet-popped records: (offset, outcomes left).
    pending: VecDeque<(i64, u32)>,
    /// Highest offset ever registered.
    last_registered: Option<i64>,
    /// One past the highest offset below which everything is settled.
    committable: Option<i64>,
    /// What was last handed out for committing.
    committed: Option<i64>,
    /// Records with outcomes still missing.
    unsettled: usize,
    /// Outcomes still missing, across records.
    outstanding: usize,
}

impl PartitionAcks {
    /// Registers `offset` needing `outcomes` completions. Returns `false`
    /// (and registers nothing) when the offset is not above every offset
    /// registered before: such a record is a re-fetch of one already tracked
    /// and must be skipped.
    pub fn register(&mut self, offset: i64, outcomes: u32) -> bool {
        if self.last_registered.is_some_and(|last| offset <= last) {
            return false;
        }
        self.last_registered = Some(offset);
        if outcomes == 0 && self.pending.is_empty() {
            self.committable = Some(offset + 1);
        } else {
            self.pending.push_back((offset, outcomes));
            if outcomes > 0 {
                self.unsettled += 1;
                self.outstanding += outcomes as usize;
            }
        }
        true
    }

    /// Records one outcome of `offset`. Returns `false` when the offset is not
    /// pending (already settled, or never registered).
    pub fn complete(&mut self, offset: i64) -> bool {
        // Offsets are mostly consecutive: the record `offset - front` places
        // after the oldest pending one is looked at before searching (a
        // search per outcome was 1 % of bench (b)'s pipeline CPU).
        let guess = self
            .pending
            .front()
            .and_then(|&(front, _)| usize::try_from(offset.checked_sub(front)?).ok())
            .filter(|&at| self.pending.get(at).is_some_and(|&(o, _)| o == offset));
        let pos = match guess {
            Some(at) => at,
            None => match self.pending.binary_search_by_key(&offset, |(o, _)| *o) {
                Ok(pos) => pos,
                Err(_) => return false,
            },
        };
        let left = &mut self.pending[pos].1;
        if *left == 0 {
            return false;
        }
        *left -= 1;
        self.outstanding -= 1;
        if *left == 0 {
            self.unsettled -= 1;
        }
        while let Some(&(front, 0)) = self.pending.front() {
            self.committable = Some(front + 1);
            self.pending.pop_front();
        }
        true
    }

    /// The offset that may be committed now (next offset to consume).
    pub fn committable(&self) -> Option<i64> {
        self.committable
    }

    /// The committable offset if it moved since the last call.
    pub fn take_commit(&mut self) -> Option<i64> {
        match (self.committable, self.committed) {
            (Some(c), Some(done)) if c <= done => None,
            (Some(c), _) => {
                self.committed = Some(c);
                Some(c)
            }
            (None, _) => None,
        }
    }

    /// Records that still miss outcomes.
    pub fn unsettled(&self) -> usize {
        self.unsettled
    }

    /// Outcomes still missing (a record matched by three endpoints, or a
    /// deferral batch of 300 entries, misses up to three or 300).
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }
}

/// Tracks every assigned partition of one consumer.
#[derive(Debug, Default)]
pub struct AckTracker {
    partitions: HashMap<PartitionId, (u64, PartitionAcks)>,
    next_epoch: u64,
    unsettled: usize,
    outstanding: usize,
}

impl AckTracker {
    /// An empty tracker.
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts tracking `partition` afresh (on assignment). Any previous state
    /// of it is dropped.
    pub fn assign(&mut self, partition: PartitionId) {
        self.next_epoch += 1;
        if let Some((_, old)) = self
            .partitions
            .insert(partition, (self.next_epoch, PartitionAcks::default()))
        {
            self.unsettled -= old.unsettled();
            self.outstanding -= old.outstanding();
        }
    }

    /// Stops tracking `partition` (on revoke) and returns its final
    /// committable offset, whether or not it was handed out before: an
    /// earlier asynchronous commit of it may have failed, and the next
    /// owner starts from what is committed now.
    pub fn revoke(&mut self, partition: PartitionId) -> Option<i64> {
        let (_, acks) = self.partitions.remove(&partition)?;
        self.unsettled -= acks.unsettled();
        self.outstanding -= acks.outstanding();
        acks.committable()
    }

    /// Registers a record; `None` when its partition is not assigned or the
    /// record is a re-fetch (see [`PartitionAcks::register`]).
    pub fn register(
        &mut self,
        partition: PartitionId,
        offset: i64,
        outcomes: u32,
    ) -> Option<AckToken> {
        let (epoch, acks) = self.partitions.get_mut(&partition)?;
        if !acks.register(offset, outcomes) {
            return None;
        }
        if outcomes > 0 {
            self.unsettled += 1;
            self.outstanding += outcomes as usize;
        }
        Some(AckToken {
            partition,
            offset,
            epoch: *epoch,
        })
    }

    /// Records one outcome. Outcomes of a previous assignment are ignored.
    pub fn complete(&mut self, token: AckToken) -> bool {
        let Some((epoch, acks)) = self.partitions.get_mut(&token.partition) else {
            return false;
        };
        if *epoch != token.epoch {
            return false;
        }
        let before = acks.unsettled();
        let found = acks.complete(token.offset);
        self.unsettled -= before - acks.unsettled();
        self.outstanding -= usize::from(found);
        found
    }

    /// Offsets to commit now: every partition whose committable offset moved.
    pub fn take_commits(&mut self) -> Vec<(PartitionId, i64)> {
        let mut out: Vec<(PartitionId, i64)> = self
            .partitions
            .iter_mut()
            .filter_map(|(p, (_, acks))| acks.take_commit().map(|o| (*p, o)))
            .collect();
        out.sort_unstable();
        out
    }

    /// The committable offsets of `partitions`, whether or not they were
    /// handed out before (a revoke commits them all again: an earlier
    /// asynchronous commit may have failed).
    pub fn committable_of(&mut self, partitions: &[PartitionId]) -> Vec<(PartitionId, i64)> {
        partitions
            .iter()
            .filter_map(|p| {
                let (_, acks) = self.partitions.get_mut(p)?;
                acks.take_commit();
                acks.committable().map(|o| (*p, o))
            })
            .collect()
    }

    /// Forgets that `partitions` were committed, so the next
    /// [`take_commits`](Self::take_commits) offers their offsets again
    /// (after a failed commit).
    pub fn retry_commits(&mut self, partitions: &std::collections::HashSet<PartitionId>) {
        for p in partitions {
            if let Some((_, acks)) = self.partitions.get_mut(p) {
                acks.committed = None;
            }
        }
    }

    /// Records missing outcomes, across partitions.
    pub fn unsettled(&self) -> usize {
        self.unsettled
    }

    /// Outcomes missing, across records and partitions: deliveries in
    /// flight.
    pub fn outstanding(&self) -> usize {
        self.outstanding
    }

    /// Records missing outcomes in `partition`.
    pub fn unsettled_in(&self, partition: PartitionId) -> usize {
        self.partitions
            .get(&partition)
            .map_or(0, |(_, a)| a.unsettled())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: PartitionId = PartitionId {
        topic: 0,
        partition: 0,
    };
    const Q: PartitionId = PartitionId {
        topic: 0,
        partition: 1,
    };

    #[test]
    fn commits_only_up_to_the_first_gap() {
        let mut t = AckTracker::new();
        t.assign(P);
        let tokens: Vec<AckToken> = (10..15).map(|o| t.register(P, o, 1).unwrap()).collect();
        assert_eq!(t.unsettled(), 5);
        assert!(t.complete(tokens[1]));
        assert!(t.complete(tokens[3]));
        assert_eq!(t.take_commits(), vec![]);
        assert!(t.complete(tokens[0]));
        assert_eq!(t.take_commits(), vec![(P, 12)]);
        assert!(t.complete(tokens[2]));
        assert_eq!(t.take_commits(), vec![(P, 14)]);
        assert_eq!(t.take_commits(), vec![], "nothing moved");
        assert!(t.complete(tokens[4]));
        assert_eq!(t.take_commits(), vec![(P, 15)]);
        assert_eq!(t.unsettled(), 0);
    }

    #[test]
    fn fan_out_needs_every_outcome() {
        let mut t = AckTracker::new();
        t.assign(P);
        let a = t.register(P, 0, 3).unwrap();
        assert_eq!(t.outstanding(), 3);
        t.complete(a);
        assert_eq!(t.outstanding(), 2);
        t.complete(a);
        assert_eq!(t.take_commits(), vec![]);
        assert_eq!(t.unsettled(), 1);
        t.complete(a);
        assert_eq!(t.take_commits(), vec![(P, 1)]);
        assert!(!t.complete(a), "a fourth outcome is not counted");
        assert_eq!(t.outstanding(), 0);
    }

    #[test]
    fn records_matching_nothing_settle_at_once_but_keep_order() {
        let mut t = AckTracker::new();
        t.assign(P);
        t.register(P, 0, 0).unwrap();
        assert_eq!(t.take_commits(), vec![(P, 1)]);
        let b = t.register(P, 1, 1).unwrap();
        t.register(P, 2, 0).unwrap();
        t.register(P, 5, 0).unwrap(); // offsets may have gaps (compaction, markers)
        assert_eq!(t.take_commits(), vec![], "offset 1 is still out");
        t.complete(b);
        assert_eq!(t.take_commits(), vec![(P, 6)]);
    }

    #[test]
    fn revoke_returns_the_final_offset_and_ignores_late_outcomes() {
        let mut t = AckTracker::new();
        t.assign(P);
        t.assign(Q);
        let a = t.register(P, 100, 1).unwrap();
        let b = t.register(P, 101, 1).unwrap();
        t.register(Q, 7, 1).unwrap();
        t.complete(a);
        assert_eq!(t.revoke(P), Some(101));
        assert_eq!(t.unsettled(), 1, "only Q's record is left");
        assert_eq!(t.outstanding(), 1);
        assert!(!t.complete(b), "partition no longer assigned");
        // Re-assigned: a new epoch; the old token does not count.
        t.assign(P);
        assert!(!t.complete(b));
        let b2 = t.register(P, 101, 1).unwrap();
        assert_ne!(b2.epoch, b.epoch);
        t.complete(b2);
        assert_eq!(t.take_commits(), vec![(P, 102)]);
    }

    #[test]
    fn a_revoke_answers_the_committable_offset_even_when_handed_out_before() {
        let mut t = AckTracker::new();
        t.assign(P);
        t.assign(Q);
        t.register(P, 0, 0).unwrap();
        t.register(Q, 0, 0).unwrap();
        assert_eq!(t.take_commits(), vec![(P, 1), (Q, 1)]);
        // Those asynchronous commits may have failed: a revoke offers them
        // again.
        assert_eq!(t.committable_of(&[Q]), vec![(Q, 1)]);
        assert_eq!(t.committable_of(&[Q]), vec![(Q, 1)]);
        assert_eq!(t.take_commits(), vec![], "nothing moved");
        assert_eq!(t.revoke(P), Some(1));
        assert_eq!(t.revoke(P), None, "no longer tracked");
    }

    #[test]
    fn restart_starts_from_the_committed_offset() {
        // First run: 0..10 consumed, 0..6 settled, crash.
        let mut first = AckTracker::new();
        first.assign(P);
        let tokens: Vec<_> = (0..10).map(|o| first.register(P, o, 1).unwrap()).collect();
        for t in &tokens[..6] {
            first.complete(*t);
        }
        let committed = first.take_commits();
        assert_eq!(committed, vec![(P, 6)]);
        // Second run resumes at the committed offset: 6..10 come again.
        let mut second = AckTracker::new();
        second.assign(P);
        let again: Vec<_> = (6..10).map(|o| second.register(P, o, 1).unwrap()).collect();
        for t in again.iter().rev() {
            second.complete(*t);
        }
        assert_eq!(second.take_commits(), vec![(P, 10)]);
    }

    #[test]
    fn refetched_offsets_are_refused() {
        let mut t = AckTracker::new();
        t.assign(P);
        assert!(t.register(P, 5, 1).is_some());
        assert!(t.register(P, 5, 1).is_none());
        assert!(t.register(P, 3, 1).is_none());
        assert!(t.register(Q, 0, 1).is_none(), "unassigned partition");
        assert_eq!(t.unsettled(), 1);
    }

    #[test]
    fn offsets_with_gaps_settle_and_unknown_offsets_are_refused() {
        // Compacted topics and transaction markers leave gaps: an outcome's
        // record is not always `offset - oldest` places along.
        let mut t = AckTracker::new();
        t.assign(P);
        let offsets = [10, 11, 20, 21, 22, 40];
        let tokens: Vec<AckToken> = offsets
            .iter()
            .map(|&o| t.register(P, o, 1).unwrap())
            .collect();
        // None of these is registered: 13 lands where a consecutive guess
        // finds 21, 100 past the end, 5 before the oldest.
        for offset in [13, 100, 5] {
            assert!(!t.complete(AckToken {
                offset,
                ..tokens[0]
            }));
        }
        assert!(t.complete(tokens[3]));
        assert!(t.complete(tokens[5]));
        assert!(t.complete(tokens[0]));
        assert_eq!(t.take_commits(), vec![(P, 11)]);
        assert!(t.complete(tokens[1]));
        assert!(t.complete(tokens[2]));
        assert!(!t.complete(tokens[2]), "settled already");
        assert_eq!(t.take_commits(), vec![(P, 22)]);
        assert!(t.complete(tokens[4]));
        assert_eq!(t.take_commits(), vec![(P, 41)]);
        assert_eq!((t.unsettled(), t.outstanding()), (0, 0));
    }

    #[test]
    fn random_completion_order_always_commits_a_settled_prefix() {
        // A small deterministic shuffle (xorshift) over many rounds.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..50 {
            let mut t = AckTracker::new();
            t.assign(P);
            let n = 200;
            let mut outstanding: Vec<(AckToken, u32)> = (0..n)
                .map(|o| {
                    let k = (next() % 3) as u32;
                    (t.register(P, o, k).unwrap(), k)
                })
                .flat_map(|(tok, k)| (0..k).map(move |_| (tok, 1)))
                .collect();
            let mut settled = vec![0u32; n as usize];
            let needed: Vec<u32> = {
                let mut v = vec![0u32; n as usize];
                for (tok, _) in &outstanding {
                    v[tok.offset as usize] += 1;
                }
                v
            };
            let mut last = 0;
            while !outstanding.is_empty() {
                let i = (next() % outstanding.len() as u64) as usize;
                let (tok, _) = outstanding.swap_remove(i);
                t.complete(tok);
                settled[tok.offset as usize] += 1;
                for (_, c) in t.take_commits() {
                    assert!(c >= last);
                    for o in 0..c as usize {
                        assert_eq!(settled[o], needed[o], "offset {o} committed before settled");
                    }
                    last = c;
                }
            }
            assert_eq!(last, n);
        }
    }
}
