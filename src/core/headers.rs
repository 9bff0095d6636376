//! Record headers as hookstream keeps them (copied out of librdkafka into
//! one buffer), and the names of the `hookstream-*` headers it writes on
//! retry and dead-letter records.

/// Header names hookstream writes on retry and DLQ records.
pub mod header {
    /// Endpoint id.
    pub const ENDPOINT: &str = "hookstream-endpoint";
    /// Attempts made so far.
    pub const ATTEMPT: &str = "hookstream-attempt";
    /// Unix ms when the record may be sent.
    pub const DUE_MS: &str = "hookstream-due-ms";
    /// Unix ms of the first attempt.
    pub const FIRST_MS: &str = "hookstream-first-ms";
    /// `topic/partition/offset` of the original record.
    pub const SOURCE: &str = "hookstream-source";
    /// Event id.
    pub const EVENT_ID: &str = "hookstream-event-id";
    /// Event type as extracted when first consumed: a retry is routed and
    /// signed without parsing its value again.
    pub const EVENT_TYPE: &str = "hookstream-event-type";
    /// The event's own time, unix ms, when it has one (shaped bodies and
    /// platform timestamps are the same on every attempt).
    pub const EVENT_TIME_MS: &str = "hookstream-event-time-ms";
    /// Where the source's platform finds its body inside the event
    /// (`/payload`, `/object`): retries are shaped as the first attempt.
    pub const BODY_POINTER: &str = "hookstream-body-pointer";
    /// The device the event names, when extraction found one: what
    /// `ordering = "per_device"` orders by on later reads.
    pub const DEVICE: &str = "hookstream-device";
    /// Last HTTP status or failure kind.
    pub const LAST_STATUS: &str = "hookstream-last-status";
    /// Last error text.
    pub const LAST_ERROR: &str = "hookstream-last-error";
    /// Why the record was dead-lettered.
    pub const REASON: &str = "hookstream-reason";
    /// Unix ms when it was dead-lettered.
    pub const DEAD_MS: &str = "hookstream-dead-ms";
    /// DLQ coordinates a replayed record came from.
    pub const REPLAY_OF: &str = "hookstream-replay-of";
    /// How many times the delivery has been written to a retry tier,
    /// this record included: two records of one delivery with the same
    /// hop are copies ([`crate::retry::copies`]).
    pub const HOP: &str = "hookstream-hop";
    /// Entries of a deferral batch record ([`crate::wire::batch`]).
    pub const BATCH: &str = "hookstream-batch";
    /// Prefix shared by all of the above.
    pub const PREFIX: &str = "hookstream-";
}

/// Where one header's key and value lie in [`RecordHeaders`]' buffer.
#[derive(Debug, Clone, Copy)]
struct HeaderSpan {
    key_end: u32,
    value_end: u32,
}

/// A record's headers, copied out of librdkafka into one buffer: keys and
/// values back to back, so a record with ten headers costs two allocations,
/// not twenty. Keys are UTF-8 (Kafka header keys are strings).
#[derive(Debug, Clone, Default)]
pub struct RecordHeaders {
    data: Vec<u8>,
    spans: Vec<HeaderSpan>,
}

impl RecordHeaders {
    /// Copies `(key, value)` pairs, in order.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Self {
        let mut headers = Self::default();
        for (key, value) in pairs {
            if headers.data.is_empty() {
                // Room for a retry record's headers without growing.
                headers.data.reserve(384);
                headers.spans.reserve(12);
            }
            headers.data.extend_from_slice(key.as_bytes());
            let key_end = headers.data.len() as u32;
            headers.data.extend_from_slice(value);
            headers.spans.push(HeaderSpan {
                key_end,
                value_end: headers.data.len() as u32,
            });
        }
        headers
    }

    /// Headers in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> + '_ {
        let mut start = 0usize;
        self.spans.iter().map(move |span| {
            let (key_end, value_end) = (span.key_end as usize, span.value_end as usize);
            let key = std::str::from_utf8(&self.data[start..key_end]).unwrap_or_default();
            let value = &self.data[key_end..value_end];
            start = value_end;
            (key, value)
        })
    }

    /// The first value of header `name`.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.iter().find(|(k, _)| *k == name).map(|(_, v)| v)
    }

    /// Bytes of all keys and values.
    pub fn byte_len(&self) -> usize {
        self.data.len()
    }

    /// How many headers there are.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_keep_order_values_and_duplicates() {
        let pairs: [(&str, &[u8]); 4] = [
            ("ce_type", b"device.enrolled"),
            ("empty", b""),
            ("group", b"g-1"),
            ("group", b"g-2"),
        ];
        let h = RecordHeaders::from_pairs(pairs.iter().copied());
        assert_eq!(h.len(), 4);
        assert_eq!(h.iter().collect::<Vec<_>>(), pairs.to_vec());
        assert_eq!(h.get("group"), Some(&b"g-1"[..]), "the first of duplicates");
        assert_eq!(h.get("empty"), Some(&b""[..]));
        assert_eq!(h.get("missing"), None);
        assert!(RecordHeaders::default().is_empty());
    }
}
