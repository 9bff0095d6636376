//! The shape of retry and dead-letter records: header names (SPEC §5), the
//! delivery history they carry, and reading that history back.
//!
//! Pure: builds and parses headers, never produces.

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
    /// Prefix shared by all of the above.
    pub const PREFIX: &str = "hookstream-";
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The delivery history an outcome record carries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// Endpoint id (empty for invalid events, which have none).
    pub endpoint: String,
    /// Attempts made so far that count against `max_attempts`.
    pub attempt: u32,
    /// Unix ms of the first attempt (or of consumption).
    pub first_ms: i64,
    /// Last status text.
    pub last_status: String,
    /// Last error text.
    pub last_error: String,
}

/// The event id used in headers and webhook ids.
pub fn event_id(event: &Event) -> String {
    if let Some(id) = event.header(header::EVENT_ID) {
        return String::from_utf8_lossy(id).into_owned();
    }
    match &event.fields {
        Ok(f) => f.id.clone(),
        Err(_) => coordinates_id(&crate::source::extract::Coordinates {
            topic: &event.topic,
            partition: event.partition.partition,
            offset: event.offset,
        }),
    }
}

/// `hookstream-source` of an event: kept from a retry record, else its own.
pub fn source_of(event: &Event) -> String {
    event
        .header(header::SOURCE)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .unwrap_or_else(|| event.source_coordinates())
}

/// The original headers (minus earlier hookstream ones) plus `extra`.
pub fn outcome_headers(event: &Event, extra: &[(&str, String)]) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new_with_capacity(event.headers.len() + extra.len());
    for (k, v) in &event.headers {
        if !k.starts_with(header::PREFIX) || k == header::REPLAY_OF {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_ref()),
            });
        }
    }
    for (k, v) in extra {
        headers = headers.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        });
    }
    headers
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
}

impl RetryHeaders {
    /// Reads the retry headers of `event`; the error names what is missing.
    pub fn of(event: &Event) -> Result<Self, String> {
        let text = |name: &'static str| -> Result<String, String> {
            event
                .header(name)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .ok_or_else(|| format!("retry record without `{name}`"))
        };
        let number = |name: &'static str| -> Result<i64, String> {
            text(name)?
                .trim()
                .parse::<i64>()
                .map_err(|_| format!("retry record with a malformed `{name}`"))
        };
        Ok(Self {
            endpoint: text(header::ENDPOINT)?,
            attempt: u32::try_from(number(header::ATTEMPT)?)
                .map_err(|_| "retry record with a malformed `hookstream-attempt`".to_string())?,
            due_ms: number(header::DUE_MS)?,
            first_ms: number(header::FIRST_MS)?,
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

/// The headers of a retry record: history plus when it is due.
pub fn retry_headers(event: &Event, history: &History, due_ms: i64) -> OwnedHeaders {
    outcome_headers(
        event,
        &[
            (header::ENDPOINT, history.endpoint.clone()),
            (header::ATTEMPT, history.attempt.to_string()),
            (header::DUE_MS, due_ms.to_string()),
            (header::FIRST_MS, history.first_ms.to_string()),
            (header::SOURCE, source_of(event)),
            (header::EVENT_ID, event_id(event)),
            (header::LAST_STATUS, history.last_status.clone()),
            (header::LAST_ERROR, history.last_error.clone()),
        ],
    )
}

/// The headers of a dead letter: history, reason and time of death.
pub fn dead_letter_headers(
    event: &Event,
    history: &History,
    reason: &str,
    now_ms: i64,
    note: Option<&str>,
) -> OwnedHeaders {
    let mut extra = Vec::with_capacity(10);
    if !history.endpoint.is_empty() {
        extra.push((header::ENDPOINT, history.endpoint.clone()));
    }
    let last_error = match note {
        Some(n) if history.last_error.is_empty() => n.to_string(),
        Some(n) => format!("{}; {n}", history.last_error),
        None => history.last_error.clone(),
    };
    extra.extend([
        (header::ATTEMPT, history.attempt.to_string()),
        (header::DUE_MS, now_ms.to_string()),
        (header::FIRST_MS, history.first_ms.to_string()),
        (header::SOURCE, source_of(event)),
        (header::EVENT_ID, event_id(event)),
        (header::LAST_STATUS, history.last_status.clone()),
        (header::LAST_ERROR, last_error),
        (header::REASON, reason.to_string()),
        (header::DEAD_MS, now_ms.to_string()),
    ]);
    outcome_headers(event, &extra)
}
