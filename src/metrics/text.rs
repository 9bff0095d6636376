//! Writing the Prometheus text format (version 0.0.4) for the families
//! hookstream renders itself (per-endpoint series, consumer lag, process
//! metrics, build info): one `# HELP` and one `# TYPE` line per family, then
//! its samples, label values escaped.
//!
//! Pure: strings in, text out.

use std::fmt::Write;

/// Writes the `# HELP` and `# TYPE` lines of a family.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {}", escape_help(help));
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Writes one sample: `name{labels} value`.
pub fn sample(out: &mut String, name: &str, labels: &[(&str, &str)], value: impl Value) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (key, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(key);
            out.push_str("=\"");
            escape_label_value(out, v);
            out.push('"');
        }
        out.push('}');
    }
    out.push(' ');
    value.write(out);
    out.push('\n');
}

/// A sample value.
pub trait Value {
    /// Appends the value as the text format spells it.
    fn write(&self, out: &mut String);
}

impl Value for u64 {
    fn write(&self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl Value for i64 {
    fn write(&self, out: &mut String) {
        let _ = write!(out, "{self}");
    }
}

impl Value for f64 {
    fn write(&self, out: &mut String) {
        float(out, *self);
    }
}

/// Appends `value` as the text format spells floats (`+Inf`, `-Inf`, `NaN`).
pub fn float(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value == f64::INFINITY {
        out.push_str("+Inf");
    } else if value == f64::NEG_INFINITY {
        out.push_str("-Inf");
    } else {
        let _ = write!(out, "{value}");
    }
}

/// Appends a label value with `\`, `"` and newlines escaped.
fn escape_label_value(out: &mut String, value: &str) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A help text with `\` and newlines escaped.
fn escape_help(help: &str) -> String {
    help.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_escape_label_values_and_spell_infinity_as_prometheus_does() {
        let mut out = String::new();
        family(&mut out, "x_total", "counter", "Line one\nline two");
        sample(&mut out, "x_total", &[("a", "q\"b\\c\nd")], 3u64);
        sample(&mut out, "x_bucket", &[("le", "+Inf")], f64::INFINITY);
        sample(&mut out, "y", &[], 0.25f64);
        assert_eq!(
            out,
            "# HELP x_total Line one\\nline two\n# TYPE x_total counter\n\
             x_total{a=\"q\\\"b\\\\c\\nd\"} 3\nx_bucket{le=\"+Inf\"} +Inf\ny 0.25\n"
        );
    }
}
