//! The input consumer: one librdkafka group consumer polled on its own
//! thread, turning records into [`Event`]s and rebalances into messages.
//!
//! Owns polling, extraction and the rebalance handshake. It never decides
//! what is committed: on a revoke it asks the dispatcher (which owns the ack
//! tracker) for the final offsets, waits for the answer (the dispatcher
//! drains the partitions first, bounded by a deadline), commits them
//! synchronously, and only then lets the rebalance proceed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio::sync::mpsc;

use super::event::{Event, RecordKind};
use super::extract::{Coordinates, Extractor};
use crate::commit::PartitionId;
use crate::config::Config;
use crate::retry::record::RetryHeaders;

/// Interned topic names: a record's topic becomes a small number. Input
/// topics come first, then the retry tiers, shortest first.
#[derive(Debug, Clone, Default)]
pub struct TopicTable {
    names: Vec<Arc<str>>,
    inputs: usize,
}

impl TopicTable {
    /// A table of input topics followed by retry-tier topics.
    pub fn new(
        inputs: impl IntoIterator<Item = String>,
        tiers: impl IntoIterator<Item = String>,
    ) -> Self {
        let mut names: Vec<Arc<str>> = inputs.into_iter().map(Arc::from).collect();
        let inputs = names.len();
        names.extend(tiers.into_iter().map(Arc::from));
        Self { names, inputs }
    }

    /// The retry tier of topic `id`, if it is one.
    pub fn tier_of(&self, id: u16) -> Option<usize> {
        (id as usize).checked_sub(self.inputs)
    }

    /// The id of `name`.
    pub fn id(&self, name: &str) -> Option<u16> {
        self.names
            .iter()
            .position(|n| &**n == name)
            .map(|i| i as u16)
    }

    /// The name of `id`.
    pub fn name(&self, id: u16) -> &Arc<str> {
        &self.names[id as usize]
    }

    /// All names.
    pub fn names(&self) -> &[Arc<str>] {
        &self.names
    }
}

/// Final offsets of revoked partitions, sent back by the dispatcher.
pub type RevokeReply = std::sync::mpsc::Sender<Vec<(PartitionId, i64)>>;

/// What the consumer thread tells the dispatcher, in order.
#[derive(Debug)]
pub enum Inbound {
    /// Partitions newly assigned: start tracking them.
    Assigned(Vec<PartitionId>),
    /// Partitions being revoked: settle them and reply with final offsets.
    Revoke {
        /// The revoked partitions.
        partitions: Vec<PartitionId>,
        /// Where to send the final offsets.
        reply: RevokeReply,
    },
    /// A consumed record.
    Record(Arc<Event>),
}

/// Rebalance hooks of the input consumer.
pub struct SourceContext {
    inbound: mpsc::Sender<Inbound>,
    topics: TopicTable,
    revoke_wait: Duration,
}

impl SourceContext {
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

    /// Sends from the consumer thread; never from inside the async runtime
    /// (where blocking would stall a worker), which only happens if the
    /// consumer is dropped there, after the dispatcher is gone.
    fn send(&self, msg: Inbound) -> bool {
        tokio::runtime::Handle::try_current().is_err() && self.inbound.blocking_send(msg).is_ok()
    }
}

impl ClientContext for SourceContext {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "kafka consumer error");
    }

    /// librdkafka's statistics (every `statistics.interval.ms`): consumer
    /// lag per assigned partition.
    fn stats(&self, statistics: rdkafka::Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if *partition >= 0 && p.consumer_lag >= 0 {
                    metrics::gauge!(
                        crate::metrics::names::CONSUMER_LAG,
                        "topic" => topic.clone(),
                        "partition" => partition.to_string()
                    )
                    .set(p.consumer_lag as f64);
                }
            }
        }
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let partitions = self.ids(tpl);
        tracing::info!(
            partitions = partitions.len(),
            "partitions revoked: draining"
        );
        let (reply, answer) = std::sync::mpsc::channel();
        if !self.send(Inbound::Revoke { partitions, reply }) {
            return;
        }
        match answer.recv_timeout(self.revoke_wait) {
            Ok(offsets) if !offsets.is_empty() => {
                let tpl = offsets_list(&self.topics, &offsets);
                if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
                    tracing::warn!(error = %e, "committing revoked partitions failed; their records will be delivered again");
                }
            }
            Ok(_) => {}
            Err(_) => tracing::warn!(
                "no drain answer for revoked partitions; their in-flight records will be delivered again"
            ),
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let partitions = self.ids(tpl);
            tracing::info!(partitions = partitions.len(), "partitions assigned");
            self.send(Inbound::Assigned(partitions));
        }
    }
}

/// A topic partition list of `(partition, offset)` pairs.
pub fn offsets_list(topics: &TopicTable, offsets: &[(PartitionId, i64)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::with_capacity(offsets.len());
    for (p, offset) in offsets {
        // Adding an offset to a fresh list cannot fail for a valid offset.
        let _ =
            tpl.add_partition_offset(topics.name(p.topic), p.partition, Offset::Offset(*offset));
    }
    tpl
}

/// A partition list without offsets (for pause/resume).
pub fn partitions_list(topics: &TopicTable, partitions: &[PartitionId]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::with_capacity(partitions.len());
    for p in partitions {
        tpl.add_partition(topics.name(p.topic), p.partition);
    }
    tpl
}

/// The running input consumer.
pub struct SourceConsumer {
    consumer: Arc<BaseConsumer<SourceContext>>,
    topics: TopicTable,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl SourceConsumer {
    /// Subscribes to `config.kafka.topics` and starts polling on a thread.
    /// Records and rebalances arrive on the returned receiver.
    pub fn start(
        config: &Config,
        bootstrap: &str,
        topics: TopicTable,
        inbound_capacity: usize,
    ) -> Result<(Self, mpsc::Receiver<Inbound>)> {
        let (tx, rx) = mpsc::channel(inbound_capacity);
        let context = SourceContext {
            inbound: tx.clone(),
            topics: topics.clone(),
            revoke_wait: config.delivery.drain_timeout.get() + Duration::from_secs(5),
        };
        let consumer: BaseConsumer<SourceContext> =
            crate::kafka::consumer_config(config, bootstrap, &config.kafka.group_id)
                .create_with_context(context)
                .context("creating the input consumer")?;
        let names: Vec<&str> = topics.names().iter().map(|n| &**n).collect();
        consumer
            .subscribe(&names)
            .with_context(|| format!("subscribing to {names:?}"))?;
        let consumer = Arc::new(consumer);
        let stop = Arc::new(AtomicBool::new(false));
        let mut extractors = Extractors::default();
        for topic in &config.kafka.topics {
            extractors.add(config, topic)?;
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
                .name("source-poll".into())
                .spawn(move || {
                    poll_loop(
                        &consumer,
                        &topics,
                        &mut extractors,
                        &sources,
                        max_payload,
                        &stop,
                        &tx,
                    )
                })
                .context("spawning the consumer thread")?
        };
        Ok((
            Self {
                consumer,
                topics,
                stop,
                thread: Some(thread),
            },
            rx,
        ))
    }

    /// The interned input topics.
    pub fn topics(&self) -> &TopicTable {
        &self.topics
    }

    /// The librdkafka consumer (commits, pause/resume).
    pub fn consumer(&self) -> &BaseConsumer<SourceContext> {
        &self.consumer
    }

    /// Asks the polling thread to stop taking records.
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// Stops polling and closes the consumer (blocking; call off the runtime).
    pub fn close(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for SourceConsumer {
    fn drop(&mut self) {
        // Without close(): stop the thread, which drops the last handle and
        // closes the consumer without committing.
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Extractors by input topic name; retry records are read with the
/// extractor of the topic they originally came from.
#[derive(Default)]
struct Extractors {
    by_topic: std::collections::HashMap<String, Extractor>,
}

impl Extractors {
    fn add(&mut self, config: &Config, topic: &str) -> Result<()> {
        let source = config.source_for(topic);
        let extractor = Extractor::from_config(&source)
            .map_err(|(field, msg)| anyhow::anyhow!("sources `{topic}` {field}: {msg}"))?;
        self.by_topic.insert(topic.to_string(), extractor);
        Ok(())
    }

    /// The extractor of `topic`, built on first use for topics that are no
    /// longer configured inputs (old retry records).
    fn get(&mut self, config: &Config, topic: &str) -> &mut Extractor {
        if !self.by_topic.contains_key(topic) && self.add(config, topic).is_err() {
            let _ = self.add(config, "");
            let fallback = self
                .by_topic
                .remove("")
                .unwrap_or_else(|| Extractor::preset(Default::default()));
            self.by_topic.insert(topic.to_string(), fallback);
        }
        match self.by_topic.get_mut(topic) {
            Some(e) => e,
            None => unreachable!("inserted above"),
        }
    }
}

/// The input topic named in a retry record's `hookstream-source`.
fn original_topic(source: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(source).ok()?;
    let mut parts = text.rsplitn(3, '/');
    parts.next()?;
    parts.next()?;
    parts.next()
}

#[allow(clippy::too_many_arguments)]
fn poll_loop(
    consumer: &BaseConsumer<SourceContext>,
    topics: &TopicTable,
    extractors: &mut Extractors,
    config: &Config,
    max_payload: usize,
    stop: &AtomicBool,
    tx: &mpsc::Sender<Inbound>,
) {
    let mut last_error_log = Instant::now() - Duration::from_secs(60);
    while !stop.load(Ordering::Relaxed) {
        let msg = match consumer.poll(Duration::from_millis(100)) {
            None => continue,
            Some(Err(e)) => {
                if last_error_log.elapsed() > Duration::from_secs(5) {
                    tracing::warn!(error = %e, "consume error");
                    last_error_log = Instant::now();
                }
                continue;
            }
            Some(Ok(msg)) => msg,
        };
        let Some(topic) = topics.id(msg.topic()) else {
            continue;
        };
        let headers: Vec<(String, Bytes)> = msg
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| {
                        (
                            h.key.to_string(),
                            Bytes::copy_from_slice(h.value.unwrap_or_default()),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        let body = Bytes::copy_from_slice(msg.payload().unwrap_or_default());
        let coords = Coordinates {
            topic: msg.topic(),
            partition: msg.partition(),
            offset: msg.offset(),
        };
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_ref())
        };
        let tier = topics.tier_of(topic);
        let source_topic = match tier {
            None => msg.topic(),
            Some(_) => header(crate::retry::record::header::SOURCE)
                .and_then(original_topic)
                .unwrap_or(msg.topic()),
        };
        let fields =
            extractors
                .get(config, source_topic)
                .extract(&body, &header, &coords, max_payload);
        let event = Event {
            topic: Arc::clone(topics.name(topic)),
            partition: PartitionId {
                topic,
                partition: msg.partition(),
            },
            offset: msg.offset(),
            key: msg.key().map(Bytes::copy_from_slice),
            body,
            headers,
            fields,
            consumed_at: Instant::now(),
            kind: RecordKind::Input,
        };
        let event = match tier {
            None => event,
            Some(tier) => Event {
                kind: RecordKind::Retry {
                    tier,
                    headers: RetryHeaders::of(&event),
                },
                ..event
            },
        };
        if tx.blocking_send(Inbound::Record(Arc::new(event))).is_err() {
            break;
        }
    }
}
