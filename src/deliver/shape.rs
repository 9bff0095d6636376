//! Payload shaping: the body an endpoint receives for an event, and the
//! headers that describe it (`Content-Type`, CloudEvents `ce-*`).
//!
//! Pure: the event's bytes and facts in, bytes out. Deterministic, so a
//! retry (which carries the original event, its time and its platform's
//! body pointer in `hookstream-*` headers) is shaped into the same bytes as
//! its first attempt. A pointer selects a slice of the original bytes (no
//! re-serialisation); envelopes are written by hand around it.

use std::borrow::Cow;
use std::time::{Duration, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use serde_json::value::RawValue;

use crate::config::{Envelope, PayloadConfig};
use crate::core::Payload;

/// What shaping needs to know about an event.
#[derive(Debug, Clone, Copy)]
pub struct EventFacts<'a> {
    /// The event as consumed.
    pub body: &'a Bytes,
    /// Its id.
    pub id: &'a str,
    /// Its type.
    pub event_type: &'a str,
    /// Its own time, else the delivery's first attempt (unix ms): the same
    /// on every attempt.
    pub time_ms: i64,
    /// The topic it was first consumed from (CloudEvents `source`).
    pub topic: &'a str,
    /// Where its platform finds the body (the default without `payload`).
    pub platform_pointer: Option<&'a str>,
}

/// A shaped body and how to label it.
#[derive(Debug, Clone)]
pub struct Shaped<'a> {
    /// The exact bytes sent and signed. Borrowed only by [`as_consumed`]:
    /// the event's whole body, sent as consumed (a clone of its `Bytes`
    /// would allocate a shared header per event and free it again, on the
    /// delivery workers); every other shape is owned.
    pub body: Cow<'a, Bytes>,
    /// `Content-Type` (a custom header may replace it).
    pub content_type: &'static str,
    /// CloudEvents binary mode: the event's `source`, to send with the
    /// other attributes as `ce-*` headers.
    pub cloudevent_source: Option<String>,
}

/// Why an event cannot be shaped for an endpoint (dead-lettered as
/// `invalid_event`: no attempt can succeed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the event has nothing at payload pointer `{0}`")]
pub struct ShapeError(pub String);

/// `Content-Type` of JSON bodies.
pub const JSON: &str = "application/json";
/// `Content-Type` of structured CloudEvents.
pub const CLOUDEVENTS_JSON: &str = "application/cloudevents+json";
/// `Content-Type` of a batch of structured CloudEvents.
pub const CLOUDEVENTS_BATCH_JSON: &str = "application/cloudevents-batch+json";

/// The body `config` (none: the platform default) makes of `event`.
pub fn shape(
    config: Option<&PayloadConfig>,
    event: &EventFacts<'_>,
) -> Result<Shaped<'static>, ShapeError> {
    let (pointer, envelope) = match config {
        Some(c) => (c.pointer.as_deref(), c.envelope),
        None => (event.platform_pointer, Envelope::Raw),
    };
    let data = match pointer {
        None | Some("") => event.body.clone(),
        Some(p) => select(event.body, p).ok_or_else(|| ShapeError(p.to_string()))?,
    };
    Ok(match envelope {
        Envelope::Raw => Shaped {
            body: Cow::Owned(data),
            content_type: JSON,
            cloudevent_source: None,
        },
        Envelope::CloudeventsBinary => Shaped {
            body: Cow::Owned(data),
            content_type: JSON,
            cloudevent_source: Some(cloudevent_source(event.topic)),
        },
        Envelope::StandardWebhooks => Shaped {
            body: Cow::Owned(standard_webhooks(event, &data)),
            content_type: JSON,
            cloudevent_source: None,
        },
        Envelope::CloudeventsStructured => Shaped {
            body: Cow::Owned(cloudevent(event, &data)),
            content_type: CLOUDEVENTS_JSON,
            cloudevent_source: None,
        },
    })
}

/// The body `config` makes of a delivery's event; `first_ms` (its first
/// attempt) stands in for the time of an event that has none. Without a
/// `payload` and a platform pointer the event's own bytes are borrowed,
/// with nothing parsed or formatted.
pub fn shape_event<'a>(
    config: Option<&PayloadConfig>,
    event: &'a Payload,
    first_ms: i64,
) -> Result<Shaped<'a>, ShapeError> {
    let pointer = event.body_pointer();
    if config.is_none() && pointer.is_none() {
        return Ok(as_consumed(event));
    }
    let cloudevent = config.is_some_and(|c| {
        matches!(
            c.envelope,
            Envelope::CloudeventsBinary | Envelope::CloudeventsStructured
        )
    });
    // (The source costs a formatted string for input events: only for
    // CloudEvents.)
    let source = if cloudevent {
        event.source_text()
    } else {
        String::new()
    };
    let id = event.id();
    shape(
        config,
        &EventFacts {
            body: event.body(),
            id: &id,
            event_type: event.event_type(),
            time_ms: event.time_ms().unwrap_or(first_ms),
            topic: topic_of(&source),
            platform_pointer: pointer.as_deref(),
        },
    )
}

/// `event` sent as it was consumed: its own bytes, borrowed.
pub fn as_consumed(event: &Payload) -> Shaped<'_> {
    Shaped {
        body: Cow::Borrowed(event.body()),
        content_type: JSON,
        cloudevent_source: None,
    }
}

/// The body of a request for several events: their shaped bodies in a
/// JSON array (`application/cloudevents-batch+json` for structured
/// CloudEvents).
pub fn join(shaped: Vec<Shaped<'_>>) -> Shaped<'_> {
    let mut all = shaped.into_iter();
    let Some(first) = all.next() else {
        return Shaped {
            body: Cow::Owned(Bytes::from_static(b"[]")),
            content_type: JSON,
            cloudevent_source: None,
        };
    };
    let rest: Vec<Shaped<'_>> = all.collect();
    if rest.is_empty() {
        return first;
    }
    let len = first.body.len() + rest.iter().map(|s| s.body.len() + 1).sum::<usize>() + 2;
    let mut body = BytesMut::with_capacity(len);
    body.put_u8(b'[');
    body.put_slice(&first.body);
    for s in &rest {
        body.put_u8(b',');
        body.put_slice(&s.body);
    }
    body.put_u8(b']');
    Shaped {
        body: Cow::Owned(body.freeze()),
        content_type: if first.content_type == CLOUDEVENTS_JSON {
            CLOUDEVENTS_BATCH_JSON
        } else {
            JSON
        },
        cloudevent_source: None,
    }
}

/// The slice of `body` at RFC 6901 `pointer` (`None` when there is nothing
/// there or the body is not JSON). Each level is parsed only one deep.
pub fn select(body: &Bytes, pointer: &str) -> Option<Bytes> {
    let text = std::str::from_utf8(body).ok()?;
    let mut here: &RawValue = serde_json::from_str(text).ok()?;
    for token in pointer.strip_prefix('/')?.split('/') {
        let token = token.replace("~1", "/").replace("~0", "~");
        let json = here.get();
        here = match json.trim_start().as_bytes().first() {
            Some(b'{') => {
                let map: std::collections::HashMap<std::borrow::Cow<'_, str>, &RawValue> =
                    serde_json::from_str(json).ok()?;
                map.get(token.as_str()).copied()?
            }
            Some(b'[') => {
                let list: Vec<&RawValue> = serde_json::from_str(json).ok()?;
                let index: usize = token.parse().ok().filter(|_| {
                    token == "0" || !token.starts_with('0') && !token.starts_with('+')
                })?;
                list.get(index).copied()?
            }
            _ => return None,
        };
    }
    // `here` borrows from `text`: its place in the body is a zero-copy slice.
    let start = here.get().as_ptr() as usize - text.as_ptr() as usize;
    Some(body.slice(start..start + here.get().len()))
}

/// ISO 8601 with milliseconds, UTC (`2026-04-15T12:00:00.000Z`).
pub fn iso_millis(unix_ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(unix_ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// A JSON string literal of `text`.
fn json_string(text: &str) -> String {
    serde_json::Value::from(text).to_string()
}

/// `{"type":…,"timestamp":…,"data":…}` (Standard Webhooks' payload
/// structure).
fn standard_webhooks(event: &EventFacts<'_>, data: &Bytes) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 96);
    out.put_slice(b"{\"type\":");
    out.put_slice(json_string(event.event_type).as_bytes());
    out.put_slice(b",\"timestamp\":");
    out.put_slice(json_string(&iso_millis(event.time_ms)).as_bytes());
    out.put_slice(b",\"data\":");
    out.put_slice(data);
    out.put_u8(b'}');
    out.freeze()
}

/// The CloudEvents `source` of an event: `/hookstream/<topic>`.
pub fn cloudevent_source(topic: &str) -> String {
    format!("/hookstream/{topic}")
}

/// A structured-mode CloudEvent (JSON format) around `data`.
fn cloudevent(event: &EventFacts<'_>, data: &Bytes) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 256);
    out.put_slice(b"{\"specversion\":\"1.0\",\"id\":");
    out.put_slice(json_string(event.id).as_bytes());
    out.put_slice(b",\"source\":");
    out.put_slice(json_string(&cloudevent_source(event.topic)).as_bytes());
    out.put_slice(b",\"type\":");
    out.put_slice(json_string(event.event_type).as_bytes());
    out.put_slice(b",\"time\":");
    out.put_slice(json_string(&iso_millis(event.time_ms)).as_bytes());
    out.put_slice(b",\"datacontenttype\":\"application/json\",\"data\":");
    out.put_slice(data);
    out.put_u8(b'}');
    out.freeze()
}

/// The topic part of a `topic/partition/offset` source.
pub fn topic_of(source: &str) -> &str {
    source.rsplitn(3, '/').nth(2).unwrap_or(source)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAGISTRALA: &str = r#"{"channel":"c","subtopic":"temperature","publisher":"p","created":1776254400000000000,"payload":[{"bn":"sensor-1:","n":"temp","u":"Cel","v":21.5}]}"#;

    fn facts<'a>(body: &'a Bytes, pointer: Option<&'a str>) -> EventFacts<'a> {
        EventFacts {
            body,
            id: "evt-1",
            event_type: "temperature",
            time_ms: 1_776_254_400_000,
            topic: "magistrala.messages",
            platform_pointer: pointer,
        }
    }

    #[test]
    fn without_payload_the_platform_body_is_sent_byte_for_byte() {
        let body = Bytes::from(MAGISTRALA);
        let shaped = shape(None, &facts(&body, Some("/payload"))).unwrap();
        assert_eq!(
            &shaped.body[..],
            br#"[{"bn":"sensor-1:","n":"temp","u":"Cel","v":21.5}]"#
        );
        let raw = shape(None, &facts(&body, None)).unwrap();
        assert_eq!(raw.body.as_ptr(), body.as_ptr(), "raw shares the bytes");
    }

    #[test]
    fn raw_overrides_the_platform_default() {
        let body = Bytes::from(MAGISTRALA);
        let config = PayloadConfig::default();
        let shaped = shape(Some(&config), &facts(&body, Some("/payload"))).unwrap();
        assert_eq!(*shaped.body, body);
    }

    #[test]
    fn pointers_follow_rfc_6901() {
        let body = Bytes::from(r#"{"a/b":{"m~n":[10, {"x" : "y"}]},"e":"\u00e9"}"#);
        assert_eq!(
            &select(&body, "/a~1b/m~0n/1").unwrap()[..],
            br#"{"x" : "y"}"#
        );
        assert_eq!(&select(&body, "/a~1b/m~0n/0").unwrap()[..], b"10");
        assert_eq!(&select(&body, "/e").unwrap()[..], br#""\u00e9""#);
        assert!(select(&body, "/a~1b/m~0n/01").is_none());
        assert!(select(&body, "/missing").is_none());
        assert!(select(&body, "no-slash").is_none());
        let err = shape(
            Some(&PayloadConfig {
                pointer: Some("/nope".into()),
                envelope: Envelope::Raw,
            }),
            &facts(&body, None),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the event has nothing at payload pointer `/nope`"
        );
    }

    #[test]
    fn envelopes_wrap_the_data() {
        let body = Bytes::from(MAGISTRALA);
        let with = |envelope| PayloadConfig {
            pointer: Some("/payload".into()),
            envelope,
        };
        let sw = shape(Some(&with(Envelope::StandardWebhooks)), &facts(&body, None)).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&sw.body).unwrap();
        assert_eq!(v["type"], "temperature");
        assert_eq!(v["timestamp"], "2026-04-15T12:00:00.000Z");
        assert_eq!(v["data"][0]["v"], 21.5);
        let ce = shape(
            Some(&with(Envelope::CloudeventsStructured)),
            &facts(&body, None),
        )
        .unwrap();
        assert_eq!(ce.content_type, CLOUDEVENTS_JSON);
        let v: serde_json::Value = serde_json::from_slice(&ce.body).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["id"], "evt-1");
        assert_eq!(v["source"], "/hookstream/magistrala.messages");
        assert_eq!(v["time"], "2026-04-15T12:00:00.000Z");
        assert_eq!(v["data"][0]["n"], "temp");
        let bin = shape(
            Some(&with(Envelope::CloudeventsBinary)),
            &facts(&body, None),
        )
        .unwrap();
        assert_eq!(
            bin.cloudevent_source.as_deref(),
            Some("/hookstream/magistrala.messages")
        );
        assert_eq!(
            &bin.body[..],
            &sw.body[sw.body.len() - bin.body.len() - 1..sw.body.len() - 1]
        );
    }

    #[test]
    fn shaping_is_deterministic() {
        let body = Bytes::from(MAGISTRALA);
        for envelope in Envelope::ALL {
            let config = PayloadConfig {
                pointer: None,
                envelope,
            };
            let a = shape(Some(&config), &facts(&body, None)).unwrap();
            let b = shape(Some(&config), &facts(&body.clone(), None)).unwrap();
            assert_eq!(a.body, b.body, "{envelope:?}");
        }
    }

    #[test]
    fn the_topic_of_a_source() {
        assert_eq!(topic_of("fleet.events/3/42"), "fleet.events");
        assert_eq!(topic_of("a/b/3/42"), "a/b");
        assert_eq!(topic_of("plain"), "plain");
    }
}
