//! The writer of the durable activity log: every delivery attempt as JSON
//! lines ([`super::attempt_lines`]: one
//! [`AttemptRecord`](super::activity::AttemptRecord), or a batch's events
//! sharing one line's fields) on `<prefix>.attempts` (key = endpoint id, on
//! the endpoint's partition, `wire::headers::endpoint_partition`, so one
//! endpoint's attempts are in one partition in time order), kept by the
//! topic's time-based retention (`topics.attempts_retention`).
//!
//! Owns only that write, and it must not slow deliveries: an attempt is
//! appended as JSON lines to its endpoint's pending buffer (a short
//! lock, no I/O); a flusher thread turns each buffer into one Kafka record
//! every [`FLUSH_INTERVAL`] (or at [`RECORD_BYTES`]), handed to librdkafka
//! without waiting (lz4, `acks=1`, no idempotence: a lost or doubled log
//! line loses no event). So a record holds one endpoint's attempts of the
//! last 50 ms, in order, and librdkafka sees a few records a second per
//! endpoint instead of one per attempt. Pending buffers hold at most
//! [`PENDING_BYTES`] and librdkafka's queue [`ATTEMPT_BUFFER_KIB`]; an
//! attempt that finds them full, or whose record the broker refuses, is
//! dropped and counted in `hookstream_attempts_log_dropped_total`.

use std::hash::RandomState;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use anyhow::{Context, Result};
use metrics::Counter;
use rdkafka::ClientContext;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

use super::activity::AttemptLine;
use super::attempt_lines::{AttemptLines, write_line};
use crate::config::Config;
use crate::kafka::ReportThread;
use crate::wire::headers::endpoint_partition;

/// Records (each up to [`RECORD_BYTES`]) librdkafka's queue holds at most.
pub const ATTEMPT_BUFFER_RECORDS: usize = 10_000;
/// Bytes (KiB) librdkafka's queue holds at most.
pub const ATTEMPT_BUFFER_KIB: usize = 32 * 1024;
/// Bytes of attempts waiting for the flusher, at most.
pub const PENDING_BYTES: usize = 16 * 1024 * 1024;
/// An endpoint's pending attempts become a record at this size at the latest.
pub const RECORD_BYTES: usize = 64 * 1024;
/// How often pending attempts become records.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// Sent records' buffers kept for the next endpoints' lines: a busy
/// endpoint's lines then start with room for a record instead of growing
/// to it by reallocation, copy and fresh pages every 50 ms (3 % of the
/// delivery workers' CPU in bench (a) before).
const SPARE_BUFFERS: usize = 8;

/// Counts the attempts librdkafka could not deliver.
struct DropCounter {
    dropped: Arc<AtomicU64>,
    metric: Counter,
}

impl ClientContext for DropCounter {}

impl ProducerContext for DropCounter {
    /// Attempts in the record.
    type DeliveryOpaque = Box<u64>;

    fn delivery(&self, result: &DeliveryResult<'_>, attempts: Box<u64>) {
        if result.is_err() {
            self.dropped.fetch_add(*attempts, Ordering::Relaxed);
            self.metric.increment(*attempts);
        }
    }
}

/// One endpoint's attempts waiting for the flusher: JSON lines.
#[derive(Debug, Default)]
struct Lines {
    bytes: Vec<u8>,
    count: u64,
}

/// Every endpoint's pending attempts.
#[derive(Debug, Default)]
struct Pending {
    /// (hashbrown's, for `entry_ref`: an endpoint's lines are found with
    /// one lookup of its id, and its key is only allocated when it is new.)
    by_endpoint: hashbrown::HashMap<Box<str>, Lines, RandomState>,
    bytes: usize,
    /// Emptied buffers of sent records (at most [`SPARE_BUFFERS`]).
    spare: Vec<Vec<u8>>,
}

impl Pending {
    /// Keeps the emptied buffer of a sent record for later lines.
    fn give_back(&mut self, mut bytes: Vec<u8>) {
        if self.spare.len() < SPARE_BUFFERS {
            bytes.clear();
            self.spare.push(bytes);
        }
    }
}

/// The durable activity log's writer (cheap to share behind an `Arc`).
pub struct AttemptLog {
    producer: Arc<BaseProducer<DropCounter>>,
    /// Serves the producer's delivery reports (stopped when the log is
    /// dropped).
    _reports: ReportThread,
    topic: String,
    /// Partitions of the topic (learned from metadata at start).
    partitions: AtomicI32,
    pending: Mutex<Pending>,
    dropped: Arc<AtomicU64>,
    metric: Counter,
}

impl std::fmt::Debug for AttemptLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttemptLog")
            .field("topic", &self.topic)
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl AttemptLog {
    /// Starts the writer of `config.topics.attempts_topic()` (which must
    /// exist: see [`crate::kafka::ensure_topics`]); `None` when
    /// `topics.attempts_log` is off.
    pub async fn start(config: &Config, bootstrap: &str) -> Result<Option<Arc<Self>>> {
        if !config.topics.attempts_log {
            return Ok(None);
        }
        let mut c = crate::kafka::base_client_config(config, bootstrap);
        c.set("client.id", "hookstream-attempts")
            .set("linger.ms", "20")
            .set("compression.type", "lz4")
            .set("message.timeout.ms", "30000")
            .set(
                "queue.buffering.max.messages",
                ATTEMPT_BUFFER_RECORDS.to_string(),
            )
            .set("queue.buffering.max.kbytes", ATTEMPT_BUFFER_KIB.to_string())
            // A log line, not an outcome: these win over user properties.
            .set("enable.idempotence", "false")
            .set("acks", "1");
        let dropped = Arc::new(AtomicU64::new(0));
        let metric = metrics::counter!(crate::metrics::names::ATTEMPTS_LOG_DROPPED);
        let context = DropCounter {
            dropped: Arc::clone(&dropped),
            metric: metric.clone(),
        };
        let producer: Arc<BaseProducer<DropCounter>> = Arc::new(
            c.create_with_context(context)
                .context("creating the activity log producer")?,
        );
        let reports = ReportThread::spawn("attempts-reports", Arc::clone(&producer))?;
        let topic = config.topics.attempts_topic();
        let partitions = topic_partitions(&producer, &topic).await;
        let log = Arc::new(Self {
            producer,
            _reports: reports,
            topic,
            partitions: AtomicI32::new(partitions),
            pending: Mutex::new(Pending::default()),
            dropped,
            metric,
        });
        let weak = Arc::downgrade(&log);
        std::thread::Builder::new()
            .name("hookstream-attempts".into())
            .spawn(move || flusher(weak))
            .context("starting the activity log's flusher")?;
        Ok(Some(log))
    }

    fn pending(&self) -> MutexGuard<'_, Pending> {
        match self.pending.lock() {
            Ok(p) => p,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Appends `record` to its endpoint's pending attempts without waiting;
    /// dropped (and counted) when the pending buffers are full.
    pub fn write(&self, record: &AttemptLine<'_>) {
        self.append(record.endpoint, 1, |bytes| {
            write_line(bytes, record).is_ok()
        });
    }

    /// Appends the lines of one attempt's deliveries (see
    /// [`AttemptLines`]) under one lock, or one per [`RECORD_BYTES`] of
    /// them for a batch that large (so no record outgrows what a broker
    /// takes); dropped and counted like [`AttemptLog::write`]'s.
    pub fn write_lines(&self, lines: &AttemptLines<'_>) {
        if lines.failed() > 0 {
            self.count_drop(lines.failed());
        }
        for (run, events) in lines.runs(RECORD_BYTES) {
            self.append(lines.endpoint(), events, |bytes| {
                bytes.extend_from_slice(run);
                true
            });
        }
    }

    /// Adds `count` lines to `endpoint`'s pending attempts by `write_into`
    /// (false: nothing written, the lines are dropped), then sends them
    /// when the record is full.
    fn append(&self, endpoint: &str, count: u64, write_into: impl FnOnce(&mut Vec<u8>) -> bool) {
        let mut pending = self.pending();
        if pending.bytes >= PENDING_BYTES {
            drop(pending);
            self.count_drop(count);
            return;
        }
        let Pending {
            by_endpoint,
            bytes: pending_bytes,
            spare,
        } = &mut *pending;
        let lines = by_endpoint.entry_ref(endpoint).or_insert_with(|| Lines {
            bytes: spare.pop().unwrap_or_default(),
            count: 0,
        });
        let before = lines.bytes.len();
        if !write_into(&mut lines.bytes) {
            lines.bytes.truncate(before);
            drop(pending);
            self.count_drop(count);
            return;
        }
        lines.count += count;
        let (added, full) = (
            lines.bytes.len() - before,
            lines.bytes.len() >= RECORD_BYTES,
        );
        *pending_bytes += added;
        if full && let Some(lines) = pending.by_endpoint.remove(endpoint) {
            pending.bytes -= lines.bytes.len();
            drop(pending);
            let emptied = self.send(endpoint, lines);
            self.pending().give_back(emptied);
        }
    }

    /// Turns every endpoint's pending attempts into a record.
    fn send_pending(&self) {
        let taken = {
            let mut pending = self.pending();
            pending.bytes = 0;
            std::mem::take(&mut pending.by_endpoint)
        };
        let mut emptied = Vec::new();
        for (endpoint, lines) in taken {
            let bytes = self.send(&endpoint, lines);
            if emptied.len() < SPARE_BUFFERS {
                emptied.push(bytes);
            }
        }
        let mut pending = self.pending();
        for bytes in emptied {
            pending.give_back(bytes);
        }
    }

    /// Hands one endpoint's attempts to librdkafka as one record (which
    /// copies them), and gives their buffer back.
    fn send(&self, endpoint: &str, lines: Lines) -> Vec<u8> {
        let partitions = self.partitions.load(Ordering::Relaxed);
        let mut out =
            BaseRecord::<str, [u8], Box<u64>>::with_opaque_to(&self.topic, Box::new(lines.count))
                .key(endpoint)
                .payload(lines.bytes.as_slice());
        if partitions > 0 {
            out = out.partition(endpoint_partition(endpoint, partitions));
        }
        if self.producer.send(out).is_err() {
            self.count_drop(lines.count);
        }
        lines.bytes
    }

    fn count_drop(&self, attempts: u64) {
        self.dropped.fetch_add(attempts, Ordering::Relaxed);
        self.metric.increment(attempts);
    }

    /// Records dropped so far (buffer full, or refused by the broker).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Sends what is pending and buffered, waiting up to `timeout`.
    pub fn flush(&self, timeout: Duration) {
        self.send_pending();
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(error = %e, "flushing the activity log");
        }
    }
}

/// Turns pending attempts into records every [`FLUSH_INTERVAL`] until the
/// log is dropped.
fn flusher(log: Weak<AttemptLog>) {
    loop {
        std::thread::sleep(FLUSH_INTERVAL);
        match log.upgrade() {
            Some(log) => log.send_pending(),
            None => return,
        }
    }
}

/// Partitions of `topic`, or 0 (then records go by key) when the metadata
/// does not say within about 3 s.
async fn topic_partitions(producer: &BaseProducer<DropCounter>, topic: &str) -> i32 {
    let client = producer.client();
    for _ in 0..5 {
        match client.fetch_metadata(Some(topic), Duration::from_millis(500)) {
            Ok(m) => {
                if let Some(t) = m.topics().iter().find(|t| t.name() == topic)
                    && !t.partitions().is_empty()
                {
                    return t.partitions().len() as i32;
                }
            }
            Err(e) => tracing::debug!(error = %e, topic, "reading the activity log's metadata"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tracing::warn!(
        topic,
        "no partition count for the activity log: records go by key, and the API may not find them"
    );
    0
}

/// Partitions of `topic` seen by any client (the reader's side of
/// [`AttemptLog`]'s choice), or 0.
pub fn partitions_of<C: ClientContext>(client: &rdkafka::client::Client<C>, topic: &str) -> i32 {
    match client.fetch_metadata(Some(topic), Duration::from_secs(5)) {
        Ok(m) => m
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .map_or(0, |t| t.partitions().len() as i32),
        Err(_) => 0,
    }
}
