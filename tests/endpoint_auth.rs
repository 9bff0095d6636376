//! Endpoint authentication and egress, as an operator sees them: receivers
//! that demand credentials get them (basic, bearer, an OAuth2 token fetched
//! once and reused until it expires, fetched again after a 401), receivers
//! behind TLS that demand a client certificate or are signed by a private
//! CA are reached with the endpoint's `tls`, and requests leave through an
//! egress proxy (CONNECT for https, absolute-form for http) unless an
//! endpoint says `proxy = "none"`, while the SSRF guard still refuses a
//! private destination behind the proxy.
//!
//! Every server here is real and listens on 127.0.0.1: receivers and the
//! token endpoint are hyper servers (over rustls where TLS is the point),
//! the proxy is a tokio listener that tunnels CONNECT and forwards
//! absolute-form requests, counting both. Certificates are made by the
//! test with rcgen.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use hookstream::config::{
    AuthConfig, BasicAuth, BearerAuth, DeliveryConfig, EndpointConfig, OAuth2Config, TlsConfig,
};
use hookstream::deliver::client::HttpClients;
use hookstream::deliver::request::{AttemptReport, Outgoing, send_attempt};
use hookstream::index::Endpoint;
use hookstream::outcome::classify::Verdict;
use hookstream::outcome::policy::RetryRules;
use hookstream::source::extract::Preset;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use common::*;

// ---------------------------------------------------------------------------
// Real servers on 127.0.0.1
// ---------------------------------------------------------------------------

/// One request a server answered.
#[derive(Debug, Clone)]
struct Seen {
    authorization: Option<String>,
    content_type: Option<String>,
    body: Vec<u8>,
    status: u16,
    /// Whether the TLS client presented a certificate.
    client_cert: bool,
}

/// Decides the status and body of an answer from the request.
type Handler = Arc<dyn Fn(&http::request::Parts, &[u8]) -> (u16, String) + Send + Sync>;

/// An HTTP/1.1 server (over TLS when given a config) recording what it
/// answered.
struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    async fn start(tls: Option<Arc<rustls::ServerConfig>>, handler: Handler) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (handler, log, tls) = (Arc::clone(&handler), Arc::clone(&log), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        None => serve(TokioIo::new(tcp), false, handler, log).await,
                        Some(config) => {
                            let Ok(stream) =
                                tokio_rustls::TlsAcceptor::from(config).accept(tcp).await
                            else {
                                return; // the handshake failed: nothing to record
                            };
                            let client_cert = stream.get_ref().1.peer_certificates().is_some();
                            serve(TokioIo::new(stream), client_cert, handler, log).await
                        }
                    }
                });
            }
        });
        Self { addr, seen, task }
    }

    fn url(&self, scheme: &str, path: &str) -> String {
        format!("{scheme}://{}/{path}", self.addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

async fn serve<S>(io: TokioIo<S>, client_cert: bool, handler: Handler, log: Arc<Mutex<Vec<Seen>>>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
        let (handler, log) = (Arc::clone(&handler), Arc::clone(&log));
        async move {
            let (parts, body) = request.into_parts();
            let body = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let (status, answer) = handler(&parts, &body);
            let header = |name: http::header::HeaderName| {
                parts
                    .headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            log.lock().unwrap().push(Seen {
                authorization: header(http::header::AUTHORIZATION),
                content_type: header(http::header::CONTENT_TYPE),
                body: body.to_vec(),
                status,
                client_cert,
            });
            Ok::<_, std::convert::Infallible>(
                http::Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(answer)))
                    .unwrap(),
            )
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .await;
}

/// A receiver answering 200 to requests carrying `Authorization:
/// <expected>` and 401 to the rest.
fn expecting(expected: &'static str) -> Handler {
    Arc::new(move |parts, _| {
        let given = parts.headers.get(http::header::AUTHORIZATION);
        if given.is_some_and(|v| v == expected) {
            (200, "{}".into())
        } else {
            (401, r#"{"error":"unauthorized"}"#.into())
        }
    })
}

/// An OAuth2 token endpoint for client `fleet`/`s3cret` (client_secret_basic):
/// each grant issues `tok-<n>` valid `expires_in` seconds, counted.
struct TokenServer {
    server: Server,
    issued: Arc<AtomicU64>,
}

impl TokenServer {
    async fn start(expires_in: u64) -> Self {
        let issued = Arc::new(AtomicU64::new(0));
        let count = Arc::clone(&issued);
        let client = format!(
            "Basic {}",
            base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "fleet:s3cret")
        );
        let handler: Handler = Arc::new(move |parts, body| {
            let form: Vec<(String, String)> = url::form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            let field = |name: &str| {
                form.iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.as_str())
            };
            if parts.method != http::Method::POST
                || field("grant_type") != Some("client_credentials")
                || field("scope") != Some("hooks.write")
            {
                return (400, r#"{"error":"invalid_request"}"#.into());
            }
            if parts
                .headers
                .get(http::header::AUTHORIZATION)
                .is_none_or(|v| *v != *client)
            {
                return (
                    401,
                    r#"{"error":"invalid_client","error_description":"unknown client"}"#.into(),
                );
            }
            let n = count.fetch_add(1, Ordering::SeqCst) + 1;
            (
                200,
                format!(
                    r#"{{"access_token":"tok-{n}","token_type":"Bearer","expires_in":{expires_in}}}"#
                ),
            )
        });
        Self {
            server: Server::start(None, handler).await,
            issued,
        }
    }

    fn issued(&self) -> u64 {
        self.issued.load(Ordering::SeqCst)
    }

    fn oauth(&self) -> OAuth2Config {
        OAuth2Config {
            token_url: self.server.url("http", "oauth/token"),
            client_id: "fleet".into(),
            client_secret: Some("s3cret".into()),
            scope: Some("hooks.write".into()),
            ..Default::default()
        }
    }
}

/// A receiver accepting only the newest token issued by `tokens` (`tok-<n>`
/// with the highest n), so a token the receiver has seen replaced is
/// refused with 401.
fn accepting_tokens(newest: Arc<AtomicU64>) -> Handler {
    Arc::new(move |parts, _| {
        let expected = format!("Bearer tok-{}", newest.load(Ordering::SeqCst));
        match parts.headers.get(http::header::AUTHORIZATION) {
            Some(v) if *v == *expected => (200, "{}".into()),
            _ => (401, "{}".into()),
        }
    })
}

/// An egress proxy: CONNECT requests are tunnelled, absolute-form requests
/// (`POST http://host:port/path`) forwarded to their host; both counted
/// with their target.
struct Proxy {
    addr: SocketAddr,
    tunnels: Arc<Mutex<Vec<String>>>,
    forwards: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Proxy {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tunnels = Arc::new(Mutex::new(Vec::new()));
        let forwards = Arc::new(Mutex::new(Vec::new()));
        let (t, f) = (Arc::clone(&tunnels), Arc::clone(&forwards));
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (t, f) = (Arc::clone(&t), Arc::clone(&f));
                tokio::spawn(async move {
                    let _ = proxy_one(client, t, f).await;
                });
            }
        });
        Self {
            addr,
            tunnels,
            forwards,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn tunnels(&self) -> Vec<String> {
        self.tunnels.lock().unwrap().clone()
    }

    fn forwards(&self) -> Vec<String> {
        self.forwards.lock().unwrap().clone()
    }
}

async fn proxy_one(
    mut client: TcpStream,
    tunnels: Arc<Mutex<Vec<String>>>,
    forwards: Arc<Mutex<Vec<String>>>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte).await? == 0 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let mut words = text.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    if method == "CONNECT" {
        tunnels.lock().unwrap().push(target.to_string());
        let mut upstream = TcpStream::connect(target).await?;
        client
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await?;
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    } else if let Some(rest) = target.strip_prefix("http://") {
        let authority = rest.split('/').next().unwrap_or("").to_string();
        forwards.lock().unwrap().push(authority.clone());
        let mut upstream = TcpStream::connect(&authority).await?;
        upstream.write_all(&head).await?;
        tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    } else {
        client
            .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
            .await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

/// A private CA and what it signs.
struct Pki {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A certificate and its key, in PEM.
struct Leaf {
    cert_pem: String,
    key_pem: String,
}

impl Pki {
    fn new(name: &str) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Self {
            ca_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    fn leaf(&self, name: &str, purpose: ExtendedKeyUsagePurpose) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![purpose];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A TLS server configuration for `leaf` (HTTP/1.1 by ALPN), asking for a
/// client certificate signed by `clients` when given.
fn tls_server(leaf: &Leaf, clients: Option<&Pki>) -> Arc<rustls::ServerConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match clients {
        None => builder.with_no_client_auth(),
        Some(pki) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
                roots.add(cert.unwrap()).unwrap();
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let chain = CertificateDer::pem_slice_iter(leaf.cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

// ---------------------------------------------------------------------------
// Attempts without Kafka: one delivery attempt, as the sender makes it
// ---------------------------------------------------------------------------

fn delivery(proxy: &str, allow_private: bool) -> DeliveryConfig {
    DeliveryConfig {
        proxy: proxy.into(),
        allow_private_destinations: allow_private,
        ..DeliveryConfig::default()
    }
}

fn build(config: EndpointConfig) -> Endpoint {
    Endpoint::build(config, true, Duration::from_secs(5), &|_| None).expect("a valid endpoint")
}

async fn attempt(clients: &HttpClients, endpoint: &Endpoint) -> AttemptReport {
    let body = Bytes::from_static(br#"{"id":"evt-1","type":"device-provisioned"}"#);
    send_attempt(
        clients,
        endpoint,
        Outgoing {
            body: &body,
            webhook_id: "msg_1",
            event_type: "device-provisioned",
            event_id: "evt-1",
            event_time_ms: 0,
            timestamp: hookstream::deliver::request::unix_now_secs(),
            content_type: hookstream::deliver::shape::JSON,
            cloudevent_source: None,
            trace: None,
        },
        &RetryRules::DEFAULT,
        Duration::from_secs(60),
    )
    .await
}

fn with_auth(url: String, auth: AuthConfig) -> EndpointConfig {
    let mut e = EndpointConfig::new("secured", url);
    e.allow_http = true;
    e.auth = Some(Box::new(auth));
    e
}

fn oauth2(config: OAuth2Config) -> AuthConfig {
    AuthConfig {
        oauth2: Some(config),
        ..Default::default()
    }
}

// ---------------------------------------------------------------------------
// Stories
// ---------------------------------------------------------------------------

/// Given a receiver that wants basic auth and one that wants a bearer token,
/// when events flow through the pipeline, every request carries the
/// endpoint's credentials and none is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_checking_basic_and_bearer_get_every_event_with_credentials() {
    let cluster = Cluster::start(&["device-events"], 2);
    // "hooks:p4ss" in base64.
    let basic = Server::start(None, expecting("Basic aG9va3M6cDRzcw==")).await;
    let bearer = Server::start(None, expecting("Bearer abc.def-123")).await;
    let mut config = config("auth-basic-bearer", &[("device-events", Preset::Mender)]);
    config.endpoints.push(with_auth(
        basic.url("http", "in"),
        AuthConfig {
            basic: Some(BasicAuth {
                username: "hooks".into(),
                password: Some("p4ss".into()),
                password_env: None,
            }),
            ..Default::default()
        },
    ));
    let mut second = with_auth(
        bearer.url("http", "in"),
        AuthConfig {
            bearer: Some(BearerAuth {
                token: Some("abc.def-123".into()),
                token_env: None,
            }),
            ..Default::default()
        },
    );
    second.id = "bearer".into();
    config.endpoints.push(second);
    let pipeline = start(config, &cluster).await;
    cluster
        .produce_many("device-events", &provisioned_events("auth", 20))
        .await;
    wait_for(
        "20 deliveries to each receiver",
        Duration::from_secs(30),
        || basic.seen().len() >= 20 && bearer.seen().len() >= 20,
    )
    .await;
    for server in [&basic, &bearer] {
        let seen = server.seen();
        assert!(seen.iter().all(|s| s.status == 200), "{seen:?}");
        assert_eq!(seen.len(), 20, "no request was refused and sent again");
    }
    pipeline.shutdown().await.unwrap();
}

/// Given an OAuth2 endpoint, when many events are delivered, one token is
/// fetched for all of them (a POST form with the client's credentials).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_oauth2_token_serves_many_deliveries() {
    let cluster = Cluster::start(&["device-events"], 2);
    let tokens = TokenServer::start(3600).await;
    let receiver = Server::start(None, expecting("Bearer tok-1")).await;
    let mut config = config("auth-oauth-many", &[("device-events", Preset::Mender)]);
    config.endpoints.push(with_auth(
        receiver.url("http", "in"),
        oauth2(tokens.oauth()),
    ));
    let pipeline = start(config, &cluster).await;
    cluster
        .produce_many("device-events", &provisioned_events("oauth", 50))
        .await;
    wait_for("50 deliveries", Duration::from_secs(30), || {
        receiver.seen().len() >= 50
    })
    .await;
    let seen = receiver.seen();
    assert!(seen.iter().all(|s| s.status == 200), "{seen:?}");
    assert_eq!(tokens.issued(), 1, "one token request for 50 deliveries");
    let grant = &tokens.server.seen()[0];
    assert_eq!(
        grant.content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(
        String::from_utf8_lossy(&grant.body),
        "grant_type=client_credentials&scope=hooks.write"
    );
    pipeline.shutdown().await.unwrap();
}

/// Given a token that expires, the next delivery after its expiry (less
/// the margin) fetches a new one; before it, none is fetched.
#[tokio::test]
async fn an_expired_token_is_fetched_again() {
    let tokens = TokenServer::start(2).await; // used for 1.8 s
    let receiver = Server::start(None, accepting_tokens(Arc::clone(&tokens.issued))).await;
    let clients = HttpClients::new(&delivery("", true)).unwrap();
    let endpoint = build(with_auth(
        receiver.url("http", "in"),
        oauth2(tokens.oauth()),
    ));
    for _ in 0..3 {
        assert_eq!(
            attempt(&clients, &endpoint).await.verdict,
            Verdict::Delivered
        );
    }
    assert_eq!(tokens.issued(), 1);
    tokio::time::sleep(Duration::from_millis(1900)).await;
    assert_eq!(
        attempt(&clients, &endpoint).await.verdict,
        Verdict::Delivered
    );
    assert_eq!(tokens.issued(), 2, "the expired token was replaced");
    let last = receiver.seen().pop().unwrap();
    assert_eq!(last.authorization.as_deref(), Some("Bearer tok-2"));
}

/// Given a receiver that stops accepting the cached token (it was revoked),
/// the attempt that meets the 401 fetches exactly one new token and is made
/// once more, and is delivered; a receiver that refuses every token gets
/// exactly two requests per attempt, never more.
#[tokio::test]
async fn a_401_refreshes_the_token_once_and_repeats_the_attempt_once() {
    let tokens = TokenServer::start(3600).await;
    let newest = Arc::new(AtomicU64::new(0));
    let receiver = Server::start(None, accepting_tokens(Arc::clone(&newest))).await;
    let clients = HttpClients::new(&delivery("", true)).unwrap();
    let endpoint = build(with_auth(
        receiver.url("http", "in"),
        oauth2(tokens.oauth()),
    ));
    newest.store(1, Ordering::SeqCst);
    assert_eq!(
        attempt(&clients, &endpoint).await.verdict,
        Verdict::Delivered
    );
    assert_eq!((tokens.issued(), receiver.seen().len()), (1, 1));

    // The receiver now wants the next token: tok-1 is refused once.
    newest.store(2, Ordering::SeqCst);
    let report = attempt(&clients, &endpoint).await;
    assert_eq!(report.verdict, Verdict::Delivered, "{report:?}");
    let seen = receiver.seen();
    let statuses: Vec<u16> = seen.iter().map(|s| s.status).collect();
    assert_eq!(statuses, [200, 401, 200]);
    assert_eq!(seen[2].authorization.as_deref(), Some("Bearer tok-2"));
    assert_eq!(tokens.issued(), 2, "exactly one refresh");

    // A receiver that refuses every token: one refresh, one repeat, then
    // the 401 is the attempt's answer.
    newest.store(1_000, Ordering::SeqCst);
    let report = attempt(&clients, &endpoint).await;
    assert_eq!(report.status, Some(401));
    assert_eq!(tokens.issued(), 3);
    assert_eq!(receiver.seen().len(), 5, "two requests for the attempt");
}

/// Given a token endpoint that refuses the client, the attempt fails before
/// anything is sent, is retried (not dead-lettered), and says why in the
/// activity log's words.
#[tokio::test]
async fn a_token_endpoint_refusing_the_client_is_a_retryable_failure_saying_why() {
    let tokens = TokenServer::start(3600).await;
    let receiver = Server::start(None, expecting("Bearer tok-1")).await;
    let clients = HttpClients::new(&delivery("", true)).unwrap();
    let mut oauth = tokens.oauth();
    oauth.client_secret = Some("wrong".into());
    let endpoint = build(with_auth(receiver.url("http", "in"), oauth2(oauth)));
    let report = attempt(&clients, &endpoint).await;
    assert!(
        matches!(
            report.verdict,
            Verdict::Retry {
                counts_attempt: true,
                ..
            }
        ),
        "{report:?}"
    );
    assert_eq!(report.last_status, "auth");
    assert!(
        report
            .last_error
            .contains("HTTP 401: invalid_client (unknown client)"),
        "{}",
        report.last_error
    );
    assert!(!report.last_error.contains("wrong"), "no secret in the log");
    assert!(
        receiver.seen().is_empty(),
        "nothing was sent without a token"
    );
}

/// Given a TLS receiver that requires a client certificate from its CA,
/// an endpoint without one is refused in the handshake; with the
/// certificate and key (and the CA that signed the receiver) it is
/// delivered, and the receiver saw the certificate.
#[tokio::test]
async fn a_receiver_requiring_a_client_certificate_gets_the_endpoints() {
    let server_pki = Pki::new("receiver CA");
    let client_pki = Pki::new("client CA");
    let server_leaf = server_pki.leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth);
    let client_leaf = client_pki.leaf("hookstream", ExtendedKeyUsagePurpose::ClientAuth);
    let receiver = Server::start(
        Some(tls_server(&server_leaf, Some(&client_pki))),
        Arc::new(|_, _| (200, "{}".into())),
    )
    .await;
    let clients = HttpClients::new(&delivery("", true)).unwrap();

    let mut without = EndpointConfig::new("mtls", receiver.url("https", "in"));
    without.tls = Some(Box::new(TlsConfig {
        ca: Some(server_pki.ca_pem.clone()),
        ..Default::default()
    }));
    let report = attempt(&clients, &build(without.clone())).await;
    assert!(report.status.is_none(), "{report:?}");
    assert!(receiver.seen().is_empty());

    let mut with = without;
    with.tls = Some(Box::new(TlsConfig {
        client_cert: Some(client_leaf.cert_pem.clone()),
        client_key: Some(client_leaf.key_pem.clone()),
        ca: Some(server_pki.ca_pem.clone()),
    }));
    let endpoint = build(with);
    let report = attempt(&clients, &endpoint).await;
    assert_eq!(report.verdict, Verdict::Delivered, "{report:?}");
    assert!(receiver.seen()[0].client_cert);
    // A second attempt reuses the client built for this setting.
    attempt(&clients, &endpoint).await;
    assert_eq!(
        clients.own_clients(),
        2,
        "one per TLS setting, not per request"
    );
}

/// Given a receiver whose certificate a private CA signed, the endpoint
/// fails without `tls.ca` and is delivered with it.
#[tokio::test]
async fn a_private_ca_is_trusted_only_by_the_endpoint_that_names_it() {
    let pki = Pki::new("private CA");
    let leaf = pki.leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth);
    let receiver = Server::start(
        Some(tls_server(&leaf, None)),
        Arc::new(|_, _| (200, "{}".into())),
    )
    .await;
    let clients = HttpClients::new(&delivery("", true)).unwrap();
    let plain = build(EndpointConfig::new(
        "public-roots",
        receiver.url("https", "in"),
    ));
    let report = attempt(&clients, &plain).await;
    assert!(report.status.is_none(), "{report:?}");
    assert!(
        report.last_error.to_lowercase().contains("certificate"),
        "{}",
        report.last_error
    );
    let mut trusting = EndpointConfig::new("private-ca", receiver.url("https", "in"));
    trusting.tls = Some(Box::new(TlsConfig {
        ca: Some(pki.ca_pem.clone()),
        ..Default::default()
    }));
    let report = attempt(&clients, &build(trusting)).await;
    assert_eq!(report.verdict, Verdict::Delivered, "{report:?}");
}

/// Given `delivery.proxy`, https requests go through a CONNECT tunnel and
/// http requests as absolute-form requests to the proxy; an endpoint with
/// `proxy = "none"` goes direct, and one with its own proxy uses that one.
#[tokio::test]
async fn requests_leave_through_the_egress_proxy_unless_an_endpoint_says_none() {
    let pki = Pki::new("private CA");
    let leaf = pki.leaf("127.0.0.1", ExtendedKeyUsagePurpose::ServerAuth);
    let tls_receiver = Server::start(
        Some(tls_server(&leaf, None)),
        Arc::new(|_, _| (200, "{}".into())),
    )
    .await;
    let http_receiver = Server::start(None, Arc::new(|_, _| (200, "{}".into()))).await;
    let proxy = Proxy::start().await;
    let clients = HttpClients::new(&delivery(&proxy.url(), true)).unwrap();

    let mut https = EndpointConfig::new("tls", tls_receiver.url("https", "in"));
    https.tls = Some(Box::new(TlsConfig {
        ca: Some(pki.ca_pem.clone()),
        ..Default::default()
    }));
    let https = build(https);
    for _ in 0..3 {
        assert_eq!(attempt(&clients, &https).await.verdict, Verdict::Delivered);
    }
    let tunnels = proxy.tunnels();
    assert_eq!(tunnels.len(), 1, "one tunnel, kept for later requests");
    assert_eq!(tunnels[0], tls_receiver.addr.to_string());

    let mut http = EndpointConfig::new("plain", http_receiver.url("http", "in"));
    http.allow_http = true;
    let report = attempt(&clients, &build(http.clone())).await;
    assert_eq!(report.verdict, Verdict::Delivered, "{report:?}");
    assert_eq!(proxy.forwards(), [http_receiver.addr.to_string()]);
    assert_eq!(http_receiver.seen().len(), 1);

    let mut direct = http.clone();
    direct.proxy = Some(Box::new("none".into()));
    assert_eq!(
        attempt(&clients, &build(direct)).await.verdict,
        Verdict::Delivered
    );
    assert_eq!(proxy.forwards().len(), 1, "`none` went around the proxy");
    assert_eq!(http_receiver.seen().len(), 2);

    let other = Proxy::start().await;
    let mut own = http;
    own.proxy = Some(Box::new(other.url()));
    assert_eq!(
        attempt(&clients, &build(own)).await.verdict,
        Verdict::Delivered
    );
    assert_eq!((proxy.forwards().len(), other.forwards().len()), (1, 1));
}

/// Given the SSRF guard on and a proxy on 127.0.0.1 (the operator's
/// choice), a request whose destination is private is refused before the
/// proxy sees it, and dead-lettered as a refused destination; the same
/// request with private destinations allowed goes through the proxy.
#[tokio::test]
async fn the_ssrf_guard_checks_the_destination_behind_the_proxy() {
    let receiver = Server::start(None, Arc::new(|_, _| (200, "{}".into()))).await;
    let proxy = Proxy::start().await;
    let guarded = HttpClients::new(&delivery(&proxy.url(), false)).unwrap();
    let port = receiver.addr.port();
    // Built as if saved while the name was public (the guard at save time
    // would refuse these now).
    let mut urls = vec![
        format!("http://localhost:{port}/in"),
        format!("http://127.0.0.1:{port}/in"),
    ];
    // The machine's own name, when /etc/hosts maps it to a loopback
    // address: the guard resolves it itself.
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let host = host.trim();
    if !host.is_empty()
        && tokio::net::lookup_host((host, port))
            .await
            .is_ok_and(|mut a| a.all(|a| a.ip().is_loopback()))
    {
        urls.push(format!("http://{host}:{port}/in"));
    }
    for url in &urls {
        let mut config = EndpointConfig::new("private", url.clone());
        config.allow_http = true;
        let report = attempt(&guarded, &build(config)).await;
        assert_eq!(
            report.verdict,
            Verdict::DeadLetter(hookstream::core::Reason::DestinationRefused),
            "{url}: {report:?}"
        );
        assert!(
            report.last_error.contains("loopback"),
            "{}",
            report.last_error
        );
    }
    assert!(proxy.forwards().is_empty() && proxy.tunnels().is_empty());
    assert!(receiver.seen().is_empty());

    let open = HttpClients::new(&delivery(&proxy.url(), true)).unwrap();
    let mut config = EndpointConfig::new("private", urls[0].clone());
    config.allow_http = true;
    assert_eq!(
        attempt(&open, &build(config)).await.verdict,
        Verdict::Delivered
    );
    assert_eq!(proxy.forwards().len(), 1);
}

/// Given the SSRF guard on, a token endpoint behind the proxy on a private
/// address is refused too: the token request never reaches the proxy.
#[tokio::test]
async fn the_ssrf_guard_checks_the_token_endpoint_behind_the_proxy() {
    let tokens = TokenServer::start(3600).await;
    let proxy = Proxy::start().await;
    let guarded = HttpClients::new(&delivery(&proxy.url(), false)).unwrap();
    let mut oauth = tokens.oauth();
    oauth.token_url = format!("http://localhost:{}/oauth/token", tokens.server.addr.port());
    // A public address literal: the guard passes it without a lookup, and
    // nothing is sent to it, since the token comes first.
    let endpoint = build(with_auth("https://93.184.216.34/in".into(), oauth2(oauth)));
    let report = attempt(&guarded, &endpoint).await;
    assert_eq!(report.last_status, "auth", "{report:?}");
    assert!(
        report.last_error.contains("loopback"),
        "{}",
        report.last_error
    );
    assert_eq!(tokens.issued(), 0);
    assert!(proxy.forwards().is_empty() && proxy.tunnels().is_empty());
}

// ---------------------------------------------------------------------------
// Saving endpoints: the API and the configuration file
// ---------------------------------------------------------------------------

const ADMIN: &str = "admin-token-0123456789";

/// `method path` with the admin token and a JSON body; the status and the
/// JSON answer.
async fn call(
    base: &str,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .bearer_auth(ADMIN);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or_default())
}

/// Given the API, an operator saves endpoints with credentials and TLS
/// material: the secrets never come back (masked, also in the create
/// answer), sending an endpoint back as read keeps them (the test route's
/// request still carries the token), and each invalid field is a 400
/// naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_masks_credentials_keeps_them_when_sent_back_and_names_bad_fields() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cluster = Cluster::start(&["device-events"], 2);
    let receiver = Server::start(None, expecting("Bearer s3cret-t0ken")).await;
    let mut config = config("auth-api", &[("device-events", Preset::Mender)]);
    config.api.listen = "127.0.0.1:0".into();
    config.api.tokens = vec![hookstream::config::TokenConfig {
        token_file: None,
        token_env: None,
        token: Some(ADMIN.into()),
        role: hookstream::config::Role::Admin,
    }];
    let service = hookstream::cmd::run::Service::start(config, cluster.target())
        .await
        .expect("service starts");
    let base = format!("http://{}", service.api_addr().unwrap());
    let pki = Pki::new("client CA");
    let client = pki.leaf("hookstream", ExtendedKeyUsagePurpose::ClientAuth);

    let bearer = serde_json::json!({
        "id": "bearer",
        "url": receiver.url("http", "in"),
        "allow_http": true,
        "signature": "none",
        "auth": {"bearer": {"token": "s3cret-t0ken"}},
    });
    let (status, created) = call(&base, "POST", "/v1/endpoints", Some(bearer)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["auth"]["bearer"]["token"], "****");
    let mtls = serde_json::json!({
        "id": "mtls",
        "url": "https://127.0.0.1:9/in",
        "signature": "none",
        "tls": {"client_cert": client.cert_pem, "client_key": client.key_pem, "ca": pki.ca_pem},
    });
    let (status, created) = call(&base, "POST", "/v1/endpoints", Some(mtls)).await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["tls"]["client_key"], "****");
    assert_eq!(
        created["tls"]["ca"],
        pki.ca_pem.as_str(),
        "certificates are public"
    );

    for id in ["bearer", "mtls"] {
        let (_, read) = call(&base, "GET", &format!("/v1/endpoints/{id}"), None).await;
        assert!(!read.to_string().contains("s3cret-t0ken"));
        assert!(!read.to_string().contains("PRIVATE KEY"));
        let (status, put) = call(&base, "PUT", &format!("/v1/endpoints/{id}"), Some(read)).await;
        assert_eq!(status, 200, "{put}");
    }
    let (status, tested) = call(&base, "POST", "/v1/endpoints/bearer/test", None).await;
    assert_eq!(status, 200, "{tested}");
    assert_eq!(
        tested["delivered"], true,
        "the stored token was kept: {tested}"
    );
    assert_eq!(
        receiver.seen()[0].authorization.as_deref(),
        Some("Bearer s3cret-t0ken")
    );

    let refused = [
        (
            serde_json::json!({"auth": {"basic": {"username": "u", "password": "p"}, "bearer": {"token": "t"}}}),
            "auth.bearer",
        ),
        (
            serde_json::json!({"auth": {"basic": {"username": "u", "password_env": "HOME"}}}),
            "auth.basic.password_env",
        ),
        (
            serde_json::json!({"auth": {"bearer": {"token": "****"}}}),
            "auth.bearer.token",
        ),
        (
            serde_json::json!({"auth": {"oauth2": {"token_url": "ftp://x/", "client_id": "c", "client_secret": "s"}}}),
            "auth.oauth2.token_url",
        ),
        (
            serde_json::json!({"tls": {"ca": "not a certificate"}}),
            "tls.ca",
        ),
        (
            serde_json::json!({"tls": {"client_cert": client.cert_pem}}),
            "tls.client_key",
        ),
        (
            serde_json::json!({"proxy": "socks5://127.0.0.1:1080"}),
            "proxy",
        ),
    ];
    for (i, (fields, field)) in refused.into_iter().enumerate() {
        let mut body = serde_json::json!({
            "id": format!("bad-{i}"),
            "url": "https://127.0.0.1:9/in",
            "signature": "none",
        });
        for (k, v) in fields.as_object().unwrap() {
            body[k] = v.clone();
        }
        let (status, answer) = call(&base, "POST", "/v1/endpoints", Some(body)).await;
        assert_eq!(
            (status, answer["field"].as_str()),
            (400, Some(field)),
            "{answer}"
        );
    }
    service.shutdown().await.unwrap();
}

/// Given a configuration file whose endpoint has a certificate that does
/// not parse, `hookstream check` exits 2 naming the key.
#[test]
fn a_configuration_with_a_bad_certificate_exits_2_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("hookstream.toml");
    std::fs::write(dir.path().join("ca.pem"), "not a certificate\n").unwrap();
    std::fs::write(
        &file,
        format!(
            "[[endpoints]]\nid = \"a\"\nurl = \"https://hooks.example.com/in\"\nsignature = \"none\"\ntls = {{ ca_file = \"{}\" }}\n",
            dir.path().join("ca.pem").display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_hookstream"))
        .args(["check", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("endpoints[0].tls.ca"), "{stderr}");
}
