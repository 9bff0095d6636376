//! Turning polled records into what the dispatcher takes ([`Polled`]):
//! input events (extracted with their topic's preset), single retry
//! records and deferral batches.
//!
//! Pure apart from building extractors: no Kafka calls.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use bytes::Bytes;

use super::extract::{Coordinates, Extractor};
use super::topics::TopicTable;
use crate::config::Config;
use crate::core::headers::header;
use crate::core::{
    BatchEntry, DeferralBatch, InputEvent, InvalidRecord, PartitionId, Polled, RecordHeaders,
    RetryEvent, SourceRecord,
};
use crate::wire::batch;
use crate::wire::headers::retry_meta;

/// Extractors of the input topics (by topic id, so the poll loop finds one
/// without hashing a name per record); retry records are read with the
/// extractor of the topic they originally came from.
#[derive(Default)]
pub(super) struct Extractors {
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
    pub(super) fn add_input(&mut self, config: &Config, topic: &str) -> Result<()> {
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

/// A record as polled, copied out of librdkafka.
pub(super) struct Record {
    pub(super) topic: u16,
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) key: Option<Bytes>,
    pub(super) body: Bytes,
    pub(super) headers: RecordHeaders,
    /// When it was consumed (a [`ConsumeClock`] stamp).
    pub(super) consumed_at: Instant,
}

/// How many records of one burst share a reading of the clock.
const STAMP_EVERY: u32 = 32;

/// The time the poll loop stamps records with as consumed: the clock is
/// read once per [`STAMP_EVERY`] records of a burst, and again after every
/// wait for records, so a stamp is at most a few dozen microseconds early.
/// A hand-over to the dispatcher that blocks (the inbound channel full)
/// sends the whole pending batch, and the loop's next poll counts as a
/// wait: no stamp is taken across it. (A clock read per record was about
/// 1 % of the pipeline's CPU.)
#[derive(Debug)]
pub(super) struct ConsumeClock {
    now: Instant,
    left: u32,
}

impl Default for ConsumeClock {
    fn default() -> Self {
        Self {
            now: Instant::now(),
            left: 0,
        }
    }
}

impl ConsumeClock {
    /// The stamp of the record just polled.
    pub(super) fn stamp(&mut self) -> Instant {
        if self.left == 0 {
            self.now = Instant::now();
            self.left = STAMP_EVERY;
        }
        self.left -= 1;
        self.now
    }

    /// The loop waited for records: the next stamp reads the clock.
    pub(super) fn waited(&mut self) {
        self.left = 0;
    }
}

impl Record {
    /// The record, read from `topic`, with the time it was consumed.
    pub(super) fn into_source(self, topic: Arc<str>) -> SourceRecord {
        SourceRecord {
            topic,
            partition: PartitionId {
                topic: self.topic,
                partition: self.partition,
            },
            offset: self.offset,
            key: self.key,
            body: self.body,
            headers: self.headers,
            consumed_at: self.consumed_at,
        }
    }
}

/// Turns polled records into what the dispatcher takes ([`Polled`]).
pub(super) struct RecordReader<'a> {
    pub(super) topics: &'a TopicTable,
    pub(super) extractors: &'a mut Extractors,
    pub(super) config: &'a Config,
    pub(super) max_payload: usize,
}

/// The event id and type a retry carries (in its headers; a record from
/// before they were written there is extracted again, with the extractor
/// of the topic it came from).
struct Carried {
    id: String,
    event_type: String,
}

impl RecordReader<'_> {
    /// What a polled record is: an input event (or a record that is not
    /// one), a single retry, or a deferral batch.
    pub(super) fn read(&mut self, record: Record) -> Polled {
        let topic = Arc::clone(self.topics.name(record.topic));
        match self.topics.tier_of(record.topic) {
            None => self.input(record, topic),
            Some(tier) if record.headers.get(header::BATCH).is_some() => {
                self.batch(record, topic, tier)
            }
            Some(tier) => self.retry(record, topic, tier),
        }
    }

    fn input(&mut self, record: Record, topic: Arc<str>) -> Polled {
        let coords = Coordinates {
            topic: &topic,
            partition: record.partition,
            offset: record.offset,
        };
        let header = |name: &str| record.headers.get(name);
        let extractor = self
            .extractors
            .get(self.config, self.topics, Some(record.topic), &topic);
        let fields = extractor.extract(&record.body, &header, &coords, self.max_payload);
        let record = record.into_source(topic);
        match fields {
            Ok(fields) => Polled::Input(Arc::new(InputEvent { record, fields })),
            Err(why) => Polled::Invalid(
                Arc::new(InvalidRecord {
                    record,
                    why: why.to_string(),
                }),
                why,
            ),
        }
    }

    /// The id and type a retry record (or batch entry) carries.
    fn carried(&mut self, tier_topic: &str, record: &Record) -> Carried {
        let text = |name: &str| {
            record
                .headers
                .get(name)
                .and_then(|v| std::str::from_utf8(v).ok())
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        if let (Some(id), Some(event_type)) = (text(header::EVENT_ID), text(header::EVENT_TYPE)) {
            return Carried { id, event_type };
        }
        let source_topic = record
            .headers
            .get(header::SOURCE)
            .and_then(original_topic)
            .unwrap_or(tier_topic)
            .to_string();
        let coords = Coordinates {
            topic: tier_topic,
            partition: record.partition,
            offset: record.offset,
        };
        let header = |name: &str| record.headers.get(name);
        let extractor = self
            .extractors
            .get(self.config, self.topics, None, &source_topic);
        match extractor.extract(&record.body, &header, &coords, usize::MAX) {
            Ok(fields) => Carried {
                id: fields.id().to_string(),
                event_type: fields.event_type().to_string(),
            },
            Err(_) => Carried {
                id: crate::source::extract::coordinates_id(&coords),
                event_type: String::new(),
            },
        }
    }

    fn retry(&mut self, record: Record, topic: Arc<str>, tier: usize) -> Polled {
        let meta = retry_meta(&record.headers);
        let carried = self.carried(&topic, &record);
        let record = record.into_source(topic);
        match meta {
            Ok(meta) => Polled::Retry(Arc::new(RetryEvent {
                record,
                tier,
                id: carried.id,
                event_type: carried.event_type,
                meta,
            })),
            Err(why) => Polled::BadRetry(Arc::new(InvalidRecord { record, why })),
        }
    }

    /// A deferral batch record: its entries, or, when it cannot be read, a
    /// record dead-lettered as it is.
    fn batch(&mut self, record: Record, topic: Arc<str>, tier: usize) -> Polled {
        let consumed_at = record.consumed_at;
        let partition = PartitionId {
            topic: record.topic,
            partition: record.partition,
        };
        let decoded = batch::decode(&record.body).and_then(|entries| {
            entries
                .into_iter()
                .enumerate()
                .map(|(index, entry)| {
                    let entry = Record {
                        topic: record.topic,
                        partition: record.partition,
                        offset: record.offset,
                        key: entry.key.map(Bytes::copy_from_slice),
                        body: record.body.slice(entry.value),
                        headers: RecordHeaders::from_pairs(entry.headers),
                        consumed_at,
                    };
                    let meta = retry_meta(&entry.headers)
                        .map_err(|why| format!("deferral batch entry {index}: {why}"))?;
                    let carried = self.carried(&topic, &entry);
                    Ok(Arc::new(BatchEntry {
                        topic: Arc::clone(&topic),
                        partition,
                        offset: record.offset,
                        index: u32::try_from(index).unwrap_or(u32::MAX),
                        tier,
                        key: entry.key,
                        body: entry.body,
                        headers: entry.headers,
                        id: carried.id,
                        event_type: carried.event_type,
                        meta,
                        consumed_at,
                    }))
                })
                .collect::<Result<Vec<_>, String>>()
        });
        match decoded {
            Ok(entries) => Polled::Batch(DeferralBatch {
                partition,
                offset: record.offset,
                tier,
                due_ms: entries.iter().map(|e| e.meta.due_ms).max().unwrap_or(0),
                entries,
            }),
            Err(why) => Polled::BadRetry(Arc::new(InvalidRecord {
                record: record.into_source(topic),
                why,
            })),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_shares_a_clock_reading_and_a_wait_reads_it_again() {
        let mut clock = ConsumeClock::default();
        let first = clock.stamp();
        std::thread::sleep(std::time::Duration::from_millis(2));
        // The rest of the first reading's records share it.
        for _ in 1..STAMP_EVERY {
            assert_eq!(clock.stamp(), first);
        }
        // The next burst of records reads the clock again.
        let second = clock.stamp();
        assert!(second > first);
        std::thread::sleep(std::time::Duration::from_millis(2));
        clock.waited();
        // After a wait, the next record's stamp is fresh.
        assert!(clock.stamp() > second);
    }
}
