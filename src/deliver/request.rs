//! One delivery attempt: build the signed request, send it, read the answer,
//! classify it.
//!
//! Owns the wire format of SPEC §4 (headers, body, ids), the endpoint's
//! `Authorization` (a fixed value, or an OAuth2 token: a 401 to a cached
//! token drops it, fetches one new token and repeats the exchange once),
//! and the SSRF check of a destination reached through a proxy (the client
//! resolves only the proxy's name, so the destination's is checked here).
//! Knows nothing of Kafka: what to do with the verdict is the sender's
//! business.
//!
//! Why this file is long: one attempt, the request built, signed, sent and its
//! answer read, kept together on the hot path.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use sha2::{Digest, Sha256};

use super::client::{HttpClients, Route};
use super::head;
use super::oauth::{self, Token};
use crate::config::HttpVersion;
use crate::guard as ssrf;
use crate::index::Endpoint;
use crate::index::egress::{Auth, OAuth2Client};
use crate::outcome::classify::{AttemptResult, TransportFailure, Verdict, is_local_resource_error};
use crate::outcome::policy::RetryRules;
use crate::sign::{SignInput, header};

/// The `webhook-id` of an event for an endpoint: stable across retries and
/// replays, different per endpoint, so receivers can deduplicate.
pub fn webhook_id(event_id: &str, endpoint_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(event_id.as_bytes());
    h.update([0u8]);
    h.update(endpoint_id.as_bytes());
    let mut id = *b"msg_00000000000000000000000000000000";
    // 16 bytes always fit the 32 hex digits after `msg_`.
    let _ = hex::encode_to_slice(&h.finalize()[..16], &mut id[4..]);
    // ASCII throughout: `msg_` and hex digits.
    String::from_utf8_lossy(&id).into_owned()
}

/// What one attempt produced.
#[derive(Debug, Clone)]
pub struct AttemptReport {
    /// What to do next.
    pub verdict: Verdict,
    /// HTTP status, when a response arrived.
    pub status: Option<u16>,
    /// How the attempt failed, when no response arrived.
    pub failure: Option<TransportFailure>,
    /// `hookstream-last-status`: the code, or `timeout`/`connect`/...
    pub last_status: String,
    /// `hookstream-last-error`: a short description, empty on success.
    pub last_error: String,
    /// Time from sending to the end of the response.
    pub latency: Duration,
    /// When the attempt ended (the clock reading `latency` ends at).
    pub ended: Instant,
}

/// What to send.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    /// Body bytes (shared, never copied).
    pub body: &'a Bytes,
    /// `webhook-id`.
    pub webhook_id: &'a str,
    /// Event type (for the scheme's event header).
    pub event_type: &'a str,
    /// The event's id (OpenMDM's delivery id, CloudEvents `id`).
    pub event_id: &'a str,
    /// The event's own time, else its first attempt's (unix ms): the same
    /// on every attempt.
    pub event_time_ms: i64,
    /// `webhook-timestamp`, what the signature signs: unix seconds of the
    /// attempt (its caller's clock reading; [`unix_now_secs`] for one of
    /// its own).
    pub timestamp: i64,
    /// `Content-Type` (a custom header may replace it).
    pub content_type: &'static str,
    /// CloudEvents binary mode: the event's `source`, sent with the other
    /// attributes as `ce-*` headers.
    pub cloudevent_source: Option<&'a str>,
    /// W3C trace headers, forwarded from the record or started.
    pub trace: Option<&'a super::trace::TraceContext>,
}

impl<'a> Outgoing<'a> {
    /// What the endpoint's signer signs.
    pub fn sign_input(&self) -> SignInput<'a> {
        SignInput {
            webhook_id: self.webhook_id,
            timestamp: self.timestamp,
            body: self.body,
            event_type: self.event_type,
            event_id: self.event_id,
            event_time_ms: self.event_time_ms,
        }
    }
}

/// Unix seconds now, for [`Outgoing::timestamp`].
pub fn unix_now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Longest response body read (to keep the connection reusable); longer
/// bodies are dropped with their connection.
const MAX_RESPONSE_BODY: usize = super::plain::MAX_RESPONSE_BODY as usize;

/// What came back from a receiver that answered.
struct Answer {
    status: u16,
    retry_after: Option<String>,
    /// Why reading the (bounded) body failed, if it did.
    body_error: Option<String>,
}

/// Why no answer came: the failure's kind and the error's text.
type NoAnswer = (TransportFailure, String);

/// Whether `endpoint` goes through the lean client of [`super::plain`]:
/// plain `http://` over HTTP/1.1 (`http_version` `auto` or `http1`)
/// without a proxy (proxies are reqwest's).
fn uses_plain_client(endpoint: &Endpoint, route: Route<'_>) -> bool {
    endpoint.url().scheme() == "http"
        && endpoint.config.http_version != HttpVersion::Http2
        && route == Route::Direct
}

/// One exchange with the endpoint's client.
async fn send_once(
    clients: &HttpClients,
    endpoint: &Endpoint,
    headers: HeaderMap,
    body: Bytes,
    timeout: Duration,
) -> Result<Answer, NoAnswer> {
    if uses_plain_client(endpoint, clients.route(endpoint)) {
        let ua = clients.user_agent();
        let write = |buf: &mut Vec<u8>, to: (&str, &str)| {
            super::plain::wire::write_request_head(buf, to, &headers, ua, body.len());
        };
        return send_plain(clients, endpoint, write, &body, (Instant::now(), timeout)).await;
    }
    let client = clients
        .for_endpoint(endpoint, endpoint.config.http_version)
        .map_err(|e| {
            (
                TransportFailure::Connect,
                format!("the endpoint's HTTP client could not be built: {e}"),
            )
        })?;
    send_reqwest(&client, endpoint, headers, body, timeout).await
}

/// One exchange with the endpoint's OAuth2 token: a 401 drops the token,
/// and the exchange is made once more with a new one.
async fn send_with_token(
    clients: &HttpClients,
    endpoint: &Endpoint,
    oauth: &OAuth2Client,
    mut headers: HeaderMap,
    body: Bytes,
    timeout: Duration,
) -> Result<Answer, NoAnswer> {
    let token = token_for(clients, endpoint, oauth, timeout)
        .await
        .map_err(|why| (TransportFailure::Auth, why))?;
    headers.insert(AUTHORIZATION, token.authorization.clone());
    let first = send_once(clients, endpoint, headers.clone(), body.clone(), timeout).await?;
    if first.status != 401 {
        return Ok(first);
    }
    clients.tokens().refused(oauth.cache_key, &token);
    let token = token_for(clients, endpoint, oauth, timeout)
        .await
        .map_err(|why| {
            (
                TransportFailure::Auth,
                format!("HTTP 401 to the cached token, and a new one: {why}"),
            )
        })?;
    headers.insert(AUTHORIZATION, token.authorization);
    send_once(clients, endpoint, headers, body, timeout).await
}

/// A fresh token for `endpoint`: the cached one, or one fetched through
/// the endpoint's client (its TLS material and proxy, the SSRF guard).
async fn token_for(
    clients: &HttpClients,
    endpoint: &Endpoint,
    oauth: &OAuth2Client,
    timeout: Duration,
) -> Result<Token, String> {
    let fetch = || async {
        if clients.guarded() {
            let checked = match guard_literal(&oauth.token_url) {
                Some(refused) => Err(refused.to_string()),
                None if matches!(clients.route(endpoint), Route::Proxy(_)) => {
                    check_destination(&oauth.token_url)
                        .await
                        .map_err(|(_, why)| why)
                }
                None => Ok(()),
            };
            checked.map_err(|why| format!("OAuth2 token endpoint: {why}"))?;
        }
        let client = clients.for_endpoint(endpoint, HttpVersion::Auto)?;
        oauth::fetch(&client, oauth, timeout).await
    };
    clients.tokens().token(oauth.cache_key, fetch).await
}

/// The SSRF guard's refusal of a URL naming a forbidden address literally.
fn guard_literal(url: &Url) -> Option<ssrf::Refused> {
    let ip = crate::index::endpoint::literal_ip(url)?;
    let class = ssrf::forbidden_class(ip)?;
    Some(ssrf::Refused {
        host: ip.to_string(),
        ip,
        class,
    })
}

/// The SSRF guard for a destination reached through a proxy: its name is
/// resolved here and every address checked (the proxy resolves it again
/// itself; see the README on what that leaves open). A name that does not
/// resolve here is not sent: the guard cannot vouch for it.
async fn check_destination(url: &Url) -> Result<(), NoAnswer> {
    let Some(url::Host::Domain(name)) = url.host() else {
        return Ok(()); // literals: `guard_literal`
    };
    let refused = |ip: std::net::IpAddr, class| ssrf::Refused {
        host: name.to_string(),
        ip,
        class,
    };
    if crate::index::endpoint::is_localhost_name(name) {
        let loopback = std::net::IpAddr::from([127, 0, 0, 1]);
        return Err((
            TransportFailure::Refused,
            refused(loopback, "loopback").to_string(),
        ));
    }
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<std::net::SocketAddr> =
        tokio::net::lookup_host((name.trim_end_matches('.'), port))
            .await
            .map_err(|e| {
                (
                    TransportFailure::Connect,
                    format!(
                        "`{name}` does not resolve here, so the SSRF guard cannot check it \
                         before it goes through the proxy: {e}"
                    ),
                )
            })?
            .collect();
    ssrf::check_all(name, &addrs).map_err(|r| (TransportFailure::Refused, r.to_string()))
}

/// One exchange through reqwest (TLS, HTTP/2, proxies).
async fn send_reqwest(
    client: &reqwest::Client,
    endpoint: &Endpoint,
    headers: HeaderMap,
    body: Bytes,
    timeout: Duration,
) -> Result<Answer, NoAnswer> {
    let sent = client
        .post(endpoint.url().clone())
        .headers(headers)
        .body(body)
        .timeout(timeout)
        .send()
        .await;
    let mut response = sent.map_err(|e| (transport_kind(&e), error_chain(&e)))?;
    let status = response.status().as_u16();
    let retry_after = retry_after_of(response.headers());
    // Read (a bounded amount of) the body so the connection can be reused.
    let mut read = 0usize;
    let mut body_error = None;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                read += chunk.len();
                if read > MAX_RESPONSE_BODY {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                body_error = Some(e.to_string());
                break;
            }
        }
    }
    Ok(Answer {
        status,
        retry_after,
        body_error,
    })
}

/// One exchange through the lean client, the head written by
/// `write_head`: the same total timeout as reqwest's, which covers the
/// answer's head and then what is read of its body, counted from `from`
/// (a clock reading of the caller's, `(from, timeout)`).
async fn send_plain(
    clients: &HttpClients,
    endpoint: &Endpoint,
    write_head: impl FnOnce(&mut Vec<u8>, (&str, &str)),
    body: &Bytes,
    (from, timeout): (Instant, Duration),
) -> Result<Answer, NoAnswer> {
    let uri = endpoint.uri().ok_or_else(|| {
        (
            TransportFailure::Local,
            "the URL is no valid request target".to_string(),
        )
    })?;
    // One timer for the whole exchange (not one per await).
    let deadline = match from.checked_add(timeout) {
        Some(at) => tokio::time::sleep_until(at.into()),
        None => tokio::time::sleep(timeout),
    };
    tokio::pin!(deadline);
    let sent = tokio::select! {
        biased;
        sent = clients.plain().send(uri, write_head, body) => sent,
        () = &mut deadline => {
            return Err((
                TransportFailure::Timeout,
                format!("no answer within {}", humantime::format_duration(timeout)),
            ));
        }
    };
    let answered = sent.map_err(|e| (plain_kind(&e), error_chain(&e)))?;
    let status = answered.head.status;
    let retry_after = answered.head.retry_after.clone();
    let body_error = tokio::select! {
        biased;
        read = answered.finish() => read.err().map(|e| error_chain(&e)),
        () = &mut deadline => Some("timed out reading the body".to_string()),
    };
    Ok(Answer {
        status,
        retry_after,
        body_error,
    })
}

/// `Retry-After`, when present and text.
fn retry_after_of(headers: &HeaderMap) -> Option<String> {
    headers
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Sends one attempt to `endpoint` and classifies the result by `rules`.
/// `retry_after_cap` bounds `Retry-After` (the backoff maximum).
pub async fn send_attempt(
    clients: &HttpClients,
    endpoint: &Endpoint,
    out: Outgoing<'_>,
    rules: &RetryRules,
    retry_after_cap: Duration,
) -> AttemptReport {
    let started = Instant::now();
    if clients.guarded() {
        if let Some(refused) = guard_literal(endpoint.url()) {
            return failure(
                TransportFailure::Refused,
                refused.to_string(),
                started,
                rules,
                retry_after_cap,
            );
        }
        if matches!(clients.route(endpoint), Route::Proxy(_))
            && let Err((kind, why)) = check_destination(endpoint.url()).await
        {
            return failure(kind, why, started, rules, retry_after_cap);
        }
    }
    let timeout = endpoint.timeout();
    let auth = endpoint.egress().and_then(|e| e.auth.as_ref());
    let answer = match auth {
        // The usual path: the head written straight into the connection.
        None | Some(Auth::Header(_)) if uses_plain_client(endpoint, clients.route(endpoint)) => {
            let auth = match auth {
                Some(Auth::Header(value)) => Some(value),
                _ => None,
            };
            let ua = clients.user_agent();
            let write = |buf: &mut Vec<u8>, to: (&str, &str)| {
                head::write_head(buf, endpoint, to, ua, &out, auth)
            };
            send_plain(clients, endpoint, write, out.body, (started, timeout)).await
        }
        None => {
            send_once(
                clients,
                endpoint,
                request_headers(endpoint, &out),
                out.body.clone(),
                timeout,
            )
            .await
        }
        Some(Auth::Header(value)) => {
            let mut headers = request_headers(endpoint, &out);
            let body = out.body.clone();
            headers.insert(AUTHORIZATION, value.clone());
            send_once(clients, endpoint, headers, body, timeout).await
        }
        Some(Auth::OAuth2(oauth)) => {
            let (headers, body) = (request_headers(endpoint, &out), out.body.clone());
            send_with_token(clients, endpoint, oauth, headers, body, timeout).await
        }
    };
    let Answer {
        status,
        retry_after,
        body_error,
    } = match answer {
        Ok(answer) => answer,
        Err((kind, error)) => return failure(kind, error, started, rules, retry_after_cap),
    };
    let ended = Instant::now();
    let verdict = rules.verdict(
        AttemptResult::Response {
            status,
            retry_after: retry_after.as_deref(),
        },
        retry_after_cap,
        SystemTime::now,
    );
    // A 2xx whose body broke off is still delivered: the receiver answered.
    let last_error = match (&verdict, body_error) {
        (Verdict::Delivered, _) => String::new(),
        (_, Some(e)) => format!("HTTP {status}; reading the body failed: {e}"),
        (_, None) => format!("HTTP {status}"),
    };
    AttemptReport {
        verdict,
        status: Some(status),
        failure: None,
        last_status: status.to_string(),
        last_error,
        latency: ended.saturating_duration_since(started),
        ended,
    }
}

fn failure(
    kind: TransportFailure,
    error: String,
    started: Instant,
    rules: &RetryRules,
    cap: Duration,
) -> AttemptReport {
    let ended = Instant::now();
    AttemptReport {
        verdict: rules.verdict(AttemptResult::Transport(kind), cap, SystemTime::now),
        status: None,
        failure: Some(kind),
        last_status: kind.status_text().to_string(),
        last_error: error,
        latency: ended.saturating_duration_since(started),
        ended,
    }
}

/// The headers of a request: fixed ones, CloudEvents attributes, the
/// endpoint's own (which may replace `Content-Type`), the signature.
pub fn request_headers(endpoint: &Endpoint, out: &Outgoing<'_>) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(8 + endpoint.extra_headers().len());
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(out.content_type));
    if let Some(source) = out.cloudevent_source {
        for (name, value) in [
            ("ce-specversion", "1.0"),
            ("ce-id", out.event_id),
            ("ce-source", source),
            ("ce-type", out.event_type),
            ("ce-time", &super::shape::iso_millis(out.event_time_ms)),
        ] {
            headers.insert(HeaderName::from_static(name), header_value(value));
        }
    }
    headers.insert(
        HeaderName::from_static(header::WEBHOOK_ID),
        header_value(out.webhook_id),
    );
    headers.insert(
        HeaderName::from_static(header::WEBHOOK_TIMESTAMP),
        HeaderValue::from(out.timestamp),
    );
    for (name, value) in endpoint.extra_headers() {
        headers.insert(name.clone(), value.clone());
    }
    if let Some(trace) = out.trace {
        headers.insert(
            HeaderName::from_static(super::trace::TRACEPARENT),
            trace.traceparent.clone(),
        );
        if let Some(state) = &trace.tracestate {
            headers.insert(
                HeaderName::from_static(super::trace::TRACESTATE),
                state.clone(),
            );
        }
    }
    endpoint.signer.sign(&out.sign_input(), |name, value| {
        // Moved in without a copy when valid (it nearly always is).
        let clean = match header_text(&value) {
            std::borrow::Cow::Borrowed(_) => None,
            std::borrow::Cow::Owned(clean) => Some(clean),
        };
        let value =
            HeaderValue::try_from(clean.unwrap_or(value)).unwrap_or(HeaderValue::from_static("_"));
        headers.insert(HeaderName::from_static(name), value);
    });
    headers
}

/// `text` as a header can carry it: as it is, or with the characters
/// headers cannot carry (event types come from events) replaced by `_`.
pub(super) fn header_text(text: &str) -> std::borrow::Cow<'_, str> {
    if text
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        return std::borrow::Cow::Borrowed(text);
    }
    text.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// A header value from text that may carry characters headers cannot.
fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(&header_text(text)).unwrap_or(HeaderValue::from_static("_"))
}

/// What kind of failure a request of the lean client that got no
/// response met.
fn plain_kind(e: &super::plain::PlainError) -> TransportFailure {
    if let Some(kind) = kind_from_causes(e) {
        kind
    } else if e.is_connect() {
        TransportFailure::Connect
    } else {
        TransportFailure::Reset
    }
}

/// What kind of failure a request that got no response met.
fn transport_kind(e: &reqwest::Error) -> TransportFailure {
    if let Some(kind) = kind_from_causes(e) {
        return kind;
    }
    if e.is_builder() {
        // The request could not be built: nothing was sent.
        TransportFailure::Local
    } else if e.is_timeout() {
        TransportFailure::Timeout
    } else if e.is_connect() {
        TransportFailure::Connect
    } else {
        TransportFailure::Reset
    }
}

/// The kind a cause in `e`'s chain decides: the SSRF guard's refusal, or
/// this process running out of descriptors, buffers or memory.
fn kind_from_causes(e: &(dyn std::error::Error + 'static)) -> Option<TransportFailure> {
    let mut source = Some(e);
    while let Some(err) = source {
        if err.downcast_ref::<ssrf::Refused>().is_some() {
            return Some(TransportFailure::Refused);
        }
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(is_local_resource_error)
        {
            return Some(TransportFailure::Local);
        }
        source = err.source();
    }
    None
}

/// The error and its causes on one line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_ids_are_stable_and_per_endpoint() {
        let a = webhook_id("evt-1", "analytics");
        assert_eq!(a, webhook_id("evt-1", "analytics"));
        assert_ne!(a, webhook_id("evt-1", "billing"));
        assert_ne!(a, webhook_id("evt-2", "analytics"));
        assert!(a.starts_with("msg_") && a.len() == 36);
        // The id of a delivery is kept across versions: receivers that
        // deduplicate on it must not see a retry as new after an upgrade.
        let mut h = Sha256::new();
        h.update(b"evt-1\0analytics");
        assert_eq!(a, format!("msg_{}", hex::encode(&h.finalize()[..16])));
    }

    /// An error wrapping a cause, as hyper's and reqwest's errors do.
    #[derive(Debug)]
    struct Wrapped(&'static str, Box<dyn std::error::Error + Send + Sync>);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&*self.1)
        }
    }

    #[test]
    fn causes_deep_in_the_chain_decide_the_kind() {
        // What reqwest reports when socket() fails: client error (Connect)
        // ← tcp open error ← Too many open files (os error 24).
        let emfile = Wrapped(
            "client error (Connect)",
            Box::new(Wrapped(
                "tcp open error",
                Box::new(std::io::Error::from_raw_os_error(libc::EMFILE)),
            )),
        );
        assert_eq!(kind_from_causes(&emfile), Some(TransportFailure::Local));
        assert!(error_chain(&emfile).contains("os error 24"));
        let enobufs = Wrapped(
            "error sending request",
            Box::new(std::io::Error::from_raw_os_error(libc::ENOBUFS)),
        );
        assert_eq!(kind_from_causes(&enobufs), Some(TransportFailure::Local));
        let refused_by_peer = Wrapped(
            "client error (Connect)",
            Box::new(std::io::Error::from_raw_os_error(libc::ECONNREFUSED)),
        );
        assert_eq!(kind_from_causes(&refused_by_peer), None);
        let guarded = Wrapped(
            "client error (Connect)",
            Box::new(ssrf::Refused {
                host: "10.0.0.1".into(),
                ip: "10.0.0.1".parse().unwrap(),
                class: ssrf::forbidden_class("10.0.0.1".parse().unwrap()).unwrap(),
            }),
        );
        assert_eq!(kind_from_causes(&guarded), Some(TransportFailure::Refused));
    }

    #[test]
    fn header_values_are_sanitised() {
        assert_eq!(header_value("device.enrolled"), "device.enrolled");
        assert_eq!(header_value("bad\nvalue"), "bad_value");
    }
}
