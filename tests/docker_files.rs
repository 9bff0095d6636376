//! What can be checked of `docker/` without a Docker engine: the compose
//! file parses and has every service, every file it mounts or builds from
//! exists (the alert rules among them, loaded by Prometheus), the hookstream
//! config in it is valid and its ports line up with the compose ports and
//! the Prometheus scrape target, the image is multi-stage, ships a stripped
//! binary, runs as a non-root user, starts with its default config without
//! any environment variable, and its HEALTHCHECK command (run here, with the
//! perl every Debian image has) tells a healthy API from a failing or absent
//! one. The Grafana dashboard picks its datasource, instance and endpoint
//! through variables, and ranks per-endpoint series with `topk` (or `bottomk`); its
//! queries parse as PromQL (`promtool`, when installed or `PROMTOOL` is set).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use hookstream::config::Config;

fn docker_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docker")
}

fn compose() -> serde_yaml::Value {
    let text = std::fs::read_to_string(docker_dir().join("docker-compose.yml")).unwrap();
    serde_yaml::from_str(&text).expect("docker-compose.yml parses")
}

#[test]
fn the_compose_file_has_every_service_and_every_mounted_file_exists() {
    let c = compose();
    let services = c["services"].as_mapping().expect("services");
    for name in ["kafka", "hookstream", "prometheus", "grafana", "receiver"] {
        assert!(services.contains_key(name), "service {name}");
    }
    assert!(
        c["services"]["kafka"]["image"]
            .as_str()
            .unwrap()
            .starts_with("apache/kafka")
    );
    assert_eq!(
        c["services"]["kafka"]["environment"]["KAFKA_PROCESS_ROLES"].as_str(),
        Some("broker,controller"),
        "KRaft mode"
    );
    for (name, service) in services {
        for volume in service["volumes"].as_sequence().into_iter().flatten() {
            let spec = volume.as_str().unwrap();
            let source = spec.split(':').next().unwrap();
            if source.starts_with('.') {
                let path = docker_dir().join(source);
                assert!(path.exists(), "{name:?} mounts {source}, which exists");
            }
        }
    }
    let build = &c["services"]["hookstream"]["build"];
    let context = docker_dir().join(build["context"].as_str().unwrap());
    assert!(context.join(build["dockerfile"].as_str().unwrap()).exists());
}

#[test]
fn the_hookstream_config_is_valid_and_its_ports_line_up() {
    let text = std::fs::read_to_string(docker_dir().join("hookstream.toml")).unwrap();
    let env = |name: &str| match name {
        "RECEIVER_SECRET" => Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string()),
        _ => Some("x".to_string()),
    };
    let config = Config::from_toml_with_env(&text, &env).expect("docker/hookstream.toml is valid");
    assert_eq!(config.kafka.brokers, "kafka:9092");
    let metrics_port = config
        .metrics
        .listen
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let api_port = config.api.listen.rsplit(':').next().unwrap().to_string();
    let c = compose();
    let ports: Vec<String> = c["services"]["hookstream"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    assert!(
        ports
            .iter()
            .any(|p| p.ends_with(&format!(":{metrics_port}"))),
        "{ports:?}"
    );
    assert!(
        ports.iter().any(|p| p.ends_with(&format!(":{api_port}"))),
        "{ports:?}"
    );
    let prom = std::fs::read_to_string(docker_dir().join("prometheus/prometheus.yml")).unwrap();
    let prom: serde_yaml::Value = serde_yaml::from_str(&prom).unwrap();
    let target = prom["scrape_configs"][0]["static_configs"][0]["targets"][0]
        .as_str()
        .unwrap();
    assert_eq!(target, format!("hookstream:{metrics_port}"));
    let url = &config.endpoints[0].url;
    let receiver_port = c["services"]["receiver"]["environment"]["PORT"]
        .as_str()
        .unwrap();
    assert!(url.contains(&format!("receiver:{receiver_port}")), "{url}");
}

#[test]
fn the_image_is_multi_stage_and_runs_as_a_non_root_user() {
    let dockerfile = std::fs::read_to_string(docker_dir().join("Dockerfile")).unwrap();
    let froms = dockerfile
        .lines()
        .filter(|l| l.trim_start().starts_with("FROM "))
        .count();
    assert!(froms >= 2, "multi-stage");
    assert!(dockerfile.contains("cargo build --release"));
    let user = dockerfile
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with("USER "))
        .expect("a USER line");
    assert!(
        !user.contains("root") && !user.trim().ends_with(" 0"),
        "{user}"
    );
}

#[test]
fn grafana_is_provisioned_with_the_datasource_and_dashboard() {
    let ds = std::fs::read_to_string(
        docker_dir().join("grafana/provisioning/datasources/prometheus.yml"),
    )
    .unwrap();
    let ds: serde_yaml::Value = serde_yaml::from_str(&ds).unwrap();
    assert_eq!(ds["datasources"][0]["uid"].as_str(), Some("prometheus"));
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(docker_dir().join("grafana/dashboards/hookstream.json")).unwrap(),
    )
    .unwrap();
    assert!(dashboard["panels"].as_array().unwrap().len() >= 8);
}

fn dockerfile() -> String {
    std::fs::read_to_string(docker_dir().join("Dockerfile")).unwrap()
}

/// The Dockerfile's instructions, continuation lines joined.
fn instructions() -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in dockerfile().lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else if !trimmed.starts_with('#') {
            current.push_str(trimmed);
            out.push(std::mem::take(&mut current));
        }
    }
    out
}

#[test]
fn the_image_ships_a_stripped_binary() {
    let build = instructions()
        .into_iter()
        .find(|i| i.starts_with("RUN") && i.contains("cargo build --release"))
        .expect("the release build");
    let stripped = build.contains("strip ") && build.find("strip ") > build.find("cargo build")
        || build.contains("CARGO_PROFILE_RELEASE_STRIP=symbols");
    assert!(stripped, "the binary is stripped after the build: {build}");
}

/// The exec-form command of the image's HEALTHCHECK.
fn healthcheck() -> Vec<String> {
    let all: Vec<String> = instructions()
        .into_iter()
        .filter(|i| i.starts_with("HEALTHCHECK"))
        .collect();
    assert_eq!(all.len(), 1, "one HEALTHCHECK: {all:?}");
    let json = &all[0][all[0].find("CMD [").expect("exec form, no shell") + 4..];
    serde_json::from_str(json).expect("the CMD is a JSON array")
}

/// A server answering every request with `status`, on 127.0.0.1.
fn answering(status: &'static str) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut request_line = String::new();
            let mut reader = BufReader::new(&stream);
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let status = if request_line.starts_with("GET /healthz ") {
                status
            } else {
                "404 Not Found"
            };
            let _ = (&stream).write_all(
                format!("HTTP/1.1 {status}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                    .as_bytes(),
            );
        }
    });
    addr
}

#[test]
fn the_healthcheck_passes_on_a_healthy_api_only() {
    let cmd = healthcheck();
    assert_eq!(
        cmd[0], "perl",
        "perl-base is in every Debian image: {cmd:?}"
    );
    assert!(cmd.iter().any(|a| a.contains("/healthz")));
    assert!(
        hookstream::api::routes::table()
            .iter()
            .any(|r| r.method == "GET" && r.path == "/healthz"),
        "the API serves /healthz"
    );
    let run = |addr: &str| {
        std::process::Command::new(&cmd[0])
            .args(&cmd[1..])
            .env("HOOKSTREAM_HEALTH_ADDR", addr)
            .status()
            .expect("perl runs")
            .code()
    };
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    assert_eq!(run(&answering("200 OK").to_string()), Some(0));
    assert_eq!(
        run(&answering("503 Service Unavailable").to_string()),
        Some(1)
    );
    assert_eq!(run(&closed.to_string()), Some(1), "nothing listens");
}

#[test]
fn the_image_starts_with_its_default_config_without_environment_variables() {
    let copy = instructions()
        .into_iter()
        .find(|i| i.starts_with("COPY ") && i.ends_with(" /etc/hookstream/hookstream.toml"))
        .expect("a default config at /etc/hookstream/hookstream.toml");
    let source = copy.split_whitespace().nth(1).unwrap();
    let text = std::fs::read_to_string(docker_dir().join("..").join(source)).unwrap();
    let config = Config::from_toml_with_env(&text, &|_| None)
        .expect("the default config needs no environment variable");
    assert!(config.api.listen.starts_with("0.0.0.0:"));
    assert!(config.metrics.listen.starts_with("0.0.0.0:"));
    assert!(
        healthcheck().iter().any(|a| a.contains(&format!(
            "127.0.0.1:{}",
            config.api.listen.rsplit(':').next().unwrap()
        ))),
        "the healthcheck probes the API port of the default config"
    );
    let expose = instructions()
        .into_iter()
        .find(|i| i.starts_with("EXPOSE "))
        .unwrap();
    for listen in [&config.api.listen, &config.metrics.listen] {
        let port = listen.rsplit(':').next().unwrap();
        assert!(expose.split_whitespace().any(|p| p == port), "{expose}");
    }
}

#[test]
fn prometheus_loads_the_alert_rules_the_compose_file_mounts() {
    let c = compose();
    let mounts: Vec<&str> = c["services"]["prometheus"]["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let rules = mounts
        .iter()
        .find(|m| m.starts_with("../deploy/prometheus/hookstream-alerts.yml:"))
        .expect("the alert rules are mounted");
    let target = rules.split(':').nth(1).unwrap();
    let prom = std::fs::read_to_string(docker_dir().join("prometheus/prometheus.yml")).unwrap();
    let prom: serde_yaml::Value = serde_yaml::from_str(&prom).unwrap();
    let files: Vec<&str> = prom["rule_files"]
        .as_sequence()
        .expect("rule_files")
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(files.contains(&target), "{files:?} loads {target}");
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(
        &std::fs::read_to_string(docker_dir().join("grafana/dashboards/hookstream.json")).unwrap(),
    )
    .unwrap()
}

/// Every `datasource` object anywhere in `v`.
fn datasources<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a serde_json::Value>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, child) in map {
                if k == "datasource" && child.is_object() {
                    out.push(child);
                }
                datasources(child, out);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| datasources(i, out)),
        _ => {}
    }
}

fn queries(d: &serde_json::Value) -> Vec<(String, String)> {
    d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| {
            let title = p["title"].as_str().unwrap().to_string();
            p["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(move |t| (title.clone(), t["expr"].as_str().unwrap().to_string()))
        })
        .collect()
}

#[test]
fn the_dashboard_picks_datasource_instance_and_endpoint_through_variables() {
    let d = dashboard();
    let vars = d["templating"]["list"].as_array().unwrap();
    let var = |name: &str| {
        vars.iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("variable {name}"))
    };
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    for name in ["instance", "endpoint"] {
        assert_eq!(var(name)["type"], "query");
        assert_eq!(var(name)["includeAll"], true);
        assert_eq!(var(name)["allValue"], ".*");
    }
    let mut all = Vec::new();
    datasources(&d, &mut all);
    assert!(all.len() > 20);
    for ds in all {
        let uid = ds["uid"].as_str().unwrap_or_default();
        assert!(
            uid == "${datasource}" || (ds["type"] == "grafana" && uid == "-- Grafana --"),
            "no hard-coded datasource uid: {ds}"
        );
    }
    for (title, expr) in queries(&d) {
        assert!(expr.contains("instance=~\"$instance\""), "{title}: {expr}");
        let per_endpoint = ["by (endpoint", "by (endpoint,"]
            .iter()
            .any(|g| expr.contains(g));
        if per_endpoint {
            // Ranked, so a panel shows a bounded number of series: the
            // largest (topk), or the smallest where the low ones are the
            // news (bottomk: the adaptive limits of endpoints pushing back).
            assert!(
                expr.starts_with("topk(") || expr.starts_with("bottomk("),
                "{title}: per-endpoint series ranked: {expr}"
            );
            assert!(expr.contains("endpoint=~\"$endpoint\""), "{title}: {expr}");
        }
    }
}

#[test]
fn the_dashboard_queries_parse_as_promql() {
    // promtool has no offline query parser, but `check rules` parses every
    // rule's expression: the queries become recording rules, Grafana's
    // variables replaced by what they stand for.
    let required = std::env::var_os("PROMTOOL");
    let promtool = required.clone().unwrap_or_else(|| "promtool".into());
    let rules: Vec<serde_json::Value> = queries(&dashboard())
        .into_iter()
        .enumerate()
        .map(|(i, (_, expr))| {
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("$instance", ".*")
                .replace("$endpoint", ".*");
            serde_json::json!({"record": format!("dashboard:query_{i}"), "expr": expr})
        })
        .collect();
    let file =
        std::env::temp_dir().join(format!("hookstream-dashboard-{}.yml", std::process::id()));
    // JSON is YAML.
    std::fs::write(
        &file,
        serde_json::json!({"groups": [{"name": "dashboard", "rules": rules}]}).to_string(),
    )
    .unwrap();
    let out = std::process::Command::new(&promtool)
        .args(["check", "rules"])
        .arg(&file)
        .output();
    let _ = std::fs::remove_file(&file);
    match out {
        Ok(out) => assert!(
            out.status.success(),
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) if required.is_none() => eprintln!("promtool not found ({e}): queries not parsed"),
        Err(e) => panic!("PROMTOOL={promtool:?} does not run: {e}"),
    }
}
