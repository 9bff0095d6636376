//! Where a record was first consumed: its coordinates
//! (`topic/partition/offset`), the id derived from them, and a delivery's
//! `hookstream-source` (kept from a retry's headers, else its record's
//! coordinates), borrowed or as text.
//!
//! Pure: formatting only.

use std::borrow::Cow;

use sha2::{Digest, Sha256};

use super::{Payload, SourceRecord};
use crate::core::headers::header;

/// Where an event was first consumed, borrowed ([`Payload::source_ref`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceRef<'a> {
    /// A retry's `hookstream-source` header, as kept.
    Kept(&'a [u8]),
    /// The record's own coordinates: `topic/partition/offset`.
    At {
        /// Topic.
        topic: &'a str,
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
    },
}

impl SourceRef<'_> {
    /// Whether there is no text to show (a kept header that is empty).
    pub fn is_empty(&self) -> bool {
        matches!(self, Self::Kept([]))
    }

    /// Its text (see [`SourceRef::write_text`]).
    pub fn text(&self) -> String {
        let mut text = String::new();
        self.write_text(&mut text);
        text
    }

    /// Appends its text to `out`: a kept header as it is (bytes that are
    /// no UTF-8 replaced), coordinates as `topic/partition/offset`.
    pub fn write_text(&self, out: &mut String) {
        match *self {
            Self::Kept(bytes) => out.push_str(&String::from_utf8_lossy(bytes)),
            Self::At {
                topic,
                partition,
                offset,
            } => write_coordinates(out, topic, partition, offset),
        }
    }
}

/// `topic/partition/offset`. Written by hand: this runs for every retry
/// and deferral, and the formatting machinery cost more than the rest of
/// the header.
pub fn coordinates(topic: &str, partition: i32, offset: i64) -> String {
    let mut out = String::with_capacity(topic.len() + 24);
    write_coordinates(&mut out, topic, partition, offset);
    out
}

/// Appends `topic/partition/offset` to `out`.
fn write_coordinates(out: &mut String, topic: &str, partition: i32, offset: i64) {
    out.push_str(topic);
    out.push('/');
    out.push_str(itoa::Buffer::new().format(partition));
    out.push('/');
    out.push_str(itoa::Buffer::new().format(offset));
}

/// Hex id derived from `topic/partition/offset`, stable across restarts.
pub fn coordinates_id(topic: &str, partition: i32, offset: i64) -> String {
    let digest = Sha256::digest(coordinates(topic, partition, offset).as_bytes());
    hex::encode(&digest[..16])
}

impl SourceRecord {
    /// Its coordinates, borrowed.
    fn at(&self) -> SourceRef<'_> {
        SourceRef::At {
            topic: &self.topic,
            partition: self.partition.partition,
            offset: self.offset,
        }
    }
}

impl Payload {
    /// [`Payload::source`] without formatting it: the kept header's bytes,
    /// or the record's coordinates, for writers that format them in place.
    pub fn source_ref(&self) -> SourceRef<'_> {
        if let Some(kept) = self.headers().get(header::SOURCE) {
            return SourceRef::Kept(kept);
        }
        match self {
            Self::Input(e) => e.record.at(),
            Self::Retry(e) => e.record.at(),
            Self::Entry(e) => SourceRef::At {
                topic: &e.topic,
                partition: e.partition.partition,
                offset: e.offset,
            },
            Self::Invalid(r) => r.record.at(),
            Self::Unreadable(u) => u.record.at(),
        }
    }

    /// `hookstream-source`: where the event was first consumed (kept from
    /// a retry's headers, else the record's own coordinates).
    pub fn source(&self) -> Cow<'_, [u8]> {
        match self.source_ref() {
            SourceRef::Kept(bytes) => Cow::Borrowed(bytes),
            SourceRef::At {
                topic,
                partition,
                offset,
            } => Cow::Owned(coordinates(topic, partition, offset).into_bytes()),
        }
    }

    /// [`Payload::source`] as text (bytes that are not UTF-8 replaced).
    pub fn source_text(&self) -> String {
        self.source_ref().text()
    }
}
