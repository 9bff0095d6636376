//! Turning polled records into [`Event`]s: input records (extracted with
//! their topic's preset), single retry records and deferral batches.
//!
//! Pure apart from building extractors: no Kafka calls.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;
use bytes::Bytes;

use super::event::{Event, RecordHeaders, RecordKind};
use super::extract::{Coordinates, Extracted, Extractor, InvalidEvent};
use super::topics::TopicTable;
use crate::commit::PartitionId;
use crate::config::Config;
use crate::retry::batch;
use crate::retry::record::RetryHeaders;
use crate::retry::record::header::BATCH;

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
pub(super) struct Record {
    pub(super) topic: u16,
    pub(super) partition: i32,
    pub(super) offset: i64,
    pub(super) key: Option<Bytes>,
    pub(super) body: Bytes,
    pub(super) headers: RecordHeaders,
}

impl Record {
    /// The event of this record, read from `topic`, consumed now.
    pub(super) fn into_event(
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
pub(super) struct RecordReader<'a> {
    pub(super) topics: &'a TopicTable,
    pub(super) extractors: &'a mut Extractors,
    pub(super) config: &'a Config,
    pub(super) max_payload: usize,
}

impl RecordReader<'_> {
    /// The event of a polled record: an input record, a single retry, or a
    /// deferral batch.
    pub(super) fn read(&mut self, record: Record) -> Event {
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
