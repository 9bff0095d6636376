//! What a consumed record becomes, one type per shape.
//!
//! - [`InputEvent`]: a record of an input topic whose routing fields were
//!   found; it goes to every matching endpoint.
//! - [`RetryEvent`]: a single retry record of a tier: one delivery to one
//!   endpoint, due at a time.
//! - [`BatchEntry`]: one delivery inside a deferral batch record of a tier.
//!
//! Around them, what the poll thread hands the dispatcher ([`Polled`]):
//! records that are not events ([`InvalidRecord`], dead-lettered),
//! deferral batches ([`DeferralBatch`], registered once with one outcome
//! per entry) and records the consumer could not read
//! ([`UnreadableRecord`]). A delivery carries a [`Payload`], whichever of
//! the three shapes it came from; its original bytes are shared, never
//! copied.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::headers::{RecordHeaders, header};
use super::partition::PartitionId;

/// A consumed Kafka record: where it is and what it holds.
#[derive(Debug)]
pub struct SourceRecord {
    /// Topic it was read from.
    pub topic: Arc<str>,
    /// Partition, with the topic interned.
    pub partition: PartitionId,
    /// Offset.
    pub offset: i64,
    /// Record key (kept on retry and DLQ records).
    pub key: Option<Bytes>,
    /// The value: what is signed and sent.
    pub body: Bytes,
    /// Record headers (kept on retry and DLQ records).
    pub headers: RecordHeaders,
    /// When hookstream consumed it (for end-to-end latency).
    pub consumed_at: Instant,
}

impl SourceRecord {
    /// `topic/partition/offset`, the `hookstream-source` header value.
    pub fn coordinates(&self) -> String {
        coordinates(&self.topic, self.partition.partition, self.offset)
    }

    /// A header of the record.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.get(name)
    }

    /// The id of a record that has none of its own: a hash of its
    /// coordinates, stable across restarts.
    pub fn coordinates_id(&self) -> String {
        coordinates_id(&self.topic, self.partition.partition, self.offset)
    }
}

/// Why a record of an input topic is not an event (dead-lettered as
/// `invalid_event`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidEvent {
    /// Zero-length value (or a tombstone).
    #[error("empty event")]
    Empty,
    /// Larger than `max_payload_bytes`.
    #[error("event of {size} bytes exceeds max_payload_bytes ({max})")]
    TooLarge {
        /// Size of the value.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// Not parseable as JSON.
    #[error("not valid JSON: {0}")]
    NotJson(String),
    /// No type where the rule looks (missing, `null` or an empty string).
    #[error("no event type at {0}")]
    NoType(String),
    /// The type field holds something other than a string (a number, a
    /// boolean, an object or an array): the platforms hookstream serves
    /// send their event types as strings, and endpoints match on text, so
    /// `42` is not turned into `"42"`.
    #[error("the event type at {at} is {found}, not a string")]
    TypeNotString {
        /// Where the rule found it.
        at: String,
        /// What it is (`a number`, `a boolean`, ...).
        found: &'static str,
    },
}

/// A valid input event.
#[derive(Debug)]
pub struct InputEvent {
    /// The record.
    pub record: SourceRecord,
    /// Its routing fields.
    pub fields: Fields,
}

/// What a retry record (or a deferral batch entry) says about its delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryMeta {
    /// Endpoint the delivery is for.
    pub endpoint: String,
    /// Attempts counted so far.
    pub attempt: u32,
    /// Unix ms when it may be sent.
    pub due_ms: i64,
    /// Unix ms of the first attempt.
    pub first_ms: i64,
    /// Times the delivery was written to a tier (`None`: a record written
    /// before hops were counted).
    pub hop: Option<u32>,
}

/// A single retry record of a tier.
#[derive(Debug)]
pub struct RetryEvent {
    /// The record (its value is the original event).
    pub record: SourceRecord,
    /// Index of the tier.
    pub tier: usize,
    /// The event id it carries.
    pub id: String,
    /// The event type it carries (not parsed again).
    pub event_type: String,
    /// Its delivery's history.
    pub meta: RetryMeta,
}

/// One delivery inside a deferral batch record: a retry record in all but
/// its place (it has no offset of its own; the batch's stands for all).
#[derive(Debug)]
pub struct BatchEntry {
    /// The batch record's topic.
    pub topic: Arc<str>,
    /// The batch record's partition.
    pub partition: PartitionId,
    /// The batch record's offset.
    pub offset: i64,
    /// Index of the entry in its batch.
    pub index: u32,
    /// Index of the tier.
    pub tier: usize,
    /// Key of the record it stands for.
    pub key: Option<Bytes>,
    /// Value of the record it stands for (a slice of the batch's value).
    pub body: Bytes,
    /// Headers of the record it stands for.
    pub headers: RecordHeaders,
    /// The event id it carries.
    pub id: String,
    /// The event type it carries.
    pub event_type: String,
    /// Its delivery's history.
    pub meta: RetryMeta,
    /// When the batch was consumed.
    pub consumed_at: Instant,
}

/// A deferral batch record of a tier: registered once, with one outcome per
/// entry.
#[derive(Debug)]
pub struct DeferralBatch {
    /// The batch record's partition.
    pub partition: PartitionId,
    /// The batch record's offset.
    pub offset: i64,
    /// Index of the tier.
    pub tier: usize,
    /// When its last entry is due.
    pub due_ms: i64,
    /// The entries.
    pub entries: Vec<Arc<BatchEntry>>,
}

/// A record that is not an event, or not a readable retry: dead-lettered
/// as it is, with why.
#[derive(Debug)]
pub struct InvalidRecord {
    /// The record.
    pub record: SourceRecord,
    /// What is wrong (the DLQ's `hookstream-last-error`).
    pub why: String,
}

/// A record the consumer could not read at all (dead-lettered as
/// `unreadable_record`, with an empty value).
#[derive(Debug)]
pub struct UnreadableRecord {
    /// The record's place (its value and headers are unknown).
    pub record: SourceRecord,
    /// librdkafka's error.
    pub error: String,
}

/// What the poll thread hands the dispatcher for one record.
#[derive(Debug)]
pub enum Polled {
    /// An input event.
    Input(Arc<InputEvent>),
    /// An input record that is not an event.
    Invalid(Arc<InvalidRecord>, InvalidEvent),
    /// A single retry.
    Retry(Arc<RetryEvent>),
    /// A tier record whose retry headers or batch cannot be read.
    BadRetry(Arc<InvalidRecord>),
    /// A deferral batch.
    Batch(DeferralBatch),
    /// A record the consumer could not read.
    Unreadable(Arc<UnreadableRecord>),
}

impl Polled {
    /// The partition of the record.
    pub fn partition(&self) -> PartitionId {
        match self {
            Self::Input(e) => e.record.partition,
            Self::Invalid(r, _) | Self::BadRetry(r) => r.record.partition,
            Self::Retry(e) => e.record.partition,
            Self::Batch(b) => b.partition,
            Self::Unreadable(u) => u.record.partition,
        }
    }

    /// The offset of the record.
    pub fn offset(&self) -> i64 {
        match self {
            Self::Input(e) => e.record.offset,
            Self::Invalid(r, _) | Self::BadRetry(r) => r.record.offset,
            Self::Retry(e) => e.record.offset,
            Self::Batch(b) => b.offset,
            Self::Unreadable(u) => u.record.offset,
        }
    }

    /// Unix ms before which a retry (or a batch) must not be sent.
    pub fn due_ms(&self) -> Option<i64> {
        match self {
            Self::Retry(e) => Some(e.meta.due_ms),
            Self::Batch(b) => Some(b.due_ms),
            _ => None,
        }
    }
}

/// What one delivery sends and writes: an input event, a retry, a batch
/// entry, or (dead letters only) a record that is not an event. Cheap to
/// clone (an `Arc`).
#[derive(Debug, Clone)]
pub enum Payload {
    /// An input event.
    Input(Arc<InputEvent>),
    /// A single retry.
    Retry(Arc<RetryEvent>),
    /// A deferral batch entry.
    Entry(Arc<BatchEntry>),
    /// A record that is not an event.
    Invalid(Arc<InvalidRecord>),
    /// A record the consumer could not read.
    Unreadable(Arc<UnreadableRecord>),
}

impl Payload {
    /// The value: what is signed and sent.
    pub fn body(&self) -> &Bytes {
        match self {
            Self::Input(e) => &e.record.body,
            Self::Retry(e) => &e.record.body,
            Self::Entry(e) => &e.body,
            Self::Invalid(r) => &r.record.body,
            Self::Unreadable(u) => &u.record.body,
        }
    }

    /// The partition of the record it was read from.
    pub fn partition(&self) -> PartitionId {
        match self {
            Self::Input(e) => e.record.partition,
            Self::Retry(e) => e.record.partition,
            Self::Entry(e) => e.partition,
            Self::Invalid(r) => r.record.partition,
            Self::Unreadable(u) => u.record.partition,
        }
    }

    /// The record key.
    pub fn key(&self) -> Option<&Bytes> {
        match self {
            Self::Input(e) => e.record.key.as_ref(),
            Self::Retry(e) => e.record.key.as_ref(),
            Self::Entry(e) => e.key.as_ref(),
            Self::Invalid(r) => r.record.key.as_ref(),
            Self::Unreadable(u) => u.record.key.as_ref(),
        }
    }

    /// The record headers.
    pub fn headers(&self) -> &RecordHeaders {
        match self {
            Self::Input(e) => &e.record.headers,
            Self::Retry(e) => &e.record.headers,
            Self::Entry(e) => &e.headers,
            Self::Invalid(r) => &r.record.headers,
            Self::Unreadable(u) => &u.record.headers,
        }
    }

    /// The event id (webhook ids are derived from it): extracted, carried
    /// by a retry, or a hash of the record's coordinates.
    pub fn id(&self) -> Cow<'_, str> {
        match self {
            Self::Input(e) => Cow::Borrowed(e.fields.id()),
            Self::Retry(e) => Cow::Borrowed(&e.id),
            Self::Entry(e) => Cow::Borrowed(&e.id),
            Self::Invalid(r) => match r.record.header(header::EVENT_ID) {
                Some(id) => String::from_utf8_lossy(id),
                None => Cow::Owned(r.record.coordinates_id()),
            },
            Self::Unreadable(u) => Cow::Owned(u.record.coordinates_id()),
        }
    }

    /// The event type (empty for records that are not events).
    pub fn event_type(&self) -> &str {
        match self {
            Self::Input(e) => e.fields.event_type(),
            Self::Retry(e) => &e.event_type,
            Self::Entry(e) => &e.event_type,
            Self::Invalid(_) | Self::Unreadable(_) => "",
        }
    }

    /// Times the delivery was written to a tier so far (0 for input).
    pub fn hop(&self) -> u32 {
        match self {
            Self::Retry(e) => e.meta.hop.unwrap_or(0),
            Self::Entry(e) => e.meta.hop.unwrap_or(0),
            _ => 0,
        }
    }

    /// When hookstream consumed it.
    pub fn consumed_at(&self) -> Instant {
        match self {
            Self::Input(e) => e.record.consumed_at,
            Self::Retry(e) => e.record.consumed_at,
            Self::Entry(e) => e.consumed_at,
            Self::Invalid(r) => r.record.consumed_at,
            Self::Unreadable(u) => u.record.consumed_at,
        }
    }

    /// Whether it came back from a retry tier.
    pub fn is_retry(&self) -> bool {
        matches!(self, Self::Retry(_) | Self::Entry(_))
    }

    /// The event's own time (unix ms): extracted, or carried by a retry
    /// (`hookstream-event-time-ms`).
    pub fn time_ms(&self) -> Option<i64> {
        match self {
            Self::Input(e) => e.fields.time_ms,
            _ => std::str::from_utf8(self.headers().get(header::EVENT_TIME_MS)?)
                .ok()?
                .parse()
                .ok(),
        }
    }

    /// Where the source's platform finds its body in the event (see
    /// [`Fields::body_pointer`]); carried by a retry as
    /// `hookstream-body-pointer`.
    pub fn body_pointer(&self) -> Option<Cow<'_, str>> {
        match self {
            Self::Input(e) => e.fields.body_pointer.map(Cow::Borrowed),
            _ => self
                .headers()
                .get(header::BODY_POINTER)
                .map(String::from_utf8_lossy),
        }
    }

    /// The device the event names: extracted from an input event, carried
    /// by a retry as `hookstream-device`.
    pub fn device(&self) -> Option<&[u8]> {
        match self {
            Self::Input(e) => e.fields.device().map(str::as_bytes),
            _ => self.headers().get(header::DEVICE),
        }
    }

    /// What per-device ordering orders by: the device, else the record
    /// key (`None`: neither; such events are not held behind each other).
    pub fn ordering_key(&self) -> Option<&[u8]> {
        self.device().or(self.key().map(|k| &k[..]))
    }

    /// The input event's routing fields (input events only).
    pub fn fields(&self) -> Option<&Fields> {
        match self {
            Self::Input(e) => Some(&e.fields),
            _ => None,
        }
    }
}

mod fields;
mod source;

pub use fields::{FieldTexts, Fields};
pub use source::{SourceRef, coordinates, coordinates_id};

#[cfg(test)]
mod tests;
