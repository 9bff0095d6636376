//! Records the consumer cannot read at all: a record batch librdkafka
//! cannot decode (an unknown compression codec, a failed decompression, a
//! failed CRC check with `check.crcs`).
//!
//! librdkafka reports such a batch as a consumer error carrying the
//! partition and the batch's base offset ([`super::poll`]), and does not
//! move its fetch position: it fetches the same batch again after
//! `fetch.error.backoff.ms`, for ever. For each record of it, this module
//! makes a placeholder event (empty value, the error text) that the
//! dispatcher dead-letters as `unreadable_record` (so its offset settles
//! and commits like any other), and seeks the partition to the next
//! offset.
//!
//! A fetch from any offset inside a batch returns the whole batch, so the
//! same error comes back, at the same base offset, until the fetch position
//! passes the batch's last offset (librdkafka then skips the batch without
//! decoding it). The partition therefore moves through an unreadable batch
//! one offset at a time, each record dead-lettered with its own
//! coordinates: the error does not say where the batch ends.
//!
//! Owns the poll thread's memory of where each partition stands inside an
//! unreadable batch; dead-letters nothing itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::hooks::SourceContext;
use super::poll::ConsumerError;
use super::reader::Record;
use super::topics::TopicTable;
use crate::core::PartitionId;
use crate::core::{RecordHeaders, UnreadableRecord};

/// How long the poll thread waits for a committed offset or a seek.
const BROKER_WAIT: Duration = Duration::from_secs(5);

/// Whether a consumer error with `code` means the records at its offset
/// cannot be read (rather than a fetch that failed and will be retried).
pub(super) fn is_unreadable(code: RDKafkaErrorCode) -> bool {
    matches!(
        code,
        // Decompression failed.
        RDKafkaErrorCode::BadCompression
        // An unknown compression codec.
        | RDKafkaErrorCode::NotImplemented
        // A failed CRC check, or a batch that does not parse.
        | RDKafkaErrorCode::BadMessage
    )
}

/// Where a partition stands inside an unreadable batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Inside {
    /// The batch's base offset (what librdkafka's error names).
    base: i64,
    /// The offset the partition was sought to.
    next: i64,
}

/// The poll thread's unreadable batches, by partition.
#[derive(Debug, Default)]
pub(super) struct UnreadableRecords {
    inside: HashMap<PartitionId, Inside>,
}

impl UnreadableRecords {
    /// The offset of the record that an error at `base` (an unreadable
    /// batch's base offset) stands for: the offset the partition was sought
    /// to inside that batch, else the later of `base` and `committed()` (a
    /// partition assigned at a committed offset inside the batch fetches
    /// from there).
    fn offset_for(
        &self,
        partition: PartitionId,
        base: i64,
        committed: impl FnOnce() -> Option<i64>,
    ) -> i64 {
        match self.inside.get(&partition) {
            Some(inside) if inside.base == base && inside.next > base => inside.next,
            _ => committed().map_or(base, |c| c.max(base)),
        }
    }

    /// A record of `partition` at `offset` was read: the partition is past
    /// any unreadable batch it was in.
    pub(super) fn read(&mut self, partition: PartitionId, offset: i64) {
        if !self.inside.is_empty()
            && self
                .inside
                .get(&partition)
                .is_some_and(|inside| offset >= inside.next)
        {
            self.inside.remove(&partition);
        }
    }

    /// `partition` was revoked; `None`: the whole assignment was dropped.
    pub(super) fn forget(&mut self, partition: Option<PartitionId>) {
        match partition {
            Some(p) => {
                self.inside.remove(&p);
            }
            None => self.inside.clear(),
        }
    }

    /// When `error` says a record cannot be read: the placeholder event
    /// standing for it (to be dead-lettered), after seeking its partition
    /// to the next offset. `None` for any other error.
    pub(super) fn placeholder(
        &mut self,
        consumer: &BaseConsumer<SourceContext>,
        topics: &TopicTable,
        error: &ConsumerError,
    ) -> Option<UnreadableRecord> {
        if !is_unreadable(error.code) {
            return None;
        }
        let (name, partition, base) = error.at.as_ref()?;
        let (partition, base) = (*partition, *base);
        let topic = topics.id(name)?;
        if base < 0 {
            return None;
        }
        let id = PartitionId { topic, partition };
        let first_of_batch = self.inside.get(&id).is_none_or(|i| i.base != base);
        let offset = self.offset_for(id, base, || committed(consumer, name, partition));
        if first_of_batch {
            tracing::warn!(
                topic = %name,
                partition,
                offset,
                error = %error.text,
                "unreadable record batch: dead-lettering its records one by one as unreadable_record"
            );
        } else {
            tracing::debug!(topic = %name, partition, offset, "unreadable record");
        }
        metrics::counter!(crate::metrics::names::UNREADABLE_RECORDS, "topic" => name.clone())
            .increment(1);
        match consumer.seek(name, partition, Offset::Offset(offset + 1), BROKER_WAIT) {
            Ok(()) => {
                self.inside.insert(
                    id,
                    Inside {
                        base,
                        next: offset + 1,
                    },
                );
            }
            Err(e) => {
                // The error comes back at the next fetch and the seek is
                // tried again; the dispatcher registers an offset once, so
                // the placeholder is not dead-lettered twice.
                tracing::warn!(topic = %name, partition, offset, error = %e, "seeking past an unreadable record failed; trying again at the next fetch");
            }
        }
        let record = Record {
            topic,
            partition,
            offset,
            key: None,
            body: bytes::Bytes::new(),
            headers: RecordHeaders::default(),
            consumed_at: std::time::Instant::now(),
        };
        Some(UnreadableRecord {
            record: record.into_source(Arc::clone(topics.name(topic))),
            error: error.text.clone(),
        })
    }
}

/// The committed offset of `topic`/`partition` in the member's group, if
/// there is one and the broker answers in time.
fn committed(consumer: &BaseConsumer<SourceContext>, topic: &str, partition: i32) -> Option<i64> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, partition);
    let committed = consumer.committed_offsets(tpl, BROKER_WAIT).ok()?;
    committed.elements().iter().find_map(|e| match e.offset() {
        Offset::Offset(o) if o >= 0 => Some(o),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: PartitionId = PartitionId {
        topic: 0,
        partition: 2,
    };

    #[test]
    fn a_batch_is_walked_one_offset_at_a_time_from_where_the_partition_fetches() {
        let mut u = UnreadableRecords::default();
        // First error of a batch at 10: the record at 10, unless the
        // partition was assigned at a committed offset inside the batch.
        assert_eq!(u.offset_for(P, 10, || None), 10);
        assert_eq!(u.offset_for(P, 10, || Some(4)), 10);
        assert_eq!(u.offset_for(P, 10, || Some(13)), 13);
        // Sought to 11: the same error again stands for 11.
        u.inside.insert(P, Inside { base: 10, next: 11 });
        assert_eq!(u.offset_for(P, 10, || panic!("not asked")), 11);
        // Another batch: its own base.
        assert_eq!(u.offset_for(P, 20, || None), 20);
        // A record read before the batch's end keeps the memory; one at or
        // past the sought offset ends it.
        u.read(P, 9);
        assert!(u.inside.contains_key(&P));
        u.read(P, 11);
        assert!(u.inside.is_empty());
        u.inside.insert(P, Inside { base: 10, next: 11 });
        u.forget(Some(P));
        assert!(u.inside.is_empty());
    }

    #[test]
    fn only_undecodable_batches_are_unreadable() {
        assert!(is_unreadable(RDKafkaErrorCode::BadCompression));
        assert!(is_unreadable(RDKafkaErrorCode::NotImplemented));
        assert!(is_unreadable(RDKafkaErrorCode::BadMessage));
        assert!(!is_unreadable(RDKafkaErrorCode::MessageSizeTooLarge));
        assert!(!is_unreadable(RDKafkaErrorCode::OffsetOutOfRange));
        assert!(!is_unreadable(RDKafkaErrorCode::UnknownTopicOrPartition));
    }
}
