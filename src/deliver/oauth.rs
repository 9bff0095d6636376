//! OAuth2 client-credentials tokens (RFC 6749 §4.4) for the endpoints
//! whose `auth.oauth2` asks for them: fetched with a form POST to the
//! token endpoint, cached until they expire (less a margin), fetched once
//! however many deliveries wait for one, and dropped when the receiver
//! answers 401 to them (`request` then fetches one new token and repeats
//! the attempt once).
//!
//! Owns the cache ([`TokenCache`], keyed by the client's fingerprint, so a
//! changed client never uses an old token), the token request and the
//! reading of its answer. The pure parts (lifetime, form body, answer) take
//! the time as input and are unit-tested; [`fetch`] is the one exchange.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};

use crate::config::ClientAuth;
use crate::index::egress::OAuth2Client;

/// How long a token lives when the answer has no `expires_in`.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);
/// The most a token is given up before it expires (10 % of shorter
/// lifetimes): a request never leaves with a token about to expire.
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(30);
/// How long a failed fetch answers for the client before the next try, so
/// that deliveries waiting together do not each ask a failing server.
pub const FAILURE_HOLD: Duration = Duration::from_secs(1);
/// Longest token answer read.
const MAX_ANSWER: usize = 64 * 1024;

/// An access token and when it stops being used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// `Bearer <access_token>`, marked sensitive.
    pub authorization: HeaderValue,
    /// When it is given up (its expiry less the margin).
    pub use_until: Instant,
}

impl Token {
    /// Whether it may still be sent at `now`.
    pub fn is_fresh(&self, now: Instant) -> bool {
        now < self.use_until
    }
}

/// How long a token announced to live `expires_in` seconds is used:
/// [`DEFAULT_LIFETIME`] when not announced, less [`EXPIRY_MARGIN`] or 10 %
/// of it, whichever is smaller.
pub fn usable_for(expires_in: Option<u64>) -> Duration {
    let lifetime = expires_in.map_or(DEFAULT_LIFETIME, Duration::from_secs);
    lifetime.saturating_sub(EXPIRY_MARGIN.min(lifetime / 10))
}

/// The token request's form body and, for `client_secret_basic`, its
/// `Authorization` value.
pub fn token_request(client: &OAuth2Client) -> (String, Option<HeaderValue>) {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("grant_type", "client_credentials");
    if let Some(scope) = &client.scope {
        form.append_pair("scope", scope);
    }
    if let Some(audience) = &client.audience {
        form.append_pair("audience", audience);
    }
    let authorization = match client.client_auth {
        ClientAuth::Post => {
            form.append_pair("client_id", &client.client_id);
            form.append_pair("client_secret", &client.client_secret);
            None
        }
        ClientAuth::Basic => {
            // RFC 6749 §2.3.1: both form-encoded before they are joined.
            let encode = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect();
            let id: String = encode(&client.client_id);
            let secret: String = encode(&client.client_secret);
            let mut value = HeaderValue::from_str(&format!(
                "Basic {}",
                BASE64.encode(format!("{id}:{secret}"))
            ))
            .ok();
            if let Some(v) = &mut value {
                v.set_sensitive(true);
            }
            value
        }
    };
    (form.finish(), authorization)
}

/// Reads the token endpoint's answer (`status`, `body`) received at `now`:
/// the token, or why there is none (the server's `error` and
/// `error_description` included, never the client's secret).
pub fn read_answer(status: u16, body: &[u8], now: Instant) -> Result<Token, String> {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let text = |name: &str| {
        json.as_ref()
            .and_then(|j| j.get(name))
            .and_then(serde_json::Value::as_str)
            .map(|s| s.chars().take(200).collect::<String>())
    };
    if !(200..=299).contains(&status) {
        let mut why = format!("the token endpoint answered HTTP {status}");
        if let Some(error) = text("error") {
            why.push_str(&format!(": {error}"));
        }
        if let Some(description) = text("error_description") {
            why.push_str(&format!(" ({description})"));
        }
        return Err(why);
    }
    let Some(json) = json.as_ref() else {
        return Err("the token endpoint's answer is not JSON".into());
    };
    let Some(access_token) = json.get("access_token").and_then(|t| t.as_str()) else {
        return Err("the token endpoint's answer has no `access_token`".into());
    };
    if let Some(kind) = json.get("token_type").and_then(|t| t.as_str())
        && !kind.eq_ignore_ascii_case("bearer")
    {
        return Err(format!(
            "the token endpoint issued a `{}` token; only bearer tokens are sent",
            kind.chars().take(40).collect::<String>()
        ));
    }
    if access_token.is_empty() || !access_token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("the token endpoint's `access_token` is no bearer token (RFC 6750)".into());
    }
    // `expires_in` is a number; some servers send it as text.
    let expires_in = match json.get("expires_in") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.parse().ok(),
        Some(_) => None,
    };
    let mut authorization = HeaderValue::from_str(&format!("Bearer {access_token}"))
        .map_err(|_| "the token endpoint's `access_token` cannot travel in a header".to_string())?;
    authorization.set_sensitive(true);
    Ok(Token {
        authorization,
        use_until: now + usable_for(expires_in),
    })
}

/// Requests a token for `oauth` through `client` (the endpoint's own:
/// same TLS material and proxy), within `timeout`.
pub async fn fetch(
    client: &reqwest::Client,
    oauth: &OAuth2Client,
    timeout: Duration,
) -> Result<Token, String> {
    let (body, authorization) = token_request(oauth);
    let mut request = client
        .post(oauth.token_url.clone())
        .header(
            CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        )
        .header(ACCEPT, HeaderValue::from_static("application/json"))
        .body(body)
        .timeout(timeout);
    if let Some(authorization) = authorization {
        request = request.header(AUTHORIZATION, authorization);
    }
    let host = oauth.token_url.host_str().unwrap_or("");
    let failed = |e: &dyn std::error::Error| {
        format!(
            "requesting an OAuth2 token from {host} failed: {}",
            super::request::error_chain(e)
        )
    };
    let mut response = request.send().await.map_err(|e| failed(&e))?;
    let status = response.status().as_u16();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| failed(&e))? {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(format!(
                "the token endpoint {host} answered more than {MAX_ANSWER} bytes"
            ));
        }
        body.extend_from_slice(&chunk);
    }
    read_answer(status, &body, Instant::now())
        .map_err(|why| format!("OAuth2 token from {host}: {why}"))
}

/// One client's token, the lock that makes one fetch at a time, and the
/// last failure (answered for [`FAILURE_HOLD`]).
#[derive(Debug, Default)]
struct Slot {
    current: Mutex<Option<Token>>,
    failure: Mutex<Option<(Instant, String)>>,
    fetching: tokio::sync::Mutex<()>,
}

/// Tokens by client fingerprint, shared by every sender (and surviving
/// them: a sender dropped when idle does not lose its endpoint's token).
#[derive(Debug, Default)]
pub struct TokenCache {
    slots: Mutex<HashMap<[u8; 16], Arc<Slot>>>,
    fetches: std::sync::atomic::AtomicU64,
}

impl TokenCache {
    fn slot(&self, key: [u8; 16], now: Instant) -> Arc<Slot> {
        let mut slots = crate::core::lock(&self.slots);
        if let Some(slot) = slots.get(&key) {
            return Arc::clone(slot);
        }
        // Forget expired tokens nobody is fetching before adding a client.
        slots.retain(|_, slot| {
            Arc::strong_count(slot) > 1
                || crate::core::lock(&slot.current)
                    .as_ref()
                    .is_some_and(|t| t.is_fresh(now))
        });
        Arc::clone(slots.entry(key).or_default())
    }

    /// A fresh token for the client `key`: the cached one, or one `fetch`
    /// makes (one fetch at a time per client; deliveries that waited for
    /// it use its token, or its error for [`FAILURE_HOLD`]).
    pub async fn token<F, Fut>(&self, key: [u8; 16], fetch: F) -> Result<Token, String>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Token, String>>,
    {
        let slot = self.slot(key, Instant::now());
        if let Some(token) = fresh(&slot, Instant::now()) {
            return Ok(token);
        }
        let _fetching = slot.fetching.lock().await;
        let now = Instant::now();
        if let Some(token) = fresh(&slot, now) {
            return Ok(token);
        }
        if let Some((at, why)) = crate::core::lock(&slot.failure).as_ref()
            && now.duration_since(*at) < FAILURE_HOLD
        {
            return Err(why.clone());
        }
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let fetched = fetch().await;
        match &fetched {
            Ok(token) => {
                *crate::core::lock(&slot.current) = Some(token.clone());
                *crate::core::lock(&slot.failure) = None;
            }
            Err(why) => *crate::core::lock(&slot.failure) = Some((Instant::now(), why.clone())),
        }
        fetched
    }

    /// Drops `token` of client `key` (its receiver refused it), unless a
    /// newer one replaced it already: of many deliveries refused with one
    /// token, one makes the next fetch.
    pub fn refused(&self, key: [u8; 16], token: &Token) {
        let slot = crate::core::lock(&self.slots).get(&key).cloned();
        if let Some(slot) = slot {
            let mut current = crate::core::lock(&slot.current);
            if current.as_ref() == Some(token) {
                *current = None;
            }
        }
    }

    /// Token requests made so far (all clients).
    pub fn fetches(&self) -> u64 {
        self.fetches.load(std::sync::atomic::Ordering::Relaxed)
    }
}

fn fresh(slot: &Slot, now: Instant) -> Option<Token> {
    crate::core::lock(&slot.current)
        .as_ref()
        .filter(|t| t.is_fresh(now))
        .cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(client_auth: ClientAuth) -> OAuth2Client {
        OAuth2Client {
            token_url: reqwest::Url::parse("https://auth.example.com/oauth/token").unwrap(),
            client_id: "fleet hooks".into(),
            client_secret: "s3cr&t:x".into(),
            scope: Some("hooks.write".into()),
            audience: None,
            client_auth,
            cache_key: [7; 16],
        }
    }

    #[test]
    fn tokens_are_given_up_a_little_before_they_expire() {
        assert_eq!(usable_for(Some(3600)), Duration::from_secs(3570));
        assert_eq!(usable_for(Some(60)), Duration::from_secs(54));
        assert_eq!(usable_for(Some(1)), Duration::from_millis(900));
        assert_eq!(usable_for(Some(0)), Duration::ZERO);
        assert_eq!(usable_for(None), Duration::from_secs(3570));
    }

    #[test]
    fn credentials_go_in_basic_auth_or_in_the_form() {
        let (body, auth) = token_request(&client(ClientAuth::Basic));
        assert_eq!(body, "grant_type=client_credentials&scope=hooks.write");
        let expected = BASE64.encode("fleet+hooks:s3cr%26t%3Ax");
        assert_eq!(auth.unwrap(), format!("Basic {expected}").as_str());
        let (body, auth) = token_request(&client(ClientAuth::Post));
        assert_eq!(
            body,
            "grant_type=client_credentials&scope=hooks.write&client_id=fleet+hooks&client_secret=s3cr%26t%3Ax"
        );
        assert!(auth.is_none());
    }

    #[test]
    fn answers_give_a_bearer_token_or_say_why_not() {
        let now = Instant::now();
        let t = read_answer(
            200,
            br#"{"access_token":"tok-1","token_type":"Bearer","expires_in":120}"#,
            now,
        )
        .unwrap();
        assert_eq!(t.authorization, "Bearer tok-1");
        assert!(t.authorization.is_sensitive());
        assert_eq!(t.use_until, now + Duration::from_secs(108));
        assert!(t.is_fresh(now) && !t.is_fresh(now + Duration::from_secs(108)));
        let t = read_answer(200, br#"{"access_token":"a","expires_in":"60"}"#, now).unwrap();
        assert_eq!(t.use_until, now + Duration::from_secs(54));
        let refused = read_answer(
            401,
            br#"{"error":"invalid_client","error_description":"bad secret"}"#,
            now,
        )
        .unwrap_err();
        assert_eq!(
            refused,
            "the token endpoint answered HTTP 401: invalid_client (bad secret)"
        );
        assert!(
            read_answer(200, b"<html>", now)
                .unwrap_err()
                .contains("not JSON")
        );
        assert!(
            read_answer(200, b"{}", now)
                .unwrap_err()
                .contains("access_token")
        );
        assert!(
            read_answer(200, br#"{"access_token":"a","token_type":"mac"}"#, now)
                .unwrap_err()
                .contains("`mac`")
        );
        assert!(
            read_answer(200, br#"{"access_token":"a b"}"#, now)
                .unwrap_err()
                .contains("RFC 6750")
        );
    }

    fn token(value: &str, for_secs: u64) -> Token {
        Token {
            authorization: HeaderValue::from_str(value).unwrap(),
            use_until: Instant::now() + Duration::from_secs(for_secs),
        }
    }

    #[tokio::test]
    async fn many_waiters_share_one_fetch_and_one_refusal_makes_one_refetch() {
        let cache = Arc::new(TokenCache::default());
        let mut waiters = Vec::new();
        for _ in 0..20 {
            let cache = Arc::clone(&cache);
            waiters.push(tokio::spawn(async move {
                cache
                    .token([1; 16], || async {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok(token("Bearer one", 60))
                    })
                    .await
            }));
        }
        for w in waiters {
            assert_eq!(w.await.unwrap().unwrap().authorization, "Bearer one");
        }
        assert_eq!(cache.fetches(), 1);
        let one = cache
            .token([1; 16], || async { unreachable_fetch() })
            .await
            .unwrap();
        cache.refused([1; 16], &one);
        let two = cache
            .token([1; 16], || async { Ok(token("Bearer two", 60)) })
            .await
            .unwrap();
        assert_eq!(two.authorization, "Bearer two");
        // A second refusal of the old token does not drop the new one.
        cache.refused([1; 16], &one);
        let still = cache
            .token([1; 16], || async { unreachable_fetch() })
            .await
            .unwrap();
        assert_eq!(still.authorization, "Bearer two");
        assert_eq!(cache.fetches(), 2);
    }

    fn unreachable_fetch() -> Result<Token, String> {
        Err("no fetch was expected".into())
    }

    #[tokio::test]
    async fn a_failed_fetch_answers_its_waiters_for_a_moment_then_is_tried_again() {
        let cache = TokenCache::default();
        let first = cache
            .token([2; 16], || async { Err("HTTP 503".to_string()) })
            .await;
        assert_eq!(first.unwrap_err(), "HTTP 503");
        let held = cache
            .token([2; 16], || async { Ok(token("Bearer x", 60)) })
            .await;
        assert_eq!(held.unwrap_err(), "HTTP 503", "held for FAILURE_HOLD");
        assert_eq!(cache.fetches(), 1);
        tokio::time::sleep(FAILURE_HOLD).await;
        let later = cache
            .token([2; 16], || async { Ok(token("Bearer x", 60)) })
            .await;
        assert_eq!(later.unwrap().authorization, "Bearer x");
        assert_eq!(cache.fetches(), 2);
    }
}
