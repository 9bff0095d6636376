//! Receivers that misbehave at the HTTP level: given one that never
//! answers, one that resets, one that answers garbage, one that trickles
//! its answer, one that answers an endless body and one that answers until
//! it closes, beside a healthy receiver, when events are produced, then each
//! failing one's events are dead-lettered with the failure a user reads in
//! `hookstream-last-status`, the endless body and the close-delimited one
//! count as delivered, the healthy receiver gets every event, and the input
//! offsets reach the end.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use hookstream::config::HumanDuration;
use hookstream::demo::receiver::Behaviour;
use hookstream::source::extract::Preset;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TOPIC: &str = "device-events";
const EVENTS: usize = 4;

/// How a hostile receiver treats each connection.
#[derive(Clone, Copy, Debug)]
enum Hostility {
    /// Reads and never answers.
    Hang,
    /// Reads the request's head, then resets the connection.
    Reset,
    /// Answers something that is not HTTP, and closes.
    Garbage,
    /// Sends its status line a byte every 100 ms.
    Trickle,
    /// Answers 200 with a chunked body that never ends.
    EndlessBody,
    /// Answers 200 with no length, a body, then closes (HTTP/1.0 style).
    UntilClose,
}

/// Reads until the end of a request head (or the connection's end).
async fn read_head(socket: &mut TcpStream) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
}

async fn misbehave(mut socket: TcpStream, how: Hostility) {
    read_head(&mut socket).await;
    match how {
        Hostility::Hang => {
            let mut buf = [0u8; 4096];
            while matches!(socket.read(&mut buf).await, Ok(n) if n > 0) {}
        }
        Hostility::Reset => {
            let _ = socket.set_zero_linger();
        }
        Hostility::Garbage => {
            let _ = socket.write_all(b"SSH-2.0-OpenSSH_9.6\r\n\r\n").await;
        }
        Hostility::Trickle => {
            for byte in b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n" {
                if socket.write_all(&[*byte]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Hostility::EndlessBody => {
            if socket
                .write_all(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
                .await
                .is_err()
            {
                return;
            }
            let mut chunk = b"4000\r\n".to_vec();
            chunk.extend(std::iter::repeat_n(b'x', 0x4000));
            chunk.extend_from_slice(b"\r\n");
            while socket.write_all(&chunk).await.is_ok() {}
        }
        Hostility::UntilClose => {
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nthanks, bye")
                .await;
        }
    }
}

/// A hostile receiver on 127.0.0.1; its URL.
async fn hostile(how: Hostility) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/in", listener.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(misbehave(socket, how));
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_receivers_fail_as_themselves_and_hold_up_no_one() {
    let cluster = Cluster::start(&[TOPIC], 2);
    let healthy = receiver(Behaviour::Healthy).await;
    let mut config = config("hostile-test", &[(TOPIC, Preset::Mender)]);
    // One attempt each: a failure goes to the DLQ at once, with what it was.
    config.delivery.max_attempts = 1;
    let mut expected = HashMap::new();
    for (how, status) in [
        (Hostility::Hang, Some("timeout")),
        (Hostility::Reset, Some("reset")),
        (Hostility::Garbage, Some("reset")),
        (Hostility::Trickle, Some("timeout")),
        (Hostility::EndlessBody, None),
        (Hostility::UntilClose, None),
    ] {
        let id = format!("{how:?}").to_lowercase();
        let mut e = endpoint(
            &id,
            hostile(how).await,
            &["*"],
            "standard",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        );
        e.timeout = Some(HumanDuration::from_millis(500));
        config.endpoints.push(e);
        expected.insert(id, status);
    }
    config.endpoints.push(endpoint(
        "healthy",
        healthy.url("in"),
        &["*"],
        "standard",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
    ));
    let pipeline = start(config, &cluster).await;
    cluster.produce_many(TOPIC, &status_events(0, EVENTS)).await;

    wait_for(
        "the healthy receiver's events",
        Duration::from_secs(30),
        || healthy.log().accepted_count() >= EVENTS,
    )
    .await;
    let failing = expected.values().filter(|s| s.is_some()).count();
    wait_for(
        "every failing receiver's events dead-lettered",
        Duration::from_secs(30),
        || cluster.read_all("hookstream.dlq").len() >= failing * EVENTS,
    )
    .await;
    wait_for("input offsets at the end", Duration::from_secs(15), || {
        cluster.offsets_at_end("hostile-test", TOPIC)
    })
    .await;

    let letters = cluster.read_all("hookstream.dlq");
    let mut by_endpoint: HashMap<String, Vec<String>> = HashMap::new();
    for letter in &letters {
        by_endpoint
            .entry(letter.header("hookstream-endpoint").unwrap().to_string())
            .or_default()
            .push(letter.header("hookstream-last-status").unwrap().to_string());
    }
    for (id, status) in &expected {
        match status {
            Some(status) => assert_eq!(
                by_endpoint.get(id),
                Some(&vec![status.to_string(); EVENTS]),
                "{id}: every event dead-lettered as {status}; letters: {by_endpoint:?}"
            ),
            None => assert!(
                !by_endpoint.contains_key(id),
                "{id} answered 200: delivered, not dead-lettered ({by_endpoint:?})"
            ),
        }
    }
    assert_eq!(healthy.log().accepted_count(), EVENTS, "each event once");
    for request in healthy.log().recorded() {
        assert!(independently_verified(
            "standard",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            &request
        ));
    }
    pipeline.shutdown().await.unwrap();
}
