//! Durable outcome records: retries to `<prefix>.retry.<tier>` and dead
//! letters to `<prefix>.dlq`.
//!
//! A write is submitted without waiting and carries a [`Completion`] that
//! runs once the broker acknowledged the record (idempotent producer,
//! `acks=all`). Completions settle offsets, so an offset is never committed
//! for a record whose retry or dead letter was not stored. There is no task
//! or future per write: librdkafka batches the records, and one thread
//! serves the delivery reports and runs the completions. A failed write is
//! sent again after a pause, for as long as it takes; only a size refusal
//! changes what is written (a retry too large for its tier is dead-lettered
//! as `exhausted`; a dead letter too large for the DLQ loses its value, and
//! its headers point at the source record).
//!
//! Owns the producer of outcome records and nothing else: what to write and
//! what a completion does are the callers' business.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::mpsc;

use super::backoff::RetryTiers;
use super::record::{
    History, dead_letter_headers, endpoint_partition, header, now_ms, retry_headers,
};
use crate::config::Config;
use crate::source::event::Event;

/// Where a record was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// On the retry tier of this index.
    Retry {
        /// Tier index.
        tier: usize,
    },
    /// On the DLQ (asked for, or a retry too large for its tier).
    DeadLetter,
}

/// What runs once a record is stored: on the delivery-report thread, so it
/// must be quick and must not block (settle an ack token, count).
pub type Completion = Box<dyn FnOnce(Stored) + Send + Sync>;

/// Which topic a write goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Tier(usize),
    Dlq,
}

/// A write in flight: librdkafka holds it as the record's opaque until the
/// delivery report hands it back.
struct Write {
    target: Target,
    event: Arc<Event>,
    /// False once the value was refused as too large for the DLQ.
    with_value: bool,
    /// The dead-letter reason (DLQ writes), for the metric and the summary.
    reason: Option<Box<str>>,
    /// Failed sends so far (for the pause before the next).
    failures: u32,
    /// The tier partition of the record's endpoint (`None`: by key).
    partition: Option<i32>,
    done: Completion,
}

/// A write to send again after `delay`, with the headers it had.
struct Resend {
    write: Box<Write>,
    headers: Option<OwnedHeaders>,
    delay: Duration,
}

/// The delivery reports of outcome records.
struct WriteContext {
    resend: mpsc::UnboundedSender<Resend>,
    dead_since_summary: Arc<Mutex<BTreeMap<String, u64>>>,
    /// When the last failure was logged (failures are logged at most every
    /// few seconds, not once per record).
    last_warning: Mutex<Option<Instant>>,
}

impl ClientContext for WriteContext {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "kafka producer error (retry/DLQ writes)");
    }
}

impl ProducerContext for WriteContext {
    type DeliveryOpaque = Box<Write>;

    fn delivery(&self, result: &DeliveryResult<'_>, write: Box<Write>) {
        match result {
            Ok(_) => self.stored(*write),
            Err((error, message)) => {
                let headers = message.headers().map(|h| h.detach());
                self.failed(write, headers, error, message.topic());
            }
        }
    }
}

impl WriteContext {
    fn stored(&self, write: Write) {
        let Write {
            target,
            reason,
            done,
            ..
        } = write;
        let stored = match target {
            Target::Tier(tier) => Stored::Retry { tier },
            Target::Dlq => {
                let reason = reason.as_deref().unwrap_or("unknown");
                crate::metrics::dead_letter(reason);
                if let Ok(mut c) = self.dead_since_summary.lock() {
                    *c.entry(reason.to_string()).or_default() += 1;
                }
                Stored::DeadLetter
            }
        };
        done(stored);
    }

    fn failed(
        &self,
        mut write: Box<Write>,
        headers: Option<OwnedHeaders>,
        error: &KafkaError,
        topic: &str,
    ) {
        let too_large = matches!(
            error,
            KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)
        );
        if too_large && write.with_value {
            let headers = headers.unwrap_or_default();
            let headers = match write.target {
                Target::Tier(_) => {
                    // Too large for its tier: dead-lettered as exhausted,
                    // with the headers it has and the reason.
                    write.target = Target::Dlq;
                    write.reason = Some("exhausted".into());
                    let now = now_ms().to_string();
                    headers
                        .insert(Header {
                            key: header::REASON,
                            value: Some("exhausted"),
                        })
                        .insert(Header {
                            key: header::DEAD_MS,
                            value: Some(now.as_str()),
                        })
                }
                Target::Dlq => {
                    tracing::warn!(source = %write.event.source_coordinates(), size = write.event.body.len(),
                        "event too large for the DLQ topic: dead-lettering it without its value");
                    write.with_value = false;
                    let note = format!(
                        "value of {} bytes omitted: too large for the DLQ topic",
                        write.event.body.len()
                    );
                    with_note(&headers, &note)
                }
            };
            let _ = self.resend.send(Resend {
                write,
                headers: Some(headers),
                delay: Duration::ZERO,
            });
            return;
        }
        if matches!(
            error,
            KafkaError::MessageProduction(RDKafkaErrorCode::UnknownPartition)
        ) && write.partition.take().is_some()
        {
            // The tier has fewer partitions than last seen (recreated):
            // placed by key instead, at once.
            let _ = self.resend.send(Resend {
                write,
                headers,
                delay: Duration::ZERO,
            });
            return;
        }
        write.failures += 1;
        let delay = resend_delay(write.failures);
        self.warn(error, topic);
        let _ = self.resend.send(Resend {
            write,
            headers,
            delay,
        });
    }

    fn warn(&self, error: &KafkaError, topic: &str) {
        let Ok(mut last) = self.last_warning.lock() else {
            return;
        };
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
            *last = Some(Instant::now());
            tracing::warn!(%error, topic, "outcome write failed; retrying (the offset stays uncommitted)");
        }
    }
}

/// `headers` with `note` added to `hookstream-last-error`.
fn with_note(headers: &OwnedHeaders, note: &str) -> OwnedHeaders {
    let mut out = OwnedHeaders::new_with_capacity(headers.count() + 1);
    let mut last_error = None;
    for h in headers.iter() {
        if h.key == header::LAST_ERROR {
            last_error = h.value.map(String::from_utf8_lossy);
        } else {
            out = out.insert(h);
        }
    }
    let text = match last_error.filter(|e| !e.is_empty()) {
        Some(e) => format!("{e}; {note}"),
        None => note.to_string(),
    };
    out.insert(Header {
        key: header::LAST_ERROR,
        value: Some(text.as_str()),
    })
}

/// Pause before sending a write again after `failures` failures: 100 ms,
/// doubling, at most 10 s.
fn resend_delay(failures: u32) -> Duration {
    Duration::from_millis(100u64 << failures.saturating_sub(1).min(7)).min(Duration::from_secs(10))
}

/// How long [`OutcomeWriter::start`] waits for the tiers' partition counts.
const PARTITIONS_WAIT: Duration = Duration::from_secs(2);

/// How often the partition counts of the tier topics are looked up again.
const PARTITIONS_REFRESH: Duration = Duration::from_secs(60);

/// Looks up how many partitions each tier topic has; returns whether every
/// count is known. A topic it cannot see keeps its last count (0: records
/// go by key).
fn learn_partitions(
    producer: &BaseProducer<WriteContext>,
    topics: &[String],
    counts: &[AtomicI32],
) -> bool {
    for (topic, count) in topics.iter().zip(counts) {
        match producer
            .client()
            .fetch_metadata(Some(topic), Duration::from_secs(5))
        {
            Ok(metadata) => {
                let found = metadata
                    .topics()
                    .iter()
                    .find(|t| t.name() == topic && t.error().is_none())
                    .map_or(0, |t| t.partitions().len() as i32);
                if found > 0 {
                    count.store(found, Ordering::Relaxed);
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, topic, "looking up the partitions of a retry tier")
            }
        }
    }
    counts.iter().all(|c| c.load(Ordering::Relaxed) > 0)
}

/// Pause after librdkafka refused a record because its queue is full.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(10);

/// The producer and what it writes to. Shared by every clone of the
/// writer; dropping the last one stops its threads.
struct Inner {
    producer: Arc<BaseProducer<WriteContext>>,
    dlq_topic: String,
    tiers: RetryTiers,
    /// Partitions of each tier topic as last seen in the cluster's
    /// metadata (0 until known: records are then placed by key).
    tier_partitions: Arc<[AtomicI32]>,
    resend: mpsc::UnboundedSender<Resend>,
    dead_since_summary: Arc<Mutex<BTreeMap<String, u64>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
    }
}

impl Inner {
    fn topic(&self, target: Target) -> &str {
        match target {
            Target::Tier(tier) => self.tiers.topic(tier),
            Target::Dlq => &self.dlq_topic,
        }
    }

    /// Hands a write to librdkafka; what it refuses at once comes back
    /// through the resend queue.
    fn send(&self, write: Box<Write>, headers: Option<OwnedHeaders>) {
        let event = Arc::clone(&write.event);
        let value: &[u8] = if write.with_value { &event.body } else { &[] };
        let topic = self.topic(write.target);
        let mut record =
            BaseRecord::<[u8], [u8], Box<Write>>::with_opaque_to(topic, write).payload(value);
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        if let Some(key) = &event.key {
            record = record.key(key.as_ref());
        }
        if let Some(partition) = record.delivery_opaque.partition {
            record = record.partition(partition);
        }
        if let Err((error, record)) = self.producer.send(record) {
            let mut write = record.delivery_opaque;
            let delay = match error {
                KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull) => QUEUE_FULL_PAUSE,
                _ => {
                    write.failures += 1;
                    self.producer.context().warn(&error, topic);
                    resend_delay(write.failures)
                }
            };
            let _ = self.resend.send(Resend {
                write,
                headers: record.headers,
                delay,
            });
        }
    }
}

/// Writes retry and DLQ records durably. Cheap to clone.
#[derive(Clone)]
pub struct OutcomeWriter {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for OutcomeWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutcomeWriter")
            .field("dlq_topic", &self.inner.dlq_topic)
            .field("tiers", &self.inner.tiers)
            .finish()
    }
}

impl OutcomeWriter {
    /// A writer with its own idempotent `acks=all` producer, its
    /// delivery-report thread and its resend task (on the current runtime).
    /// Waits briefly (at most [`PARTITIONS_WAIT`]) to learn how many
    /// partitions each tier has, so that retries go to their endpoint's
    /// partition from the first; until then they are placed by key.
    pub async fn start(
        config: &Config,
        bootstrap: &str,
        dlq_topic: String,
        tiers: RetryTiers,
    ) -> Result<Self> {
        let (resend_tx, resend_rx) = mpsc::unbounded_channel();
        let dead_since_summary = Arc::default();
        let context = WriteContext {
            resend: resend_tx.clone(),
            dead_since_summary: Arc::clone(&dead_since_summary),
            last_warning: Mutex::new(None),
        };
        let producer: BaseProducer<WriteContext> =
            crate::kafka::durable_producer_config(config, bootstrap)
                .create_with_context(context)
                .context("creating the retry/DLQ producer")?;
        let producer = Arc::new(producer);
        let stop = Arc::new(AtomicBool::new(false));
        let tier_partitions: Arc<[AtomicI32]> = tiers.topics().map(|_| AtomicI32::new(0)).collect();
        {
            let producer = Arc::clone(&producer);
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("outcome-reports".into())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        producer.poll(Duration::from_millis(100));
                    }
                })
                .context("spawning the delivery-report thread")?;
        }
        {
            // Its own thread: a metadata request can take seconds while a
            // broker is away, and delivery reports must not wait for it.
            let producer = Arc::clone(&producer);
            let stop = Arc::clone(&stop);
            let topics: Vec<String> = tiers.topics().map(str::to_string).collect();
            let counts = Arc::clone(&tier_partitions);
            std::thread::Builder::new()
                .name("tier-partitions".into())
                .spawn(move || {
                    while !stop.load(Ordering::Acquire) {
                        let known = learn_partitions(&producer, &topics, &counts);
                        let wait = if known {
                            PARTITIONS_REFRESH
                        } else {
                            Duration::from_secs(1)
                        };
                        let until = Instant::now() + wait;
                        while Instant::now() < until && !stop.load(Ordering::Acquire) {
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    }
                })
                .context("spawning the tier-partitions thread")?;
        }
        let inner = Arc::new(Inner {
            producer,
            dlq_topic,
            tiers,
            tier_partitions,
            resend: resend_tx,
            dead_since_summary,
            stop,
        });
        tokio::spawn(resend_loop(Arc::downgrade(&inner), resend_rx));
        let waited = Instant::now();
        while waited.elapsed() < PARTITIONS_WAIT
            && inner
                .tier_partitions
                .iter()
                .any(|c| c.load(Ordering::Relaxed) == 0)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(Self { inner })
    }

    /// Stops serving delivery reports without waiting for writes in
    /// flight: they never complete, so their offsets stay uncommitted (what
    /// a crash does). Used when the pipeline is aborted or has shut down.
    pub fn close(&self) {
        self.inner.stop.store(true, Ordering::Release);
    }

    /// Logs one line summarising the dead letters written since the last
    /// call (nothing when there were none): never one line per event.
    pub fn log_dead_letter_summary(&self, period: Duration) {
        let counts = match self.inner.dead_since_summary.lock() {
            Ok(mut c) => std::mem::take(&mut *c),
            Err(_) => return,
        };
        if counts.is_empty() {
            return;
        }
        let total: u64 = counts.values().sum();
        let reasons = counts
            .iter()
            .map(|(r, n)| format!("{r}={n}"))
            .collect::<Vec<_>>()
            .join(", ");
        tracing::warn!(total, %reasons, topic = %self.inner.dlq_topic, every_s = period.as_secs(), "events dead-lettered since the last summary");
    }

    /// The retry tiers.
    pub fn tiers(&self) -> &RetryTiers {
        &self.inner.tiers
    }

    /// The DLQ topic.
    pub fn dlq_topic(&self) -> &str {
        &self.inner.dlq_topic
    }

    /// Dead-letters `event` with `reason`; `done` runs once it is stored.
    pub fn dead_letter(
        &self,
        event: &Arc<Event>,
        history: &History<'_>,
        reason: &str,
        done: Completion,
    ) {
        let headers = dead_letter_headers(event, history, reason, now_ms(), None);
        let write = Box::new(Write {
            target: Target::Dlq,
            event: Arc::clone(event),
            with_value: true,
            reason: Some(reason.into()),
            failures: 0,
            partition: None,
            done,
        });
        self.inner.send(write, Some(headers));
    }

    /// Schedules a retry of `event` in `delay`, on the largest tier not
    /// longer than it; `done` runs once it is stored (on the DLQ instead,
    /// as `exhausted`, when it is too large for the tier topic).
    pub fn retry(
        &self,
        event: &Arc<Event>,
        history: &History<'_>,
        delay: Duration,
        done: Completion,
    ) {
        let tier = self.inner.tiers.tier_for(delay);
        let due = now_ms() + delay.as_millis() as i64;
        let headers = retry_headers(event, history, due);
        let partitions = self.inner.tier_partitions[tier].load(Ordering::Relaxed);
        let write = Box::new(Write {
            target: Target::Tier(tier),
            event: Arc::clone(event),
            with_value: true,
            reason: None,
            failures: 0,
            partition: (partitions > 0).then(|| endpoint_partition(history.endpoint, partitions)),
            done,
        });
        self.inner.send(write, Some(headers));
    }
}

/// Sends refused or failed writes again once their pause is over. Writes
/// that need no pause (a size refusal rewritten) go at once; the others
/// wait for the longest pause among those that failed together.
async fn resend_loop(inner: Weak<Inner>, mut queue: mpsc::UnboundedReceiver<Resend>) {
    let mut batch = Vec::new();
    while queue.recv_many(&mut batch, 4096).await > 0 {
        let pause = batch.iter().map(|r| r.delay).max().unwrap_or_default();
        let (now, later): (Vec<Resend>, Vec<Resend>) =
            batch.drain(..).partition(|r| r.delay.is_zero());
        let Some(writer) = inner.upgrade() else {
            return;
        };
        for r in now {
            writer.send(r.write, r.headers);
        }
        drop(writer);
        if later.is_empty() {
            continue;
        }
        tokio::time::sleep(pause).await;
        let Some(writer) = inner.upgrade() else {
            return;
        };
        for r in later {
            writer.send(r.write, r.headers);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_joins_the_last_error_and_keeps_every_other_header() {
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "hookstream-endpoint",
                value: Some("ep"),
            })
            .insert(Header {
                key: header::LAST_ERROR,
                value: Some("HTTP 503"),
            });
        let noted = with_note(&headers, "value omitted");
        let pairs: Vec<(String, Vec<u8>)> = noted
            .iter()
            .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
            .collect();
        assert_eq!(
            pairs,
            vec![
                ("hookstream-endpoint".to_string(), b"ep".to_vec()),
                (
                    header::LAST_ERROR.to_string(),
                    b"HTTP 503; value omitted".to_vec()
                ),
            ]
        );
        let bare = with_note(&OwnedHeaders::new(), "value omitted");
        assert_eq!(bare.get(0).value, Some(&b"value omitted"[..]));
    }

    #[test]
    fn resend_pauses_double_up_to_ten_seconds() {
        assert_eq!(resend_delay(1), Duration::from_millis(100));
        assert_eq!(resend_delay(2), Duration::from_millis(200));
        assert_eq!(resend_delay(5), Duration::from_millis(1600));
        assert_eq!(resend_delay(8), Duration::from_secs(10));
        assert_eq!(resend_delay(100), Duration::from_secs(10));
    }
}
