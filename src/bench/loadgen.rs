//! The raw loopback HTTP baseline: a lean load generator against the lean
//! receiver, no Kafka and none of the pipeline's client.
//!
//! The generator is a hyper HTTP/1.1 client written for it: a fixed number
//! of keep-alive connections on one thread of its own (as `wrk -t1`), each
//! sending the same POST again as soon as the previous answer arrived. When
//! `wrk` is on the `PATH` it is run too, against the same receiver, and
//! both rates are reported: the higher is the baseline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde::Serialize;

use super::cpu::OwnRuntime;
use super::receiver::FastReceiver;

/// What one baseline run of a generator measured.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LoopbackRun {
    /// Requests answered per second.
    pub requests_per_s: f64,
    /// The generator's CPU per request (µs; none for `wrk`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_cpu_us_per_request: Option<f64>,
    /// The receiver's CPU per request (µs).
    pub receiver_cpu_us_per_request: f64,
}

/// Runs the built-in generator: `requests` POSTs of `body` over
/// `connections` keep-alive connections.
pub fn hyper_baseline(
    receiver: &FastReceiver,
    connections: u32,
    requests: u64,
    body: Bytes,
) -> Result<LoopbackRun> {
    let runtime = OwnRuntime::start("bench-loadgen", 1)?;
    let addr = receiver.addr();
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let receiver_cpu = receiver.cpu_secs();
    let client_cpu = runtime.cpu_secs();
    let started = Instant::now();
    let (tx, rx) = std::sync::mpsc::channel::<Result<()>>();
    for _ in 0..connections.max(1) {
        let (next, done, body, tx) = (
            Arc::clone(&next),
            Arc::clone(&done),
            body.clone(),
            tx.clone(),
        );
        runtime.handle().spawn(async move {
            let result = connection(addr, &next, &done, requests, body).await;
            let _ = tx.send(result);
        });
    }
    drop(tx);
    for result in rx.iter() {
        result?;
    }
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    let answered = done.load(Ordering::Relaxed).max(1) as f64;
    Ok(LoopbackRun {
        requests_per_s: answered / secs,
        client_cpu_us_per_request: Some((runtime.cpu_secs() - client_cpu) * 1e6 / answered),
        receiver_cpu_us_per_request: (receiver.cpu_secs() - receiver_cpu) * 1e6 / answered,
    })
}

/// One keep-alive connection sending until `next` reaches `requests`.
async fn connection(
    addr: std::net::SocketAddr,
    next: &AtomicU64,
    done: &AtomicU64,
    requests: u64,
    body: Bytes,
) -> Result<()> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .context("connecting to the bench receiver")?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .context("HTTP handshake with the bench receiver")?;
    tokio::spawn(conn);
    let host = addr.to_string();
    while next.fetch_add(1, Ordering::Relaxed) < requests {
        let request = hyper::Request::post("/hooks")
            .header(hyper::header::HOST, host.as_str())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.clone()))
            .context("building a bench request")?;
        let response = sender
            .send_request(request)
            .await
            .context("sending a bench request")?;
        response
            .into_body()
            .collect()
            .await
            .context("reading a bench response")?;
        done.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Runs `wrk` (when on the `PATH`) for `secs` seconds with `connections`
/// connections on one thread, POSTing `body`; `None` when it is not there.
pub fn wrk_baseline(
    receiver: &FastReceiver,
    connections: u32,
    secs: u32,
    body: &str,
) -> Result<Option<LoopbackRun>> {
    let script = tempfile_path("hookstream-bench-wrk.lua");
    let lua = format!(
        "wrk.method = \"POST\"\nwrk.body = {}\nwrk.headers[\"Content-Type\"] = \"application/json\"\n",
        lua_string(body)
    );
    std::fs::write(&script, lua).context("writing the wrk script")?;
    let receiver_cpu = receiver.cpu_secs();
    let output = std::process::Command::new("wrk")
        .arg("-t1")
        .arg(format!("-c{connections}"))
        .arg(format!("-d{secs}s"))
        .arg("-s")
        .arg(&script)
        .arg(format!("http://{}/hooks", receiver.addr()))
        .output();
    let receiver_cpu = receiver.cpu_secs() - receiver_cpu;
    let _ = std::fs::remove_file(&script);
    let output = match output {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).context("running wrk"),
    };
    let text = String::from_utf8_lossy(&output.stdout);
    let Some(rate) = parse_wrk(&text) else {
        anyhow::bail!("wrk printed no Requests/sec: {text}");
    };
    let requests = (rate * f64::from(secs)).max(1.0);
    Ok(Some(LoopbackRun {
        requests_per_s: rate,
        client_cpu_us_per_request: None,
        receiver_cpu_us_per_request: receiver_cpu * 1e6 / requests,
    }))
}

/// `Requests/sec:` of wrk's output.
fn parse_wrk(text: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
}

/// `text` as a Lua long string literal.
fn lua_string(text: &str) -> String {
    let mut level = String::new();
    while text.contains(&format!("]{level}]")) {
        level.push('=');
    }
    format!("[{level}[{text}]{level}]")
}

fn tempfile_path(name: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("{}-{name}", std::process::id()))
}

/// How long [`wrk_baseline`] runs.
pub const WRK_SECS: u32 = 3;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_wrk_output() {
        let out = "Running 3s test @ http://127.0.0.1:1/hooks\n  1 threads and 32 connections\nRequests/sec: 131072.50\nTransfer/sec:      9.13MB\n";
        assert_eq!(parse_wrk(out), Some(131072.5));
        assert_eq!(parse_wrk("nothing"), None);
        assert_eq!(lua_string("a]]b"), "[=[a]]b]=]");
    }
}
