//! W3C Trace Context on webhook requests: the `traceparent` and
//! `tracestate` a Kafka record carries are forwarded on its request
//! unchanged (hookstream takes part in no trace itself), and, when
//! `delivery.start_traces` is on, a record without one gets a new
//! `traceparent` derived from its event id, so every attempt and replay of
//! the event carries the same trace id.
//!
//! Pure: parsing and deriving headers; the sender attaches them.

use http::HeaderValue;
use sha2::{Digest, Sha256};

/// The `traceparent` record and request header.
pub const TRACEPARENT: &str = "traceparent";
/// The `tracestate` record and request header.
pub const TRACESTATE: &str = "tracestate";

/// Longest `tracestate` forwarded (the W3C limit is 512 characters for 32
/// members); a longer one is dropped, the `traceparent` kept.
const MAX_TRACESTATE: usize = 512;

/// The trace headers of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// `traceparent`.
    pub traceparent: HeaderValue,
    /// `tracestate`, when the record had one.
    pub tracestate: Option<HeaderValue>,
}

/// Whether `text` is `len` lowercase hex digits, not all zero.
fn nonzero_hex(text: &str, len: usize) -> bool {
    text.len() == len
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        && text.bytes().any(|b| b != b'0')
}

/// Whether `value` is a `traceparent` a receiver can use: version (not
/// `ff`), 32-digit trace id and 16-digit parent id (neither all zero),
/// flags; versions after 00 may append fields.
pub fn valid_traceparent(value: &str) -> bool {
    let mut parts = value.split('-');
    let (Some(version), Some(trace), Some(parent), Some(flags)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let hex2 = |s: &str| {
        s.len() == 2
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    hex2(version)
        && version != "ff"
        && nonzero_hex(trace, 32)
        && nonzero_hex(parent, 16)
        && hex2(flags)
        && (version != "00" || parts.next().is_none())
}

/// The trace context to send for a record with these headers (`get` looks
/// one up by name): the record's own when valid, else a new one from
/// `event_id` when `start` is on, else none.
pub fn for_record<'a>(
    get: impl Fn(&str) -> Option<&'a [u8]>,
    event_id: &str,
    start: bool,
) -> Option<TraceContext> {
    let parent = get(TRACEPARENT)
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::trim)
        .filter(|v| valid_traceparent(v))
        .and_then(|v| HeaderValue::from_str(v).ok());
    match parent {
        Some(traceparent) => Some(TraceContext {
            traceparent,
            tracestate: get(TRACESTATE)
                .filter(|v| !v.is_empty() && v.len() <= MAX_TRACESTATE)
                .and_then(|v| HeaderValue::from_bytes(v).ok()),
        }),
        None if start => Some(started(event_id)),
        None => None,
    }
}

/// A new sampled `traceparent` for `event_id`: trace id and parent id are
/// hashes of it, so retries and replays of the event share them.
pub fn started(event_id: &str) -> TraceContext {
    let digest = Sha256::digest(format!("hookstream-trace\0{event_id}").as_bytes());
    let mut trace = hex::encode(&digest[..16]);
    let mut parent = hex::encode(&digest[16..24]);
    // All-zero ids are invalid; a hash gives one with odds of 2^-64.
    for id in [&mut trace, &mut parent] {
        if id.bytes().all(|b| b == b'0') {
            id.replace_range(id.len() - 1.., "1");
        }
    }
    let text = format!("00-{trace}-{parent}-01");
    TraceContext {
        traceparent: HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static(
            "00-00000000000000000000000000000001-0000000000000001-01",
        )),
        tracestate: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn traceparents_are_checked_as_the_w3c_says() {
        assert!(valid_traceparent(PARENT));
        assert!(valid_traceparent(
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00-extra"
        ));
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "00-xyz-b7ad6b7169203331-01",
        ] {
            assert!(!valid_traceparent(bad), "{bad}");
        }
    }

    #[test]
    fn a_record_s_context_is_forwarded_and_a_missing_one_started_when_asked() {
        let headers = [
            (TRACEPARENT, PARENT.as_bytes()),
            (TRACESTATE, b"congo=t61rcWkgMzE".as_slice()),
        ];
        let get = |name: &str| headers.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        let forwarded = for_record(get, "evt-1", false).unwrap();
        assert_eq!(forwarded.traceparent, PARENT);
        assert_eq!(forwarded.tracestate.unwrap(), "congo=t61rcWkgMzE");
        let none = |_: &str| None;
        assert_eq!(for_record(none, "evt-1", false), None);
        let new = for_record(none, "evt-1", true).unwrap();
        assert!(valid_traceparent(new.traceparent.to_str().unwrap()));
        assert_eq!(new, started("evt-1"), "the same for every attempt");
        assert_ne!(started("evt-1"), started("evt-2"));
        let broken = |name: &str| (name == TRACEPARENT).then_some(b"garbage".as_slice());
        assert_eq!(for_record(broken, "evt-1", false), None);
        assert!(for_record(broken, "evt-1", true).is_some(), "replaced");
    }
}
