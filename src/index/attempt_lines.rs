//! The durable activity log's lines for the deliveries of one attempt.
//!
//! An attempt of one event is one line, what serialising its
//! [`AttemptLine`] gives. An attempt of a batch of events is one line per
//! [`EVENTS_PER_LINE`] of them: the fields they share (time, endpoint,
//! webhook id, status, latency, error) once, and each event's own (id,
//! type, attempt number, outcome, reason, source) in `events`. One line
//! per event repeated the shared fields for every event: ~300 bytes per
//! event in bench (b), ~170 so, each copied three times and compressed
//! (the log was 11.4 % of (b)'s pipeline CPU, 10.1 % so).
//! [`records_of_line`] reads either kind back.
//!
//! Pure: bytes in memory, no I/O and no lock; [`super::attempt_log`]
//! appends the finished lines.

use serde::Serialize;

use super::activity::{AttemptLine, Outcome};
use crate::core::SourceRef;

/// An event's own fields in its line.
#[derive(Debug, Clone, Copy)]
pub struct EventFields<'a> {
    /// Event id.
    pub event_id: &'a str,
    /// Event type.
    pub event_type: &'a str,
    /// Attempt number of this event's delivery (1 = first).
    pub attempt: u32,
    /// What followed for this delivery.
    pub outcome: Outcome,
    /// Why it was dead-lettered.
    pub reason: Option<&'a str>,
    /// Where the event was first consumed (empty kept bytes: not written).
    pub source: SourceRef<'a>,
}

/// Events a batch line holds at most: a line stays well under a record
/// ([`super::attempt_log::RECORD_BYTES`]) with ids and sources of a few
/// hundred bytes.
pub const EVENTS_PER_LINE: usize = 128;

/// What a batch line closes with (`]}` and the newline).
const BATCH_END: &[u8] = b"]}\n";

/// The lines of one attempt, built before the log's lock is taken.
#[derive(Debug)]
pub struct AttemptLines<'a> {
    endpoint: &'a str,
    /// One event: a line of its own (the runs below); more: batch lines.
    batched: bool,
    /// `{"time_ms":…,"endpoint":…,"event_id":` (one event), or the batch
    /// line's start, `{"time_ms":…,…,"error":…,"events":[`.
    head: Vec<u8>,
    /// `,"webhook_id":…,"attempt":`
    after_type: Vec<u8>,
    /// `,"status":…,"outcome":`
    after_attempt: Vec<u8>,
    /// `,"latency_ms":…,"error":…`
    after_reason: Vec<u8>,
    bytes: Vec<u8>,
    /// Where each line ends in `bytes`, and its events.
    ends: Vec<(usize, u64)>,
    count: u64,
    failed: u64,
    /// A shared field did not serialise: no line can be written.
    broken: bool,
}

/// Appends `value` as JSON.
fn json<T: Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) -> serde_json::Result<()> {
    serde_json::to_writer(out, value)
}

/// Appends `text` as a JSON string. Ids, types and topics almost never hold
/// a byte JSON escapes (`"`, `\\`, below 0x20), so such text is copied
/// between quotes after one scan ([`needs_escape`]); other text goes
/// through serde_json. The bytes are the same either way. In bench (b),
/// escaping byte by byte was 5 % of the delivery workers' CPU.
fn json_str(out: &mut Vec<u8>, text: &str) -> serde_json::Result<()> {
    if needs_escape(text.as_bytes()) {
        return json(out, text);
    }
    out.reserve(text.len() + 2);
    out.push(b'"');
    out.extend_from_slice(text.as_bytes());
    out.push(b'"');
    Ok(())
}

/// Whether JSON escapes a byte of `bytes` (`"`, `\\` or below 0x20), looked
/// for eight bytes at a time: a byte-by-byte scan of each event's id, type
/// and topic was 2 % of bench (b)'s pipeline CPU.
fn needs_escape(bytes: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    const SPACES: u64 = u64::from_ne_bytes([0x20; 8]);
    const QUOTES: u64 = u64::from_ne_bytes([b'"'; 8]);
    const BACKSLASHES: u64 = u64::from_ne_bytes([b'\\'; 8]);
    // Some byte of `x` is below `n` (at most 0x80); exact as a yes or no,
    // since only such a byte borrows from the one above it.
    let has_below = |x: u64, n: u64| x.wrapping_sub(n) & !x & HIGH != 0;
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_ne_bytes(word);
        if has_below(x, SPACES) || has_below(x ^ QUOTES, ONES) || has_below(x ^ BACKSLASHES, ONES) {
            return true;
        }
    }
    chunks
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// Appends `,"source":…` unless the source is empty: coordinates formatted
/// in place (a retry's kept bytes as text, bytes that are not UTF-8
/// replaced), as serialising `topic/partition/offset` would give.
fn write_source(out: &mut Vec<u8>, source: SourceRef<'_>) -> serde_json::Result<()> {
    match source {
        SourceRef::Kept([]) => Ok(()),
        SourceRef::Kept(bytes) => {
            out.extend_from_slice(b",\"source\":");
            json_str(out, &String::from_utf8_lossy(bytes))
        }
        SourceRef::At {
            topic,
            partition,
            offset,
        } => {
            out.extend_from_slice(b",\"source\":");
            // The topic escaped, its closing quote taken off: `/`, `-`
            // and digits are never escaped, so the rest follows as it is.
            json_str(out, topic)?;
            out.pop();
            out.push(b'/');
            out.extend_from_slice(itoa::Buffer::new().format(partition).as_bytes());
            out.push(b'/');
            out.extend_from_slice(itoa::Buffer::new().format(offset).as_bytes());
            out.push(b'"');
            Ok(())
        }
    }
}

/// The runs of a line between an event's own fields, written from the
/// attempt's shared fields: each line is `Head` event_id `,"event_type":`
/// event_type `AfterType` attempt `AfterAttempt` outcome [reason]
/// `AfterReason` [source] `}`.
#[derive(Debug, Clone, Copy)]
enum Gap {
    /// `{"time_ms":…,"endpoint":…,"event_id":`
    Head,
    /// `,"webhook_id":…,"attempt":`
    AfterType,
    /// `,"status":…,"outcome":`
    AfterAttempt,
    /// `,"latency_ms":…,"error":…`
    AfterReason,
}

/// Appends `gap` of the lines sharing `shared`'s fields.
fn write_gap(out: &mut Vec<u8>, shared: &AttemptLine<'_>, gap: Gap) -> serde_json::Result<()> {
    match gap {
        Gap::Head => {
            out.extend_from_slice(b"{\"time_ms\":");
            out.extend_from_slice(itoa::Buffer::new().format(shared.time_ms).as_bytes());
            out.extend_from_slice(b",\"endpoint\":");
            json_str(out, shared.endpoint)?;
            out.extend_from_slice(b",\"event_id\":");
        }
        Gap::AfterType => {
            out.extend_from_slice(b",\"webhook_id\":");
            json_str(out, shared.webhook_id)?;
            out.extend_from_slice(b",\"attempt\":");
        }
        Gap::AfterAttempt => {
            out.extend_from_slice(b",\"status\":");
            match shared.status {
                Some(status) => {
                    out.extend_from_slice(itoa::Buffer::new().format(status).as_bytes());
                }
                None => out.extend_from_slice(b"null"),
            }
            out.extend_from_slice(b",\"outcome\":");
        }
        Gap::AfterReason => {
            out.extend_from_slice(b",\"latency_ms\":");
            json(out, &shared.latency_ms)?;
            out.extend_from_slice(b",\"error\":");
            json_str(out, shared.error)?;
        }
    }
    Ok(())
}

/// Appends the line of event `e`, each [`Gap`] written by `gap`.
fn write_event(
    out: &mut Vec<u8>,
    e: &EventFields<'_>,
    mut gap: impl FnMut(&mut Vec<u8>, Gap) -> serde_json::Result<()>,
) -> serde_json::Result<()> {
    gap(out, Gap::Head)?;
    json_str(out, e.event_id)?;
    out.extend_from_slice(b",\"event_type\":");
    json_str(out, e.event_type)?;
    gap(out, Gap::AfterType)?;
    json(out, &e.attempt)?;
    gap(out, Gap::AfterAttempt)?;
    // The label is serde's snake_case name of the variant (pinned below).
    json_str(out, e.outcome.label())?;
    if let Some(reason) = e.reason {
        out.extend_from_slice(b",\"reason\":");
        json(out, reason)?;
    }
    gap(out, Gap::AfterReason)?;
    write_source(out, e.source)?;
    out.extend_from_slice(b"}\n");
    Ok(())
}

/// Appends the line of a single attempt (one event), ended by `\n`: what
/// serialising `line` gives, with the field names written as the constants
/// they are instead of escaped at each call (in bench (a), serialising the
/// line was a quarter of the activity log's CPU). On an error `out` may
/// hold part of the line.
pub fn write_line(out: &mut Vec<u8>, line: &AttemptLine<'_>) -> serde_json::Result<()> {
    let event = EventFields {
        event_id: line.event_id,
        event_type: line.event_type,
        attempt: line.attempt,
        outcome: line.outcome,
        reason: line.reason,
        source: line.source,
    };
    write_event(out, &event, |out, gap| write_gap(out, line, gap))
}

/// Appends event `e`'s object of a batch line: its own fields, as
/// serialising them in [`AttemptLine`]'s order gives.
fn write_batch_event(out: &mut Vec<u8>, e: &EventFields<'_>) -> serde_json::Result<()> {
    out.extend_from_slice(b"{\"event_id\":");
    json_str(out, e.event_id)?;
    out.extend_from_slice(b",\"event_type\":");
    json_str(out, e.event_type)?;
    out.extend_from_slice(b",\"attempt\":");
    out.extend_from_slice(itoa::Buffer::new().format(e.attempt).as_bytes());
    out.extend_from_slice(b",\"outcome\":");
    json_str(out, e.outcome.label())?;
    if let Some(reason) = e.reason {
        out.extend_from_slice(b",\"reason\":");
        json(out, reason)?;
    }
    write_source(out, e.source)?;
    out.push(b'}');
    Ok(())
}

impl<'a> AttemptLines<'a> {
    /// The lines of an attempt of `events` events sharing `shared`'s time,
    /// endpoint, webhook id, status, latency and error (its per-event
    /// fields are not used). Should a shared field not serialise, every
    /// event is counted as failed.
    pub fn new(shared: &AttemptLine<'a>, events: usize) -> Self {
        let batched = events > 1;
        let mut lines = Self {
            endpoint: shared.endpoint,
            batched,
            head: Vec::with_capacity(96 + shared.endpoint.len() + shared.webhook_id.len()),
            after_type: Vec::new(),
            after_attempt: Vec::new(),
            after_reason: Vec::new(),
            bytes: Vec::new(),
            ends: Vec::with_capacity(events.div_ceil(EVENTS_PER_LINE)),
            count: 0,
            failed: 0,
            broken: false,
        };
        lines.broken = lines.write_shared(shared).is_err();
        let per_event = if batched {
            160
        } else {
            lines.head.len()
                + lines.after_type.len()
                + lines.after_attempt.len()
                + lines.after_reason.len()
                + 160
        };
        lines.bytes = Vec::with_capacity(
            events
                .saturating_mul(per_event)
                .saturating_add(lines.head.len() * events.div_ceil(EVENTS_PER_LINE)),
        );
        lines
    }

    fn write_shared(&mut self, shared: &AttemptLine<'a>) -> serde_json::Result<()> {
        if !self.batched {
            write_gap(&mut self.head, shared, Gap::Head)?;
            write_gap(&mut self.after_type, shared, Gap::AfterType)?;
            write_gap(&mut self.after_attempt, shared, Gap::AfterAttempt)?;
            return write_gap(&mut self.after_reason, shared, Gap::AfterReason);
        }
        let head = &mut self.head;
        head.extend_from_slice(b"{\"time_ms\":");
        json(head, &shared.time_ms)?;
        head.extend_from_slice(b",\"endpoint\":");
        json_str(head, shared.endpoint)?;
        head.extend_from_slice(b",\"webhook_id\":");
        json_str(head, shared.webhook_id)?;
        head.extend_from_slice(b",\"status\":");
        json(head, &shared.status)?;
        head.extend_from_slice(b",\"latency_ms\":");
        json(head, &shared.latency_ms)?;
        head.extend_from_slice(b",\"error\":");
        json_str(head, shared.error)?;
        head.extend_from_slice(b",\"events\":[");
        Ok(())
    }

    /// Adds one event (an event that cannot be written is counted in
    /// [`AttemptLines::failed`] and left out).
    pub fn push(&mut self, event: EventFields<'_>) {
        if self.broken {
            self.failed += 1;
            return;
        }
        let written = if self.batched {
            self.write_batched(&event)
        } else {
            self.write_single(&event)
        };
        match written {
            Ok(()) => self.count += 1,
            Err(_) => self.failed += 1,
        }
    }

    /// Writes the line of the attempt's one event.
    fn write_single(&mut self, e: &EventFields<'_>) -> serde_json::Result<()> {
        let Self {
            head,
            after_type,
            after_attempt,
            after_reason,
            bytes,
            ends,
            ..
        } = self;
        let start = bytes.len();
        let written = write_event(bytes, e, |out, gap| {
            out.extend_from_slice(match gap {
                Gap::Head => head,
                Gap::AfterType => after_type,
                Gap::AfterAttempt => after_attempt,
                Gap::AfterReason => after_reason,
            });
            Ok(())
        });
        match written {
            Ok(()) => ends.push((bytes.len(), 1)),
            Err(_) => bytes.truncate(start),
        }
        written
    }

    /// Adds `e` to the open batch line (the last one, while it has room),
    /// or starts a line with it; the lines stay closed between calls.
    fn write_batched(&mut self, e: &EventFields<'_>) -> serde_json::Result<()> {
        let start = self.bytes.len();
        let open = self
            .ends
            .last()
            .is_some_and(|(_, n)| (*n as usize) < EVENTS_PER_LINE);
        if open {
            self.bytes.truncate(start - BATCH_END.len());
            self.bytes.push(b',');
        } else {
            self.bytes.extend_from_slice(&self.head);
        }
        if let Err(e) = write_batch_event(&mut self.bytes, e) {
            // Back to the lines as they were.
            if open {
                self.bytes.truncate(start - BATCH_END.len());
                self.bytes.extend_from_slice(BATCH_END);
            } else {
                self.bytes.truncate(start);
            }
            return Err(e);
        }
        self.bytes.extend_from_slice(BATCH_END);
        let end = self.bytes.len();
        match self.ends.last_mut() {
            Some(last) if open => *last = (end, last.1 + 1),
            _ => self.ends.push((end, 1)),
        }
        Ok(())
    }

    /// The endpoint the lines are of.
    pub fn endpoint(&self) -> &'a str {
        self.endpoint
    }

    /// The lines, each ended by `\n`.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The lines in runs of at most `max_bytes` (a line longer than that
    /// is a run of its own), with the events each run holds.
    pub fn runs(&self, max_bytes: usize) -> impl Iterator<Item = (&[u8], u64)> + '_ {
        let mut start = 0;
        let mut next = 0;
        std::iter::from_fn(move || {
            let first = *self.ends.get(next)?;
            let (mut end, mut events) = first;
            next += 1;
            while let Some(&(line_end, n)) = self.ends.get(next) {
                if line_end - start > max_bytes {
                    break;
                }
                (end, events) = (line_end, events + n);
                next += 1;
            }
            let run = (&self.bytes[start..end], events);
            start = end;
            Some(run)
        })
    }

    /// How many events the lines hold.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// How many events could not be written.
    pub fn failed(&self) -> u64 {
        self.failed
    }
}

mod read;
pub use read::records_of_line;

#[cfg(test)]
mod tests;
