//! What can be checked of `deploy/` without a cluster (`.ci/run` also runs
//! `kubernetes-validate` on the manifests and `promtool test rules` on the
//! alerts): the PrometheusRule carries exactly the alert rules of
//! `deploy/prometheus/hookstream-alerts.yml` (it is generated from them:
//! `UPDATE_DEPLOY=1 cargo test --test deploy_files` writes it again); the
//! ConfigMap's configuration is valid with the environment the Deployment
//! gives the pod (every `${NAME}` comes from it); probes, ports, Service,
//! ServiceMonitor and PodDisruptionBudget line up with that configuration
//! and the pod's labels; the pod runs as non-root on a read-only root file
//! system with resources set; the kustomization lists every manifest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hookstream::config::Config;
use serde_yaml::Value;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(deploy_dir().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn yaml(path: &str) -> Value {
    serde_yaml::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

const RULES: &str = "prometheus/hookstream-alerts.yml";
const PROMETHEUS_RULE: &str = "kubernetes/prometheusrule.yaml";

/// The PrometheusRule holding the rules file's groups: its `spec` is the
/// rules file without its leading comments, indented.
fn generated_prometheus_rule() -> String {
    let rules = read(RULES);
    let mut out = String::from(
        "# Generated from deploy/prometheus/hookstream-alerts.yml (the alerting rules\n\
         # Prometheus loads in docker/docker-compose.yml); do not edit here: edit that\n\
         # file, then run `UPDATE_DEPLOY=1 cargo test --test deploy_files`.\n\
         # The Prometheus Operator picks PrometheusRules by its ruleSelector: add the\n\
         # labels yours asks for (often `release: <name>`).\n\
         apiVersion: monitoring.coreos.com/v1\n\
         kind: PrometheusRule\n\
         metadata:\n\
         \x20 name: hookstream\n\
         \x20 labels:\n\
         \x20   app.kubernetes.io/name: hookstream\n\
         \x20   app.kubernetes.io/component: webhook-delivery\n\
         spec:\n",
    );
    for line in rules
        .lines()
        .skip_while(|l| l.starts_with('#') || l.trim().is_empty())
    {
        if !line.is_empty() {
            out.push_str("  ");
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

#[test]
fn the_prometheus_rule_carries_the_alert_rules_file() {
    let generated = generated_prometheus_rule();
    if std::env::var_os("UPDATE_DEPLOY").is_some() {
        std::fs::write(deploy_dir().join(PROMETHEUS_RULE), &generated).unwrap();
    }
    assert!(
        read(PROMETHEUS_RULE) == generated,
        "{PROMETHEUS_RULE} is not what {RULES} makes: run `UPDATE_DEPLOY=1 cargo test --test deploy_files`"
    );
    let rule = yaml(PROMETHEUS_RULE);
    assert_eq!(rule["kind"], "PrometheusRule");
    assert_eq!(rule["spec"]["groups"], yaml(RULES)["groups"]);
    let alerts: usize = rule["spec"]["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|g| g["rules"].as_sequence().unwrap().len())
        .sum();
    assert!(alerts >= 9, "{alerts} alerts");
}

fn deployment() -> Value {
    yaml("kubernetes/deployment.yaml")
}

fn container() -> Value {
    deployment()["spec"]["template"]["spec"]["containers"][0].clone()
}

/// The environment the Deployment gives the container: literal values, and
/// Secret keys resolved from secret.yaml.
fn pod_environment() -> BTreeMap<String, String> {
    let secret = yaml("kubernetes/secret.yaml");
    let mut env = BTreeMap::new();
    for var in container()["env"].as_sequence().unwrap() {
        let name = var["name"].as_str().unwrap().to_string();
        let value = if let Some(v) = var["value"].as_str() {
            v.to_string()
        } else {
            let key = &var["valueFrom"]["secretKeyRef"];
            assert_eq!(key["name"], secret["metadata"]["name"], "{name}");
            secret["stringData"][key["key"].as_str().unwrap()]
                .as_str()
                .unwrap_or_else(|| panic!("{name}: secret.yaml has {:?}", key["key"]))
                .to_string()
        };
        env.insert(name, value);
    }
    env
}

fn configured() -> Config {
    let map = yaml("kubernetes/configmap.yaml");
    let text = map["data"]["hookstream.toml"].as_str().unwrap();
    let env = pod_environment();
    Config::from_toml_with_env(text, &|name| env.get(name).cloned())
        .expect("the ConfigMap's configuration is valid with the pod's environment")
}

fn port_of(listen: &str) -> u64 {
    listen.rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn the_config_map_is_valid_with_the_environment_of_the_pod() {
    let config = configured();
    assert_eq!(
        config
            .kafka
            .properties
            .get("sasl.password")
            .map(ToString::to_string),
        Some(pod_environment()["KAFKA_PASSWORD"].clone()),
        "the Kafka password comes from the Secret"
    );
    let env = pod_environment();
    for token in &config.api.tokens {
        let var = token
            .token_env
            .as_deref()
            .expect("tokens come from the Secret");
        assert!(env.contains_key(var), "{var} is set");
    }
    // The config is mounted where the container reads it.
    let c = container();
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let file = args[args.iter().position(|a| *a == "--config").unwrap() + 1];
    let mount = c["volumeMounts"][0]["mountPath"].as_str().unwrap();
    assert_eq!(file, format!("{mount}/hookstream.toml"));
    // Draining fits in the grace period.
    let grace = deployment()["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    assert!(grace > config.delivery.drain_timeout.get().as_secs() + 10);
}

#[test]
fn probes_ports_service_and_monitor_line_up() {
    let config = configured();
    let c = container();
    let port = |name: &str| {
        c["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("port {name}"))["containerPort"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(port("api"), port_of(&config.api.listen));
    assert_eq!(port("metrics"), port_of(&config.metrics.listen));
    assert!(
        config.api.listen.starts_with("0.0.0.0:") && config.metrics.listen.starts_with("0.0.0.0:")
    );
    for (probe, path) in [
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz"),
    ] {
        assert_eq!(c[probe]["httpGet"]["path"], path, "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "api", "{probe}");
    }
    let routes: Vec<String> = hookstream::api::routes::table()
        .iter()
        .map(|r| r.path.to_string())
        .collect();
    assert!(routes.contains(&"/healthz".into()) && routes.contains(&"/readyz".into()));

    let pod_labels = &deployment()["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&deployment()["spec"]["selector"]["matchLabels"], pod_labels);
    let service = yaml("kubernetes/service.yaml");
    assert_eq!(&service["spec"]["selector"], pod_labels);
    let pdb = yaml("kubernetes/pdb.yaml");
    assert_eq!(pdb["kind"], "PodDisruptionBudget");
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], pod_labels);
    let monitor = yaml("kubernetes/servicemonitor.yaml");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"],
        service["metadata"]["labels"]
    );
    let scraped = &monitor["spec"]["endpoints"][0];
    assert_eq!(
        scraped["honorLabels"], true,
        "hookstream's `endpoint` label must survive the scrape"
    );
    let service_port = service["spec"]["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|p| p["name"] == scraped["port"])
        .expect("the monitored port is a Service port");
    assert_eq!(service_port["targetPort"], "metrics");
    assert_eq!(scraped["path"], "/metrics");
}

#[test]
fn the_pod_runs_as_non_root_on_a_read_only_root_with_resources() {
    let d = deployment();
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["runAsUser"], 10001,
        "the image's user"
    );
    let c = container();
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert!(c["resources"]["requests"]["memory"].is_string());
    assert!(c["resources"]["requests"]["cpu"].is_string());
    assert!(c["resources"]["limits"]["memory"].is_string());
}

#[test]
fn the_kustomization_lists_every_manifest() {
    let k = yaml("kubernetes/kustomization.yaml");
    let listed: Vec<&str> = k["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap())
        .collect();
    let mut files: Vec<String> = std::fs::read_dir(deploy_dir().join("kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".yaml") && f != "kustomization.yaml")
        .collect();
    files.sort();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(sorted, files);
}
