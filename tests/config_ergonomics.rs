//! Configuration as an operator meets it: the shipped configuration files
//! make librdkafka warn about nothing (consumer and producer properties in
//! their own tables), `hookstream check` validates a file, resolves it and
//! prints it with secrets masked (exit 2 naming the key otherwise),
//! `HOOKSTREAM_CONFIG` stands for `--config`, shell completions and a man
//! page are printed on demand, and log lines carry no colour codes when
//! standard error is not a terminal.

use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hookstream::config::Config;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, ConsumerContext};
use rdkafka::producer::{BaseProducer, DeliveryResult, ProducerContext};

/// Keeps librdkafka's configuration warnings.
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

impl ClientContext for Warnings {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        if (level as i32) <= (RDKafkaLogLevel::Warning as i32) && fac.contains("CONF") {
            self.0.lock().unwrap().push(format!("{fac}: {message}"));
        }
    }
}
impl ConsumerContext for Warnings {}
impl ProducerContext for Warnings {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &DeliveryResult<'_>, _: ()) {}
}

fn root() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The TOML of a shipped file (the config map holds it in YAML).
fn shipped(path: &str) -> String {
    let text = std::fs::read_to_string(root().join(path)).unwrap();
    if path.ends_with(".yaml") {
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        yaml["data"]["hookstream.toml"]
            .as_str()
            .unwrap()
            .to_string()
    } else {
        text
    }
}

#[test]
fn the_shipped_configurations_make_librdkafka_warn_about_nothing() {
    for path in [
        "config/hookstream.toml",
        "docker/default.toml",
        "docker/hookstream.toml",
        "deploy/kubernetes/configmap.yaml",
    ] {
        // Every variable set, so every file loads; nothing connects
        // anywhere but a closed port on this machine.
        let env = |_: &str| Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string());
        let config = Config::from_toml_with_env(&shipped(path), &env)
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let warnings = Warnings::default();
        let bootstrap = "127.0.0.1:1";
        let consumer: BaseConsumer<Warnings> =
            hookstream::kafka::consumer_config(&config, bootstrap, "check")
                .set_log_level(RDKafkaLogLevel::Debug)
                .create_with_context(warnings.clone())
                .unwrap_or_else(|e| panic!("{path}: consumer: {e}"));
        let producer: BaseProducer<Warnings> =
            hookstream::kafka::durable_producer_config(&config, bootstrap)
                .set_log_level(RDKafkaLogLevel::Debug)
                .create_with_context(warnings.clone())
                .unwrap_or_else(|e| panic!("{path}: producer: {e}"));
        let reader: BaseConsumer<Warnings> =
            hookstream::kafka::reader_client_config(&config, bootstrap)
                .set("group.id", "reader")
                .set_log_level(RDKafkaLogLevel::Debug)
                .create_with_context(warnings.clone())
                .unwrap_or_else(|e| panic!("{path}: reader: {e}"));
        // Log lines come through each client's queue: serve them.
        for _ in 0..5 {
            let _ = consumer.poll(Duration::from_millis(50));
            let _ = reader.poll(Duration::from_millis(50));
            producer.poll(Duration::from_millis(50));
        }
        drop((consumer, producer, reader));
        let seen = warnings.0.lock().unwrap().clone();
        assert!(seen.is_empty(), "{path}: librdkafka warned: {seen:#?}");
    }
}

#[test]
fn properties_of_one_kind_of_client_stay_out_of_the_other() {
    let config = Config::from_toml_with_env(
        "[kafka.properties]\n\"client.rack\" = \"a\"\n[kafka.consumer]\n\"session.timeout.ms\" = 7000\n[kafka.producer]\n\"linger.ms\" = 9\n",
        &|_| None,
    )
    .unwrap();
    let consumer = hookstream::kafka::consumer_config(&config, "x", "g");
    let producer = hookstream::kafka::durable_producer_config(&config, "x");
    assert_eq!(consumer.get("session.timeout.ms"), Some("7000"));
    assert_eq!(consumer.get("linger.ms"), None);
    assert_eq!(consumer.get("client.rack"), Some("a"));
    assert_eq!(producer.get("linger.ms"), Some("9"));
    assert_eq!(producer.get("session.timeout.ms"), None);
    assert_eq!(producer.get("client.rack"), Some("a"));
}

fn hookstream(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hookstream"));
    command.args(args).env_remove("NO_COLOR");
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

#[test]
fn check_prints_the_effective_configuration_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("kafka-password");
    std::fs::write(&secret, "s3cr3t-kafka\n").unwrap();
    let path = dir.path().join("hookstream.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[kafka]
brokers = "${{HS_TEST_BROKERS:-127.0.0.1:9092}}"
commit_interval = "1m30s"
[kafka.properties]
"sasl.username" = "hookstream"
"sasl.password_file" = "{}"
[api]
tokens = [{{ token = "inline-admin-token", role = "admin" }}]
[delivery]
retry_window = "1d"
"#,
            secret.display()
        ),
    )
    .unwrap();
    let out = hookstream(&["check"], &[("HOOKSTREAM_CONFIG", path.to_str().unwrap())]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let printed: Config =
        Config::from_toml_with_env(stdout.split_once("\n\n").map_or("", |(_, t)| t), &|_| None)
            .unwrap_or_else(|e| panic!("check prints a loadable configuration: {e}\n{stdout}"));
    assert_eq!(
        printed.kafka.brokers, "127.0.0.1:9092",
        "the default applied"
    );
    assert_eq!(printed.kafka.commit_interval.get().as_secs(), 90);
    assert_eq!(printed.delivery.retry_window.get().as_secs(), 86_400);
    assert_eq!(
        printed.kafka.properties["sasl.username"].to_string(),
        "hookstream"
    );
    assert!(!stdout.contains("s3cr3t-kafka") && !stdout.contains("inline-admin-token"));
    assert!(stdout.contains(hookstream::config::SECRET_MASK));

    // A bad value: exit 2 naming the key.
    std::fs::write(&path, "[kafka]\ncommit_interval = \"1m30\"\n").unwrap();
    let out = hookstream(&["check", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("kafka.commit_interval"));
    // A secret file that is not there: exit 2 naming the key.
    std::fs::write(
        &path,
        "[kafka.producer]\n\"sasl.password_file\" = \"/nonexistent/hs\"\n",
    )
    .unwrap();
    let out = hookstream(&["check", "--config", path.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("kafka.producer.sasl.password_file"));
}

#[test]
fn completions_and_the_man_page_are_printed_on_demand() {
    for shell in ["bash", "zsh", "fish"] {
        let out = hookstream(&["completions", shell], &[]);
        assert!(out.status.success());
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains("replay") && script.contains("check"),
            "{shell}"
        );
    }
    let out = hookstream(&["man"], &[]);
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        page.contains(".TH hookstream") && page.contains("dlq"),
        "{page}"
    );
}

#[test]
fn log_lines_carry_no_colour_off_a_terminal() {
    // Standard error is a pipe here: no escape codes, whatever NO_COLOR.
    for env in [vec![], vec![("NO_COLOR", "1")]] {
        let out = hookstream(&["demo", "--events", "1", "--rate", "0"], &env);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains("INFO"), "the demo logs: {stderr}");
        assert!(!stderr.contains('\u{1b}'), "{stderr:?}");
    }
    assert!(!hookstream::logging::colour_allowed(true, Some("1".into())));
}

#[test]
fn bench_and_demo_flags_outside_their_ranges_are_refused_by_name() {
    for (args, named, range) in [
        (
            &["bench", "--scenario", "b", "--events", "10"][..],
            "--events",
            "1000..=100000000",
        ),
        (
            &["bench", "--scenario", "b", "--partitions", "0"][..],
            "--partitions",
            "1..=10000",
        ),
        (
            &["bench", "--scenario", "b", "--concurrency", "0"][..],
            "--concurrency",
            "1..=10000",
        ),
        (
            &["bench", "--scenario", "b", "--rounds", "0"][..],
            "--rounds",
            "1..=50",
        ),
        (
            &["bench", "--scenario", "b", "--rounds", "4000000000"][..],
            "--rounds",
            "1..=50",
        ),
        (
            &["bench", "--scenario", "z"][..],
            "--scenario",
            "a, b, c, d, e, f, g, h, i, j, k, all",
        ),
        (&["demo", "--events", "0"][..], "--events", "1..=100000000"),
    ] {
        let out = hookstream(args, &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} was accepted");
        assert!(
            stderr.contains(named) && stderr.contains(range),
            "{args:?}: {stderr}"
        );
    }
}
