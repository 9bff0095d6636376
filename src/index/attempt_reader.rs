//! The reader of the durable activity log (`<prefix>.attempts`, written by
//! [`super::attempt_log`]): an endpoint's most recent attempts, read from
//! the end of its partition backwards in growing windows, and the events
//! themselves read again from where they were consumed (`?payload=true`).
//!
//! Owns reading only; every instance reads the same topic, so any instance
//! answers for all, and the answer survives restarts (within the topic's
//! retention). One request reads at a time, on a blocking thread, with one
//! consumer that joins no group and commits nothing. A read scans at most
//! [`MAX_SCAN`] records of the partition and gives up after
//! [`READ_TIMEOUT`].

use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::activity::AttemptRecord;
use super::attempt_lines::records_of_line;
use super::attempt_log::partitions_of;
use crate::config::Config;
use crate::wire::headers::endpoint_partition;

/// Records of one partition a read looks at, at most.
pub const MAX_SCAN: i64 = 1_000_000;
/// Longest one read may take.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// First window read back from the end; each next one is four times larger.
const FIRST_WINDOW: i64 = 512;
/// Largest window.
const MAX_WINDOW: i64 = 65_536;

/// Reads the durable activity log.
pub struct AttemptReader {
    consumer: Mutex<BaseConsumer>,
    topic: String,
    partitions: AtomicI32,
}

impl std::fmt::Debug for AttemptReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AttemptReader")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl AttemptReader {
    /// A reader of `config.topics.attempts_topic()`; `None` when
    /// `topics.attempts_log` is off.
    pub fn new(config: &Config, bootstrap: &str) -> Result<Option<Arc<Self>>> {
        if !config.topics.attempts_log {
            return Ok(None);
        }
        let c = crate::kafka::assigned_reader_config(
            config,
            bootstrap,
            "hookstream-attempts-reader",
            true,
        );
        let consumer: BaseConsumer = c.create().context("creating the activity log reader")?;
        Ok(Some(Arc::new(Self {
            consumer: Mutex::new(consumer),
            topic: config.topics.attempts_topic(),
            partitions: AtomicI32::new(0),
        })))
    }

    /// The newest `limit` attempts of `endpoint`, newest first.
    pub async fn recent(
        self: &Arc<Self>,
        endpoint: &str,
        limit: usize,
    ) -> Result<Vec<AttemptRecord>> {
        let me = Arc::clone(self);
        let endpoint = endpoint.to_string();
        tokio::task::spawn_blocking(move || me.scan(&endpoint, limit))
            .await
            .map_err(|e| anyhow!("the activity log read stopped: {e}"))?
    }

    /// The value of each record at `topic/partition/offset` in `sources`
    /// (`None` where it is gone, unreadable or not a coordinate).
    pub async fn payloads(self: &Arc<Self>, sources: Vec<String>) -> Vec<Option<Vec<u8>>> {
        let me = Arc::clone(self);
        let count = sources.len();
        tokio::task::spawn_blocking(move || {
            let deadline = Instant::now() + READ_TIMEOUT;
            sources
                .iter()
                .map(|s| me.read_one(s, deadline).ok().flatten())
                .collect()
        })
        .await
        .unwrap_or_else(|_| vec![None; count])
    }

    fn consumer(&self) -> std::sync::MutexGuard<'_, BaseConsumer> {
        match self.consumer.lock() {
            Ok(c) => c,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn scan(&self, endpoint: &str, limit: usize) -> Result<Vec<AttemptRecord>> {
        let consumer = self.consumer();
        let mut partitions = self.partitions.load(Ordering::Relaxed);
        if partitions <= 0 {
            partitions = partitions_of(consumer.client(), &self.topic);
            if partitions <= 0 {
                return Err(anyhow!("no metadata for {}", self.topic));
            }
            self.partitions.store(partitions, Ordering::Relaxed);
        }
        let partition = endpoint_partition(endpoint, partitions);
        let (low, high) = consumer
            .fetch_watermarks(&self.topic, partition, Duration::from_secs(5))
            .with_context(|| format!("reading the offsets of {}/{partition}", self.topic))?;
        let deadline = Instant::now() + READ_TIMEOUT;
        let (mut found, mut end, mut window) = (Vec::new(), high, FIRST_WINDOW);
        while end > low && found.len() < limit && high - end < MAX_SCAN {
            let start = (end - window).max(low);
            let mut chunk = Vec::new();
            read_range(
                &consumer,
                (&self.topic, partition),
                (start, end),
                deadline,
                |m| {
                    // A record holds JSON lines: one endpoint's attempts, in order.
                    if m.key() == Some(endpoint.as_bytes())
                        && let Some(value) = m.payload()
                    {
                        for line in value.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                            records_of_line(line, &mut chunk);
                        }
                    }
                },
            )?;
            found.extend(chunk.into_iter().rev());
            end = start;
            window = (window * 4).min(MAX_WINDOW);
        }
        found.truncate(limit);
        Ok(found)
    }

    fn read_one(&self, source: &str, deadline: Instant) -> Result<Option<Vec<u8>>> {
        let mut parts = source.rsplitn(3, '/');
        let (Some(offset), Some(partition), Some(topic)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Ok(None);
        };
        let (Ok(offset), Ok(partition)) = (offset.parse::<i64>(), partition.parse::<i32>()) else {
            return Ok(None);
        };
        let consumer = self.consumer();
        let mut value = None;
        read_range(
            &consumer,
            (topic, partition),
            (offset, offset + 1),
            deadline,
            |m| {
                if m.offset() == offset {
                    value = m.payload().map(<[u8]>::to_vec);
                }
            },
        )?;
        Ok(value)
    }
}

/// Reads offsets `start..end` of `topic`/`partition`, calling `each` for
/// every record there, until the end, the partition's end, or `deadline`.
fn read_range(
    consumer: &BaseConsumer,
    (topic, partition): (&str, i32),
    (start, end): (i64, i64),
    deadline: Instant,
    mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>),
) -> Result<()> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(start))
        .context("building the activity log assignment")?;
    consumer
        .assign(&tpl)
        .with_context(|| format!("assigning {topic}/{partition}"))?;
    let result = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break Err(anyhow!(
                "reading {topic}/{partition} took longer than {READ_TIMEOUT:?}"
            ));
        }
        match consumer.poll(left.min(Duration::from_millis(200))) {
            None => {}
            Some(Ok(m)) => {
                if m.topic() != topic || m.partition() != partition || m.offset() < start {
                    continue;
                }
                if m.offset() >= end {
                    break Ok(());
                }
                each(&m);
                if m.offset() + 1 >= end {
                    break Ok(());
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => break Ok(()),
            Some(Err(KafkaError::MessageConsumption(RDKafkaErrorCode::OffsetOutOfRange))) => {
                break Ok(());
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, topic, partition, "reading the activity log")
            }
        }
    };
    let _ = consumer.unassign();
    result
}
