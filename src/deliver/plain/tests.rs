//! The lean client against scripted receivers on 127.0.0.1: what arrives,
//! which answers keep a connection, which close it, and which are errors.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Uri};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

use super::*;

/// What a scripted receiver does after reading one request.
#[derive(Clone)]
enum Reply {
    /// Writes these bytes, then reads the next request.
    Write(&'static [u8]),
    /// Writes these bytes and closes the connection.
    WriteClose(Vec<u8>),
    /// Closes the connection without a word.
    Close,
}

struct Receiver {
    uri: Uri,
    accepted: Arc<AtomicUsize>,
    /// Each request as it arrived: head and body.
    requests: mpsc::UnboundedReceiver<Vec<u8>>,
}

/// A receiver answering each request with `reply(n)`, n counting every
/// request it read on any connection.
async fn receiver(reply: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri: Uri = format!("http://{}/in?x=1", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    let (seen_tx, requests) = mpsc::unbounded_channel();
    let reply = Arc::new(reply);
    let served = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let (reply, served, seen_tx) =
                (Arc::clone(&reply), Arc::clone(&served), seen_tx.clone());
            tokio::spawn(async move {
                let mut seen = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    // One request: its head, then content-length bytes.
                    let whole = loop {
                        if let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&seen[..end]).to_lowercase();
                            let len: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length: "))
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0);
                            if seen.len() >= end + 4 + len {
                                break end + 4 + len;
                            }
                        }
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    };
                    let _ = seen_tx.send(seen.drain(..whole).collect());
                    match reply(served.fetch_add(1, Ordering::SeqCst)) {
                        Reply::Write(bytes) => {
                            if socket.write_all(bytes).await.is_err() {
                                return;
                            }
                        }
                        Reply::WriteClose(bytes) => {
                            let _ = socket.write_all(&bytes).await;
                            return;
                        }
                        Reply::Close => return,
                    }
                }
            });
        }
    });
    Receiver {
        uri,
        accepted,
        requests,
    }
}

const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

fn headers() -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("webhook-id", HeaderValue::from_static("msg_1"));
    headers
}

/// One exchange: the status, and whether the body ended cleanly.
async fn exchange(
    client: &PlainClient,
    uri: &Uri,
) -> Result<(u16, Result<(), String>), PlainError> {
    let ua = HeaderValue::from_static("hookstream-test");
    let answered = client
        .send(
            uri,
            |buf, to| wire::write_request_head(buf, to, &headers(), &ua, 5),
            b"hello",
        )
        .await?;
    let status = answered.head.status;
    Ok((status, answered.finish().await.map_err(|e| e.to_string())))
}

#[tokio::test]
async fn the_receiver_reads_the_head_and_body_sent() {
    let mut r = receiver(|_| Reply::Write(OK)).await;
    let client = build(false);
    assert_eq!(exchange(&client, &r.uri).await.unwrap(), (200, Ok(())));
    let request = String::from_utf8(r.requests.recv().await.unwrap()).unwrap();
    let host = r.uri.authority().unwrap().as_str();
    assert_eq!(
        request,
        format!(
            "POST /in?x=1 HTTP/1.1\r\nhost: {host}\r\ncontent-length: 5\r\n\
             content-type: application/json\r\nwebhook-id: msg_1\r\n\
             user-agent: hookstream-test\r\n\r\nhello"
        )
    );
}

#[tokio::test]
async fn sequential_requests_share_one_connection() {
    let r = receiver(|_| Reply::Write(OK)).await;
    let client = build(false);
    for _ in 0..20 {
        assert_eq!(exchange(&client, &r.uri).await.unwrap(), (200, Ok(())));
    }
    assert_eq!(r.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_connection_the_receiver_closed_is_replaced_and_nothing_fails() {
    let r = receiver(|_| Reply::WriteClose(OK.to_vec())).await;
    let client = build(false);
    for _ in 0..20 {
        assert_eq!(exchange(&client, &r.uri).await.unwrap(), (200, Ok(())));
        // The receiver's close arrives while the connection is idle (a
        // close racing a request that was already written is a failed
        // attempt, for any client).
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(r.accepted.load(Ordering::SeqCst), 20);
}

#[tokio::test]
async fn answers_framed_every_legal_way_keep_or_close_the_connection_as_they_say() {
    let answers: [(&[u8], u16, bool); 8] = [
        (b"HTTP/1.1 204 No Content\r\n\r\n", 204, true),
        (b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", 200, true),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 3\r\n\r\nabc",
            201,
            true,
        ),
        (
            b"HTTP/1.1 503 Busy\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nx: y\r\n\r\n",
            503,
            true,
        ),
        (
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
            200,
            false,
        ),
        (
            b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok",
            200,
            false,
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA",
            200,
            false,
        ),
        (
            b"HTTP/1.1 200 OK\r\ncontent-length: 999999999\r\n\r\ntoo long to read",
            200,
            false,
        ),
    ];
    for (answer, status, kept) in answers {
        let r = receiver(move |_| Reply::Write(answer)).await;
        let client = build(false);
        for _ in 0..2 {
            assert_eq!(
                exchange(&client, &r.uri).await.unwrap(),
                (status, Ok(())),
                "{}",
                String::from_utf8_lossy(answer)
            );
        }
        let connections = if kept { 1 } else { 2 };
        assert_eq!(
            r.accepted.load(Ordering::SeqCst),
            connections,
            "{}",
            String::from_utf8_lossy(answer)
        );
    }
}

#[tokio::test]
async fn a_body_until_close_and_a_huge_chunked_body_are_bounded() {
    let mut body = b"HTTP/1.1 200 OK\r\n\r\n".to_vec();
    body.extend(std::iter::repeat_n(b'x', 1 << 20));
    let r = receiver(move |_| Reply::WriteClose(body.clone())).await;
    let client = build(false);
    assert_eq!(exchange(&client, &r.uri).await.unwrap(), (200, Ok(())));
    assert_eq!(exchange(&client, &r.uri).await.unwrap(), (200, Ok(())));
    assert_eq!(r.accepted.load(Ordering::SeqCst), 2);

    let mut chunked = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..64 {
        chunked.extend_from_slice(b"4000\r\n");
        chunked.extend(std::iter::repeat_n(b'y', 0x4000));
        chunked.extend_from_slice(b"\r\n");
    }
    let r = receiver(move |_| Reply::WriteClose(chunked.clone())).await;
    assert_eq!(exchange(&client, &r.uri).await.unwrap(), (200, Ok(())));
    assert_eq!(exchange(&client, &r.uri).await.unwrap(), (200, Ok(())));
    assert_eq!(
        r.accepted.load(Ordering::SeqCst),
        2,
        "the long body's connection is not reused"
    );
}

#[tokio::test]
async fn broken_answers_are_errors_and_a_broken_body_keeps_its_status() {
    let r = receiver(|_| Reply::Close).await;
    let err = exchange(&build(false), &r.uri).await.unwrap_err();
    assert!(matches!(err, PlainError::Closed), "{err:?}");
    assert!(!err.is_connect());

    let r = receiver(|_| Reply::WriteClose(b"SSH-2.0-OpenSSH_9\r\n\r\n".to_vec())).await;
    let err = exchange(&build(false), &r.uri).await.unwrap_err();
    assert!(matches!(err, PlainError::Answer(_)), "{err:?}");

    let r = receiver(|_| {
        Reply::WriteClose(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc".to_vec())
    })
    .await;
    let (status, body) = exchange(&build(false), &r.uri).await.unwrap();
    assert_eq!(status, 200);
    assert!(body.unwrap_err().contains("closed before the answer ended"));

    let r =
        receiver(|_| Reply::Write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nZZ\r\n"))
            .await;
    let (status, body) = exchange(&build(false), &r.uri).await.unwrap();
    assert_eq!(status, 200);
    assert!(body.is_err());
}

#[tokio::test]
async fn a_connection_not_finished_is_not_reused() {
    let r = receiver(|_| Reply::Write(OK)).await;
    let client = build(false);
    let ua = HeaderValue::from_static("t");
    let answered = client
        .send(
            &r.uri,
            |buf, to| wire::write_request_head(buf, to, &headers(), &ua, 5),
            b"hello",
        )
        .await
        .unwrap();
    drop(answered);
    assert_eq!(exchange(&client, &r.uri).await.unwrap(), (200, Ok(())));
    assert_eq!(exchange(&client, &r.uri).await.unwrap(), (200, Ok(())));
    assert_eq!(r.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let uri: Uri = format!("http://{}/", listener.local_addr().unwrap())
        .parse()
        .unwrap();
    drop(listener);
    let err = exchange(&build(false), &uri).await.unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    assert!(matches!(err, PlainError::Connect { .. }), "{err:?}");
}

#[tokio::test]
async fn a_guarded_client_refuses_names_resolving_to_loopback() {
    let r = receiver(|_| Reply::Write(OK)).await;
    let port = r.uri.port_u16().unwrap();
    let uri: Uri = format!("http://localhost:{port}/").parse().unwrap();
    let err = exchange(&build(true), &uri).await.unwrap_err();
    assert!(matches!(err, PlainError::Resolve { .. }), "{err:?}");
    assert_eq!(r.accepted.load(Ordering::SeqCst), 0);
}
