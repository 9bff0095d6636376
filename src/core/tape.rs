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
