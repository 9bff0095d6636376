//! Dead letters as users see them: the record shape, the filters of
//! `hookstream dlq list|show|replay`, the time flags they take, and
//! [`read_topic`] (a whole topic, for the replay ledger and tests).
//!
//! Selecting letters from the DLQ by time, streamed, is [`super::dlq_scan`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Serialize;

use crate::wire::headers::header;

/// Which dead letters a command works on.
#[derive(Debug, Clone, Default)]
pub struct DlqFilter {
    /// Only this endpoint.
    pub endpoint: Option<String>,
    /// Only this reason.
    pub reason: Option<String>,
    /// Dead at or after (unix ms).
    pub since_ms: Option<i64>,
    /// Dead before (unix ms).
    pub until_ms: Option<i64>,
    /// Only this event type: exact, or a prefix ending in `*`.
    pub event_type: Option<String>,
    /// Only this event id.
    pub event_id: Option<String>,
    /// At most this many (the first read: partition by partition, oldest
    /// first in each).
    pub limit: Option<usize>,
}

impl DlqFilter {
    /// Whether `letter` is selected (the limit is applied by the reader).
    pub fn admits(&self, letter: &DeadLetter) -> bool {
        self.endpoint
            .as_ref()
            .is_none_or(|e| letter.endpoint.as_deref() == Some(e.as_str()))
            && self.reason.as_ref().is_none_or(|r| &letter.reason == r)
            && self.since_ms.is_none_or(|s| letter.dead_ms >= s)
            && self.until_ms.is_none_or(|u| letter.dead_ms < u)
            && self
                .event_id
                .as_ref()
                .is_none_or(|id| &letter.event_id == id)
            && self.event_type.as_ref().is_none_or(|pattern| {
                letter
                    .event_type
                    .as_deref()
                    .is_some_and(|t| type_matches(pattern, t))
            })
    }
}

/// `pattern` is an exact type or a prefix ending in `*` (`*` alone: any).
fn type_matches(pattern: &str, event_type: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => event_type.starts_with(prefix),
        None => pattern == event_type,
    }
}

/// Parses a time flag into unix ms, given the time now: an RFC 3339 time
/// (`2026-04-15T12:00:00Z`, `2026-04-15T14:00:00+02:00`, fractions of a
/// second allowed) or a duration before now (`90m`, `1h30m`, `2d`). The
/// error names `flag`.
pub fn parse_time_flag(flag: &str, text: &str, now_ms: i64) -> Result<i64, String> {
    let text = text.trim();
    let refused = || {
        format!(
            "{flag}: `{text}` is neither an RFC 3339 time (2026-04-15T12:00:00Z, \
             2026-04-15T14:00:00+02:00) nor a duration before now (30m, 1h30m, 2d)"
        )
    };
    if let Ok(ago) = humantime::parse_duration(text) {
        let ago = i64::try_from(ago.as_millis()).map_err(|_| refused())?;
        return Ok(now_ms.saturating_sub(ago));
    }
    let (local, offset_ms) = split_utc_offset(text).ok_or_else(refused)?;
    let millis = humantime::parse_rfc3339_weak(local)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_millis()).ok())
        .ok_or_else(refused)?;
    Ok(millis - offset_ms)
}

/// Splits `…Z`, `…+HH:MM` or `…-HH:MM` into the time without its offset
/// and the offset in ms (east positive); none when there is no offset.
fn split_utc_offset(text: &str) -> Option<(&str, i64)> {
    if let Some(local) = text.strip_suffix(['Z', 'z']) {
        return Some((local, 0));
    }
    let at = text.len().checked_sub(6)?;
    let (local, offset) = (text.get(..at)?, text.get(at..)?);
    let sign = match offset.as_bytes() {
        [b'+', _, _, b':', _, _] => 1,
        [b'-', _, _, b':', _, _] => -1,
        _ => return None,
    };
    let hours: i64 = offset.get(1..3)?.parse().ok()?;
    let minutes: i64 = offset.get(4..6)?.parse().ok()?;
    if hours > 23 || minutes > 59 || !(local.contains('T') || local.contains(' ')) {
        return None;
    }
    Some((local, sign * (hours * 3_600_000 + minutes * 60_000)))
}

/// One dead letter.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    /// DLQ partition.
    pub partition: i32,
    /// DLQ offset.
    pub offset: i64,
    /// Endpoint (none for invalid events).
    pub endpoint: Option<String>,
    /// `hookstream-reason`.
    pub reason: String,
    /// `hookstream-dead-ms`.
    pub dead_ms: i64,
    /// `hookstream-event-id`.
    pub event_id: String,
    /// `hookstream-event-type` (absent on invalid events, which have none).
    pub event_type: Option<String>,
    /// `hookstream-attempt`.
    pub attempt: u32,
    /// `hookstream-last-status`.
    pub last_status: String,
    /// `hookstream-last-error`.
    pub last_error: String,
    /// `hookstream-source`.
    pub source: String,
    /// `hookstream-replay-of`, when this letter came from an earlier replay.
    pub replay_of: Option<String>,
    /// Record key.
    #[serde(skip)]
    pub key: Option<Vec<u8>>,
    /// Record value (the event).
    #[serde(skip)]
    pub value: Vec<u8>,
    /// Every record header.
    #[serde(skip)]
    pub headers: Vec<(String, Vec<u8>)>,
}

impl DeadLetter {
    /// `topic/partition/offset` of this letter.
    pub fn coordinates(&self, topic: &str) -> String {
        format!("{topic}/{}/{}", self.partition, self.offset)
    }

    /// The letter a DLQ record holds.
    pub fn from_message(m: &rdkafka::message::BorrowedMessage<'_>) -> Self {
        let mut letter = Self::facts_of(m);
        letter.headers = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        letter.key = m.key().map(<[u8]>::to_vec);
        letter.value = m.payload().unwrap_or_default().to_vec();
        letter
    }

    /// Only what filters, counts and listings read: the `hookstream-*`
    /// facts, without copying the record's key, value and header list
    /// (the counting pass of a replay reads every letter this way).
    pub fn facts_of(m: &rdkafka::message::BorrowedMessage<'_>) -> Self {
        let get = |name: &str| {
            m.headers()
                .and_then(|hs| hs.iter().find(|h| h.key == name))
                .map(|h| String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())
        };
        Self {
            partition: m.partition(),
            offset: m.offset(),
            endpoint: get(header::ENDPOINT),
            reason: get(header::REASON).unwrap_or_default(),
            dead_ms: get(header::DEAD_MS)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            event_id: get(header::EVENT_ID).unwrap_or_default(),
            event_type: get(header::EVENT_TYPE),
            attempt: get(header::ATTEMPT)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            last_status: get(header::LAST_STATUS).unwrap_or_default(),
            last_error: get(header::LAST_ERROR).unwrap_or_default(),
            source: get(header::SOURCE).unwrap_or_default(),
            replay_of: get(header::REPLAY_OF),
            key: None,
            value: Vec::new(),
            headers: Vec::new(),
        }
    }
}

/// How long a read waits for more records once none arrive.
const QUIET: Duration = Duration::from_secs(3);

/// Reads every record of `topic` from the beginning and calls `each`;
/// stops shortly after the end offsets seen at the start are reached, or
/// after [`QUIET`] without a record. `each` returns false to stop early.
pub fn read_topic(
    client: &ClientConfig,
    topic: &str,
    mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>) -> bool,
) -> Result<()> {
    let consumer: BaseConsumer = client
        .clone()
        .set("group.id", "hookstream-dlq-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .context("creating the reader")?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(15))
        .with_context(|| format!("reading metadata of {topic}"))?;
    let mut tpl = TopicPartitionList::new();
    let mut remaining: HashMap<i32, i64> = HashMap::new();
    for t in metadata.topics() {
        if let Some(err) = t.error() {
            anyhow::bail!("topic {topic}: {err:?}");
        }
        for p in t.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(topic, p.id(), Duration::from_secs(15))
                .with_context(|| format!("reading end offsets of {topic}"))?;
            if high > low {
                remaining.insert(p.id(), high);
            }
            // Partitions that look empty are read too: some brokers report
            // wrong end offsets. The quiet period ends those reads.
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .context("building the assignment")?;
        }
    }
    consumer.assign(&tpl).context("assigning the topic")?;
    let mut last = Instant::now();
    loop {
        let quiet = last.elapsed();
        if quiet >= QUIET || (remaining.is_empty() && quiet >= Duration::from_millis(300)) {
            break;
        }
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                last = Instant::now();
                if let Some(end) = remaining.get(&m.partition())
                    && m.offset() + 1 >= *end
                {
                    remaining.remove(&m.partition());
                }
                if !each(&m) {
                    break;
                }
            }
            Some(Err(e)) => tracing::warn!(error = %e, "read error"),
            None => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(endpoint: Option<&str>, reason: &str, dead_ms: i64) -> DeadLetter {
        DeadLetter {
            partition: 0,
            offset: 0,
            endpoint: endpoint.map(str::to_string),
            reason: reason.into(),
            dead_ms,
            event_id: "e".into(),
            event_type: Some("device-status-changed".into()),
            attempt: 1,
            last_status: "400".into(),
            last_error: String::new(),
            source: "t/0/0".into(),
            replay_of: None,
            key: None,
            value: Vec::new(),
            headers: Vec::new(),
        }
    }

    #[test]
    fn filters_combine() {
        let f = DlqFilter {
            endpoint: Some("a".into()),
            reason: Some("http_400".into()),
            since_ms: Some(100),
            until_ms: Some(200),
            ..DlqFilter::default()
        };
        assert!(f.admits(&letter(Some("a"), "http_400", 150)));
        assert!(!f.admits(&letter(Some("b"), "http_400", 150)));
        assert!(!f.admits(&letter(Some("a"), "exhausted", 150)));
        assert!(!f.admits(&letter(Some("a"), "http_400", 99)));
        assert!(!f.admits(&letter(Some("a"), "http_400", 200)));
        assert!(!f.admits(&letter(None, "http_400", 150)));
        assert!(DlqFilter::default().admits(&letter(None, "invalid_event", 0)));
    }

    #[test]
    fn type_and_id_filters() {
        let by_type = |t: &str| DlqFilter {
            event_type: Some(t.into()),
            ..DlqFilter::default()
        };
        let l = letter(Some("a"), "http_400", 1);
        assert!(by_type("device-status-changed").admits(&l));
        assert!(by_type("device-*").admits(&l));
        assert!(by_type("*").admits(&l));
        assert!(!by_type("device").admits(&l));
        assert!(!by_type("deployment-*").admits(&l));
        let mut untyped = l.clone();
        untyped.event_type = None;
        assert!(!by_type("*").admits(&untyped));
        let by_id = |id: &str| DlqFilter {
            event_id: Some(id.into()),
            ..DlqFilter::default()
        };
        assert!(by_id("e").admits(&l));
        assert!(!by_id("f").admits(&l));
    }

    #[test]
    fn time_flags_take_rfc3339_with_offsets_and_durations_before_now() {
        let now = 10_000_000;
        let t = |text: &str| parse_time_flag("--since", text, now);
        assert_eq!(t("1970-01-01T00:00:01Z"), Ok(1000));
        assert_eq!(t("1970-01-01T00:00:01.5Z"), Ok(1500));
        assert_eq!(t("1970-01-01T02:00:01+02:00"), Ok(1000));
        assert_eq!(t("1970-01-01T00:00:01-00:30"), Ok(1000 + 1_800_000));
        assert_eq!(t("1h"), Ok(now - 3_600_000));
        assert_eq!(t("1h30m"), Ok(now - 5_400_000));
        assert_eq!(t("1d"), Ok(now - 86_400_000));
        for bad in [
            "yesterday",
            "",
            "2026-04-15T12:00:00+25:00",
            "12:00+02:00",
            "1x",
        ] {
            assert!(t(bad).unwrap_err().starts_with("--since"), "{bad}");
        }
    }
}
