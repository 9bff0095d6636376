//! How `hookstream dlq list|show` print letters: tables for people (a
//! table crate, in chunks, so a long list streams), JSON for scripts (one
//! array, written as the letters come).
//!
//! Owns output formats only; reading is `retry::dlq_scan`.

use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use base64::Engine;
use comfy_table::{ContentArrangement, Table, presets};
use serde_json::{Value, json};

use crate::retry::dlq::DeadLetter;

/// Rows rendered per table chunk of `dlq list`.
const CHUNK_ROWS: usize = 500;

/// Columns of `dlq list` and their least widths (so chunks line up).
const COLUMNS: [(&str, u16); 9] = [
    ("LETTER", 12),
    ("DEAD AT", 24),
    ("ENDPOINT", 16),
    ("REASON", 20),
    ("ATTEMPT", 7),
    ("STATUS", 6),
    ("EVENT ID", 36),
    ("EVENT TYPE", 26),
    ("SOURCE", 10),
];

/// `hookstream-dead-ms` as an RFC 3339 time.
fn dead_at(letter: &DeadLetter) -> String {
    let when = UNIX_EPOCH + Duration::from_millis(u64::try_from(letter.dead_ms).unwrap_or(0));
    humantime::format_rfc3339_millis(when).to_string()
}

/// Prints letters as they come; stops (returns false) once output fails
/// (a closed pipe: `dlq list | head`).
pub struct LetterPrinter<W: Write> {
    out: W,
    json: bool,
    rows: Vec<Vec<String>>,
    printed: u64,
    failed: bool,
}

impl<W: Write> LetterPrinter<W> {
    /// A printer writing a table (or JSON) to `out`.
    pub fn new(out: W, json: bool) -> Self {
        Self {
            out,
            json,
            rows: Vec::new(),
            printed: 0,
            failed: false,
        }
    }

    /// Prints (or buffers for the next table chunk) one letter.
    pub fn push(&mut self, letter: &DeadLetter) -> bool {
        if self.json {
            let text = serde_json::to_string_pretty(letter).unwrap_or_default();
            let lead = if self.printed == 0 { "[\n" } else { ",\n" };
            self.write(&format!("{lead}{text}"));
        } else {
            self.rows.push(vec![
                format!("{}/{}", letter.partition, letter.offset),
                dead_at(letter),
                letter.endpoint.clone().unwrap_or_else(|| "-".into()),
                letter.reason.clone(),
                letter.attempt.to_string(),
                letter.last_status.clone(),
                letter.event_id.clone(),
                letter.event_type.clone().unwrap_or_else(|| "-".into()),
                letter.source.clone(),
            ]);
            if self.rows.len() >= CHUNK_ROWS {
                self.flush_rows();
            }
        }
        self.printed += 1;
        !self.failed
    }

    /// Ends the output: the last chunk and the count, or the array's end.
    pub fn finish(mut self) -> std::io::Result<()> {
        if self.json {
            let end = if self.printed == 0 { "[]\n" } else { "\n]\n" };
            self.write(end);
        } else {
            self.flush_rows();
            let count = format!("{} dead letter(s)\n", self.printed);
            self.write(&count);
        }
        self.out.flush()
    }

    fn flush_rows(&mut self) {
        if self.rows.is_empty() && self.printed > 0 {
            return;
        }
        let mut table = Table::new();
        table
            .load_style(presets::NOTHING)
            .set_content_arrangement(ContentArrangement::Disabled);
        // Cells padded to their column's least width: chunks line up.
        let pad = |cells: Vec<String>| -> Vec<String> {
            cells
                .into_iter()
                .zip(COLUMNS)
                .map(|(cell, (_, width))| format!("{cell:<width$}", width = width as usize))
                .collect()
        };
        if self.printed as usize <= self.rows.len() {
            table.set_header(pad(COLUMNS.iter().map(|(n, _)| n.to_string()).collect()));
        }
        table.add_rows(std::mem::take(&mut self.rows).into_iter().map(pad));
        let mut text = table.to_string();
        text.push('\n');
        self.write(&text);
    }

    fn write(&mut self, text: &str) {
        if !self.failed && self.out.write_all(text.as_bytes()).is_err() {
            self.failed = true;
        }
    }
}

/// A header or payload as text: UTF-8 as it is, anything else as base64.
fn text_or_base64(bytes: &[u8]) -> (String, &'static str) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (text.to_string(), "text"),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(bytes),
            "base64",
        ),
    }
}

/// `dlq show` for people: the letter's coordinates, every header, then
/// the payload (JSON pretty-printed).
pub fn show_text(topic: &str, letter: &DeadLetter) -> String {
    let mut out = format!(
        "letter   {}\ndead at  {}\nreason   {}\n",
        letter.coordinates(topic),
        dead_at(letter),
        letter.reason
    );
    if let Some(key) = &letter.key {
        let (key, encoding) = text_or_base64(key);
        out.push_str(&format!("key      {key}{}\n", suffix(encoding)));
    }
    let mut table = Table::new();
    table
        .load_style(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(["HEADER", "VALUE"]);
    for (name, value) in &letter.headers {
        let (value, encoding) = text_or_base64(value);
        table.add_row([name.clone(), format!("{value}{}", suffix(encoding))]);
    }
    out.push_str(&format!(
        "\n{table}\n\npayload ({} bytes):\n",
        letter.value.len()
    ));
    out.push_str(&match serde_json::from_slice::<Value>(&letter.value) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
        Err(_) => {
            let (payload, encoding) = text_or_base64(&letter.value);
            format!("{payload}{}", suffix(encoding))
        }
    });
    out.push('\n');
    out
}

fn suffix(encoding: &str) -> &'static str {
    if encoding == "base64" {
        " (base64)"
    } else {
        ""
    }
}

/// `dlq show --json`: the letter's fields, key, headers and payload (a
/// JSON payload as JSON, else text or base64, named in `payload_encoding`).
pub fn show_json(topic: &str, letter: &DeadLetter) -> Value {
    let headers: Vec<Value> = letter
        .headers
        .iter()
        .map(|(name, value)| {
            let (value, encoding) = text_or_base64(value);
            json!({"name": name, "value": value, "encoding": encoding})
        })
        .collect();
    let (payload, encoding) = match serde_json::from_slice::<Value>(&letter.value) {
        Ok(v) => (v, "json"),
        Err(_) => {
            let (text, encoding) = text_or_base64(&letter.value);
            (Value::String(text), encoding)
        }
    };
    json!({
        "letter": letter.coordinates(topic),
        "fields": letter,
        "key": letter.key.as_deref().map(|k| text_or_base64(k).0),
        "headers": headers,
        "payload": payload,
        "payload_encoding": encoding,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(offset: i64, value: &[u8]) -> DeadLetter {
        DeadLetter {
            partition: 1,
            offset,
            endpoint: Some("crm".into()),
            reason: "http_400".into(),
            dead_ms: 1_000,
            event_id: format!("evt-{offset}"),
            event_type: Some("device-provisioned".into()),
            attempt: 1,
            last_status: "400".into(),
            last_error: String::new(),
            source: "device-events/0/7".into(),
            replay_of: None,
            key: Some(b"dev-1".to_vec()),
            value: value.to_vec(),
            headers: vec![
                ("hookstream-reason".into(), b"http_400".to_vec()),
                ("traceparent".into(), vec![0xff, 0x00]),
            ],
        }
    }

    #[test]
    fn long_lists_print_in_chunks_with_one_header() {
        let mut out = Vec::new();
        let mut printer = LetterPrinter::new(&mut out, false);
        for i in 0..(CHUNK_ROWS as i64 * 2 + 3) {
            assert!(printer.push(&letter(i, b"{}")));
        }
        printer.finish().unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.matches("EVENT TYPE").count(), 1);
        assert!(text.contains("1/1002"));
        assert!(text.ends_with("1003 dead letter(s)\n"));
        let widths: std::collections::HashSet<usize> = text
            .lines()
            .filter(|l| l.contains("evt-"))
            .map(|l| l.find("evt-").unwrap())
            .collect();
        assert_eq!(widths.len(), 1, "chunks line up:\n{text}");
    }

    #[test]
    fn json_lists_are_one_array() {
        for n in [0, 1, 3] {
            let mut out = Vec::new();
            let mut printer = LetterPrinter::new(&mut out, true);
            for i in 0..n {
                printer.push(&letter(i, b"{}"));
            }
            printer.finish().unwrap();
            let v: Value = serde_json::from_slice(&out).unwrap();
            assert_eq!(v.as_array().unwrap().len(), n as usize);
        }
    }

    #[test]
    fn show_prints_headers_and_the_payload() {
        let l = letter(5, br#"{"id":"evt-5","type":"device-provisioned"}"#);
        let text = show_text("hookstream.dlq", &l);
        assert!(text.contains("hookstream.dlq/1/5"));
        assert!(text.contains("hookstream-reason"));
        assert!(text.contains("/wA= (base64)"), "{text}");
        assert!(text.contains("\"type\": \"device-provisioned\""));
        let v = show_json("hookstream.dlq", &l);
        assert_eq!(v["payload"]["id"], "evt-5");
        assert_eq!(v["payload_encoding"], "json");
        assert_eq!(v["headers"][1]["encoding"], "base64");
        let binary = show_json("hookstream.dlq", &letter(6, &[0xff]));
        assert_eq!(binary["payload_encoding"], "base64");
    }
}
