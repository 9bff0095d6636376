//! The activity log's line format: written as serde_json would write it,
//! read back into the attempts it holds.

use super::*;
use crate::index::activity::AttemptRecord;

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
        source: SourceRef::Kept(b"unused"),
    }
}

#[test]
fn a_batch_line_reads_back_as_the_attempts_of_its_events() {
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
        shared(Some(503), "", -0.5),
    ] {
        let mut lines = AttemptLines::new(&line, events.len());
        for (e, _) in events {
            lines.push(e);
        }
        assert_eq!((lines.count(), lines.failed()), (5, 0));
        assert_eq!(lines.endpoint(), "fleet-\"ops\"");
        assert_eq!(lines.bytes().iter().filter(|b| **b == b'\n').count(), 1);
        // Each event as a line of its own would read.
        let expected: Vec<AttemptRecord> = events
            .iter()
            .map(|(e, source)| {
                let full = AttemptLine {
                    event_id: e.event_id,
                    event_type: e.event_type,
                    attempt: e.attempt,
                    outcome: e.outcome,
                    reason: e.reason,
                    source: SourceRef::Kept(source.as_bytes()),
                    ..line
                };
                serde_json::from_slice(&serde_json::to_vec(&full).unwrap()).unwrap()
            })
            .collect();
        let mut read = Vec::new();
        records_of_line(lines.bytes().strip_suffix(b"\n").unwrap(), &mut read);
        assert_eq!(
            serde_json::to_value(&read).unwrap(),
            serde_json::to_value(&expected).unwrap()
        );
    }
}

#[test]
fn a_batch_line_is_the_shared_fields_once_and_each_events_own() {
    let e = |id, outcome, reason| EventFields {
        event_id: id,
        event_type: "device.status",
        attempt: 3,
        outcome,
        reason,
        source: SourceRef::At {
            topic: "device-events",
            partition: 1,
            offset: 7,
        },
    };
    let mut lines = AttemptLines::new(&shared(Some(500), "", 2.5), 2);
    lines.push(e("ev-1", Outcome::RetryScheduled, None));
    lines.push(e("ev-2", Outcome::DeadLettered, Some("exhausted")));
    assert_eq!(
        String::from_utf8_lossy(lines.bytes()),
        concat!(
            r#"{"time_ms":1764000000123,"endpoint":"fleet-\"ops\"","webhook_id":"msg_2x\\y","#,
            r#""status":500,"latency_ms":2.5,"error":"","events":["#,
            r#"{"event_id":"ev-1","event_type":"device.status","attempt":3,"#,
            r#""outcome":"retry_scheduled","source":"device-events/1/7"},"#,
            r#"{"event_id":"ev-2","event_type":"device.status","attempt":3,"#,
            r#""outcome":"dead_lettered","reason":"exhausted","source":"device-events/1/7"}]}"#,
            "\n"
        )
    );
}

#[test]
fn a_large_batch_is_split_into_lines_and_records_of_bounded_size() {
    let n = 2 * EVENTS_PER_LINE + 44;
    let ids: Vec<String> = (0..n).map(|i| format!("ev-{i}")).collect();
    let mut lines = AttemptLines::new(&shared(Some(204), "", 1.0), n);
    for id in &ids {
        lines.push(EventFields {
            event_id: id,
            event_type: "t",
            attempt: 1,
            outcome: Outcome::Delivered,
            reason: None,
            source: SourceRef::Kept(b""),
        });
    }
    let text = String::from_utf8(lines.bytes().to_vec()).unwrap();
    let per_line: Vec<usize> = text
        .lines()
        .map(|l| {
            let mut read = Vec::new();
            records_of_line(l.as_bytes(), &mut read);
            read.len()
        })
        .collect();
    assert_eq!(per_line, vec![EVENTS_PER_LINE, EVENTS_PER_LINE, 44]);
    let line_bytes = text.lines().next().unwrap().len() + 1;
    // One run per line when a run may hold one line; all in one when
    // all fit; a run never splits a line.
    let runs: Vec<(usize, u64)> = lines.runs(line_bytes).map(|(r, n)| (r.len(), n)).collect();
    assert_eq!(runs.len(), 3);
    assert_eq!(runs.iter().map(|r| r.1).sum::<u64>(), n as u64);
    let all: Vec<_> = lines.runs(usize::MAX).collect();
    assert_eq!(all, vec![(lines.bytes(), n as u64)]);
    let tiny: Vec<u64> = lines.runs(1).map(|(_, n)| n).collect();
    assert_eq!(tiny, vec![128, 128, 44]);
    let mut read = Vec::new();
    for run in lines.runs(line_bytes * 2) {
        for l in run.0.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            records_of_line(l, &mut read);
        }
    }
    let read_ids: Vec<&str> = read.iter().map(|r| r.event_id.as_str()).collect();
    assert_eq!(read_ids, ids.iter().map(String::as_str).collect::<Vec<_>>());
}

#[test]
fn an_attempt_of_one_event_is_the_line_of_its_attempt_line() {
    let line = AttemptLine {
        event_id: "ev-9",
        event_type: "device.status",
        attempt: 2,
        source: SourceRef::Kept(b"device-events/0/5"),
        ..shared(Some(204), "", 3.0)
    };
    let mut lines = AttemptLines::new(&line, 1);
    lines.push(EventFields {
        event_id: "ev-9",
        event_type: "device.status",
        attempt: 2,
        outcome: line.outcome,
        reason: None,
        source: SourceRef::At {
            topic: "device-events",
            partition: 0,
            offset: 5,
        },
    });
    let mut expected = Vec::new();
    write_line(&mut expected, &line).unwrap();
    assert_eq!(lines.bytes(), expected.as_slice());
    let mut read = Vec::new();
    records_of_line(&expected[..expected.len() - 1], &mut read);
    assert_eq!(read.len(), 1);
    assert_eq!(read[0].event_id, "ev-9");
    assert_eq!(read[0].webhook_id, "msg_2x\\y");
    records_of_line(b"not a line", &mut read);
    assert_eq!(read.len(), 1, "a line of something else reads as nothing");
}

#[test]
fn every_byte_that_needs_escaping_is_found_wherever_it_is() {
    let plain = "0123456789abcdefghijklmnopqrstu";
    assert!(!needs_escape(plain.as_bytes()));
    assert!(!needs_escape(
        "ünïcode ☃ 𝄞 in a longer text~\u{7f}".as_bytes()
    ));
    assert!(!needs_escape(b""));
    for byte in 0u8..=0x7f {
        let escaped = byte < 0x20 || byte == b'"' || byte == b'\\';
        for at in 0..plain.len() {
            let mut text = plain.as_bytes().to_vec();
            text[at] = byte;
            assert_eq!(needs_escape(&text), escaped, "byte {byte:#x} at {at}");
            let text = String::from_utf8(text).unwrap();
            let mut written = Vec::new();
            json_str(&mut written, &text).unwrap();
            assert_eq!(
                written,
                serde_json::to_vec(&text).unwrap(),
                "byte {byte:#x} at {at}"
            );
        }
    }
    // Bytes at and above 0x80 (UTF-8) next to ones below 0x20.
    for high in [0x80u8, 0xbf, 0xc3, 0xff] {
        let mut text = vec![high; 16];
        assert!(!needs_escape(&text), "{high:#x}");
        text[9] = 0x1f;
        assert!(needs_escape(&text), "{high:#x} then 0x1f");
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
    let sources = [
        SourceRef::Kept(b""),
        SourceRef::Kept(b"device-events/3/42"),
        SourceRef::Kept("t\u{7f}/\"q\"/\u{1}".as_bytes()),
        SourceRef::Kept(b"not utf-8 \xff"),
        SourceRef::At {
            topic: "device-events",
            partition: 3,
            offset: i64::MAX,
        },
    ];
    let statuses = [None, Some(204), Some(u16::MAX)];
    let latencies = [0.0, 1.25, 30_000.0, f64::NAN, f64::INFINITY, -0.5];
    let mut cases = 0;
    for (reason, (plain, error)) in reasons
        .into_iter()
        .flat_map(|r| [(false, "reset \"by peer\"\r\n"), (true, "")].map(|e| (r, e)))
    {
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
                        ..shared(status, error, latency_ms)
                    };
                    // Plain text takes the copy without escapes; the rest
                    // goes through serde_json.
                    let line = if plain {
                        AttemptLine {
                            endpoint: "fleet-ops",
                            webhook_id: "msg_2x",
                            ..line
                        }
                    } else {
                        line
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
    assert_eq!(cases, 2 * 2 * 5 * 3 * 6);
}
