//! The binary as a service manager runs it. With standard error closed, or
//! a pipe nobody reads, it still starts, serves `/healthz` and `/readyz`,
//! and exits 0 on SIGTERM (before, tracing reported the failed log write
//! with `eprintln!`, which panicked). A SIGTERM during start-up, while the
//! Kafka cluster does not answer, stops it at once with exit status 0
//! (nothing was consumed yet, so there is nothing to drain), and the log
//! says what start-up was waiting for.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A port on 127.0.0.1 where nothing listens now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("an ephemeral port")
        .port()
}

fn write_config(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("hookstream.toml");
    std::fs::write(&path, text).expect("config written");
    path
}

/// A configuration on the embedded broker with `partitions` input and
/// tier partitions, the API on `port` without tokens, no metrics listener.
fn embedded_config(
    dir: &tempfile::TempDir,
    group: &str,
    port: u16,
    partitions: u32,
) -> std::path::PathBuf {
    write_config(
        dir,
        &format!(
            "[kafka]\nbrokers = \"embedded\"\ngroup_id = \"{group}\"\n\
             topics = [\"device-events\"]\nembedded_partitions = {partitions}\n\
             [topics]\npartitions = {partitions}\n\
             [api]\nlisten = \"127.0.0.1:{port}\"\ntokens = []\n\
             [metrics]\nlisten = \"\"\n"
        ),
    )
}

/// The status code of `GET path` on 127.0.0.1:`port`, if it answers.
fn get(port: u16, path: &str) -> Option<u16> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.split_whitespace().nth(1)?.parse().ok()
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn sigterm(child: &Child) {
    let pid = i32::try_from(child.id()).expect("a pid");
    // SAFETY: kill(2) with a pid this test spawned and still owns.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
}

/// The child's exit status, or `None` if it is still running after
/// `timeout` (then it is killed).
fn exit_within(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("waiting for the child") {
            return Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[derive(Debug, Clone, Copy)]
enum BrokenStderr {
    /// File descriptor 2 closed before exec (`2>&-`).
    Closed,
    /// A pipe whose reading end is closed: every write fails with EPIPE.
    NobodyReads,
}

#[test]
fn with_standard_error_closed_or_unread_the_service_serves_and_stops_cleanly() {
    for how in [BrokenStderr::Closed, BrokenStderr::NobodyReads] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = embedded_config(&dir, "stderr-test", port, 1);
        let mut command = Command::new(env!("CARGO_BIN_EXE_hookstream"));
        command
            .args(["run", "--config", config.to_str().unwrap()])
            // Many log lines, each a write that fails.
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        match how {
            BrokenStderr::Closed => {
                // SAFETY: runs in the child between fork and exec; close(2)
                // is async-signal-safe and touches only the child's fds.
                unsafe {
                    command.pre_exec(|| {
                        libc::close(2);
                        Ok(())
                    });
                }
            }
            BrokenStderr::NobodyReads => {
                let mut fds = [0; 2];
                // SAFETY: pipe2 fills the two-element array it is given.
                assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
                // SAFETY: both descriptors were just created and are owned
                // here only; the reading end is closed at once.
                let (read, write) =
                    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
                drop(read);
                command.stderr(Stdio::from(write));
            }
        }
        let mut child = command.spawn().expect("hookstream runs");
        wait_until(
            &format!("/healthz with stderr {how:?}"),
            Duration::from_secs(60),
            || {
                assert!(
                    child.try_wait().unwrap().is_none(),
                    "hookstream exited with stderr {how:?}"
                );
                get(port, "/healthz") == Some(200)
            },
        );
        wait_until(
            &format!("/readyz with stderr {how:?}"),
            Duration::from_secs(60),
            || get(port, "/readyz") == Some(200),
        );
        sigterm(&child);
        let status = exit_within(&mut child, Duration::from_secs(60))
            .unwrap_or_else(|| panic!("no exit after SIGTERM with stderr {how:?}"));
        assert_eq!(status.code(), Some(0), "stderr {how:?}: {status}");
    }
}

#[test]
fn a_clean_stop_on_the_embedded_broker_logs_no_error() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = embedded_config(&dir, "clean-stop", port, 4);
    let log = dir.path().join("log.txt");
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookstream"))
        .args(["run", "--config", config.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("hookstream runs");
    wait_until("/readyz", Duration::from_secs(60), || {
        get(port, "/readyz") == Some(200)
    });
    sigterm(&child);
    let status = exit_within(&mut child, Duration::from_secs(60)).expect("an exit after SIGTERM");
    assert_eq!(status.code(), Some(0), "{status}");
    let text = std::fs::read_to_string(&log).unwrap();
    let stop = text.find("SIGTERM received").expect("the stop is logged");
    // Every client of the embedded broker is closed before it stops: none
    // is left to report it gone.
    let errors: Vec<&str> = text[stop..]
        .lines()
        .filter(|l| l.contains(" ERROR ") || l.contains(" WARN "))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(text[stop..].contains("pipeline stopped"), "{text}");
}

#[test]
fn a_sigterm_during_start_up_stops_it_at_once_and_the_log_says_what_it_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens there: every connection is refused, and librdkafka
    // keeps trying until its request timeouts (a minute).
    let brokers = format!("127.0.0.1:{}", free_port());
    let config = write_config(
        &dir,
        &format!(
            "[kafka]\nbrokers = \"{brokers}\"\ngroup_id = \"startup-test\"\n\
             topics = [\"device-events\"]\n[api]\nlisten = \"\"\n[metrics]\nlisten = \"\"\n"
        ),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookstream"))
        .args(["run", "--config", config.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("hookstream runs");
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let reader = {
        let lines = Arc::clone(&lines);
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        })
    };
    let waiting = format!("waiting for the Kafka cluster at {brokers} (creating topics)");
    wait_until(
        "the log to say what start-up waits for",
        Duration::from_secs(30),
        || lines.lock().unwrap().iter().any(|l| l.contains(&waiting)),
    );
    sigterm(&child);
    // librdkafka would hold start-up for a minute: a bound well below it.
    let status = exit_within(&mut child, Duration::from_secs(20))
        .expect("hookstream exits soon after SIGTERM during start-up");
    reader.join().unwrap();
    let log = lines.lock().unwrap().join("\n");
    assert_eq!(status.code(), Some(0), "{status}\n{log}");
    assert!(
        log.contains("SIGTERM received during start-up"),
        "the log says why it stopped:\n{log}"
    );
}
