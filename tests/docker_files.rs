//! What can be checked of `docker/` without a Docker engine: the compose
//! file parses and has every service, every file it mounts or builds from
//! exists, the hookstream config in it is valid and its ports line up with
//! the compose ports and the Prometheus scrape target, the image is
//! multi-stage and runs as a non-root user.

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
