//! The management API is no way to starve deliveries: given a running
//! instance (embedded broker, pipeline delivering to a real receiver on
//! 127.0.0.1, API on 127.0.0.1), someone opens thousands of connections to
//! the API and sends half a request line, or nothing, on each. The server
//! holds no more than `[api].max_connections` of them, closes the rest,
//! closes what sends no request head within `[api].header_timeout`, and
//! every event is still delivered while `/healthz` keeps answering. Bodies
//! are bounded too: 413 past `[api].max_body_bytes`, 408 past
//! `[api].body_timeout`, both naming `body`.

mod common;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use hookstream::cmd::run::Service;
use hookstream::config::{Config, HumanDuration, Role, TokenConfig};
use hookstream::demo::receiver::Behaviour;
use hookstream::source::extract::Preset;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOPIC: &str = "device-events";
const ADMIN: &str = "admin-token-0123456789";

fn limits_config(group: &str) -> Config {
    let mut c = config(group, &[(TOPIC, Preset::Mender)]);
    c.api.listen = "127.0.0.1:0".into();
    c.api.tokens = vec![TokenConfig {
        token_file: None,
        token_env: None,
        token: Some(ADMIN.into()),
        role: Role::Admin,
    }];
    c
}

async fn start_service(config: Config, cluster: &Cluster) -> (Service, SocketAddr) {
    log_if_asked();
    let service = Service::start(config, cluster.target())
        .await
        .expect("service starts");
    let addr = service.api_addr().expect("the API listens");
    (service, addr)
}

/// A client that opens a new connection for every request, as a
/// monitoring probe does (a kept-alive connection would not meet the cap).
fn fresh_connections() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(15))
        .build()
        .expect("client")
}

async fn healthz(client: &reqwest::Client, addr: SocketAddr) -> Result<u16, String> {
    client
        .get(format!("http://{addr}/healthz"))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

/// How a client socket ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The server closed it: end of file.
    Eof,
    /// The server answered something (it should not have).
    Bytes,
    /// The connection broke (reset).
    Error,
    /// Nothing within the wait.
    Open,
}

/// Reads until the server closes `stream` or `wait` passes.
async fn ending(stream: &mut TcpStream, wait: Duration) -> End {
    let mut buf = [0u8; 256];
    match tokio::time::timeout(wait, stream.read(&mut buf)).await {
        Ok(Ok(0)) => End::Eof,
        Ok(Ok(_)) => End::Bytes,
        Ok(Err(_)) => End::Error,
        Err(_) => End::Open,
    }
}

/// Sockets this process holds whose local port is `port` and that are not
/// listening: the connections the API server accepted and still holds (a
/// connection waiting in the kernel's backlog holds no descriptor).
/// Counted by inode: `/proc/net/tcp` is read in pieces, and a table that
/// changes meanwhile can list a socket twice.
fn held_api_sockets(port: u16) -> usize {
    let mut inodes = HashSet::new();
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                let target = target.to_string_lossy().into_owned();
                if let Some(inode) = target
                    .strip_prefix("socket:[")
                    .and_then(|t| t.strip_suffix(']'))
                {
                    inodes.insert(inode.to_string());
                }
            }
        }
    }
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let port_hex = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            (cols.len() > 9
                && cols[1].ends_with(&port_hex)
                && cols[3] != "0A"
                && inodes.contains(cols[9]))
            .then(|| cols[9])
        })
        .collect::<HashSet<_>>()
        .len()
}

/// Descriptors this process holds.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_half_open_connections_starves_neither_deliveries_nor_health() {
    const PARTIAL: usize = 3_000;
    const SILENT: usize = 500;
    const EVENTS: usize = 2_000;
    const CAP: usize = 256;
    // This process holds both ends of every connection.
    let limit = hookstream::cmd::open_files::raise_to_hard_limit().expect("open files limit");
    assert!(
        limit.soft as usize > 2 * (PARTIAL + SILENT) + 1_000,
        "this test needs {} descriptors: {limit}",
        2 * (PARTIAL + SILENT) + 1_000
    );
    let cluster = Cluster::start(&[TOPIC], 4);
    let rx = receiver(Behaviour::Healthy).await;
    let mut config = limits_config("limits-flood");
    config.api.max_connections = CAP;
    config.api.header_timeout = HumanDuration::from_secs(1);
    config.api.idle_timeout = HumanDuration::from_secs(2);
    config
        .endpoints
        .push(endpoint("fleet", rx.url("in"), &["*"], "none", ""));
    let (service, addr) = start_service(config, &cluster).await;
    let client = fresh_connections();
    assert_eq!(healthz(&client, addr).await, Ok(200));

    // The flood: connections that send half a request line and then
    // nothing, and connections that send nothing at all. Each waits for
    // the server to close it.
    let ends: Arc<[AtomicUsize; 4]> = Arc::new(Default::default());
    let connected = Arc::new(AtomicUsize::new(0));
    let flood = {
        let ends = Arc::clone(&ends);
        let connected = Arc::clone(&connected);
        tokio::spawn(async move {
            let connecting = Arc::new(tokio::sync::Semaphore::new(64));
            let mut watchers = Vec::with_capacity(PARTIAL + SILENT);
            for i in 0..PARTIAL + SILENT {
                let permit = Arc::clone(&connecting).acquire_owned().await.unwrap();
                let ends = Arc::clone(&ends);
                let connected = Arc::clone(&connected);
                watchers.push(tokio::spawn(async move {
                    let mut stream =
                        tokio::time::timeout(Duration::from_secs(30), TcpStream::connect(addr))
                            .await
                            .expect("connects within 30 s")
                            .expect("connects");
                    if i % 7 != 0 {
                        // 6 of 7 send part of a request line (500 send nothing).
                        let _ = stream
                            .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.")
                            .await;
                    }
                    connected.fetch_add(1, Ordering::Relaxed);
                    drop(permit);
                    let end = ending(&mut stream, Duration::from_secs(60)).await;
                    ends[end as usize].fetch_add(1, Ordering::Relaxed);
                }));
            }
            watchers
        })
    };

    // Meanwhile events flow, a probe asks /healthz on a new connection
    // every 100 ms, and the API's descriptors are counted.
    let started = Instant::now();
    let produce = async {
        for chunk in status_events(0, EVENTS).chunks(100) {
            cluster.produce_many(TOPIC, chunk).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    let mut probes: Vec<(Result<u16, String>, Duration)> = Vec::new();
    let mut most_held = 0;
    let mut most_fds = 0;
    let watch = async {
        loop {
            let asked = Instant::now();
            let answer = healthz(&client, addr).await;
            probes.push((answer, asked.elapsed()));
            most_held = most_held.max(held_api_sockets(addr.port()));
            most_fds = most_fds.max(open_fds());
            if connected.load(Ordering::Relaxed) == PARTIAL + SILENT {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let ((), ()) = tokio::join!(produce, watch);
    let flood_took = started.elapsed();
    let watchers = flood.await.unwrap();

    // Every event is delivered, once each at least; nothing is dead.
    wait_for(
        "every event at the receiver",
        Duration::from_secs(60),
        || bodies_by(&rx.log().recorded(), "/id").len() == EVENTS,
    )
    .await;
    assert!(
        cluster.read_all("hookstream.dlq").is_empty(),
        "no event was dead-lettered"
    );

    // Every flooding connection was closed by the server: the oldest to
    // make room for newer ones, the last ones by the header timeout.
    for w in watchers {
        w.await.unwrap();
    }
    let count = |end: End| ends[end as usize].load(Ordering::Relaxed);
    println!(
        "flood: {} connections opened in {flood_took:?}; ends: {} EOF, {} reset, {} answered, {} still open",
        PARTIAL + SILENT,
        count(End::Eof),
        count(End::Error),
        count(End::Bytes),
        count(End::Open),
    );
    assert_eq!(
        count(End::Eof),
        PARTIAL + SILENT,
        "every half-open connection read end of file"
    );

    // /healthz answered every probe during the flood.
    let mut took: Vec<Duration> = probes.iter().map(|(_, t)| *t).collect();
    took.sort();
    println!(
        "/healthz during the flood: {} probes, median {:?}, slowest {:?}; at most {most_held} API connections held (cap {CAP}), at most {most_fds} descriptors in this process (both ends of every connection, broker, pipeline)",
        probes.len(),
        took[took.len() / 2],
        took[took.len() - 1],
    );
    for (answer, _) in &probes {
        assert_eq!(answer, &Ok(200), "/healthz during the flood");
    }
    assert!(
        most_held <= CAP + 1,
        "the server held {most_held} API connections (cap {CAP}, plus the one accepted while it makes room)"
    );
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_house_makes_room_by_closing_the_connection_that_waited_longest() {
    let cluster = Cluster::start(&[TOPIC], 1);
    let mut config = limits_config("limits-room");
    config.api.max_connections = 4;
    // Long enough that only making room can close a connection here.
    config.api.header_timeout = HumanDuration::from_secs(120);
    config.api.idle_timeout = HumanDuration::from_secs(120);
    let (service, addr) = start_service(config, &cluster).await;
    let client = fresh_connections();

    let mut silent = Vec::new();
    for _ in 0..4 {
        silent.push(TcpStream::connect(addr).await.unwrap());
        // In order: wait until the server holds it.
        let held = silent.len();
        wait_for("the server to accept it", Duration::from_secs(10), || {
            held_api_sockets(addr.port()) == held
        })
        .await;
    }
    // The house is full; a new client is still served, and the connection
    // that waited longest is the one closed for it.
    assert_eq!(healthz(&client, addr).await, Ok(200));
    assert_eq!(
        ending(&mut silent[0], Duration::from_secs(10)).await,
        End::Eof
    );
    // The probe's connection ends after its answer; fill the house again.
    wait_for(
        "the probe's connection to end",
        Duration::from_secs(10),
        || held_api_sockets(addr.port()) == 3,
    )
    .await;
    silent.push(TcpStream::connect(addr).await.unwrap());
    wait_for("the server to accept it", Duration::from_secs(10), || {
        held_api_sockets(addr.port()) == 4
    })
    .await;
    assert_eq!(healthz(&client, addr).await, Ok(200));
    assert_eq!(
        ending(&mut silent[1], Duration::from_secs(10)).await,
        End::Eof,
        "then the next oldest"
    );
    service.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_connection_is_busy_a_newcomer_is_closed_unanswered() {
    let cluster = Cluster::start(&[TOPIC], 1);
    let mut config = limits_config("limits-busy");
    config.api.max_connections = 2;
    config.api.header_timeout = HumanDuration::from_secs(1);
    // Two requests whose bodies trickle keep both connections busy.
    config.api.body_timeout = HumanDuration::from_secs(120);
    let (service, addr) = start_service(config, &cluster).await;
    let mut busy = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(
                format!(
                    "POST /v1/endpoints HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\n\
                     Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"url\":"
                )
                .as_bytes(),
            )
            .await
            .unwrap();
        busy.push(stream);
    }
    wait_for("both held", Duration::from_secs(10), || {
        held_api_sockets(addr.port()) == 2
    })
    .await;
    let mut newcomer = TcpStream::connect(addr).await.unwrap();
    newcomer
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(
        ending(&mut newcomer, Duration::from_secs(30)).await,
        End::Eof,
        "closed without an answer once header_timeout passed with no slot free"
    );
    for stream in &mut busy {
        let mut byte = [0u8; 1];
        assert!(
            tokio::time::timeout(Duration::from_millis(10), stream.read(&mut byte))
                .await
                .is_err(),
            "the busy ones are left alone"
        );
    }
    drop(busy);
    service.shutdown().await.unwrap();
}

/// Reads one HTTP/1.1 response: status, headers (lower-case names), body.
async fn read_response(stream: &mut TcpStream) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut buf))
            .await
            .expect("an answer within 30 s")
            .expect("reads");
        assert!(
            n > 0,
            "closed before an answer: {:?}",
            String::from_utf8_lossy(&data)
        );
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = data[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut buf).await.expect("reads");
        assert!(n > 0, "closed inside the body");
        body.extend_from_slice(&buf[..n]);
    }
    (status, headers, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_idle_and_oversized_requests_are_cut_off() {
    let cluster = Cluster::start(&[TOPIC], 1);
    let mut config = limits_config("limits-slow");
    config.api.header_timeout = HumanDuration::from_secs(1);
    config.api.idle_timeout = HumanDuration::from_secs(1);
    config.api.body_timeout = HumanDuration::from_secs(1);
    config.api.max_body_bytes = 4096;
    let (service, addr) = start_service(config, &cluster).await;

    // Half a request head, or none: closed after the header timeout.
    let mut partial = TcpStream::connect(addr).await.unwrap();
    partial
        .write_all(b"GET /healthz HTTP/1.1\r\nHo")
        .await
        .unwrap();
    let mut silent = TcpStream::connect(addr).await.unwrap();
    assert_eq!(
        ending(&mut partial, Duration::from_secs(30)).await,
        End::Eof
    );
    assert_eq!(ending(&mut silent, Duration::from_secs(30)).await, End::Eof);

    // A kept-alive connection is answered, then closed once idle.
    let mut kept = TcpStream::connect(addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (status, _, body) = read_response(&mut kept).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<Value>(&body).unwrap()["status"],
        "ok"
    );
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut kept).await.0, 200, "kept alive");
    assert_eq!(
        ending(&mut kept, Duration::from_secs(30)).await,
        End::Eof,
        "closed when idle"
    );

    // A body that stops arriving: 408 naming `body`, and the connection
    // is closed.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(
        format!(
            "POST /v1/endpoints HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\n\
             Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"url\":"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let (status, headers, body) = read_response(&mut slow).await;
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (status, answer["field"].clone()),
        (408, json!("body")),
        "{answer}"
    );
    assert!(headers.contains(&("connection".into(), "close".into())));
    assert_eq!(ending(&mut slow, Duration::from_secs(30)).await, End::Eof);

    // Bodies over max_body_bytes: 413 naming `body`, whether their length
    // is declared or they come in chunks.
    let big = json!({"url": "https://hooks.example.com/", "name": "x".repeat(5000)}).to_string();
    let client = fresh_connections();
    let response = client
        .post(format!("http://{addr}/v1/endpoints"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 413);
    let answer: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(answer["field"], "body", "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("4096"),
        "{answer}"
    );
    let mut chunked = TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "PUT /v1/endpoints/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for piece in big.as_bytes().chunks(1000) {
        request.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        request.extend_from_slice(piece);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    chunked.write_all(&request).await.unwrap();
    let (status, _, body) = read_response(&mut chunked).await;
    let answer: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (status, answer["field"].clone()),
        (413, json!("body")),
        "{answer}"
    );

    // Without a token nothing is read: 401, not 413.
    let response = client
        .post(format!("http://{addr}/v1/endpoints"))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);

    // A body within the limit is served as ever.
    let response = client
        .post(format!("http://{addr}/v1/endpoints"))
        .bearer_auth(ADMIN)
        .header("content-type", "application/json")
        .body(
            json!({"id": "small", "url": "https://hooks.example.com/", "signature": "none"})
                .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 201);
    service.shutdown().await.unwrap();
}
