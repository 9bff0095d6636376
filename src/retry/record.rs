//! The shape of retry and dead-letter records: header names (SPEC §5), the
//! delivery history they carry, and reading that history back.
//!
//! Pure: builds and parses headers, never produces.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use rdkafka::message::{Header, OwnedHeaders};

use crate::source::event::Event;
use crate::source::extract::coordinates_id;

/// Header names hookstream writes on retry and DLQ records.
pub mod header {
    /// Endpoint id.
    pub const ENDPOINT: &str = "hookstream-endpoint";
    /// Attempts made so far.
    pub const ATTEMPT: &str = "hookstream-attempt";
    /// Unix ms when the record may be sent.
    pub const DUE_MS: &str = "hookstream-due-ms";
    /// Unix ms of the first attempt.
    pub const FIRST_MS: &str = "hookstream-first-ms";
    /// `topic/partition/offset` of the original record.
    pub const SOURCE: &str = "hookstream-source";
    /// Event id.
    pub const EVENT_ID: &str = "hookstream-event-id";
    /// Event type as extracted when first consumed: a retry is routed and
    /// signed without parsing its value again.
    pub const EVENT_TYPE: &str = "hookstream-event-type";
    /// Last HTTP status or failure kind.
    pub const LAST_STATUS: &str = "hookstream-last-status";
    /// Last error text.
    pub const LAST_ERROR: &str = "hookstream-last-error";
    /// Why the record was dead-lettered.
    pub const REASON: &str = "hookstream-reason";
    /// Unix ms when it was dead-lettered.
    pub const DEAD_MS: &str = "hookstream-dead-ms";
    /// DLQ coordinates a replayed record came from.
    pub const REPLAY_OF: &str = "hookstream-replay-of";
    /// How many times the delivery has been written to a retry tier,
    /// this record included: two records of one delivery with the same
    /// hop are copies ([`crate::retry::copies`]).
    pub const HOP: &str = "hookstream-hop";
    /// Entries of a deferral batch record ([`crate::retry::batch`]).
    pub const BATCH: &str = "hookstream-batch";
    /// Prefix shared by all of the above.
    pub const PREFIX: &str = "hookstream-";
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The delivery history an outcome record carries (borrowed: it only
/// lives while the record's headers are built).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct History<'a> {
    /// Endpoint id (empty for invalid events, which have none).
    pub endpoint: &'a str,
    /// Attempts made so far that count against `max_attempts`.
    pub attempt: u32,
    /// Unix ms of the first attempt (or of consumption).
    pub first_ms: i64,
    /// Last status text.
    pub last_status: &'a str,
    /// Last error text.
    pub last_error: &'a str,
}

/// The event id used in headers and webhook ids.
pub fn event_id(event: &Event) -> Cow<'_, str> {
    if let Some(id) = event.header(header::EVENT_ID) {
        return String::from_utf8_lossy(id);
    }
    match &event.fields {
        Ok(f) => Cow::Borrowed(&f.id),
        Err(_) => Cow::Owned(coordinates_id(&crate::source::extract::Coordinates {
            topic: &event.topic,
            partition: event.partition.partition,
            offset: event.offset,
        })),
    }
}

/// `hookstream-source` of an event: kept from a retry record, else its own.
pub fn source_of(event: &Event) -> Cow<'_, [u8]> {
    event
        .header(header::SOURCE)
        .map(Cow::Borrowed)
        .unwrap_or_else(|| Cow::Owned(event.source_coordinates().into_bytes()))
}

/// Calls `add` with each original header of `event` that outcome records
/// keep: all but earlier `hookstream-*` ones (`hookstream-replay-of` stays).
fn for_each_kept_header(event: &Event, mut add: impl FnMut(&str, &[u8])) {
    for (k, v) in event.headers.iter() {
        if !k.starts_with(header::PREFIX) || k == header::REPLAY_OF {
            add(k, v);
        }
    }
}

/// The original headers (minus earlier hookstream ones) plus `extra`.
pub fn outcome_headers(event: &Event, extra: &[(&str, &[u8])]) -> OwnedHeaders {
    let mut headers = HeaderList::new(event.headers.len() + extra.len());
    for_each_kept_header(event, |k, v| headers.add(k, v));
    for (k, v) in extra {
        headers.add(k, v);
    }
    headers.done()
}

/// The event type to carry on outcome records, so a retry needs no second
/// parse of its value: the extracted one, or the one it already carries.
fn event_type_of(event: &Event) -> &[u8] {
    match &event.fields {
        Ok(f) => f.event_type.as_bytes(),
        Err(_) => event.header(header::EVENT_TYPE).unwrap_or_default(),
    }
}

/// What a record read from a retry tier says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryHeaders {
    /// Endpoint the retry is for.
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

impl RetryHeaders {
    /// Reads the retry headers of `event`; the error names what is missing.
    pub fn of(event: &Event) -> Result<Self, String> {
        let text = |name: &'static str| -> Result<&str, String> {
            let value = event
                .header(name)
                .ok_or_else(|| format!("retry record without `{name}`"))?;
            std::str::from_utf8(value)
                .map_err(|_| format!("retry record with a malformed `{name}`"))
        };
        let number = |name: &'static str| -> Result<i64, String> {
            text(name)?
                .trim()
                .parse::<i64>()
                .map_err(|_| format!("retry record with a malformed `{name}`"))
        };
        Ok(Self {
            endpoint: text(header::ENDPOINT)?.to_string(),
            attempt: u32::try_from(number(header::ATTEMPT)?)
                .map_err(|_| "retry record with a malformed `hookstream-attempt`".to_string())?,
            due_ms: number(header::DUE_MS)?,
            first_ms: number(header::FIRST_MS)?,
            hop: hop_of(event),
        })
    }

    /// The due time of a retry record, if it is one.
    pub fn due_of(event: &Event) -> Option<i64> {
        event
            .header(header::DUE_MS)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse().ok())
    }
}

/// The hop of a retry record (`None` for input records and records
/// written before hops were counted).
fn hop_of(event: &Event) -> Option<u32> {
    event
        .header(header::HOP)
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Calls `add` with each header of a retry record of `event`: the kept
/// original headers, then history and when it is due.
pub fn for_each_retry_header(
    event: &Event,
    history: &History<'_>,
    due_ms: i64,
    mut add: impl FnMut(&str, &[u8]),
) {
    let (mut attempt, mut due, mut first, mut hop) = (
        itoa::Buffer::new(),
        itoa::Buffer::new(),
        itoa::Buffer::new(),
        itoa::Buffer::new(),
    );
    let next_hop = hop_of(event).unwrap_or(0).saturating_add(1);
    let source = source_of(event);
    let id = event_id(event);
    for_each_kept_header(event, &mut add);
    for (k, v) in [
        (header::ENDPOINT, history.endpoint.as_bytes()),
        (header::ATTEMPT, attempt.format(history.attempt).as_bytes()),
        (header::DUE_MS, due.format(due_ms).as_bytes()),
        (header::FIRST_MS, first.format(history.first_ms).as_bytes()),
        (header::SOURCE, &source),
        (header::EVENT_ID, id.as_bytes()),
        (header::EVENT_TYPE, event_type_of(event)),
        (header::LAST_STATUS, history.last_status.as_bytes()),
        (header::LAST_ERROR, history.last_error.as_bytes()),
        (header::HOP, hop.format(next_hop).as_bytes()),
    ] {
        add(k, v);
    }
}

/// The headers of a retry record: history plus when it is due.
pub fn retry_headers(event: &Event, history: &History<'_>, due_ms: i64) -> OwnedHeaders {
    let mut headers = HeaderList::new(event.headers.len() + 10);
    for_each_retry_header(event, history, due_ms, |k, v| headers.add(k, v));
    headers.done()
}

/// librdkafka headers built one by one (`OwnedHeaders::insert` takes and
/// gives back the list).
struct HeaderList(Option<OwnedHeaders>);

impl HeaderList {
    fn new(capacity: usize) -> Self {
        Self(Some(OwnedHeaders::new_with_capacity(capacity)))
    }

    fn add(&mut self, key: &str, value: &[u8]) {
        self.0 = self.0.take().map(|h| {
            h.insert(Header {
                key,
                value: Some(value),
            })
        });
    }

    fn done(self) -> OwnedHeaders {
        self.0.unwrap_or_default()
    }
}

/// The headers of a dead letter: history, reason and time of death.
pub fn dead_letter_headers(
    event: &Event,
    history: &History<'_>,
    reason: &str,
    now_ms: i64,
    note: Option<&str>,
) -> OwnedHeaders {
    let (mut attempt, mut now, mut first) = (
        itoa::Buffer::new(),
        itoa::Buffer::new(),
        itoa::Buffer::new(),
    );
    let now = now.format(now_ms);
    let source = source_of(event);
    let id = event_id(event);
    let last_error: Cow<'_, str> = match note {
        Some(n) if history.last_error.is_empty() => Cow::Borrowed(n),
        Some(n) => Cow::Owned(format!("{}; {n}", history.last_error)),
        None => Cow::Borrowed(history.last_error),
    };
    let mut extra: Vec<(&str, &[u8])> = Vec::with_capacity(11);
    if !history.endpoint.is_empty() {
        extra.push((header::ENDPOINT, history.endpoint.as_bytes()));
    }
    extra.extend([
        (header::ATTEMPT, attempt.format(history.attempt).as_bytes()),
        (header::DUE_MS, now.as_bytes()),
        (header::FIRST_MS, first.format(history.first_ms).as_bytes()),
        (header::SOURCE, &source),
        (header::EVENT_ID, id.as_bytes()),
    ]);
    let event_type = event_type_of(event);
    if !event_type.is_empty() {
        extra.push((header::EVENT_TYPE, event_type));
    }
    extra.extend([
        (header::LAST_STATUS, history.last_status.as_bytes()),
        (header::LAST_ERROR, last_error.as_bytes()),
        (header::REASON, reason.as_bytes()),
        (header::DEAD_MS, now.as_bytes()),
    ]);
    outcome_headers(event, &extra)
}

/// The partition of a retry tier that retries for `endpoint` go to, of
/// `partitions` (FNV-1a of the endpoint id: stable across instances and
/// restarts). One endpoint's retries and deferrals stay together, so a dead
/// endpoint's backlog holds back at most one partition of each tier, and
/// its records are written in few, large batches.
pub fn endpoint_partition(endpoint: &str, partitions: i32) -> i32 {
    let hash = endpoint.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (hash % partitions.max(1) as u64) as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_endpoint_keeps_its_partition_and_endpoints_spread() {
        assert_eq!(
            endpoint_partition("analytics", 16),
            endpoint_partition("analytics", 16)
        );
        assert_eq!(endpoint_partition("anything", 1), 0);
        assert_eq!(endpoint_partition("anything", 0), 0, "no partitions known");
        let mut used = std::collections::BTreeSet::new();
        for i in 0..200 {
            let p = endpoint_partition(&format!("endpoint-{i}"), 16);
            assert!((0..16).contains(&p));
            used.insert(p);
        }
        assert_eq!(used.len(), 16, "200 endpoints use every partition");
    }
}
