//! What librdkafka calls on a poll thread: the rebalance handshake with the
//! dispatcher, commit results, statistics and log lines.
//!
//! Owns the group member's side of a rebalance: on a revoke it asks the
//! dispatcher (which owns the ack tracker) for the final offsets, commits
//! them synchronously and only then lets the rebalance proceed; on an
//! assignment it resumes the new partitions and tells the dispatcher. It
//! never decides what is committable.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::commit::{CommitRefused, commit_revoked};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::{ClientContext, TopicPartitionList};

use super::inbound::{Inbound, InboundSender};
use super::topics::{TopicTable, offsets_list, partitions_list};
use crate::core::PartitionId;

/// Partitions a rebalance log line names (the rest are counted).
const NAMED_PARTITIONS: usize = 16;

/// Where librdkafka last said one partition's fetching stood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionFetch {
    /// Next offset to hand to the application (its last one + 1; the
    /// committed or low offset before the first).
    pub position: i64,
    /// High watermark (negative while unknown).
    pub high: i64,
    /// librdkafka's fetcher of the partition is running (`fetch_state`
    /// `active`; a paused partition's fetcher is still active).
    pub fetching: bool,
    /// When `position` last moved (or was first seen).
    pub moved_at: Instant,
}

impl PartitionFetch {
    /// Whether the partition is stuck at `now`, given that it should be
    /// fetching: for `after`, its fetcher has not been running, or records
    /// have waited behind a position that did not move.
    pub fn stuck(&self, now: Instant, after: Duration) -> bool {
        now.duration_since(self.moved_at) >= after && (!self.fetching || self.high > self.position)
    }
}

/// The fetch state of every assigned partition, from librdkafka's
/// statistics (every `statistics.interval.ms`): the dispatcher compares it
/// with its gates to find a partition that should be fetching and is not.
#[derive(Debug, Default)]
pub struct FetchProgress {
    partitions: std::sync::Mutex<std::collections::HashMap<PartitionId, PartitionFetch>>,
}

impl FetchProgress {
    fn map(
        &self,
    ) -> std::sync::MutexGuard<'_, std::collections::HashMap<PartitionId, PartitionFetch>> {
        crate::core::lock(&self.partitions)
    }

    /// Records what the statistics say of `partition` at `now`.
    fn observe(
        &self,
        partition: PartitionId,
        position: i64,
        high: i64,
        fetching: bool,
        now: Instant,
    ) {
        let mut map = self.map();
        let entry = map.entry(partition).or_insert(PartitionFetch {
            position,
            high,
            fetching,
            moved_at: now,
        });
        if entry.position != position || (fetching && !entry.fetching) {
            entry.position = position;
            entry.moved_at = now;
        }
        entry.high = high;
        entry.fetching = fetching;
    }

    /// The last report of `partition`.
    pub fn get(&self, partition: PartitionId) -> Option<PartitionFetch> {
        self.map().get(&partition).copied()
    }

    /// Forgets `partition` (revoked): a later assignment starts afresh.
    pub fn forget(&self, partition: PartitionId) {
        self.map().remove(&partition);
    }
}

/// The callbacks of one group member.
pub struct SourceContext {
    inbound: Arc<InboundSender>,
    topics: TopicTable,
    revoke_wait: Duration,
    progress: Arc<FetchProgress>,
    /// Set at the member's first assignment.
    joined: Arc<AtomicBool>,
}

impl SourceContext {
    /// The callbacks of a member that sends to `inbound`, waits at most
    /// `revoke_wait` for the dispatcher's answer to a revoke, and reports
    /// into `progress` and `joined`.
    pub(super) fn new(
        inbound: Arc<InboundSender>,
        topics: TopicTable,
        revoke_wait: Duration,
        progress: Arc<FetchProgress>,
        joined: Arc<AtomicBool>,
    ) -> Self {
        Self {
            inbound,
            topics,
            revoke_wait,
            progress,
            joined,
        }
    }

    fn ids(&self, tpl: &TopicPartitionList) -> Vec<PartitionId> {
        tpl.elements()
            .iter()
            .filter_map(|e| {
                self.topics.id(e.topic()).map(|topic| PartitionId {
                    topic,
                    partition: e.partition(),
                })
            })
            .collect()
    }

    /// `topic[partition]` of each, for the log lines of a rebalance (the
    /// first [`NAMED_PARTITIONS`], then how many more).
    fn named(&self, partitions: &[PartitionId]) -> String {
        let mut names: Vec<String> = partitions
            .iter()
            .take(NAMED_PARTITIONS)
            .map(|p| format!("{}[{}]", self.topics.name(p.topic), p.partition))
            .collect();
        if partitions.len() > NAMED_PARTITIONS {
            names.push(format!("and {} more", partitions.len() - NAMED_PARTITIONS));
        }
        names.join(",")
    }

    fn send(&self, msg: Inbound) -> bool {
        self.inbound.send(msg)
    }

    /// Asks the dispatcher to settle revoked `partitions` and commits what
    /// it answers: what is settled at once, then (unless they were lost)
    /// what is settled after the drain.
    fn settle_and_commit(
        &self,
        consumer: &BaseConsumer<SourceContext>,
        partitions: Vec<PartitionId>,
        lost: bool,
    ) {
        let (reply, answer) = std::sync::mpsc::channel();
        if !self.send(Inbound::Revoke {
            partitions,
            lost,
            reply,
        }) {
            return;
        }
        commit_revoked(&answer, lost, self.revoke_wait, |offsets| {
            consumer
                .commit(&offsets_list(&self.topics, offsets), CommitMode::Sync)
                .map_err(|e| CommitRefused {
                    error: e.to_string(),
                    partitions: offsets.iter().map(|(p, _)| *p).collect(),
                })
        });
    }
}

impl ClientContext for SourceContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "kafka consumer error");
    }

    /// librdkafka's log lines, as tracing events. A fetch position reset
    /// because it was out of range means records were removed (retention)
    /// before this group consumed them: on an input topic they were never
    /// delivered, on a retry tier deferred deliveries are gone. That is
    /// logged as an error and counted, never left to a debug line.
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        use rdkafka::config::RDKafkaLogLevel as L;
        if fac == "OFFSET"
            && message.contains("offset reset")
            && matches!(
                level,
                L::Emerg | L::Alert | L::Critical | L::Error | L::Warning
            )
        {
            let topic = message.split(" [").next().unwrap_or_default().to_string();
            metrics::counter!(crate::metrics::names::OFFSET_RESETS, "topic" => topic).increment(1);
            tracing::error!(
                target: "librdkafka",
                detail = message,
                "fetch position out of range: records were removed before they were consumed (retention too short for the backlog)"
            );
            return;
        }
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => {
                tracing::error!(target: "librdkafka", "{fac} {message}")
            }
            L::Warning => tracing::warn!(target: "librdkafka", "{fac} {message}"),
            L::Notice | L::Info => tracing::info!(target: "librdkafka", "{fac} {message}"),
            L::Debug => tracing::debug!(target: "librdkafka", "{fac} {message}"),
        }
    }

    /// librdkafka's statistics (every `statistics.interval.ms`): fetch
    /// progress and consumer lag per assigned partition.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let now = Instant::now();
        for (topic, t) in &statistics.topics {
            let id = self.topics.id(topic);
            for (partition, p) in &t.partitions {
                if let Some(topic) = id
                    && *partition >= 0
                {
                    let position = [p.app_offset, p.committed_offset, p.lo_offset]
                        .into_iter()
                        .find(|o| *o >= 0)
                        .unwrap_or(0);
                    let id = PartitionId {
                        topic,
                        partition: *partition,
                    };
                    let fetching = p.fetch_state == "active";
                    self.progress
                        .observe(id, position, p.hi_offset, fetching, now);
                }
                crate::metrics::consumer_lag::observe(topic, *partition, p.consumer_lag);
            }
        }
    }
}

impl ConsumerContext for SourceContext {
    /// A revoke (or a rebalance error, after which librdkafka drops the
    /// whole assignment): the dispatcher settles the partitions (at once
    /// when they were lost: another member owns them already) and answers
    /// their final offsets, which are committed here before the partitions
    /// are handed over.
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let (partitions, lost) = match rebalance {
            Rebalance::Assign(_) => return,
            Rebalance::Revoke(tpl) => (self.ids(tpl), consumer.assignment_lost()),
            Rebalance::Error(error) => {
                tracing::warn!(%error, "rebalance error: dropping the assignment");
                let assigned = consumer.assignment().unwrap_or_default();
                (self.ids(&assigned), true)
            }
        };
        if partitions.is_empty() {
            return;
        }
        tracing::info!(
            partitions = partitions.len(),
            which = %self.named(&partitions),
            lost,
            "partitions revoked: draining"
        );
        let revoked = partitions_list(&self.topics, &partitions);
        crate::metrics::consumer_lag::revoked(&revoked);
        self.settle_and_commit(consumer, partitions, lost);
        // They leave the assignment unpaused: librdkafka keeps a pause the
        // application made across revoke and assign, while the dispatcher
        // starts every assignment with open gates, so a partition paused
        // now and assigned back later would never be read again. (Not
        // resumed at the assignment instead: a resume then races the start
        // of the partition's fetcher, which it can leave never started.)
        if let Err(e) = consumer.resume(&revoked) {
            tracing::warn!(error = %e, "resuming revoked partitions failed");
        }
    }

    /// An assignment: the dispatcher starts tracking the new partitions.
    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let partitions = self.ids(tpl);
            tracing::info!(
                partitions = partitions.len(),
                which = %self.named(&partitions),
                "partitions assigned"
            );
            crate::metrics::consumer_lag::assigned(tpl);
            self.joined.store(true, Ordering::Release);
            self.send(Inbound::Assigned(partitions));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: PartitionId = PartitionId {
        topic: 1,
        partition: 3,
    };

    #[test]
    fn a_partition_is_stuck_when_it_does_not_fetch_or_does_not_move_past_waiting_records() {
        let progress = FetchProgress::default();
        let t0 = Instant::now();
        let after = Duration::from_secs(15);
        let at = |s: u64| t0 + Duration::from_secs(s);
        // Caught up and fetching: never stuck.
        progress.observe(P, 100, 100, true, t0);
        assert!(!progress.get(P).unwrap().stuck(at(60), after));
        // Records arrive and the position moves: not stuck.
        progress.observe(P, 150, 300, true, at(10));
        assert!(!progress.get(P).unwrap().stuck(at(20), after));
        // The position stays while records wait: stuck once 15 s passed.
        assert!(progress.get(P).unwrap().stuck(at(25), after));
        // A fetcher that never runs is stuck even without a known high
        // watermark.
        progress.forget(P);
        progress.observe(P, 0, -1001, false, at(30));
        assert!(!progress.get(P).unwrap().stuck(at(40), after));
        assert!(progress.get(P).unwrap().stuck(at(45), after));
        // It starts: the clock starts over.
        progress.observe(P, 0, 10, true, at(46));
        assert!(!progress.get(P).unwrap().stuck(at(50), after));
    }
}
