//! Reading the activity log's lines back: either kind of line, one event
//! or a batch, into the [`AttemptRecord`]s the API answers with.
//!
//! Pure: bytes in, records out.

use serde::Deserialize;

use crate::index::activity::{AttemptRecord, Outcome};

/// Either kind of line, read in one pass: the fields an attempt's events
/// share, and beside them either one event's own fields (a line of one
/// attempt) or `events` (a batch line, written by [`AttemptLines`]).
#[derive(Deserialize)]
struct Line {
    time_ms: i64,
    #[serde(default)]
    endpoint: String,
    webhook_id: String,
    status: Option<u16>,
    latency_ms: f64,
    error: String,
    event_id: Option<String>,
    #[serde(default)]
    event_type: String,
    attempt: Option<u32>,
    outcome: Option<Outcome>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    source: String,
    events: Option<Vec<BatchEvent>>,
}

/// One event's fields in a batch line.
#[derive(Deserialize)]
struct BatchEvent {
    event_id: String,
    #[serde(default)]
    event_type: String,
    attempt: u32,
    outcome: Outcome,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    source: String,
}

impl Line {
    /// Event `e`'s attempt, with the fields the line's events share.
    fn record(&self, e: BatchEvent) -> AttemptRecord {
        AttemptRecord {
            time_ms: self.time_ms,
            endpoint: self.endpoint.clone(),
            event_id: e.event_id,
            event_type: e.event_type,
            webhook_id: self.webhook_id.clone(),
            attempt: e.attempt,
            status: self.status,
            outcome: e.outcome,
            reason: e.reason,
            latency_ms: self.latency_ms,
            error: self.error.clone(),
            source: e.source,
        }
    }
}

/// Appends the attempts `line` holds to `out`, in the order written (none
/// when it is not a line of the log). Each line is read once, whichever
/// kind it is.
pub fn records_of_line(line: &[u8], out: &mut Vec<AttemptRecord>) {
    let Ok(mut line) = serde_json::from_slice::<Line>(line) else {
        return;
    };
    if let (Some(event_id), Some(attempt), Some(outcome)) =
        (line.event_id.take(), line.attempt, line.outcome)
    {
        let event = BatchEvent {
            event_id,
            event_type: std::mem::take(&mut line.event_type),
            attempt,
            outcome,
            reason: line.reason.take(),
            source: std::mem::take(&mut line.source),
        };
        out.push(line.record(event));
        return;
    }
    if let Some(events) = line.events.take() {
        out.extend(events.into_iter().map(|e| line.record(e)));
    }
}
