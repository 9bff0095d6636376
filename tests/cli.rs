//! The command line as a user meets it: exit statuses and one-line messages
//! for bad configuration, and `hookstream verify` on the shared signature
//! vectors.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn hookstream(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hookstream"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn run_with_config(text: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, text).unwrap();
    hookstream(&["run", "--config", path.to_str().unwrap()], b"")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn configuration_errors_exit_2_naming_the_key() {
    let cases = [
        ("[delivery]\ntimeout = \"30\"\n", "delivery.timeout"),
        ("[kafka]\nbrokerz = \"x\"\n", "kafka.brokerz"),
        (
            "[delivery]\nbackoff = { jitter = 1.5 }\n",
            "delivery.backoff.jitter",
        ),
        (
            "[[endpoints]]\nid = \"a\"\nurl = \"https://127.0.0.1/\"\nsignature = \"none\"\n",
            "endpoints[0].url",
        ),
        (
            "[[endpoints]]\nid = \"a\"\nurl = \"https://x.example/\"\nsecret_env = \"HS_UNSET_FOR_TEST\"\n",
            "endpoints[0].secret_env",
        ),
        (
            "[kafka]\ngroup_id = \"${HS_UNSET_VAR}\"\n",
            "kafka.group_id",
        ),
        (
            "[topics]\nretry_tiers = [\"5s\", \"1s\"]\n",
            "topics.retry_tiers[1]",
        ),
        ("[api]\nmax_connections = 0\n", "api.max_connections"),
        ("[api]\nheader_timeout = \"10ms\"\n", "api.header_timeout"),
        ("[api]\nidle_timeout = \"2h\"\n", "api.idle_timeout"),
        ("[api]\nbody_timeout = \"0\"\n", "api.body_timeout"),
        ("[api]\nmax_body_bytes = 10\n", "api.max_body_bytes"),
    ];
    for (text, key) in cases {
        let out = run_with_config(text);
        assert_eq!(out.status.code(), Some(2), "{text}: {}", stderr(&out));
        let err = stderr(&out);
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(&format!("`{key}`")), "names {key}: {err}");
    }
}

#[test]
fn a_missing_config_file_is_a_usage_error() {
    let out = hookstream(&["run", "--config", "/nonexistent/hookstream.toml"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot read"));
}

#[test]
fn verify_accepts_every_shared_vector_and_rejects_tampering() {
    let vectors: serde_json::Value =
        serde_json::from_str(include_str!("data/signatures.json")).unwrap();
    for v in vectors["vectors"].as_array().unwrap() {
        let scheme = v["scheme"].as_str().unwrap();
        let secret = v["secret"].as_str().unwrap();
        let body = v["body"].as_str().unwrap().as_bytes();
        let headers: Vec<String> = v["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, val)| format!("{k}: {}", val.as_str().unwrap()))
            .collect();
        let mut args = vec!["verify", "--scheme", scheme, "--secret", secret];
        for h in &headers {
            args.push("--header");
            args.push(h);
        }
        let ok = hookstream(&args, body);
        assert_eq!(
            ok.status.code(),
            Some(0),
            "{scheme}: {}",
            String::from_utf8_lossy(&ok.stdout)
        );
        assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "valid");
        let mut tampered = body.to_vec();
        tampered.extend_from_slice(b" ");
        let bad = hookstream(&args, &tampered);
        assert_eq!(bad.status.code(), Some(1), "{scheme} tampered");
        assert!(String::from_utf8_lossy(&bad.stdout).contains("does not match"));
    }
}

#[test]
fn verify_usage_errors_exit_2() {
    let out = hookstream(&["verify", "--scheme", "sha1", "--secret", "x"], b"{}");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--scheme"));
    let out = hookstream(
        &[
            "verify", "--scheme", "github", "--secret", "x", "--header", "nocolon",
        ],
        b"{}",
    );
    assert_eq!(out.status.code(), Some(2));
    let out = hookstream(&["verify", "--scheme", "github", "--secret", "x"], b"{}");
    assert_eq!(
        out.status.code(),
        Some(1),
        "missing signature header is invalid"
    );
}
