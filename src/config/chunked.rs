//! Splitting a configuration file with many `[[endpoints]]` tables into
//! slices that are parsed one at a time.
//!
//! The toml crate keeps every token and parse event of a document at once:
//! a 21 MB file of 100 000 endpoints took 440 MB of heap to read whole.
//! Read as a head (everything but the endpoints) and slices of
//! [`ENDPOINTS_PER_SLICE`] endpoints, it takes a few MB beyond the result.
//!
//! The split is lexical: a line at nesting depth 0, outside any string, that
//! starts with `[` is a table header. `[[endpoints]]` starts an endpoint;
//! `[endpoints.…]` and `[[endpoints.…]]` belong to the endpoint before them;
//! every other header starts a part of the head. [`split`] answers `None`
//! whenever it is not sure (a string left open, a quoted `endpoints` key, a
//! sub-table before any endpoint, fewer endpoints than make a split worth
//! it); the caller then parses the whole text, which also gives the
//! authoritative error for a text that is not valid TOML. Pure text in,
//! text out; no I/O.

/// Endpoints parsed together.
pub(super) const ENDPOINTS_PER_SLICE: usize = 1000;

/// A configuration text split for parsing.
#[derive(Debug, Default)]
pub(super) struct Split {
    /// Everything but the endpoint tables.
    pub(super) head: String,
    /// The endpoint tables, [`ENDPOINTS_PER_SLICE`] (or `per_slice`) at a time.
    pub(super) slices: Vec<Slice>,
}

/// Consecutive endpoints as a TOML text of their own.
#[derive(Debug, Default)]
pub(super) struct Slice {
    /// Index in the configuration's `endpoints` of the slice's first.
    pub(super) first: usize,
    /// Endpoints in it.
    pub(super) len: usize,
    /// Their tables.
    pub(super) text: String,
}

/// Where a line goes.
enum Section {
    Head,
    /// The endpoint with this index.
    Endpoint(usize),
}

/// What a header line names.
enum Header {
    /// `[[endpoints]]`
    NewEndpoint,
    /// `[endpoints.x]`, `[[endpoints.x]]`
    EndpointPart,
    /// Any other table.
    Other,
}

/// Splits `text` into a head and slices of `per_slice` endpoints; `None`
/// when the text should be parsed whole (see the module doc).
pub(super) fn split(text: &str, per_slice: usize) -> Option<Split> {
    let per_slice = per_slice.max(1);
    let mut out = Split::default();
    let mut section = Section::Head;
    let mut endpoints = 0usize;
    let mut scan = Scanner::default();
    for line in text.split_inclusive('\n') {
        if scan.at_top() {
            let trimmed = line.trim_start();
            if trimmed.starts_with('[') {
                match header(trimmed)? {
                    Header::NewEndpoint => {
                        section = Section::Endpoint(endpoints);
                        endpoints += 1;
                    }
                    Header::EndpointPart => {
                        section = Section::Endpoint(endpoints.checked_sub(1)?);
                    }
                    Header::Other => section = Section::Head,
                }
                push_line(&mut out, &section, line, per_slice);
                continue;
            }
        }
        scan.line(line)?;
        push_line(&mut out, &section, line, per_slice);
    }
    if !scan.at_top() || endpoints < 2 * per_slice {
        return None;
    }
    Some(out)
}

/// Appends `line` to the head or to the slice of its endpoint.
fn push_line(out: &mut Split, section: &Section, line: &str, per_slice: usize) {
    match *section {
        Section::Head => out.head.push_str(line),
        Section::Endpoint(i) => {
            let slice = i / per_slice;
            while out.slices.len() <= slice {
                let first = out.slices.len() * per_slice;
                out.slices.push(Slice {
                    first,
                    ..Slice::default()
                });
            }
            let s = &mut out.slices[slice];
            s.len = s.len.max(i - s.first + 1);
            s.text.push_str(line);
        }
    }
}

/// Classifies a header line (`None`: not sure).
fn header(line: &str) -> Option<Header> {
    let (array, rest) = match line.strip_prefix("[[") {
        Some(rest) => (true, rest),
        None => (false, line.strip_prefix('[')?),
    };
    let close = if array { "]]" } else { "]" };
    let end = rest.find(close)?;
    let name = rest[..end].trim();
    let after = rest[end + close.len()..].trim();
    if !(after.is_empty() || after.starts_with('#')) || name.contains(['"', '\'', '[', ']']) {
        return None;
    }
    let mut parts = name.split('.').map(str::trim);
    if parts.next() != Some("endpoints") {
        return Some(Header::Other);
    }
    match (parts.next(), array) {
        (None, true) => Some(Header::NewEndpoint),
        (None, false) => None,
        (Some(_), _) => Some(Header::EndpointPart),
    }
}

/// Nesting of TOML values across lines: open brackets and braces, and a
/// multi-line string left open.
#[derive(Debug, Default)]
struct Scanner {
    depth: usize,
    /// Inside `"""` (true) or `'''` (false).
    multi_line: Option<bool>,
}

impl Scanner {
    /// Whether the next line starts outside every value.
    fn at_top(&self) -> bool {
        self.depth == 0 && self.multi_line.is_none()
    }

    /// Follows one line; `None` on what it does not understand.
    fn line(&mut self, line: &str) -> Option<()> {
        let b = line.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if let Some(basic) = self.multi_line {
                let quote = if basic { b'"' } else { b'\'' };
                if basic && b[i] == b'\\' {
                    i += 2;
                    continue;
                }
                if b[i..].starts_with(&[quote; 3]) {
                    self.multi_line = None;
                    i += 3;
                    // A closing delimiter may carry up to two more quotes.
                    while i < b.len() && b[i] == quote {
                        i += 1;
                    }
                    continue;
                }
                i += 1;
                continue;
            }
            match b[i] {
                b'#' => return Some(()),
                b'[' | b'{' => self.depth += 1,
                b']' | b'}' => self.depth = self.depth.checked_sub(1)?,
                b'"' | b'\'' => {
                    let quote = b[i];
                    if b[i..].starts_with(&[quote; 3]) {
                        self.multi_line = Some(quote == b'"');
                        i += 3;
                        continue;
                    }
                    i = closing_quote(b, i + 1, quote)? + 1;
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
        Some(())
    }
}

/// Index of the quote closing a one-line string that started before `from`.
fn closing_quote(b: &[u8], mut from: usize, quote: u8) -> Option<usize> {
    while from < b.len() {
        match b[from] {
            b'\\' if quote == b'"' => from += 2,
            c if c == quote => return Some(from),
            b'\n' => return None,
            _ => from += 1,
        }
    }
    None
}

/// `key` with the index after a leading `endpoints[` moved by `first`, so
/// an error in a slice names the endpoint's place in the whole file.
pub(super) fn shift_endpoint_index(key: &str, first: usize) -> String {
    let Some(rest) = key.strip_prefix("endpoints[") else {
        return key.to_string();
    };
    let Some(close) = rest.find(']') else {
        return key.to_string();
    };
    match rest[..close].parse::<usize>() {
        Ok(i) => format!(
            "endpoints[{}]{}",
            i.saturating_add(first),
            &rest[close + 1..]
        ),
        Err(_) => key.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoints(n: usize) -> String {
        let mut t = String::new();
        for i in 0..n {
            t.push_str(&format!(
                "[[endpoints]]\nid = \"ep-{i}\"\nurl = \"https://example.com/{i}\"\n\n"
            ));
        }
        t
    }

    #[test]
    fn splits_endpoints_into_slices_and_keeps_the_rest_in_the_head() {
        let text = format!(
            "[kafka]\nbrokers = \"b:9092\"\n\n{}[delivery]\ntimeout = \"5s\"\n",
            endpoints(5)
        );
        let s = split(&text, 2).unwrap();
        assert!(s.head.contains("[kafka]") && s.head.contains("[delivery]"));
        assert!(!s.head.contains("endpoints"));
        let lens: Vec<(usize, usize)> = s.slices.iter().map(|s| (s.first, s.len)).collect();
        assert_eq!(lens, [(0, 2), (2, 2), (4, 1)]);
        assert!(s.slices[2].text.contains("ep-4"));
    }

    #[test]
    fn sub_tables_follow_their_endpoint_even_after_another_table() {
        let text = format!(
            "{}[delivery]\ntimeout = \"5s\"\n[endpoints.batch]\nmax_events = 5\n",
            endpoints(4)
        );
        let s = split(&text, 2).unwrap();
        assert!(s.slices[1].text.contains("max_events = 5"));
        assert!(!s.head.contains("max_events"));
    }

    #[test]
    fn headers_inside_strings_and_arrays_are_not_headers() {
        let text = format!(
            "{}[[endpoints]]\nid = \"x\"\nurl = \"https://e.com\"\nnote = \"\"\"\n[[endpoints]]\n\"\"\"\ndevices = [\n  [\"a\"],\n]\n",
            endpoints(3)
        );
        let s = split(&text, 2).unwrap();
        assert_eq!(s.slices.iter().map(|s| s.len).sum::<usize>(), 4);
        assert!(
            s.slices[1]
                .text
                .contains("note = \"\"\"\n[[endpoints]]\n\"\"\"")
        );
    }

    #[test]
    fn small_or_unclear_texts_are_parsed_whole() {
        assert!(split(&endpoints(3), 2).is_none(), "fewer than two slices");
        let open = format!("{}x = \"\"\"\n", endpoints(4));
        assert!(split(&open, 2).is_none(), "string left open");
        let quoted = format!("{}[[\"endpoints\"]]\nid = \"q\"\n", endpoints(4));
        assert!(split(&quoted, 2).is_none(), "quoted key");
        let orphan = format!("[endpoints.batch]\nmax_events = 1\n{}", endpoints(4));
        assert!(split(&orphan, 2).is_none(), "sub-table before any endpoint");
    }

    #[test]
    fn error_keys_name_the_endpoint_in_the_whole_file() {
        assert_eq!(
            shift_endpoint_index("endpoints[3].url", 1000),
            "endpoints[1003].url"
        );
        assert_eq!(shift_endpoint_index("endpoints[0]", 5), "endpoints[5]");
        assert_eq!(
            shift_endpoint_index("delivery.timeout", 5),
            "delivery.timeout"
        );
    }
}
