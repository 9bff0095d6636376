//! The writer of the durable activity log: every delivery attempt as one
//! JSON [`AttemptRecord`] on `<prefix>.attempts` (key = endpoint id, on the
//! endpoint's partition, `wire::headers::endpoint_partition`, so one
//! endpoint's attempts are in one partition in time order), kept by the
//! topic's time-based retention (`topics.attempts_retention`).
//!
//! Owns only that write, and it must not slow deliveries: records are
//! handed to librdkafka without waiting (batched for up to 100 ms, lz4,
//! `acks=1`, no idempotence: a lost or doubled log line loses no event).
//! librdkafka's queue is the bounded buffer (`ATTEMPT_BUFFER_RECORDS`
//! records, `ATTEMPT_BUFFER_KIB`); a record that finds it full, or that the
//! broker refuses, is dropped and counted in
//! `hookstream_attempts_log_dropped_total`.

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use metrics::Counter;
use rdkafka::ClientContext;
use rdkafka::producer::{BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer};

use super::activity::AttemptRecord;
use crate::config::Config;
use crate::wire::headers::endpoint_partition;

/// Records the log's buffer holds at most.
pub const ATTEMPT_BUFFER_RECORDS: usize = 100_000;
/// Bytes (KiB) the log's buffer holds at most.
pub const ATTEMPT_BUFFER_KIB: usize = 32 * 1024;

/// Counts the records librdkafka could not deliver.
struct DropCounter {
    dropped: Arc<AtomicU64>,
    metric: Counter,
}

impl ClientContext for DropCounter {}

impl ProducerContext for DropCounter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if result.is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            self.metric.increment(1);
        }
    }
}

/// The durable activity log's writer (cheap to share behind an `Arc`).
pub struct AttemptLog {
    producer: ThreadedProducer<DropCounter>,
    topic: String,
    /// Partitions of the topic (learned from metadata at start).
    partitions: AtomicI32,
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
            .set("linger.ms", "100")
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
        let producer: ThreadedProducer<DropCounter> = c
            .create_with_context(context)
            .context("creating the activity log producer")?;
        let topic = config.topics.attempts_topic();
        let partitions = topic_partitions(&producer, &topic).await;
        Ok(Some(Arc::new(Self {
            producer,
            topic,
            partitions: AtomicI32::new(partitions),
            dropped,
            metric,
        })))
    }

    /// Hands `record` to the producer without waiting; dropped (and
    /// counted) when the buffer is full.
    pub fn write(&self, record: &AttemptRecord) {
        let Ok(value) = serde_json::to_vec(record) else {
            self.count_drop();
            return;
        };
        let partitions = self.partitions.load(Ordering::Relaxed);
        let mut out = BaseRecord::<str, [u8]>::to(&self.topic)
            .key(record.endpoint.as_str())
            .payload(value.as_slice());
        if partitions > 0 {
            out = out.partition(endpoint_partition(&record.endpoint, partitions));
        }
        if self.producer.send(out).is_err() {
            self.count_drop();
        }
    }

    fn count_drop(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        self.metric.increment(1);
    }

    /// Records dropped so far (buffer full, or refused by the broker).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Sends what is buffered, waiting up to `timeout`.
    pub fn flush(&self, timeout: Duration) {
        if let Err(e) = self.producer.flush(timeout) {
            tracing::warn!(error = %e, "flushing the activity log");
        }
    }
}

/// Partitions of `topic`, or 0 (then records go by key) when the metadata
/// does not say within about 3 s.
async fn topic_partitions(producer: &ThreadedProducer<DropCounter>, topic: &str) -> i32 {
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
