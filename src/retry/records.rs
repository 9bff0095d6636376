//! What an outcome record holds, assembled without I/O: a single retry or
//! dead letter ([`Write`] with [`Body::One`]), and one endpoint's deferrals
//! to one tier gathered into a batch record ([`DeferralBatch`], the format
//! of [`crate::wire::batch`]) whose outer headers summarise its entries.
//! The [`writer`](super::writer) sends them and runs their completions.

use std::sync::Arc;

use bytes::Bytes;
use rdkafka::message::{Header, OwnedHeaders};

use crate::core::{Payload, Reason};
use crate::wire::batch::{BatchEncoder, MAX_BATCH_BYTES, MAX_BATCH_ENTRIES};
use crate::wire::headers::{History, for_each_retry_header, header, retry_headers};

/// Where a record was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// On the retry tier of this index.
    Retry {
        /// Tier index.
        tier: usize,
    },
    /// On the DLQ (asked for, or a retry too large for its tier).
    DeadLetter,
}

/// What runs once a record is stored: on the delivery-report thread, so it
/// must be quick and must not block (settle an ack token, count).
pub type Completion = Box<dyn FnOnce(Stored) + Send + Sync>;

/// Which topic a write goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    Tier(usize),
    Dlq,
}

/// A write in flight: librdkafka holds it as the record's opaque until the
/// delivery report hands it back.
pub(super) struct Write {
    pub(super) target: Target,
    pub(super) payload: Body,
    /// The dead-letter reason (DLQ writes), for the metric and the summary.
    pub(super) reason: Option<Reason>,
    /// Failed sends so far (for the pause before the next).
    pub(super) failures: u32,
    /// The tier partition of the record's endpoint (`None`: by key).
    pub(super) partition: Option<i32>,
}

/// What a write stores.
pub(super) enum Body {
    /// One event's retry or dead letter.
    One {
        event: Payload,
        /// False once the value was refused as too large for the DLQ.
        with_value: bool,
        done: Completion,
    },
    /// Deferrals of one endpoint in one record ([`crate::wire::batch`]).
    Deferrals(Box<DeferralBatch>),
}

/// A deferral waiting for its batch record.
pub(super) struct Deferral {
    pub(super) event: Payload,
    pub(super) attempt: u32,
    pub(super) first_ms: i64,
    pub(super) due_ms: i64,
    pub(super) why: &'static str,
    pub(super) done: Completion,
}

impl Deferral {
    /// Its history, as a single retry record would carry it.
    pub(super) fn history<'a>(&'a self, endpoint: &'a str) -> History<'a> {
        History {
            endpoint,
            attempt: self.attempt,
            first_ms: self.first_ms,
            last_status: DEFERRED,
            last_error: self.why,
        }
    }

    /// Its single retry record on `tier`: headers and write (placed by key).
    pub(super) fn into_single(self, tier: usize, endpoint: &str) -> (OwnedHeaders, Write) {
        let history = History {
            endpoint,
            attempt: self.attempt,
            first_ms: self.first_ms,
            last_status: DEFERRED,
            last_error: self.why,
        };
        single_retry(tier, self.event, &history, self.due_ms, self.done)
    }
}

/// A single retry record of `event` on `tier`, due at `due_ms`: headers and
/// write (placed by key).
pub(super) fn single_retry(
    tier: usize,
    event: Payload,
    history: &History<'_>,
    due_ms: i64,
    done: Completion,
) -> (OwnedHeaders, Write) {
    let headers = retry_headers(&event, history, due_ms);
    let write = Write {
        target: Target::Tier(tier),
        payload: Body::One {
            event,
            with_value: true,
            done,
        },
        reason: None,
        failures: 0,
        partition: None,
    };
    (headers, write)
}

/// Deferrals of one endpoint to one tier, gathered into one record.
pub(super) struct DeferralBatch {
    pub(super) tier: usize,
    pub(super) endpoint: Arc<str>,
    pub(super) encoder: BatchEncoder,
    pub(super) entries: Vec<Deferral>,
    /// The encoded value, once sealed for writing.
    pub(super) value: Bytes,
}

impl DeferralBatch {
    pub(super) fn new(tier: usize, endpoint: Arc<str>) -> Self {
        Self {
            tier,
            endpoint,
            encoder: BatchEncoder::new(),
            entries: Vec::new(),
            value: Bytes::new(),
        }
    }

    /// Encodes `deferral` into the batch; returns whether the batch is full.
    pub(super) fn add(&mut self, deferral: Deferral) -> bool {
        let history = deferral.history(&self.endpoint);
        self.encoder.push(
            deferral.event.key().map(|k| k.as_ref()),
            |h| {
                for_each_retry_header(&deferral.event, &history, deferral.due_ms, |k, v| {
                    h.add(k, v)
                })
            },
            deferral.event.body(),
        );
        self.entries.push(deferral);
        self.entries.len() >= MAX_BATCH_ENTRIES || self.encoder.len() >= MAX_BATCH_BYTES
    }

    /// The outer headers: the endpoint, the earliest attempt count and
    /// first time, the latest due time, why, and how many entries.
    pub(super) fn headers(&self) -> OwnedHeaders {
        let (mut attempt, mut due, mut first, mut count) = (
            itoa::Buffer::new(),
            itoa::Buffer::new(),
            itoa::Buffer::new(),
            itoa::Buffer::new(),
        );
        let min_attempt = self.entries.iter().map(|d| d.attempt).min().unwrap_or(0);
        let max_due = self.entries.iter().map(|d| d.due_ms).max().unwrap_or(0);
        let min_first = self.entries.iter().map(|d| d.first_ms).min().unwrap_or(0);
        let why = self.entries.first().map_or("", |d| d.why);
        let pairs: [(&str, &[u8]); 7] = [
            (header::ENDPOINT, self.endpoint.as_bytes()),
            (header::ATTEMPT, attempt.format(min_attempt).as_bytes()),
            (header::DUE_MS, due.format(max_due).as_bytes()),
            (header::FIRST_MS, first.format(min_first).as_bytes()),
            (header::LAST_STATUS, DEFERRED.as_bytes()),
            (header::LAST_ERROR, why.as_bytes()),
            (header::BATCH, count.format(self.entries.len()).as_bytes()),
        ];
        pairs
            .into_iter()
            .fold(OwnedHeaders::new_with_capacity(7), |h, (key, value)| {
                h.insert(Header {
                    key,
                    value: Some(value),
                })
            })
    }
}

/// `hookstream-last-status` of a deferral.
pub(super) const DEFERRED: &str = "deferred";

#[cfg(test)]
mod tests {
    use rdkafka::message::Headers;

    use super::*;
    use crate::wire::batch::decode;

    fn event(offset: i64, body: &str) -> Payload {
        Payload::test_input(3, offset, body)
    }

    fn deferral(offset: i64, attempt: u32, first_ms: i64, due_ms: i64) -> Deferral {
        Deferral {
            event: event(offset, "{\"a\":1}"),
            attempt,
            first_ms,
            due_ms,
            why: "circuit open",
            done: Box::new(|_| {}),
        }
    }

    fn outer(headers: &OwnedHeaders) -> Vec<(String, String)> {
        headers
            .iter()
            .map(|h| {
                let value = String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned();
                (h.key.to_string(), value)
            })
            .collect()
    }

    #[test]
    fn a_batch_summarises_its_entries_and_each_entry_reads_back_as_a_single_retry() {
        let mut batch = DeferralBatch::new(1, Arc::from("ep"));
        assert!(!batch.add(deferral(7, 2, 1_000, 9_000)));
        assert!(!batch.add(deferral(8, 0, 2_000, 12_000)));
        let summary = outer(&batch.headers());
        let get = |k: &str| {
            summary
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        // Earliest attempt count and first time, latest due time, count.
        assert_eq!(get(header::ENDPOINT).as_deref(), Some("ep"));
        assert_eq!(get(header::ATTEMPT).as_deref(), Some("0"));
        assert_eq!(get(header::FIRST_MS).as_deref(), Some("1000"));
        assert_eq!(get(header::DUE_MS).as_deref(), Some("12000"));
        assert_eq!(get(header::BATCH).as_deref(), Some("2"));
        assert_eq!(get(header::LAST_STATUS).as_deref(), Some(DEFERRED));

        let value = batch.encoder.value().to_vec();
        let entries = decode(&value).expect("a batch decodes");
        assert_eq!(entries.len(), 2);
        for (entry, (attempt, due)) in entries.iter().zip([("2", "9000"), ("0", "12000")]) {
            assert_eq!(entry.key, Some(&b"device-1"[..]));
            assert_eq!(&value[entry.value.clone()], b"{\"a\":1}");
            let h = |k: &str| {
                entry
                    .headers
                    .iter()
                    .find(|(key, _)| *key == k)
                    .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
            };
            assert_eq!(h(header::ENDPOINT).as_deref(), Some("ep"));
            assert_eq!(h(header::ATTEMPT).as_deref(), Some(attempt));
            assert_eq!(h(header::DUE_MS).as_deref(), Some(due));
        }
    }

    #[test]
    fn a_batch_is_full_at_its_byte_or_entry_cap_whichever_comes_first() {
        let mut batch = DeferralBatch::new(0, Arc::from("ep"));
        let mut added = 0;
        while !batch.add(deferral(added, 0, 0, 0)) {
            added += 1;
            assert!(added < MAX_BATCH_ENTRIES as i64, "never full");
        }
        assert!(
            batch.entries.len() == MAX_BATCH_ENTRIES || batch.encoder.len() >= MAX_BATCH_BYTES,
            "full after {} entries of {} bytes",
            batch.entries.len(),
            batch.encoder.len()
        );
        assert!(
            batch.encoder.len() < MAX_BATCH_BYTES + 1024,
            "one entry past the cap at most"
        );
        // One large event fills a batch by itself.
        let mut batch = DeferralBatch::new(0, Arc::from("ep"));
        let mut big = deferral(0, 0, 0, 0);
        big.event = event(0, &"x".repeat(MAX_BATCH_BYTES));
        assert!(batch.add(big));
    }

    #[test]
    fn a_deferral_written_alone_is_a_single_retry_record_placed_by_key() {
        let (headers, write) = deferral(7, 2, 1_000, 9_000).into_single(2, "ep");
        assert_eq!(write.target, Target::Tier(2));
        assert_eq!(write.partition, None);
        assert!(write.reason.is_none());
        let pairs = outer(&headers);
        assert!(pairs.contains(&(header::DUE_MS.into(), "9000".into())));
        assert!(pairs.contains(&(header::LAST_STATUS.into(), DEFERRED.into())));
        assert!(pairs.contains(&(header::LAST_ERROR.into(), "circuit open".into())));
    }
}
