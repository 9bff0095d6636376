//! The shape of retry and dead-letter records: header names (SPEC §5), the
//! delivery history they carry, and reading that history back.
//!
//! Pure: builds and parses headers, never produces.

use rdkafka::message::{Header, OwnedHeaders};

use crate::core::{Payload, RecordHeaders, RetryMeta};

pub use crate::core::headers::header;
pub use crate::core::now_ms;

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

/// Calls `add` with each original header of `event` that outcome records
/// keep: all but earlier `hookstream-*` ones (`hookstream-replay-of` stays).
fn for_each_kept_header(event: &Payload, mut add: impl FnMut(&str, &[u8])) {
    for (k, v) in event.headers().iter() {
        if !k.starts_with(header::PREFIX) || k == header::REPLAY_OF {
            add(k, v);
        }
    }
}

/// The original headers (minus earlier hookstream ones) plus `extra`.
pub fn outcome_headers(event: &Payload, extra: &[(&str, &[u8])]) -> OwnedHeaders {
    let mut headers = HeaderList::new(event.headers().len() + extra.len());
    for_each_kept_header(event, |k, v| headers.add(k, v));
    for (k, v) in extra {
        headers.add(k, v);
    }
    headers.done()
}

/// Reads what a retry record's headers say about its delivery; the error
/// names what is missing or malformed.
pub fn retry_meta(headers: &RecordHeaders) -> Result<RetryMeta, String> {
    let text = |name: &'static str| -> Result<&str, String> {
        let value = headers
            .get(name)
            .ok_or_else(|| format!("retry record without `{name}`"))?;
        std::str::from_utf8(value).map_err(|_| format!("retry record with a malformed `{name}`"))
    };
    let number = |name: &'static str| -> Result<i64, String> {
        text(name)?
            .trim()
            .parse::<i64>()
            .map_err(|_| format!("retry record with a malformed `{name}`"))
    };
    Ok(RetryMeta {
        endpoint: text(header::ENDPOINT)?.to_string(),
        attempt: u32::try_from(number(header::ATTEMPT)?)
            .map_err(|_| "retry record with a malformed `hookstream-attempt`".to_string())?,
        due_ms: number(header::DUE_MS)?,
        first_ms: number(header::FIRST_MS)?,
        hop: headers
            .get(header::HOP)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.trim().parse().ok()),
    })
}

/// Calls `add` with each header of a retry record of `event`: the kept
/// original headers, then history and when it is due.
pub fn for_each_retry_header(
    event: &Payload,
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
    let next_hop = event.hop().saturating_add(1);
    let source = event.source();
    let id = event.id();
    for_each_kept_header(event, &mut add);
    for (k, v) in [
        (header::ENDPOINT, history.endpoint.as_bytes()),
        (header::ATTEMPT, attempt.format(history.attempt).as_bytes()),
        (header::DUE_MS, due.format(due_ms).as_bytes()),
        (header::FIRST_MS, first.format(history.first_ms).as_bytes()),
        (header::SOURCE, &source),
        (header::EVENT_ID, id.as_bytes()),
        (header::EVENT_TYPE, event.event_type().as_bytes()),
        (header::LAST_STATUS, history.last_status.as_bytes()),
        (header::LAST_ERROR, history.last_error.as_bytes()),
        (header::HOP, hop.format(next_hop).as_bytes()),
    ] {
        add(k, v);
    }
    for_each_shaping_header(event, add);
}

/// Calls `add` with what later attempts need without parsing the event
/// again: its own time and platform body pointer (shaping) and its device
/// (per-device ordering), when it has them.
fn for_each_shaping_header(event: &Payload, mut add: impl FnMut(&str, &[u8])) {
    let mut time = itoa::Buffer::new();
    if let Some(ms) = event.time_ms() {
        add(header::EVENT_TIME_MS, time.format(ms).as_bytes());
    }
    if let Some(pointer) = event.body_pointer() {
        add(header::BODY_POINTER, pointer.as_bytes());
    }
    if let Some(device) = event.device() {
        add(header::DEVICE, device);
    }
}

/// The headers of a retry record: history plus when it is due.
pub fn retry_headers(event: &Payload, history: &History<'_>, due_ms: i64) -> OwnedHeaders {
    let mut headers = HeaderList::new(event.headers().len() + 12);
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
    event: &Payload,
    history: &History<'_>,
    reason: &str,
    now_ms: i64,
) -> OwnedHeaders {
    let (mut attempt, mut now, mut first) = (
        itoa::Buffer::new(),
        itoa::Buffer::new(),
        itoa::Buffer::new(),
    );
    let now = now.format(now_ms);
    let source = event.source();
    let id = event.id();
    let last_error = history.last_error;
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
    let event_type = event.event_type();
    if !event_type.is_empty() {
        extra.push((header::EVENT_TYPE, event_type.as_bytes()));
    }
    extra.extend([
        (header::LAST_STATUS, history.last_status.as_bytes()),
        (header::LAST_ERROR, last_error.as_bytes()),
        (header::REASON, reason.as_bytes()),
        (header::DEAD_MS, now.as_bytes()),
    ]);
    let mut time = itoa::Buffer::new();
    let time_ms = event.time_ms();
    if let Some(ms) = time_ms {
        extra.push((header::EVENT_TIME_MS, time.format(ms).as_bytes()));
    }
    let pointer = event.body_pointer();
    if let Some(pointer) = &pointer {
        extra.push((header::BODY_POINTER, pointer.as_bytes()));
    }
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
