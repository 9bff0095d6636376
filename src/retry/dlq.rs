//! Reading the dead-letter topic back: `hookstream dlq list` and the
//! selection `dlq replay` works on.
//!
//! Owns DLQ records as users see them and the filters of SPEC §2. Reads with
//! a group-less consumer (nothing is committed) from the beginning to the
//! end offsets seen at the start, or until the topic has been quiet for a
//! while (some brokers report unreliable end offsets).

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
    /// At most this many (the oldest first).
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
    }
}

/// Parses an RFC 3339 time into unix ms; the error names `flag`.
pub fn parse_time_flag(flag: &str, text: &str) -> Result<i64, String> {
    humantime::parse_rfc3339_weak(text)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .ok_or_else(|| {
            format!("{flag}: `{text}` is not an RFC 3339 time (e.g. 2026-04-15T12:00:00Z)")
        })
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

    fn from_message(m: &rdkafka::message::BorrowedMessage<'_>) -> Self {
        let headers: Vec<(String, Vec<u8>)> = m
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
                    .collect()
            })
            .unwrap_or_default();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
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
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().unwrap_or_default().to_vec(),
            headers,
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

/// The dead letters `filter` selects, oldest first per partition.
pub fn select(client: &ClientConfig, topic: &str, filter: &DlqFilter) -> Result<Vec<DeadLetter>> {
    let mut out = Vec::new();
    read_topic(client, topic, |m| {
        let letter = DeadLetter::from_message(m);
        if filter.admits(&letter) {
            out.push(letter);
        }
        filter.limit.is_none_or(|l| out.len() < l)
    })?;
    out.sort_by_key(|l| (l.dead_ms, l.partition, l.offset));
    Ok(out)
}

/// Formats letters as a table.
pub fn table(letters: &[DeadLetter]) -> String {
    let mut out = format!(
        "{:<12} {:<24} {:<16} {:<20} {:>7} {:<8} {:<38} {:<28} {}\n",
        "PART/OFFSET",
        "DEAD AT",
        "ENDPOINT",
        "REASON",
        "ATTEMPT",
        "STATUS",
        "EVENT ID",
        "EVENT TYPE",
        "SOURCE"
    );
    for l in letters {
        let when = std::time::UNIX_EPOCH + Duration::from_millis(l.dead_ms.max(0) as u64);
        out.push_str(&format!(
            "{:<12} {:<24} {:<16} {:<20} {:>7} {:<8} {:<38} {:<28} {}\n",
            format!("{}/{}", l.partition, l.offset),
            humantime::format_rfc3339_millis(when).to_string(),
            l.endpoint.as_deref().unwrap_or("-"),
            l.reason,
            l.attempt,
            l.last_status,
            l.event_id,
            l.event_type.as_deref().unwrap_or("-"),
            l.source
        ));
    }
    out.push_str(&format!("{} dead letter(s)\n", letters.len()));
    out
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
            limit: None,
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
    fn time_flags_are_rfc3339() {
        assert_eq!(parse_time_flag("--since", "1970-01-01T00:00:01Z"), Ok(1000));
        assert!(
            parse_time_flag("--since", "yesterday")
                .unwrap_err()
                .starts_with("--since")
        );
    }
}
