//! The durable activity log's lines for the deliveries of one attempt (a
//! batch of events in one request): the fields all of them share (time,
//! endpoint, webhook id, status, latency, error) are written as JSON once,
//! and each event's own (id, type, attempt number, outcome, reason, source)
//! once per line. In bench (b), serialising every field of every line was
//! half of the delivery workers' CPU.
//!
//! Each line is byte for byte what serialising its [`AttemptLine`] gives: a
//! test pins it, so a field added to the line shows up here or fails it.
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

/// JSON lines of one attempt, one per event, built before the log's lock
/// is taken.
#[derive(Debug)]
pub struct AttemptLines<'a> {
    endpoint: &'a str,
    /// `{"time_ms":…,"endpoint":…,"event_id":`
    head: Vec<u8>,
    /// `,"webhook_id":…,"attempt":`
    after_type: Vec<u8>,
    /// `,"status":…,"outcome":`
    after_attempt: Vec<u8>,
    /// `,"latency_ms":…,"error":…`
    after_reason: Vec<u8>,
    bytes: Vec<u8>,
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
/// between quotes after one branch-free scan; other text goes through
/// serde_json. The bytes are the same either way. In bench (b), escaping
/// byte by byte was 5 % of the delivery workers' CPU.
fn json_str(out: &mut Vec<u8>, text: &str) -> serde_json::Result<()> {
    let plain = text.bytes().fold(true, |plain, b| {
        plain & (b >= 0x20) & (b != b'"') & (b != b'\\')
    });
    if !plain {
        return json(out, text);
    }
    out.reserve(text.len() + 2);
    out.push(b'"');
    out.extend_from_slice(text.as_bytes());
    out.push(b'"');
    Ok(())
}

/// Appends `,"source":…` unless the source is empty: coordinates formatted
/// in place (a retry's kept bytes as text, bytes that are not UTF-8
/// replaced), as serialising `topic/partition/offset` would give.
fn write_source(out: &mut Vec<u8>, source: SourceRef<'_>) -> serde_json::Result<()> {
    match source {
        SourceRef::Kept([]) => Ok(()),
        SourceRef::Kept(bytes) => {
            out.extend_from_slice(b",\"source\":");
            json(out, &String::from_utf8_lossy(bytes))
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
            json(out, &shared.time_ms)?;
            out.extend_from_slice(b",\"endpoint\":");
            json(out, shared.endpoint)?;
            out.extend_from_slice(b",\"event_id\":");
        }
        Gap::AfterType => {
            out.extend_from_slice(b",\"webhook_id\":");
            json(out, shared.webhook_id)?;
            out.extend_from_slice(b",\"attempt\":");
        }
        Gap::AfterAttempt => {
            out.extend_from_slice(b",\"status\":");
            json(out, &shared.status)?;
            out.extend_from_slice(b",\"outcome\":");
        }
        Gap::AfterReason => {
            out.extend_from_slice(b",\"latency_ms\":");
            json(out, &shared.latency_ms)?;
            out.extend_from_slice(b",\"error\":");
            json(out, shared.error)?;
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
        source: SourceRef::Kept(line.source.as_bytes()),
    };
    write_event(out, &event, |out, gap| write_gap(out, line, gap))
}

impl<'a> AttemptLines<'a> {
    /// Lines sharing `shared`'s time, endpoint, webhook id, status,
    /// latency and error (its per-event fields are not used), about
    /// `events` of them. Should a shared field not serialise, every line
    /// is counted as failed.
    pub fn new(shared: &AttemptLine<'a>, events: usize) -> Self {
        let mut lines = Self {
            endpoint: shared.endpoint,
            head: Vec::with_capacity(64 + shared.endpoint.len()),
            after_type: Vec::with_capacity(32 + shared.webhook_id.len()),
            after_attempt: Vec::with_capacity(32),
            after_reason: Vec::with_capacity(32 + shared.error.len()),
            bytes: Vec::new(),
            count: 0,
            failed: 0,
            broken: false,
        };
        lines.broken = lines.write_shared(shared).is_err();
        let line = lines.head.len()
            + lines.after_type.len()
            + lines.after_attempt.len()
            + lines.after_reason.len();
        lines.bytes = Vec::with_capacity(events.saturating_mul(line + 160));
        lines
    }

    fn write_shared(&mut self, shared: &AttemptLine<'a>) -> serde_json::Result<()> {
        write_gap(&mut self.head, shared, Gap::Head)?;
        write_gap(&mut self.after_type, shared, Gap::AfterType)?;
        write_gap(&mut self.after_attempt, shared, Gap::AfterAttempt)?;
        write_gap(&mut self.after_reason, shared, Gap::AfterReason)
    }

    /// Adds the line of one event (a line that cannot be written is
    /// counted in [`AttemptLines::failed`] and left out).
    pub fn push(&mut self, event: EventFields<'_>) {
        if self.broken {
            self.failed += 1;
            return;
        }
        let start = self.bytes.len();
        match self.write(event) {
            Ok(()) => self.count += 1,
            Err(_) => {
                self.bytes.truncate(start);
                self.failed += 1;
            }
        }
    }

    fn write(&mut self, e: EventFields<'_>) -> serde_json::Result<()> {
        let Self {
            head,
            after_type,
            after_attempt,
            after_reason,
            bytes,
            ..
        } = self;
        write_event(bytes, &e, |out, gap| {
            out.extend_from_slice(match gap {
                Gap::Head => head,
                Gap::AfterType => after_type,
                Gap::AfterAttempt => after_attempt,
                Gap::AfterReason => after_reason,
            });
            Ok(())
        })
    }

    /// The endpoint the lines are of.
    pub fn endpoint(&self) -> &'a str {
        self.endpoint
    }

    /// The lines, each ended by `\n`.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// How many lines there are.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// How many lines could not be written.
    pub fn failed(&self) -> u64 {
        self.failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shared<'a>(status: Option<u16>, error: &'a str, latency_ms: f64) -> AttemptLine<'a> {
        AttemptLine {
            time_ms: 1_764_000_000_123,
            endpoint: "fleet-\"ops\"",
            event_id: "unused",
            event_type: "unused",
            webhook_id: "msg_2x\\y",
            attempt: 99,
            status,
            outcome: Outcome::Delivered,
            reason: None,
            latency_ms,
            error,
            source: "unused",
        }
    }

    #[test]
    fn each_line_is_what_serialising_its_attempt_line_gives() {
        // Each event with the source text its line must show.
        let events = [
            (
                EventFields {
                    event_id: "ev-1",
                    event_type: "device.status",
                    attempt: 1,
                    outcome: Outcome::Delivered,
                    reason: None,
                    source: SourceRef::At {
                        topic: "device-events",
                        partition: 3,
                        offset: 42,
                    },
                },
                "device-events/3/42",
            ),
            (
                EventFields {
                    event_id: "ev-\u{1}2\n",
                    event_type: "",
                    attempt: 8,
                    outcome: Outcome::DeadLettered,
                    reason: Some("exhausted"),
                    source: SourceRef::Kept(b""),
                },
                "",
            ),
            (
                EventFields {
                    event_id: "ev-3",
                    event_type: "ünïcode",
                    attempt: 2,
                    outcome: Outcome::RetryScheduled,
                    reason: None,
                    source: SourceRef::Kept(b"t/0/1"),
                },
                "t/0/1",
            ),
            (
                EventFields {
                    event_id: "ev-4",
                    event_type: "x",
                    attempt: 1,
                    outcome: Outcome::Deferred,
                    reason: None,
                    source: SourceRef::At {
                        topic: "t\"q\u{1}\\",
                        partition: -1,
                        offset: i64::MIN,
                    },
                },
                "t\"q\u{1}\\/-1/-9223372036854775808",
            ),
            (
                EventFields {
                    event_id: "ev-5",
                    event_type: "x",
                    attempt: 1,
                    outcome: Outcome::Delivered,
                    reason: None,
                    source: SourceRef::Kept(b"\xff/1/2"),
                },
                "\u{fffd}/1/2",
            ),
        ];
        for line in [
            shared(Some(204), "", 1.25),
            shared(None, "connection reset \"by peer\"", 30_000.0),
            shared(Some(503), "", f64::NAN),
        ] {
            let mut lines = AttemptLines::new(&line, events.len());
            for (e, _) in events {
                lines.push(e);
            }
            let mut expected = Vec::new();
            for (e, source) in events {
                let full = AttemptLine {
                    event_id: e.event_id,
                    event_type: e.event_type,
                    attempt: e.attempt,
                    outcome: e.outcome,
                    reason: e.reason,
                    source,
                    ..line
                };
                serde_json::to_writer(&mut expected, &full).unwrap();
                expected.push(b'\n');
            }
            assert_eq!(
                String::from_utf8_lossy(lines.bytes()),
                String::from_utf8_lossy(&expected)
            );
            assert_eq!((lines.count(), lines.failed()), (5, 0));
            assert_eq!(lines.endpoint(), "fleet-\"ops\"");
        }
    }

    #[test]
    fn text_is_written_as_serde_json_writes_it() {
        let texts = [
            "",
            "ev-1",
            "device-events",
            "q\"uote",
            "back\\slash",
            "\u{0}\u{1f}\n\r\t",
            "\u{7f}",
            "ünïcode ☃ 𝄞",
            "/~-_.:",
        ];
        for text in texts {
            let mut written = b"x".to_vec();
            json_str(&mut written, text).unwrap();
            assert_eq!(&written[1..], serde_json::to_vec(text).unwrap(), "{text:?}");
        }
        for byte in 0u8..=0x7f {
            let text = format!("a{}b", byte as char);
            let mut written = Vec::new();
            json_str(&mut written, &text).unwrap();
            assert_eq!(written, serde_json::to_vec(&text).unwrap(), "byte {byte}");
        }
        for outcome in [
            Outcome::Delivered,
            Outcome::RetryScheduled,
            Outcome::DeadLettered,
            Outcome::Deferred,
        ] {
            let mut written = Vec::new();
            json_str(&mut written, outcome.label()).unwrap();
            assert_eq!(written, serde_json::to_vec(&outcome).unwrap());
        }
    }

    #[test]
    fn a_single_line_is_what_serialising_its_attempt_line_gives() {
        let reasons = [None, Some("client_error \"4xx\"")];
        let sources = ["", "device-events/3/42", "t\u{7f}/\"q\"/\u{1}"];
        let statuses = [None, Some(204), Some(u16::MAX)];
        let latencies = [0.0, 1.25, 30_000.0, f64::NAN, f64::INFINITY, -0.5];
        let mut cases = 0;
        for reason in reasons {
            for source in sources {
                for status in statuses {
                    for latency_ms in latencies {
                        let line = AttemptLine {
                            time_ms: i64::MIN,
                            event_id: "ev-\u{1}2\n",
                            event_type: "ünïcode",
                            attempt: u32::MAX,
                            outcome: Outcome::DeadLettered,
                            reason,
                            source,
                            ..shared(status, "reset \"by peer\"\r\n", latency_ms)
                        };
                        let mut expected = serde_json::to_vec(&line).unwrap();
                        expected.push(b'\n');
                        let mut written = b"before".to_vec();
                        write_line(&mut written, &line).unwrap();
                        assert_eq!(
                            String::from_utf8_lossy(&written[6..]),
                            String::from_utf8_lossy(&expected)
                        );
                        cases += 1;
                    }
                }
            }
        }
        assert_eq!(cases, 2 * 3 * 3 * 6);
    }
}
