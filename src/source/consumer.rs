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

use super::event::{Event, RecordHeaders, RecordKind};
use super::extract::{Coordinates, Extracted, Extractor, InvalidEvent};
use crate::commit::PartitionId;
use crate::config::Config;
use crate::retry::batch;
use crate::retry::record::RetryHeaders;
use crate::retry::record::header::BATCH;

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

    /// The input topics, in id order.
    pub fn inputs(&self) -> &[Arc<str>] {
        &self.names[..self.inputs]
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
    /// Consumed records, in the order they were polled.
    Records(Vec<Arc<Event>>),
}

/// Records handed to the dispatcher per channel message: one wake-up of the
/// dispatcher per batch instead of one per record.
const RECORDS_PER_MESSAGE: usize = 256;

/// A retry due further ahead than this (ms) pauses its partition as soon
/// as it is polled.
const EARLY_PAUSE_BEYOND_MS: i64 = 100;

/// Messages the inbound channel holds: with full batches, at most about a
/// thousand records wait between the poll thread and the dispatcher.
const INBOUND_MESSAGES: usize = 4;

/// The poll thread's side of the inbound channel. Records are sent in
/// batches; a rebalance message first flushes the records polled before it,
/// so the dispatcher always sees a partition's records before its revoke.
/// Only the poll thread uses it (from the poll loop and from the rebalance
/// callbacks that run inside `poll`), so its lock is never contended.
struct InboundSender {
    tx: mpsc::Sender<Inbound>,
    pending: std::sync::Mutex<Vec<Arc<Event>>>,
}

impl InboundSender {
    fn new(tx: mpsc::Sender<Inbound>) -> Self {
        Self {
            tx,
            pending: std::sync::Mutex::new(Vec::with_capacity(RECORDS_PER_MESSAGE)),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Event>>> {
        match self.pending.lock() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Adds a record; sends the batch once full. False when the dispatcher
    /// is gone.
    fn push(&self, event: Arc<Event>) -> bool {
        let full = {
            let mut pending = self.pending();
            pending.push(event);
            pending.len() >= RECORDS_PER_MESSAGE
        };
        !full || self.flush()
    }

    /// Sends what is pending. False when the dispatcher is gone.
    fn flush(&self) -> bool {
        let batch = std::mem::take(&mut *self.pending());
        batch.is_empty() || self.send_now(Inbound::Records(batch))
    }

    /// Sends a rebalance message after the records polled before it.
    fn send(&self, msg: Inbound) -> bool {
        self.flush() && self.send_now(msg)
    }

    /// Sends from the consumer thread; never from inside the async runtime
    /// (where blocking would stall a worker), which only happens if the
    /// consumer is dropped there, after the dispatcher is gone.
    fn send_now(&self, msg: Inbound) -> bool {
        tokio::runtime::Handle::try_current().is_err() && self.tx.blocking_send(msg).is_ok()
    }
}

/// Rebalance hooks of the input consumer.
pub struct SourceContext {
    inbound: Arc<InboundSender>,
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

    fn send(&self, msg: Inbound) -> bool {
        self.inbound.send(msg)
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
    ) -> Result<(Self, mpsc::Receiver<Inbound>)> {
        let (tx, rx) = mpsc::channel(INBOUND_MESSAGES);
        let inbound = Arc::new(InboundSender::new(tx));
        let context = SourceContext {
            inbound: Arc::clone(&inbound),
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
                .name("source-poll".into())
                .spawn(move || {
                    let reader = RecordReader {
                        topics: &topics,
                        extractors: &mut extractors,
                        config: &sources,
                        max_payload,
                    };
                    poll_loop(&consumer, reader, &stop, &inbound)
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

/// Extractors of the input topics (by topic id, so the poll loop finds one
/// without hashing a name per record); retry records are read with the
/// extractor of the topic they originally came from.
#[derive(Default)]
struct Extractors {
    /// Input topic `i` of the topic table uses `inputs[i]`.
    inputs: Vec<Extractor>,
    /// Topics named by old retry records that are no longer inputs.
    others: std::collections::HashMap<String, Extractor>,
}

impl Extractors {
    fn build(config: &Config, topic: &str) -> Result<Extractor> {
        let source = config.source_for(topic);
        Extractor::from_config(&source)
            .map_err(|(field, msg)| anyhow::anyhow!("sources `{topic}` {field}: {msg}"))
    }

    /// Adds the extractor of the next input topic.
    fn add_input(&mut self, config: &Config, topic: &str) -> Result<()> {
        self.inputs.push(Self::build(config, topic)?);
        Ok(())
    }

    /// The extractor of input topic `input` when given (a record of an input
    /// topic), else of the topic named `topic`: an input's, or one built on
    /// first use for a topic that is no longer a configured input (old retry
    /// records), falling back to the default preset.
    fn get(
        &mut self,
        config: &Config,
        topics: &TopicTable,
        input: Option<u16>,
        topic: &str,
    ) -> &mut Extractor {
        let id = input.or_else(|| topics.id(topic));
        if let Some(id) = id.map(usize::from).filter(|id| *id < self.inputs.len()) {
            return &mut self.inputs[id];
        }
        self.others.entry(topic.to_string()).or_insert_with(|| {
            Self::build(config, topic).unwrap_or_else(|_| Extractor::preset(Default::default()))
        })
    }
}

/// The fields of a retry record written by this version: its event id and
/// type travel in its headers, so its value is not parsed again (it was
/// valid JSON when first consumed). `None` for records without them.
fn retry_fields(headers: &RecordHeaders) -> Option<Extracted> {
    use crate::retry::record::header;
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .filter(|v| !v.is_empty())
            .map(str::to_string)
    };
    Some(Extracted {
        id: text(header::EVENT_ID)?,
        event_type: text(header::EVENT_TYPE)?,
        ..Extracted::default()
    })
}

/// A record as polled, copied out of librdkafka.
struct Record {
    topic: u16,
    partition: i32,
    offset: i64,
    key: Option<Bytes>,
    body: Bytes,
    headers: RecordHeaders,
}

impl Record {
    /// The event of this record, read from `topic`, consumed now.
    fn into_event(
        self,
        topic: Arc<str>,
        fields: Result<Extracted, InvalidEvent>,
        kind: RecordKind,
    ) -> Event {
        Event {
            topic,
            partition: PartitionId {
                topic: self.topic,
                partition: self.partition,
            },
            offset: self.offset,
            key: self.key,
            body: self.body,
            headers: self.headers,
            fields,
            consumed_at: Instant::now(),
            kind,
            paused_partition: false,
        }
    }
}

/// Turns polled records into [`Event`]s.
struct RecordReader<'a> {
    topics: &'a TopicTable,
    extractors: &'a mut Extractors,
    config: &'a Config,
    max_payload: usize,
}

impl RecordReader<'_> {
    /// The event of a polled record: an input record, a single retry, or a
    /// deferral batch.
    fn read(&mut self, record: Record) -> Event {
        let tier = self.topics.tier_of(record.topic);
        match tier {
            Some(tier) if record.headers.get(BATCH).is_some() => self.batch(record, tier),
            _ => self.event(record, tier),
        }
    }

    /// The event of an input record (`tier` `None`) or of a single retry
    /// record (or a deferral batch's entry) of tier `tier`.
    fn event(&mut self, record: Record, tier: Option<usize>) -> Event {
        let topic_name = self.topics.name(record.topic);
        let fields = match tier.and_then(|_| retry_fields(&record.headers)) {
            // A retry carries what its first consumption extracted.
            Some(fields) => Ok(fields),
            None => {
                let coords = Coordinates {
                    topic: topic_name,
                    partition: record.partition,
                    offset: record.offset,
                };
                let header = |name: &str| record.headers.get(name);
                let source_topic = match tier {
                    None => &**topic_name,
                    Some(_) => header(crate::retry::record::header::SOURCE)
                        .and_then(original_topic)
                        .unwrap_or(topic_name),
                };
                let input = tier.is_none().then_some(record.topic);
                let extractor = self
                    .extractors
                    .get(self.config, self.topics, input, source_topic);
                extractor.extract(&record.body, &header, &coords, self.max_payload)
            }
        };
        let event = record.into_event(Arc::clone(topic_name), fields, RecordKind::Input);
        match tier {
            None => event,
            Some(tier) => Event {
                kind: RecordKind::Retry {
                    tier,
                    headers: RetryHeaders::of(&event),
                },
                ..event
            },
        }
    }

    /// The event of a deferral batch record: its entries as retry events
    /// at its offset, or, when it cannot be read, a retry whose headers say
    /// what is wrong (it is dead-lettered as it is).
    fn batch(&mut self, record: Record, tier: usize) -> Event {
        let decoded = batch::decode(&record.body).map(|entries| {
            entries
                .into_iter()
                .map(|entry| {
                    let entry = Record {
                        topic: record.topic,
                        partition: record.partition,
                        offset: record.offset,
                        key: entry.key.map(Bytes::copy_from_slice),
                        body: record.body.slice(entry.value),
                        headers: RecordHeaders::from_pairs(entry.headers),
                    };
                    Arc::new(self.event(entry, Some(tier)))
                })
                .collect::<Vec<_>>()
        });
        let kind = match decoded {
            Ok(entries) => RecordKind::RetryBatch {
                tier,
                due_ms: entries.iter().filter_map(|e| e.due_ms()).max().unwrap_or(0),
                entries,
            },
            Err(problem) => RecordKind::Retry {
                tier,
                headers: Err(problem),
            },
        };
        let topic = Arc::clone(self.topics.name(record.topic));
        record.into_event(topic, Err(InvalidEvent::Batch), kind)
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

fn poll_loop(
    consumer: &BaseConsumer<SourceContext>,
    mut reader: RecordReader<'_>,
    stop: &AtomicBool,
    inbound: &InboundSender,
) {
    let topics = reader.topics;
    let mut last_error_log = Instant::now() - Duration::from_secs(60);
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
        let msg = match consumer.poll(wait) {
            None => {
                if !idle && !inbound.flush() {
                    break;
                }
                continue;
            }
            Some(Err(e)) => {
                if last_error_log.elapsed() > Duration::from_secs(5) {
                    tracing::warn!(error = %e, "consume error");
                    last_error_log = Instant::now();
                }
                continue;
            }
            Some(Ok(msg)) => msg,
        };
        let topic_name = msg.topic();
        let Some(topic) = topics.id(topic_name) else {
            continue;
        };
        let headers = match msg.headers() {
            Some(hs) => {
                RecordHeaders::from_pairs(hs.iter().map(|h| (h.key, h.value.unwrap_or_default())))
            }
            None => RecordHeaders::default(),
        };
        let body = Bytes::copy_from_slice(msg.payload().unwrap_or_default());
        let record = Record {
            topic,
            partition: msg.partition(),
            offset: msg.offset(),
            key: msg.key().map(Bytes::copy_from_slice),
            body,
            headers,
        };
        let mut event = reader.read(record);
        if event
            .due_ms()
            .is_some_and(|due| due > crate::retry::record::now_ms() + EARLY_PAUSE_BEYOND_MS)
        {
            // A retry that is not due for a while heads its partition until
            // it is: pause now, so librdkafka drops what it prefetched behind
            // it instead of this thread polling it only for the dispatcher to
            // hold. The dispatcher pauses it too (it owns pause state and
            // resumes when due); this only stops the flow sooner. (A retry
            // due within moments is left to the dispatcher, which holds what
            // follows it that long: no fetch again when it is due.)
            let tpl = partitions_list(topics, &[event.partition]);
            match consumer.pause(&tpl) {
                Ok(()) => event.paused_partition = true,
                Err(e) => tracing::debug!(error = %e, "pausing a retry partition early failed"),
            }
        }
        if !inbound.push(Arc::new(event)) {
            break;
        }
    }
}
