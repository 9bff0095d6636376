//! How `hookstream endpoints` prints an answer without `--json`: aligned
//! tables for lists, name-value lines for one endpoint, the created
//! endpoint's secret with its warning, attempts with their payloads.
//!
//! Formatting only: the answer arrives as the API's JSON.

use std::time::Duration;

use serde_json::Value;

/// How an answer is printed without `--json`.
#[derive(Debug, Clone, Copy)]
pub(super) enum Shape {
    Table,
    Fields,
    Created,
    Attempts,
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        Value::Array(items) => items.iter().map(text).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

pub(super) fn render(value: &Value, shape: Shape) -> String {
    match (shape, value) {
        (Shape::Table, Value::Array(items)) => {
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|e| {
                    ["id", "enabled", "signature", "events", "url"]
                        .iter()
                        .map(|k| text(&e[*k]))
                        .collect()
                })
                .collect();
            table(&["ID", "ENABLED", "SIGNATURE", "EVENTS", "URL"], &rows)
        }
        (Shape::Created, Value::Array(items)) => items
            .iter()
            .map(|e| render(e, Shape::Created))
            .collect::<Vec<_>>()
            .join("\n"),
        (Shape::Created, e) => {
            let mut out = render(e, Shape::Fields);
            if e["secret"].as_str().is_some_and(|s| !s.contains("****")) {
                out.push_str("(the secret is shown this once: store it now)\n");
            }
            out
        }
        (Shape::Attempts, Value::Array(items)) => {
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|a| {
                    let time = a["time_ms"]
                        .as_u64()
                        .map(|ms| {
                            humantime::format_rfc3339_millis(
                                std::time::UNIX_EPOCH + Duration::from_millis(ms),
                            )
                            .to_string()
                        })
                        .unwrap_or_default();
                    vec![
                        time,
                        text(&a["event_id"]),
                        text(&a["attempt"]),
                        text(&a["status"]),
                        text(&a["outcome"]),
                        format!("{:.1}ms", a["latency_ms"].as_f64().unwrap_or(0.0)),
                        text(&a["error"]),
                    ]
                })
                .collect();
            let mut out = table(
                &[
                    "TIME", "EVENT", "ATTEMPT", "STATUS", "OUTCOME", "LATENCY", "ERROR",
                ],
                &rows,
            );
            for a in items.iter().filter(|a| a.get("payload").is_some()) {
                let payload = serde_json::to_string_pretty(&a["payload"])
                    .unwrap_or_else(|_| a["payload"].to_string());
                out.push_str(&format!(
                    "\n{} (attempt {}):\n{payload}\n",
                    text(&a["event_id"]),
                    text(&a["attempt"])
                ));
            }
            out
        }
        (_, Value::Object(fields)) => {
            let width = fields.keys().map(String::len).max().unwrap_or(0);
            fields
                .iter()
                .map(|(k, v)| format!("{k:<width$}  {}\n", text(v)))
                .collect()
        }
        (_, other) => format!("{}\n", text(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tables_align_and_fields_list() {
        let list = json!([
            {"id": "a", "enabled": true, "signature": "none", "events": ["x", "y*"], "url": "https://a/"},
            {"id": "longer-id", "enabled": false, "signature": "standard", "events": ["*"], "url": "https://b/"},
        ]);
        let out = render(&list, Shape::Table);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("ID         ENABLED"));
        assert!(lines[1].contains("x,y*"));
        let fields = render(&json!({"id": "a", "secret": "whsec_****"}), Shape::Fields);
        assert_eq!(fields, "id      a\nsecret  whsec_****\n");
        assert!(
            render(&json!({"secret": "whsec_abc"}), Shape::Created).contains("shown this once")
        );
    }
}
