//! The request head the lean client sends, written straight into the
//! connection's buffer: the endpoint's fixed part (request line, `Host`,
//! `User-Agent`, its own headers) built once and copied, then the lines of
//! the event (length, type, ids, time, trace, signature).
//!
//! Owns the same header rules as [`super::request::request_headers`] (the
//! `HeaderMap` the reqwest path sends), without a map: an endpoint's own
//! `Content-Type`, `Authorization`, `traceparent` and `tracestate` give way
//! to the event's, as a map's later insert would replace them. A unit test
//! holds the two to the same headers.

use http::HeaderValue;
use http::header::{AUTHORIZATION, CONTENT_TYPE, USER_AGENT};

use super::request::{Outgoing, header_text};
use super::trace::{TRACEPARENT, TRACESTATE};
use crate::index::Endpoint;
use crate::sign::header;

/// Whether an endpoint's own header is written per request instead of in
/// the fixed part (an event's may replace it).
fn per_request(name: &http::HeaderName) -> bool {
    name == CONTENT_TYPE || name == AUTHORIZATION || name == TRACEPARENT || name == TRACESTATE
}

/// The fixed part: `POST <target> HTTP/1.1`, `Host`, the endpoint's own
/// `User-Agent` or `user_agent`, the endpoint's other headers.
fn fixed_part(endpoint: &Endpoint, target: &str, host: &str, user_agent: &HeaderValue) -> Vec<u8> {
    let mut head = Vec::with_capacity(128);
    head.extend_from_slice(b"POST ");
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    head.extend_from_slice(host.as_bytes());
    head.extend_from_slice(b"\r\n");
    let own = endpoint.extra_headers();
    if !own.iter().any(|(name, _)| name == USER_AGENT) {
        line(&mut head, "user-agent", user_agent.as_bytes());
    }
    for (name, value) in own.iter().filter(|(name, _)| !per_request(name)) {
        line(&mut head, name.as_str(), value.as_bytes());
    }
    head
}

fn line(head: &mut Vec<u8>, name: &str, value: &[u8]) {
    head.extend_from_slice(name.as_bytes());
    head.extend_from_slice(b": ");
    head.extend_from_slice(value);
    head.extend_from_slice(b"\r\n");
}

/// Writes the whole head of `out` to `endpoint` into `head`: the fixed
/// part, then the event's lines. `auth` is the egress `Authorization`.
pub fn write_head(
    head: &mut Vec<u8>,
    endpoint: &Endpoint,
    (target, host): (&str, &str),
    user_agent: &HeaderValue,
    out: &Outgoing<'_>,
    auth: Option<&HeaderValue>,
) {
    head.extend_from_slice(endpoint.fixed_head(|| fixed_part(endpoint, target, host, user_agent)));
    head.extend_from_slice(b"content-length: ");
    head.extend_from_slice(itoa::Buffer::new().format(out.body.len()).as_bytes());
    head.extend_from_slice(b"\r\n");
    let mut content_type = out.content_type.as_bytes();
    let mut own_auth = None;
    for (name, value) in endpoint.extra_headers() {
        if name == CONTENT_TYPE {
            content_type = value.as_bytes();
        } else if name == AUTHORIZATION {
            own_auth = Some(value);
        } else if (name == TRACEPARENT || name == TRACESTATE) && out.trace.is_none() {
            line(head, name.as_str(), value.as_bytes());
        }
    }
    line(head, "content-type", content_type);
    if let Some(value) = auth.or(own_auth) {
        line(head, "authorization", value.as_bytes());
    }
    if let Some(source) = out.cloudevent_source {
        for (name, value) in [
            ("ce-specversion", "1.0"),
            ("ce-id", out.event_id),
            ("ce-source", source),
            ("ce-type", out.event_type),
            ("ce-time", &super::shape::iso_millis(out.event_time_ms)),
        ] {
            text_line(head, name, value);
        }
    }
    text_line(head, header::WEBHOOK_ID, out.webhook_id);
    line(
        head,
        header::WEBHOOK_TIMESTAMP,
        itoa::Buffer::new().format(out.timestamp).as_bytes(),
    );
    if let Some(trace) = out.trace {
        line(head, TRACEPARENT, trace.traceparent.as_bytes());
        if let Some(state) = &trace.tracestate {
            line(head, TRACESTATE, state.as_bytes());
        }
    }
    endpoint.signer.sign(&out.sign_input(), |name, value| {
        text_line(head, name, &value)
    });
    head.extend_from_slice(b"\r\n");
}

/// A line whose value comes from an event: characters a header cannot
/// carry become `_`, as on the reqwest path.
fn text_line(head: &mut Vec<u8>, name: &str, value: &str) {
    line(head, name, header_text(value).as_bytes());
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use http::HeaderMap;

    use super::*;
    use crate::config::{AuthConfig, BearerAuth, EndpointConfig, SignatureScheme};
    use crate::deliver::request::request_headers;
    use crate::deliver::trace::TraceContext;
    use crate::index::egress::Auth;

    /// The head's lines as (name, value) pairs, sorted; the request line
    /// apart.
    fn lines(head: &[u8]) -> (String, Vec<(String, String)>) {
        let text = String::from_utf8(head.to_vec()).unwrap();
        let text = text
            .strip_suffix("\r\n\r\n")
            .expect("the head ends with an empty line");
        let mut lines = text.split("\r\n");
        let request_line = lines.next().unwrap().to_string();
        let mut pairs: Vec<_> = lines
            .map(|l| {
                let (n, v) = l.split_once(": ").expect(l);
                (n.to_string(), v.to_string())
            })
            .collect();
        pairs.sort();
        (request_line, pairs)
    }

    /// What the reqwest path sends: its map, the egress `Authorization`,
    /// and what the client adds (`Host`, `Content-Length`, `User-Agent`).
    fn map_lines(
        endpoint: &Endpoint,
        out: &Outgoing<'_>,
        ua: &HeaderValue,
    ) -> Vec<(String, String)> {
        let mut map: HeaderMap = request_headers(endpoint, out);
        if let Some(Auth::Header(value)) = endpoint.egress().and_then(|e| e.auth.as_ref()) {
            map.insert(AUTHORIZATION, value.clone());
        }
        map.entry(USER_AGENT).or_insert_with(|| ua.clone());
        let mut pairs: Vec<_> = map
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        pairs.push(("host".into(), "hooks.example:8080".into()));
        pairs.push(("content-length".into(), out.body.len().to_string()));
        pairs.sort();
        pairs
    }

    #[test]
    fn the_head_carries_the_same_headers_as_the_reqwest_path() {
        let body = Bytes::from_static(b"{\"a\":1}");
        let trace = TraceContext {
            traceparent: HeaderValue::from_static(
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            tracestate: Some(HeaderValue::from_static("k=v")),
        };
        let ua = HeaderValue::from_static("hookstream/test");
        let mut own_everything = EndpointConfig::new("ep", "http://hooks.example:8080/in?x=1");
        for (name, value) in [
            ("content-type", "text/plain"),
            ("user-agent", "mine"),
            ("authorization", "Basic b3du"),
            (
                "traceparent",
                "00-11111111111111111111111111111111-2222222222222222-01",
            ),
            ("x-tenant", "acme"),
        ] {
            own_everything.headers.insert(name.into(), value.into());
        }
        let mut bearer = own_everything.clone();
        bearer.headers.remove("authorization");
        bearer.auth = Some(Box::new(AuthConfig {
            bearer: Some(BearerAuth {
                token: Some("t0k3n".into()),
                ..Default::default()
            }),
            ..Default::default()
        }));
        let mut plain = EndpointConfig::new("ep", "http://hooks.example:8080/in?x=1");
        plain.secret = Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into());
        let mut mender = plain.clone();
        mender.signature = SignatureScheme::Mender;
        mender.secret = Some("00112233445566778899aabbccddeeff".into());
        let mut github = plain.clone();
        github.signature = SignatureScheme::Github;
        for config in [own_everything, bearer, plain, mender, github] {
            let name = format!("{:?} {:?}", config.signature, config.headers);
            let endpoint =
                Endpoint::build(config, true, Duration::from_secs(1), &|_| None).unwrap();
            for (trace, cloudevent_source, event_type) in [
                (None, None, "device.created"),
                (Some(&trace), Some("/fleet"), "odd\u{7f}type\u{e9}"),
            ] {
                let out = Outgoing {
                    body: &body,
                    webhook_id: "msg_abc",
                    event_type,
                    event_id: "evt-1",
                    event_time_ms: 1_700_000_000_000,
                    timestamp: 1_700_000_123,
                    content_type: "application/json",
                    cloudevent_source,
                    trace,
                };
                let auth = match endpoint.egress().and_then(|e| e.auth.as_ref()) {
                    Some(Auth::Header(value)) => Some(value),
                    _ => None,
                };
                let mut head = Vec::new();
                write_head(
                    &mut head,
                    &endpoint,
                    ("/in?x=1", "hooks.example:8080"),
                    &ua,
                    &out,
                    auth,
                );
                let (request_line, sent) = lines(&head);
                assert_eq!(request_line, "POST /in?x=1 HTTP/1.1");
                // Both sign the attempt's timestamp: every line the same,
                // the signature and `webhook-timestamp` included.
                assert_eq!(
                    sent,
                    map_lines(&endpoint, &out, &ua),
                    "{name}, trace {}",
                    trace.is_some()
                );
                assert!(
                    sent.iter()
                        .any(|(n, v)| n == header::WEBHOOK_TIMESTAMP && v == "1700000123"),
                    "{sent:?}"
                );
            }
        }
    }
}
