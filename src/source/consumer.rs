//! The source consumers: each instance is a member of two consumer groups,
//! `<group_id>` for the input topics and `<group_id>.retry` for the retry
//! tiers, each librdkafka consumer polled on its own thread.
//!
//! Two groups, not one member subscribed to everything: the
//! cooperative-sticky assignor balances the number of partitions per
//! member, not per topic, so one instance could end up with every input
//! partition while another reads only retries. One group per topic set
//! spreads each evenly, and a rebalance of the tiers moves no input
//! partition. (Two members of one group per instance would do the same on
//! Kafka, but some brokers, tansu 0.6 among them, complete no rebalance
//! when a second member joins.)
//!
//! Owns the Kafka handles of consuming: polling (records go to the
//! dispatcher through [`super::inbound`]), pause and resume, and commits of
//! the offsets the dispatcher hands it. What is committable is decided by
//! the dispatcher's ack tracker, never here.
//!
//! Why this file is long: the consumer's life (start, the poll threads, the
//! commit handles they share, close) is kept in one place, because the
//! threads and the handles must start and stop in one order.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use rdkafka::ClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};

use crate::commit::{CommitRefused, Committer, OffsetCommit};
use rdkafka::error::KafkaError;
use tokio::sync::mpsc;

use super::early_pause::EarlyPauses;
use super::hooks::{FetchProgress, SourceContext};
use super::inbound::{Arrival, INBOUND_MESSAGES, Inbound, InboundSender};
use super::poll::{ConsumerError, ConsumerQueue, Next};
use super::reader::{ConsumeClock, Extractors, Record, RecordReader};
use super::topics::{TopicTable, offsets_list, partitions_list};
use super::unreadable::UnreadableRecords;
use crate::config::Config;
use crate::core::{PartitionId, Polled};

/// One member of the group: a librdkafka consumer and its poll thread.
struct Member {
    consumer: Arc<BaseConsumer<SourceContext>>,
    thread: Option<thread::JoinHandle<()>>,
    /// Set once the member got its first assignment (possibly empty).
    joined: Arc<AtomicBool>,
}

/// The running source: the input member and, when there are retry tiers,
/// the tier member.
pub struct SourceConsumer {
    /// `[inputs]` or `[inputs, tiers]`.
    members: Vec<Member>,
    topics: TopicTable,
    stop: Arc<AtomicBool>,
    progress: Arc<FetchProgress>,
    members_of: Arc<MemberCommits>,
    committer: Committer,
}

/// Commits offsets (and pauses, resumes) through the member that reads
/// each partition.
struct MemberCommits {
    /// The members' consumers, `[inputs]` or `[inputs, tiers]`.
    consumers: Vec<Arc<BaseConsumer<SourceContext>>>,
    topics: TopicTable,
}

impl MemberCommits {
    /// The consumer of the member that reads `partition`'s topic.
    fn consumer_of(&self, partition: PartitionId) -> &Arc<BaseConsumer<SourceContext>> {
        let tier = self.topics.tier_of(partition.topic).is_some();
        &self.consumers[usize::from(tier).min(self.consumers.len() - 1)]
    }

    /// `items` split by member, in member order.
    fn by_member<T: Copy>(
        &self,
        items: &[T],
        partition: impl Fn(&T) -> PartitionId,
    ) -> Vec<(&Arc<BaseConsumer<SourceContext>>, Vec<T>)> {
        let mut out: Vec<(&Arc<BaseConsumer<SourceContext>>, Vec<T>)> = Vec::new();
        for item in items {
            let consumer = self.consumer_of(partition(item));
            match out.iter_mut().find(|(c, _)| Arc::ptr_eq(c, consumer)) {
                Some((_, list)) => list.push(*item),
                None => out.push((consumer, vec![*item])),
            }
        }
        out
    }
}

impl OffsetCommit for MemberCommits {
    fn commit(&self, offsets: &[(PartitionId, i64)]) -> Result<(), CommitRefused> {
        let mut failure: Option<CommitRefused> = None;
        for (consumer, list) in self.by_member(offsets, |(p, _)| *p) {
            if let Err(e) = consumer.commit(&offsets_list(&self.topics, &list), CommitMode::Sync) {
                let failed = failure.get_or_insert_with(|| CommitRefused {
                    error: e.to_string(),
                    partitions: Vec::new(),
                });
                failed.partitions.extend(list.iter().map(|(p, _)| *p));
            }
        }
        failure.map_or(Ok(()), Err)
    }
}

/// The consumer group of the retry tiers: `<group_id>.retry`.
pub fn retry_group(group_id: &str) -> String {
    format!("{group_id}.retry")
}

/// How long start-up waits for each broker answer while adopting tier
/// offsets.
const ADOPT_WAIT: Duration = Duration::from_secs(10);

/// Before the tier group `<group_id>.retry` first consumes, gives it the
/// tier offsets committed by `<group_id>` (versions before 0.2 read the
/// tiers in the input group): without them the tier group would start at
/// the beginning of every tier and send every retry kept there again. Does
/// nothing once the tier group has offsets of its own, or when the old
/// group has none; a refusal (the tier group already has members) is
/// logged and left alone.
fn adopt_tier_offsets(
    config: &Config,
    bootstrap: &str,
    consumer: &BaseConsumer<SourceContext>,
    tiers: &[String],
) {
    let mut all = rdkafka::TopicPartitionList::new();
    for topic in tiers {
        let Ok(md) = consumer.fetch_metadata(Some(topic), ADOPT_WAIT) else {
            return;
        };
        for t in md.topics() {
            for p in t.partitions() {
                all.add_partition(topic, p.id());
            }
        }
    }
    if all.count() == 0 {
        return;
    }
    let committed = |tpl: rdkafka::TopicPartitionList| -> Vec<(String, i32, i64)> {
        tpl.elements()
            .iter()
            .filter_map(|e| match e.offset() {
                rdkafka::Offset::Offset(o) if o >= 0 => {
                    Some((e.topic().to_string(), e.partition(), o))
                }
                _ => None,
            })
            .collect()
    };
    let Ok(own) = consumer.committed_offsets(all.clone(), ADOPT_WAIT) else {
        return;
    };
    if !committed(own).is_empty() {
        return;
    }
    let old: Option<BaseConsumer> =
        crate::kafka::consumer_config(config, bootstrap, &config.kafka.group_id)
            .create()
            .ok();
    let Some(old) = old else {
        return;
    };
    let Ok(theirs) = old.committed_offsets(all, ADOPT_WAIT) else {
        return;
    };
    let theirs = committed(theirs);
    if theirs.is_empty() {
        return;
    }
    let mut tpl = rdkafka::TopicPartitionList::new();
    for (topic, partition, offset) in &theirs {
        let _ = tpl.add_partition_offset(topic, *partition, rdkafka::Offset::Offset(*offset));
    }
    match consumer.commit(&tpl, CommitMode::Sync) {
        Ok(()) => tracing::info!(
            partitions = theirs.len(),
            from = %config.kafka.group_id,
            "retry tier offsets adopted from the input group"
        ),
        Err(e) => tracing::warn!(
            error = %e,
            from = %config.kafka.group_id,
            "could not adopt the retry tier offsets of the input group; the tiers are read from their committed offsets or the beginning"
        ),
    }
}

impl SourceConsumer {
    /// Subscribes one member to `config.kafka.topics` and one to the retry
    /// tiers of `topics`, and starts polling each on its own thread.
    /// Records and rebalances of both arrive on the returned receiver (in
    /// order per partition: a partition belongs to one member).
    pub fn start(
        config: &Config,
        bootstrap: &str,
        topics: TopicTable,
    ) -> Result<(Self, mpsc::Receiver<Inbound>)> {
        let (tx, rx) = mpsc::channel(INBOUND_MESSAGES);
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(FetchProgress::default());
        let names = |range: std::ops::Range<usize>| -> Vec<String> {
            topics.names()[range]
                .iter()
                .map(|n| n.to_string())
                .collect()
        };
        let inputs = topics.inputs().len();
        let mut subscriptions = vec![("input", names(0..inputs))];
        if topics.names().len() > inputs {
            subscriptions.push(("retry", names(inputs..topics.names().len())));
        }
        let mut members: Vec<Member> = Vec::with_capacity(subscriptions.len());
        for (role, subscription) in subscriptions {
            let joined = Arc::new(AtomicBool::new(false));
            let inbound = Arc::new(InboundSender::new(tx.clone()));
            let context = SourceContext::new(
                Arc::clone(&inbound),
                topics.clone(),
                config.delivery.drain_timeout.get() + Duration::from_secs(5),
                Arc::clone(&progress),
                Arc::clone(&joined),
            );
            let group = match role {
                "input" => config.kafka.group_id.clone(),
                _ => retry_group(&config.kafka.group_id),
            };
            let mut client = match role {
                "input" => crate::kafka::consumer_config(config, bootstrap, &group),
                _ => crate::kafka::retry_consumer_config(config, bootstrap, &group),
            };
            client.set("client.id", format!("hookstream-{role}"));
            let consumer: BaseConsumer<SourceContext> = client
                .create_with_context(context)
                .with_context(|| format!("creating the {role} consumer"))?;
            if role != "input" {
                adopt_tier_offsets(config, bootstrap, &consumer, &subscription);
            }
            let subscribed: Vec<&str> = subscription.iter().map(String::as_str).collect();
            consumer
                .subscribe(&subscribed)
                .with_context(|| format!("subscribing to {subscribed:?}"))?;
            let consumer = Arc::new(consumer);
            let mut extractors = Extractors::default();
            for name in topics.inputs() {
                extractors.add_input(config, name)?;
            }
            // The poll thread needs only the `[[sources]]` (for extractors of
            // topics met later), not the endpoints, which may be many.
            let sources = Config {
                sources: config.sources.clone(),
                ..Config::default()
            };
            let thread = {
                let consumer = Arc::clone(&consumer);
                let stop = Arc::clone(&stop);
                let topics = topics.clone();
                let max_payload = config.delivery.max_payload_bytes;
                thread::Builder::new()
                    .name(format!("{role}-poll"))
                    .spawn(move || {
                        let reader = RecordReader {
                            topics: &topics,
                            extractors: &mut extractors,
                            config: &sources,
                            max_payload,
                        };
                        poll_loop(&consumer, reader, &stop, &inbound)
                    })
                    .with_context(|| format!("spawning the {role} poll thread"))?
            };
            members.push(Member {
                consumer,
                thread: Some(thread),
                joined,
            });
        }
        let members_of = Arc::new(MemberCommits {
            consumers: members.iter().map(|m| Arc::clone(&m.consumer)).collect(),
            topics: topics.clone(),
        });
        let committer = Committer::start(Arc::clone(&members_of) as Arc<dyn OffsetCommit>)
            .context("spawning the committer thread")?;
        Ok((
            Self {
                members,
                topics,
                stop,
                progress,
                members_of,
                committer,
            },
            rx,
        ))
    }

    /// The interned topics.
    pub fn topics(&self) -> &TopicTable {
        &self.topics
    }

    /// Where librdkafka says each partition's fetching stands.
    pub fn progress(&self) -> &FetchProgress {
        &self.progress
    }

    /// Commits offsets through these consumers.
    pub fn committer(&self) -> &Committer {
        &self.committer
    }

    /// Whether every member got its first assignment: the instance has
    /// joined its group.
    pub fn joined(&self) -> bool {
        self.members
            .iter()
            .all(|m| m.joined.load(Ordering::Acquire))
    }

    /// Stops fetching `partitions`.
    pub fn pause(&self, partitions: &[PartitionId]) -> Result<(), KafkaError> {
        for (consumer, list) in self.members_of.by_member(partitions, |p| *p) {
            consumer.pause(&partitions_list(&self.topics, &list))?;
        }
        Ok(())
    }

    /// Fetches `partitions` again.
    pub fn resume(&self, partitions: &[PartitionId]) -> Result<(), KafkaError> {
        for (consumer, list) in self.members_of.by_member(partitions, |p| *p) {
            consumer.resume(&partitions_list(&self.topics, &list))?;
        }
        Ok(())
    }

    /// Asks the poll threads to stop taking records.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Closes the consumers on a thread of their own and waits at most
    /// `limit`; `false` when they did not close in time. librdkafka was
    /// seen blocking for ever in a close (the revoke of its rebalance
    /// callback waiting on a client main thread that had already ended;
    /// CI, two instances in one group stopping). Offsets are committed
    /// before this, so giving up loses only the clean leave: the group
    /// notices the member gone after its session timeout.
    pub async fn close_within(self, limit: Duration) -> bool {
        let (done, closed) = tokio::sync::oneshot::channel();
        let spawned = thread::Builder::new()
            .name("consumer-close".into())
            .spawn(move || {
                self.close();
                let _ = done.send(());
            });
        if let Err(e) = spawned {
            // The consumer went down with the closure: its threads stop on
            // the flag its drop sets, without the final commit call.
            tracing::warn!(error = %e, "no thread to close the Kafka consumer on");
            return false;
        }
        tokio::time::timeout(limit, closed).await.is_ok()
    }

    /// Stops polling and closes the consumers (blocking; call off the
    /// runtime).
    pub fn close(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.committer.stop();
        for member in &mut self.members {
            if let Some(t) = member.thread.take() {
                let _ = t.join();
            }
        }
    }
}

impl Drop for SourceConsumer {
    fn drop(&mut self) {
        // Without close(): stop the threads, which drop the last handles
        // and close the consumers without committing.
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The consumer thread's loop: polls, turns records into [`Polled`]
/// items and hands them to the dispatcher until `stop` or the dispatcher
/// goes away.
fn poll_loop(
    consumer: &BaseConsumer<SourceContext>,
    mut reader: RecordReader<'_>,
    stop: &AtomicBool,
    inbound: &InboundSender,
) {
    let topics = reader.topics;
    let Some(mut queue) = ConsumerQueue::of(consumer) else {
        tracing::error!("the consumer has no consumer queue; nothing is consumed");
        return;
    };
    let mut unreadable = UnreadableRecords::default();
    let mut errors = ErrorLog::default();
    let mut clock = ConsumeClock::default();
    let mut early = EarlyPauses::default();
    while !stop.load(Ordering::Relaxed) {
        // Waits for a record only when nothing is pending; otherwise takes
        // what librdkafka already has and hands the batch over when it
        // runs dry.
        let idle = inbound.pending().is_empty();
        let wait = if idle {
            Duration::from_millis(100)
        } else {
            Duration::ZERO
        };
        if idle {
            clock.waited();
        }
        let msg = match queue.poll(wait) {
            Next::Nothing => {
                if !idle && !inbound.flush() {
                    break;
                }
                continue;
            }
            Next::Revoked(partitions) => {
                forget_revoked(&mut unreadable, topics, partitions);
                continue;
            }
            Next::Error(e) => {
                // A record librdkafka cannot decode: a stand-in goes to the
                // dispatcher (which dead-letters it) and the partition moves
                // on.
                if let Some(placeholder) = unreadable.placeholder(consumer, topics, &e) {
                    let placeholder = Polled::Unreadable(Arc::new(placeholder));
                    if !inbound.push(Arrival::Record(placeholder)) {
                        break;
                    }
                } else {
                    errors.report(consumer, &e);
                }
                continue;
            }
            Next::Record(msg) => msg,
        };
        let Some(topic) = topics.id_of_bytes(msg.topic_bytes()) else {
            continue;
        };
        let record = Record {
            topic,
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg.key().map(Bytes::copy_from_slice),
            body: Bytes::copy_from_slice(msg.payload()),
            headers: msg.headers(),
            consumed_at: clock.stamp(),
        };
        drop(msg);
        unreadable.read(
            PartitionId {
                topic,
                partition: record.partition,
            },
            record.offset,
        );
        let polled = reader.read(record);
        // The clock is read for retries only.
        let early = polled.due_ms().is_some_and(|due| {
            early.needed(
                queue.batches(),
                polled.partition(),
                due,
                crate::core::now_ms(),
            )
        });
        if !hand_over(consumer, topics, inbound, polled, early) {
            break;
        }
    }
}

/// Forgets the unreadable-record state of revoked partitions (`None`: all).
fn forget_revoked(
    unreadable: &mut UnreadableRecords,
    topics: &TopicTable,
    partitions: Option<Vec<(String, i32)>>,
) {
    match partitions {
        None => unreadable.forget(None),
        Some(list) => {
            for (topic, partition) in list {
                if let Some(topic) = topics.id(&topic) {
                    unreadable.forget(Some(PartitionId { topic, partition }));
                }
            }
        }
    }
}

/// Consume errors that are about no one record, logged without flooding.
#[derive(Debug)]
struct ErrorLog {
    /// When a per-partition error was last logged.
    last: Instant,
}

impl Default for ErrorLog {
    fn default() -> Self {
        Self {
            last: Instant::now() - Duration::from_secs(60),
        }
    }
}

impl ErrorLog {
    /// Reports `e`: a global error to the member's context (as
    /// `BaseConsumer::poll` would), a fatal one as an error, a partition's
    /// at most once per 5 s.
    fn report(&mut self, consumer: &BaseConsumer<SourceContext>, e: &ConsumerError) {
        if e.at.is_none() && !e.fatal {
            consumer
                .context()
                .error(KafkaError::Global(e.code), &e.text);
        } else if e.fatal {
            tracing::error!(code = %e.code, error = %e.text, "fatal consume error");
        } else if self.last.elapsed() > Duration::from_secs(5) {
            let at =
                e.at.as_ref()
                    .map(|(t, p, o)| format!("{t}[{p}]@{o}"))
                    .unwrap_or_default();
            tracing::warn!(code = %e.code, error = %e.text, at, "consume error");
            self.last = Instant::now();
        }
    }
}

/// Hands `polled` to the dispatcher; false once the dispatcher is gone.
///
/// A retry that is not due for a while heads its partition until it is:
/// with `pause_early`, pause now, so librdkafka drops what it prefetched
/// behind it instead of this thread polling it only for the dispatcher to
/// hold. The dispatcher pauses it too (it owns pause state and resumes
/// when due); this only stops the flow sooner. (A retry due within moments
/// is left to the dispatcher, which holds what follows it that long: no
/// fetch again when it is due.)
fn hand_over(
    consumer: &BaseConsumer<SourceContext>,
    topics: &TopicTable,
    inbound: &InboundSender,
    polled: Polled,
    pause_early: bool,
) -> bool {
    if pause_early {
        let partition = polled.partition();
        let tpl = partitions_list(topics, &[partition]);
        match consumer.pause(&tpl) {
            Ok(()) => {
                if !inbound.push(Arrival::PausedEarly(partition)) {
                    return false;
                }
            }
            Err(e) => tracing::debug!(error = %e, "pausing a retry partition early failed"),
        }
    }
    inbound.push(Arrival::Record(polled))
}
