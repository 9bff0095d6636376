//! Committing offsets: what the dispatcher's tracker says is committable is
//! handed here, committed by a background thread (periodic commits), or
//! committed and waited for (shutdown); partitions whose commit the broker
//! refused are offered again at the next interval. Revoked partitions are
//! committed on the consumer's thread inside its rebalance callback
//! ([`commit_revoked`]), the only place librdkafka lets that happen before
//! the partitions move.
//!
//! Owns when and how offsets are committed, not which: the
//! [`AckTracker`](super::AckTracker) decides that. It knows no Kafka client:
//! the source gives it an [`OffsetCommit`] that commits through its
//! consumers.

use std::collections::{BTreeMap, HashSet};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::AckTracker;
use crate::core::{PartitionId, lock};

/// Offsets to commit: the next offset to read of each partition.
pub type Offsets = Vec<(PartitionId, i64)>;

/// A commit the broker did not make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitRefused {
    /// The client's error.
    pub error: String,
    /// The partitions whose commit was not made.
    pub partitions: Vec<PartitionId>,
}

/// Commits offsets synchronously (the source's consumers implement it).
pub trait OffsetCommit: Send + Sync + 'static {
    /// Commits `offsets` and waits for the broker's answer.
    fn commit(&self, offsets: &[(PartitionId, i64)]) -> Result<(), CommitRefused>;
}

/// Partitions whose last background commit was refused (librdkafka does
/// not retry a commit refused during a rebalance): offered again at the
/// next commit.
#[derive(Debug, Default)]
pub struct FailedCommits {
    partitions: Mutex<Vec<PartitionId>>,
    /// When a failure was last logged (at most one line every few seconds).
    last_logged: Mutex<Option<Instant>>,
}

impl FailedCommits {
    fn add(&self, refused: CommitRefused) {
        let added = refused.partitions.len();
        lock(&self.partitions).extend(refused.partitions);
        if added == 0 {
            return;
        }
        let mut last = lock(&self.last_logged);
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
            *last = Some(Instant::now());
            tracing::warn!(partitions = added, error = %refused.error, "offset commit refused; committing again at the next interval");
        }
    }

    /// Takes the partitions whose commit failed since the last call.
    pub fn take(&self) -> Vec<PartitionId> {
        std::mem::take(&mut *lock(&self.partitions))
    }
}

/// Commits in the background, one synchronous commit at a time: requests
/// that queued up meanwhile are merged (the highest offset of each
/// partition kept), refused partitions noted in [`FailedCommits`]. (An
/// asynchronous librdkafka commit would report nothing: its result reaches
/// no callback unless one is set on the native configuration.)
pub struct Committer {
    sink: Arc<dyn OffsetCommit>,
    failed: Arc<FailedCommits>,
    requests: Option<Sender<Offsets>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Committer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Committer").finish_non_exhaustive()
    }
}

impl Committer {
    /// Starts the committer thread over `sink`.
    pub fn start(sink: Arc<dyn OffsetCommit>) -> std::io::Result<Self> {
        let failed = Arc::new(FailedCommits::default());
        let (requests, queue) = std::sync::mpsc::channel();
        let thread = {
            let sink = Arc::clone(&sink);
            let failed = Arc::clone(&failed);
            thread::Builder::new()
                .name("committer".into())
                .spawn(move || commit_loop(&*sink, &queue, &failed))?
        };
        Ok(Self {
            sink,
            failed,
            requests: Some(requests),
            thread: Some(thread),
        })
    }

    /// Commits what `tracker` says is committable (and what was refused
    /// last time): handed to the thread when `wait` is false, committed and
    /// waited for otherwise (shutdown). Returns how many partitions'
    /// offsets were committed or handed over.
    pub fn commit_settled(&self, tracker: &mut AckTracker, wait: bool) -> usize {
        let failed: HashSet<PartitionId> = self.failed.take().into_iter().collect();
        if !failed.is_empty() {
            tracker.retry_commits(&failed);
        }
        let offsets = tracker.take_commits();
        if offsets.is_empty() {
            return 0;
        }
        let n = offsets.len();
        if !wait {
            if let Some(tx) = &self.requests {
                let _ = tx.send(offsets);
            }
            return n;
        }
        match self.sink.commit(&offsets) {
            Ok(()) => n,
            Err(refused) => {
                tracing::warn!(error = %refused.error, "offset commit failed; these records will be delivered again after restart");
                n - refused.partitions.len()
            }
        }
    }

    /// Stops the thread once it has committed what it was handed.
    pub fn stop(&mut self) {
        drop(self.requests.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        // The thread ends once the sender is gone; nothing waits for it.
        drop(self.requests.take());
    }
}

fn commit_loop(sink: &dyn OffsetCommit, queue: &Receiver<Offsets>, failed: &FailedCommits) {
    while let Ok(first) = queue.recv() {
        let mut latest: BTreeMap<PartitionId, i64> = first.into_iter().collect();
        while let Ok(more) = queue.try_recv() {
            for (p, o) in more {
                let entry = latest.entry(p).or_insert(o);
                *entry = (*entry).max(o);
            }
        }
        let offsets: Offsets = latest.into_iter().collect();
        if let Err(refused) = sink.commit(&offsets) {
            failed.add(refused);
        }
    }
}

/// Commits revoked partitions from the consumer's rebalance callback: the
/// dispatcher answers on `answers` once with what is settled at once and,
/// unless the partitions were `lost` (another member has them already:
/// nothing is committed), once more after its drain. Waits at most `wait`
/// in all.
pub fn commit_revoked(
    answers: &Receiver<Offsets>,
    lost: bool,
    wait: Duration,
    commit: impl Fn(&[(PartitionId, i64)]) -> Result<(), CommitRefused>,
) {
    let expected = if lost { 1 } else { 2 };
    let deadline = Instant::now() + wait;
    for _ in 0..expected {
        match answers.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(offsets) if !offsets.is_empty() && !lost => match commit(&offsets) {
                Ok(()) => tracing::debug!(?offsets, "revoked partitions committed"),
                Err(refused) => {
                    tracing::warn!(error = %refused.error, "committing revoked partitions failed; their records will be delivered again")
                }
            },
            Ok(_) => {}
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                tracing::warn!(
                    "no drain answer for revoked partitions; their in-flight records will be delivered again"
                );
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what it was asked to commit; refuses partitions of topic 1.
    #[derive(Default)]
    struct Recorded(Mutex<Vec<Offsets>>);

    impl OffsetCommit for Recorded {
        fn commit(&self, offsets: &[(PartitionId, i64)]) -> Result<(), CommitRefused> {
            lock(&self.0).push(offsets.to_vec());
            let refused: Vec<PartitionId> = offsets
                .iter()
                .map(|(p, _)| *p)
                .filter(|p| p.topic == 1)
                .collect();
            if refused.is_empty() {
                Ok(())
            } else {
                Err(CommitRefused {
                    error: "RebalanceInProgress".into(),
                    partitions: refused,
                })
            }
        }
    }

    fn p(topic: u16, partition: i32) -> PartitionId {
        PartitionId { topic, partition }
    }

    #[test]
    fn refused_partitions_are_offered_again_and_waited_commits_count_what_was_made() {
        let sink = Arc::new(Recorded::default());
        let mut committer = Committer::start(sink.clone()).unwrap();
        let mut tracker = AckTracker::new();
        for part in [p(0, 0), p(1, 0)] {
            tracker.assign(part);
            let token = tracker.register(part, 7, 1).unwrap();
            tracker.complete(token);
        }
        assert_eq!(committer.commit_settled(&mut tracker, false), 2);
        committer.stop();
        // The refused partition is offered again (by the waited commit of a
        // shutdown, which counts only what was made).
        assert_eq!(committer.commit_settled(&mut tracker, true), 0);
        let calls = lock(&sink.0).clone();
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert_eq!(calls[0], vec![(p(0, 0), 8), (p(1, 0), 8)]);
        assert_eq!(calls[1], vec![(p(1, 0), 8)]);
    }

    #[test]
    fn revoked_partitions_commit_both_answers_and_lost_ones_nothing() {
        let sink = Recorded::default();
        let (tx, rx) = std::sync::mpsc::channel();
        tx.send(vec![(p(0, 0), 3)]).unwrap();
        tx.send(vec![(p(0, 0), 5)]).unwrap();
        commit_revoked(&rx, false, Duration::from_secs(1), |o| sink.commit(o));
        tx.send(vec![(p(0, 1), 9)]).unwrap();
        commit_revoked(&rx, true, Duration::from_secs(1), |o| sink.commit(o));
        assert_eq!(*lock(&sink.0), vec![vec![(p(0, 0), 3)], vec![(p(0, 0), 5)]]);
        // No second answer: it gives up at the deadline.
        let start = Instant::now();
        tx.send(vec![]).unwrap();
        commit_revoked(&rx, false, Duration::from_millis(200), |o| sink.commit(o));
        assert!(start.elapsed() >= Duration::from_millis(200));
    }
}
