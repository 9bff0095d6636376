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
#[derive(Debug, Clone, PartialEq, Eq)]
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
    pub headers: Vec<(String, Bytes)>,
    /// Routing fields, or why there are none.
    pub fields: Result<Extracted, InvalidEvent>,
    /// When hookstream first saw it (for end-to-end latency).
    pub consumed_at: Instant,
    /// Input or retry record.
    pub kind: RecordKind,
}

impl Event {
    /// Unix ms before which a retry record must not be sent.
    pub fn due_ms(&self) -> Option<i64> {
        match &self.kind {
            RecordKind::Retry { headers: Ok(h), .. } => Some(h.due_ms),
            _ => None,
        }
    }

    /// `topic/partition/offset`, the `hookstream-source` header value.
    pub fn source_coordinates(&self) -> String {
        format!(
            "{}/{}/{}",
            self.topic, self.partition.partition, self.offset
        )
    }

    /// A header of the original record.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_ref())
    }
}
