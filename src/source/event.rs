//! The event as it travels the pipeline: original bytes plus routing fields.
//!
//! One [`Event`] is built per consumed record and shared (`Arc`) by every
//! delivery of it; the body is a `Bytes` handle, so fan-out, retries and
//! DLQ writes never copy it.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::extract::{Extracted, InvalidEvent};
use crate::commit::PartitionId;
use crate::retry::record::RetryHeaders;

/// Where a record was read from.
#[derive(Debug, Clone)]
pub enum RecordKind {
    /// An input topic: deliver to every matching endpoint.
    Input,
    /// A retry tier: deliver to the one endpoint named in its headers, once
    /// due.
    Retry {
        /// Index of the tier.
        tier: usize,
        /// The retry headers, or what is wrong with them.
        headers: Result<RetryHeaders, String>,
    },
    /// A deferral batch on a retry tier ([`crate::retry::batch`]): each
    /// entry is a [`RecordKind::Retry`] event at this record's offset.
    RetryBatch {
        /// Index of the tier.
        tier: usize,
        /// When the last entry is due.
        due_ms: i64,
        /// The entries.
        entries: Vec<Arc<Event>>,
    },
    /// A placeholder for a record the consumer could not read
    /// ([`crate::source::unreadable`]): empty, dead-lettered as
    /// `unreadable_record` so that its offset settles.
    Unreadable {
        /// What librdkafka said of it.
        detail: String,
    },
}

/// A consumed record with what extraction found in it.
#[derive(Debug)]
pub struct Event {
    /// Topic it was read from.
    pub topic: Arc<str>,
    /// Partition, with the topic interned.
    pub partition: PartitionId,
    /// Offset.
    pub offset: i64,
    /// Record key (kept on retry and DLQ records).
    pub key: Option<Bytes>,
    /// The original value: what is signed and sent.
    pub body: Bytes,
    /// Original record headers (kept on retry and DLQ records).
    pub headers: RecordHeaders,
    /// Routing fields, or why there are none.
    pub fields: Result<Extracted, InvalidEvent>,
    /// When hookstream first saw it (for end-to-end latency).
    pub consumed_at: Instant,
    /// Input or retry record.
    pub kind: RecordKind,
    /// The poll thread paused this record's partition when it polled it (a
    /// retry not due yet): the dispatcher resumes it.
    pub paused_partition: bool,
}

impl Event {
    /// Unix ms before which a retry record must not be sent.
    pub fn due_ms(&self) -> Option<i64> {
        match &self.kind {
            RecordKind::Retry { headers: Ok(h), .. } => Some(h.due_ms),
            RecordKind::RetryBatch { due_ms, .. } => Some(*due_ms),
            _ => None,
        }
    }

    /// `topic/partition/offset`, the `hookstream-source` header value.
    pub fn source_coordinates(&self) -> String {
        // Written by hand: this runs for every retry and deferral, and the
        // formatting machinery cost more than the rest of the header.
        let (mut partition, mut offset) = (itoa::Buffer::new(), itoa::Buffer::new());
        let (partition, offset) = (
            partition.format(self.partition.partition),
            offset.format(self.offset),
        );
        let mut out = String::with_capacity(self.topic.len() + partition.len() + offset.len() + 2);
        out.push_str(&self.topic);
        out.push('/');
        out.push_str(partition);
        out.push('/');
        out.push_str(offset);
        out
    }

    /// A header of the original record.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.get(name)
    }
}

/// Where one header's key and value lie in [`RecordHeaders`]' buffer.
#[derive(Debug, Clone, Copy)]
struct HeaderSpan {
    key_end: u32,
    value_end: u32,
}

/// A record's headers, copied out of librdkafka into one buffer: keys and
/// values back to back, so a record with ten headers costs two allocations,
/// not twenty. Keys are UTF-8 (Kafka header keys are strings).
#[derive(Debug, Clone, Default)]
pub struct RecordHeaders {
    data: Vec<u8>,
    spans: Vec<HeaderSpan>,
}

impl RecordHeaders {
    /// Copies `(key, value)` pairs, in order.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Self {
        let mut headers = Self::default();
        for (key, value) in pairs {
            if headers.data.is_empty() {
                // Room for a retry record's headers without growing.
                headers.data.reserve(384);
                headers.spans.reserve(12);
            }
            headers.data.extend_from_slice(key.as_bytes());
            let key_end = headers.data.len() as u32;
            headers.data.extend_from_slice(value);
            headers.spans.push(HeaderSpan {
                key_end,
                value_end: headers.data.len() as u32,
            });
        }
        headers
    }

    /// Headers in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        let mut start = 0usize;
        self.spans.iter().map(move |span| {
            let (key_end, value_end) = (span.key_end as usize, span.value_end as usize);
            let key = std::str::from_utf8(&self.data[start..key_end]).unwrap_or_default();
            let value = &self.data[key_end..value_end];
            start = value_end;
            (key, value)
        })
    }

    /// The first value of header `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    /// Bytes of all keys and values.
    pub fn byte_len(&self) -> usize {
        self.data.len()
    }

    /// How many headers there are.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_keep_order_values_and_duplicates() {
        let pairs: [(&str, &[u8]); 4] = [
            ("ce_type", b"device.enrolled"),
            ("empty", b""),
            ("group", b"g-1"),
            ("group", b"g-2"),
        ];
        let h = RecordHeaders::from_pairs(pairs.iter().copied());
        assert_eq!(h.len(), 4);
        assert_eq!(h.iter().collect::<Vec<_>>(), pairs.to_vec());
        assert_eq!(h.get("group"), Some(&b"g-1"[..]), "the first of duplicates");
        assert_eq!(h.get("empty"), Some(&b""[..]));
        assert_eq!(h.get("missing"), None);
        assert!(RecordHeaders::default().is_empty());
    }

    #[test]
    fn source_coordinates_are_topic_partition_offset() {
        let event = Event {
            topic: Arc::from("mender.deployments"),
            partition: PartitionId {
                topic: 0,
                partition: 11,
            },
            offset: 9_876_543_210,
            key: None,
            body: Bytes::from_static(b"{}"),
            headers: RecordHeaders::default(),
            fields: Err(crate::source::extract::InvalidEvent::Empty),
            consumed_at: Instant::now(),
            kind: RecordKind::Input,
            paused_partition: false,
        };
        assert_eq!(
            event.source_coordinates(),
            "mender.deployments/11/9876543210"
        );
    }
}
