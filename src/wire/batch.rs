//! The deferral batch: many deferred deliveries of one endpoint in one
//! retry-tier record.
//!
//! A dead endpoint beside a firehose is deferred once per event. Written one
//! record each, those deferrals cost more CPU (librdkafka and the broker
//! handling a record with a dozen headers) than the healthy endpoints'
//! deliveries leave to spare. So deferrals of one endpoint that arrive
//! within a few milliseconds of each other share a record: its value holds
//! each deferral exactly as the single retry record of SPEC §5 would have
//! been (key, original headers plus the `hookstream-*` ones, value), and the
//! tier consumer turns it back into one retry per entry. A lone deferral is
//! still written as a single record.
//!
//! The record carries [`BATCH`](super::headers::header::BATCH) (the number of
//! entries) and the endpoint's history headers, with `hookstream-due-ms` the
//! latest of its entries'. Its value, after the [`MAGIC`] bytes, is the
//! entries back to back, integers big-endian:
//!
//! ```text
//! entry  := key_len:u32 (u32::MAX: no key) key
//!           header_count:u16 (name_len:u16 name value_len:u32 value)*
//!           value_len:u32 value
//! ```
//!
//! Pure: encodes and decodes bytes, never produces or consumes.

/// The first bytes of a batch value (format version 1).
pub const MAGIC: &[u8; 4] = b"hsd1";

/// Most bytes one batch value holds before it is written.
pub const MAX_BATCH_BYTES: usize = 256 * 1024;

/// Most entries one batch holds before it is written.
pub const MAX_BATCH_ENTRIES: usize = 1024;

/// Entries larger than this (encoded) are written as single records.
pub const MAX_ENTRY_BYTES: usize = 32 * 1024;

/// Key length that stands for "no key".
const NO_KEY: u32 = u32::MAX;

/// Builds a batch value entry by entry.
#[derive(Debug)]
pub struct BatchEncoder {
    buf: Vec<u8>,
    entries: usize,
}

impl Default for BatchEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl BatchEncoder {
    /// An empty batch.
    pub fn new() -> Self {
        let mut buf = Vec::with_capacity(4096);
        buf.extend_from_slice(MAGIC);
        Self { buf, entries: 0 }
    }

    /// Appends one entry: `key`, the headers `headers` writes, and `value`.
    /// Header names longer than 65 535 bytes are cut (Kafka's own limit is
    /// far lower in practice).
    pub fn push(
        &mut self,
        key: Option<&[u8]>,
        headers: impl FnOnce(&mut HeaderWriter<'_>),
        value: &[u8],
    ) {
        match key {
            Some(k) => {
                self.buf.extend_from_slice(&(k.len() as u32).to_be_bytes());
                self.buf.extend_from_slice(k);
            }
            None => self.buf.extend_from_slice(&NO_KEY.to_be_bytes()),
        }
        let count_at = self.buf.len();
        self.buf.extend_from_slice(&0u16.to_be_bytes());
        let mut writer = HeaderWriter {
            buf: &mut self.buf,
            count: 0,
        };
        headers(&mut writer);
        let count = writer.count;
        self.buf[count_at..count_at + 2].copy_from_slice(&count.to_be_bytes());
        self.buf
            .extend_from_slice(&(value.len() as u32).to_be_bytes());
        self.buf.extend_from_slice(value);
        self.entries += 1;
    }

    /// Entries so far.
    pub fn entries(&self) -> usize {
        self.entries
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether no entry was pushed.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// The value to write.
    pub fn value(&self) -> &[u8] {
        &self.buf
    }

    /// Takes the value out, leaving the encoder empty of bytes (push no
    /// more after this).
    pub fn take_value(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

/// Writes one entry's headers (see [`BatchEncoder::push`]).
#[derive(Debug)]
pub struct HeaderWriter<'a> {
    buf: &'a mut Vec<u8>,
    count: u16,
}

impl HeaderWriter<'_> {
    /// Adds header `name: value` (ignored past 65 535 headers).
    pub fn add(&mut self, name: &str, value: &[u8]) {
        if self.count == u16::MAX {
            return;
        }
        let name = &name.as_bytes()[..name.len().min(u16::MAX as usize)];
        self.buf
            .extend_from_slice(&(name.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(name);
        self.buf
            .extend_from_slice(&(value.len() as u32).to_be_bytes());
        self.buf.extend_from_slice(value);
        self.count += 1;
    }
}

/// One entry of a batch, borrowed from its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchEntry<'a> {
    /// The record key.
    pub key: Option<&'a [u8]>,
    /// Headers, in order.
    pub headers: Vec<(&'a str, &'a [u8])>,
    /// The record value: where it starts and ends in the batch value (so a
    /// caller holding the value as shared bytes can slice it without a copy).
    pub value: std::ops::Range<usize>,
}

/// Reads the entries of a batch value; the error says what is malformed and
/// where.
pub fn decode(value: &[u8]) -> Result<Vec<BatchEntry<'_>>, String> {
    let mut r = Reader { value, at: 0 };
    if r.take(MAGIC.len())? != MAGIC {
        return Err("deferral batch without its format marker".to_string());
    }
    let mut entries = Vec::new();
    while r.at < value.len() {
        let entry = entries.len();
        let context = |e: String| format!("deferral batch entry {entry}: {e}");
        let key = match r.u32().map_err(context)? {
            NO_KEY => None,
            n => Some(r.take(n as usize).map_err(context)?),
        };
        let count = r.u16().map_err(context)?;
        let mut headers = Vec::with_capacity(count as usize);
        for _ in 0..count {
            let name_len = r.u16().map_err(context)? as usize;
            let name = std::str::from_utf8(r.take(name_len).map_err(context)?)
                .map_err(|_| context("a header name is not UTF-8".to_string()))?;
            let value_len = r.u32().map_err(context)? as usize;
            headers.push((name, r.take(value_len).map_err(context)?));
        }
        let len = r.u32().map_err(context)? as usize;
        let start = r.at;
        r.take(len).map_err(context)?;
        entries.push(BatchEntry {
            key,
            headers,
            value: start..start + len,
        });
    }
    Ok(entries)
}

/// A cursor over a batch value.
struct Reader<'a> {
    value: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.value.len())
            .ok_or_else(|| {
                format!(
                    "needs {n} bytes at byte {} of {}: truncated",
                    self.at,
                    self.value.len()
                )
            })?;
        let bytes = &self.value[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BatchEncoder {
        let mut batch = BatchEncoder::new();
        batch.push(
            Some(b"dev-1"),
            |h| {
                h.add("ce_type", b"device.enrolled");
                h.add("hookstream-attempt", b"0");
                h.add("empty", b"");
            },
            br#"{"id":"e1"}"#,
        );
        batch.push(None, |_| {}, b"");
        batch.push(Some(b""), |h| h.add("k", &[0xff, 0x00]), &[1, 2, 3]);
        batch
    }

    #[test]
    fn entries_come_back_as_they_went_in() {
        let batch = sample();
        assert_eq!(batch.entries(), 3);
        let value = batch.value();
        let entries = decode(value).unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[0].key, Some(&b"dev-1"[..]));
        assert_eq!(
            entries[0].headers,
            vec![
                ("ce_type", &b"device.enrolled"[..]),
                ("hookstream-attempt", &b"0"[..]),
                ("empty", &b""[..]),
            ]
        );
        assert_eq!(&value[entries[0].value.clone()], br#"{"id":"e1"}"#);
        assert_eq!(entries[1].key, None, "no key stays no key");
        assert!(entries[1].headers.is_empty());
        assert!(entries[1].value.is_empty());
        assert_eq!(entries[2].key, Some(&b""[..]), "an empty key stays empty");
        assert_eq!(entries[2].headers, vec![("k", &[0xff, 0x00][..])]);
        assert_eq!(&value[entries[2].value.clone()], &[1, 2, 3]);
    }

    #[test]
    fn malformed_values_are_refused_with_where() {
        assert!(
            decode(b"nope")
                .unwrap_err()
                .contains("without its format marker")
        );
        assert!(decode(b"hs").unwrap_err().contains("truncated"));
        assert_eq!(decode(MAGIC).unwrap(), vec![], "an empty batch is empty");
        let value = sample().value().to_vec();
        for cut in MAGIC.len() + 1..value.len() {
            // Every cut inside an entry is noticed (cuts at entry
            // boundaries are shorter, valid batches).
            match decode(&value[..cut]) {
                Ok(entries) => assert!(entries.len() < 3, "cut at {cut}"),
                Err(e) => assert!(e.starts_with("deferral batch entry "), "{e}"),
            }
        }
        let mut bad_name = BatchEncoder::new();
        bad_name.push(None, |h| h.add("x", b"v"), b"");
        let mut value = bad_name.value().to_vec();
        // The name's one byte sits after magic, key length, count and
        // name length.
        value[MAGIC.len() + 4 + 2 + 2] = 0xff;
        assert!(decode(&value).unwrap_err().contains("not UTF-8"));
    }
}
