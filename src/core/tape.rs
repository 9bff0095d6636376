//! Parsing JSON events into a simd-json tape with buffers reused from one
//! event to the next, and looking paths up in it. The event's bytes are
//! never modified: simd-json unescapes strings in place, and the original
//! bytes are what gets signed and sent, so a padded scratch copy is parsed.
//! Used by field extraction and by payload filters.

use simd_json::tape::Value;

/// A reusable parser. Not `Sync`: each thread owns one.
#[derive(Default)]
pub struct TapeParser {
    scratch: Vec<u8>,
    buffers: simd_json::Buffers,
    /// The last tape, emptied: its allocation is reused.
    tape: Option<simd_json::Tape<'static>>,
}

impl std::fmt::Debug for TapeParser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TapeParser").finish_non_exhaustive()
    }
}

impl TapeParser {
    /// Parses `bytes` and calls `read` with the root of the tape, or the
    /// parse error.
    pub fn parse<R>(
        &mut self,
        bytes: &[u8],
        read: impl FnOnce(Result<Value<'_, '_>, simd_json::Error>) -> R,
    ) -> R {
        self.scratch.clear();
        self.scratch.extend_from_slice(bytes);
        self.scratch
            .resize(bytes.len() + simd_json::INPUT_PADDING, b' ');
        let mut tape = self
            .tape
            .take()
            .unwrap_or_else(simd_json::Tape::null)
            .reset();
        let parsed = simd_json::fill_tape_padded(
            &mut self.scratch,
            bytes.len(),
            &mut self.buffers,
            &mut tape,
        );
        let out = read(parsed.map(|()| tape.as_value()));
        self.tape = Some(tape.reset());
        out
    }
}

/// The value at `path` (object keys; array indexes as decimal tokens).
pub fn lookup<'t, 'i>(root: Value<'t, 'i>, path: &[String]) -> Option<Value<'t, 'i>> {
    let mut current = root;
    for token in path {
        current = if current.is_array() {
            current.get_idx(token.parse::<usize>().ok()?)?
        } else {
            current.get(token.as_str())?
        };
    }
    Some(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use simd_json::prelude::ValueAsScalar;

    fn path(p: &[&str]) -> Vec<String> {
        p.iter().map(|t| t.to_string()).collect()
    }

    /// What `lookup` finds in `json` at `p`, as text (a string's, or a
    /// number written out).
    fn found(json: &str, p: &[&str]) -> Option<String> {
        TapeParser::default().parse(json.as_bytes(), |root| {
            let value = lookup(root.expect("valid JSON"), &path(p))?;
            value
                .as_str()
                .map(str::to_string)
                .or_else(|| value.as_i64().map(|n| n.to_string()))
        })
    }

    #[test]
    fn lookup_finds_members_by_whole_key_and_the_first_of_duplicates() {
        let json = r#"{"i":1,"idx":2,"id":"x","data":{"id":"d","tenant":"t"},"id":"second","a\"b":"q","list":[10,"eleven"]}"#;
        assert_eq!(found(json, &["id"]).as_deref(), Some("x"));
        assert_eq!(found(json, &["i"]).as_deref(), Some("1"));
        assert_eq!(found(json, &["idx"]).as_deref(), Some("2"));
        assert_eq!(found(json, &["data", "id"]).as_deref(), Some("d"));
        assert_eq!(found(json, &["data", "tenant"]).as_deref(), Some("t"));
        assert_eq!(found(json, &["a\"b"]).as_deref(), Some("q"));
        assert_eq!(found(json, &["list", "1"]).as_deref(), Some("eleven"));
        assert_eq!(found(json, &["list", "0"]).as_deref(), Some("10"));
        // Misses: a prefix, a longer key, a key of another object, an
        // index past the end, a member of a scalar.
        assert_eq!(found(json, &["d"]), None);
        assert_eq!(found(json, &["ids"]), None);
        assert_eq!(found(json, &["tenant"]), None);
        assert_eq!(found(json, &["list", "2"]), None);
        assert_eq!(found(json, &["id", "x"]), None);
        // The empty path is the root; an empty key is a key.
        assert_eq!(found(r#"{"":"empty"}"#, &[""]).as_deref(), Some("empty"));
        assert_eq!(found(r#""root""#, &[]).as_deref(), Some("root"));
    }
}
