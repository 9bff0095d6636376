//! The reference in `docs/` cannot drift from the code: every metric
//! hookstream names is described in docs/metrics.md, every range of
//! `src/config/limits.rs` and every route of the API are in tables generated
//! from the code (`UPDATE_DOCS=1 cargo test --test docs` writes them again),
//! every key of the example configuration is in docs/configuration.md,
//! every header hookstream writes is in docs/topics.md or docs/signatures.md,
//! every dead-letter reason in docs/dlq.md, every alert in docs/alerts.md.
//! README.md links into docs/, cites no specification users do not have,
//! and every relative link of the README and docs/ leads to a file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use hookstream::config::limits::*;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Replaces what lies between `<!-- NAME:begin -->` (and the table header
/// after it) and `<!-- NAME:end -->` in `path` by `rows` when
/// `UPDATE_DOCS` is set; then checks that the file holds exactly them.
fn generated_section(path: &str, name: &str, header_lines: usize, rows: &[String]) {
    let text = read(path);
    let begin = format!("<!-- {name}:begin -->\n");
    let end = format!("<!-- {name}:end -->");
    let start = text.find(&begin).expect("begin marker") + begin.len();
    let header_end = text[start..]
        .match_indices('\n')
        .nth(header_lines - 1)
        .map(|(i, _)| start + i + 1)
        .expect("table header");
    let stop = text.find(&end).expect("end marker");
    let wanted: String = rows.iter().map(|r| format!("{r}\n")).collect();
    if std::env::var_os("UPDATE_DOCS").is_some() && text[header_end..stop] != wanted {
        let updated = format!("{}{}{}", &text[..header_end], wanted, &text[stop..]);
        std::fs::write(root().join(path), updated).unwrap();
        return;
    }
    let found = &text[header_end..stop];
    assert!(
        found == wanted,
        "{path}: the {name} table is not what the code says; run `UPDATE_DOCS=1 cargo test --test docs`\n--- found\n{found}--- wanted\n{wanted}"
    );
}

/// `pub const NAME` items of a source file, with their doc comment.
fn documented_consts(source: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut doc = Vec::new();
    for line in source.lines() {
        let line = line.trim();
        if let Some(text) = line.strip_prefix("///") {
            doc.push(text.trim().to_string());
        } else if let Some(rest) = line.strip_prefix("pub const ") {
            let name = rest.split(':').next().unwrap().trim().to_string();
            out.push((name, doc.join(" ")));
            doc.clear();
        } else if !line.starts_with("#[") {
            doc.clear();
        }
    }
    out
}

macro_rules! ranges {
    ($($name:ident),* $(,)?) => {
        vec![$((stringify!($name), $name.to_string())),*]
    };
}

#[test]
fn every_range_of_the_limits_table_is_in_the_configuration_reference() {
    let ranges: Vec<(&str, String)> = ranges![
        COMMIT_INTERVAL,
        EMBEDDED_PARTITIONS,
        INPUT_TOPICS,
        NAME_LEN,
        RETRY_TIERS,
        RETRY_TIER,
        ATTEMPTS_RETENTION,
        TOPIC_PARTITIONS,
        REPLICATION_FACTOR,
        REQUEST_TIMEOUT,
        MAX_ATTEMPTS,
        BACKOFF_INITIAL,
        BACKOFF_MAX,
        BACKOFF_FACTOR,
        BACKOFF_JITTER,
        MAX_IN_FLIGHT,
        CONNECTIONS_PER_HOST,
        MAX_PAYLOAD_BYTES,
        DRAIN_TIMEOUT,
        RETRY_WINDOW,
        AUTO_DISABLE_AFTER,
        BACKLOG_MAX_AGE,
        BACKLOG_RECHECK,
        USER_AGENT_LEN,
        ROTATION_GRACE,
        MAX_ENDPOINT_SERIES,
        URL_LEN,
        EVENT_PATTERNS,
        RESTRICTIONS,
        ROUTE_NAME_LEN,
        HEADERS,
        HEADER_NAME_LEN,
        HEADER_VALUE_LEN,
        SECRET_LEN,
        AUTH_NAME_LEN,
        BEARER_TOKEN_LEN,
        OAUTH_PARAM_LEN,
        ENV_NAME_LEN,
        PEM_LEN,
        RATE_PER_SECOND,
        RATE_BURST,
        MAX_CONCURRENCY,
        ADAPTIVE_INITIAL,
        ADAPTIVE_DECREASE_RATIO,
        ADAPTIVE_EWMA_ALPHA,
        ADAPTIVE_RTT_DEVIATION_SCALE,
        QUEUE_SIZE,
        BATCH_EVENTS,
        BATCH_WAIT,
        POINTER_LEN,
        RETRY_ON,
        CLI_RATE,
        CLI_EVENTS,
        BENCH_EVENTS,
        BENCH_ROUNDS,
    ];
    let consts = documented_consts(&read("src/config/limits.rs"));
    let in_source: Vec<&str> = consts.iter().map(|(n, _)| n.as_str()).collect();
    let listed: Vec<&str> = ranges.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        listed, in_source,
        "every range of src/config/limits.rs, in its order (add new ones to this test)"
    );
    let rows: Vec<String> = consts
        .iter()
        .zip(&ranges)
        .map(|((_, doc), (_, range))| {
            format!(
                "| {} | {range} |",
                doc.trim_end_matches('.').replace('|', "\\|")
            )
        })
        .collect();
    generated_section("docs/configuration.md", "limits", 2, &rows);
}

#[test]
fn every_route_is_in_the_api_reference() {
    use hookstream::api::auth::Access;
    let rows: Vec<String> = hookstream::api::routes::table()
        .iter()
        .map(|r| {
            let token = match r.access {
                Access::Public => "none",
                Access::Viewer => "viewer or admin",
                Access::Admin => "admin",
            };
            format!(
                "| `{}` | `{}` | {token} | {} |",
                r.method, r.path, r.summary
            )
        })
        .collect();
    assert!(rows.len() >= 20);
    generated_section("docs/api.md", "routes", 2, &rows);
}

/// The string constants of the `pub mod <module>` block of a source file.
fn module_strings(source: &str, module: &str) -> Vec<String> {
    let start = source
        .find(&format!("pub mod {module} {{"))
        .unwrap_or_else(|| panic!("pub mod {module}"));
    let body = &source[start..];
    let body = &body[..body.find("\n}\n").expect("end of the module")];
    body.lines()
        .filter(|l| l.trim_start().starts_with("pub const") && l.contains("&str"))
        .filter_map(|l| l.split('"').nth(1))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_metric_is_described_in_the_metrics_reference() {
    let names = module_strings(&read("src/metrics/mod.rs"), "names");
    assert!(names.len() >= 20, "{names:?}");
    let as_listed: BTreeSet<&str> = hookstream::metrics::names::ALL.iter().copied().collect();
    let in_source: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(as_listed, in_source, "names::ALL lists every name");
    let doc = read("docs/metrics.md");
    for name in &names {
        assert!(
            doc.contains(&format!("| `{name}` |")),
            "docs/metrics.md has a row for {name}"
        );
    }
}

#[test]
fn every_key_of_the_example_configuration_is_in_the_configuration_reference() {
    let example: toml::Value = toml::from_str(&read("config/hookstream.toml")).unwrap();
    let doc = read("docs/configuration.md");
    let mut keys = BTreeSet::new();
    for (section, table) in example.as_table().unwrap() {
        assert!(
            doc.contains(&format!("## `[{section}]`"))
                || doc.contains(&format!("## `[[{section}]]`")),
            "docs/configuration.md has a section for {section}"
        );
        let tables: Vec<&toml::Value> = match table {
            toml::Value::Array(items) => items.iter().collect(),
            other => vec![other],
        };
        for t in tables {
            for (key, value) in t.as_table().unwrap() {
                // librdkafka's own names.
                if section == "kafka"
                    && ["properties", "consumer", "producer"].contains(&key.as_str())
                {
                    keys.insert(key.clone());
                    continue;
                }
                keys.insert(key.clone());
                // Inline tables of fixed keys (`backoff`, `rate_limit`,
                // `batch`); `headers` holds the user's own names.
                if let toml::Value::Table(inner) = value
                    && key != "headers"
                {
                    keys.extend(inner.keys().cloned());
                }
            }
        }
    }
    for key in [
        "previous_secret",
        "previous_secret_expires_at",
        "id",
        "type",
        "device",
        "group",
        "tenant",
        "time",
    ] {
        keys.insert(key.to_string());
    }
    for key in &keys {
        assert!(
            doc.contains(&format!("`{key}`")),
            "docs/configuration.md describes `{key}`"
        );
    }
}

#[test]
fn every_header_hookstream_writes_is_documented() {
    let topics = read("docs/topics.md");
    for name in module_strings(&read("src/core/headers.rs"), "header") {
        if name == "hookstream-" {
            continue;
        }
        assert!(
            topics.contains(&format!("| `{name}` |")),
            "docs/topics.md has a row for {name}"
        );
    }
    let signatures = read("docs/signatures.md").to_ascii_lowercase();
    for name in module_strings(&read("src/sign.rs"), "header") {
        assert!(
            signatures.contains(&format!("`{name}`")),
            "docs/signatures.md names {name}"
        );
    }
    for scheme in hookstream::sign::SignatureScheme::ALL {
        assert!(
            signatures.contains(&format!("## `{}`", scheme.name())),
            "docs/signatures.md has a section for {scheme}"
        );
    }
}

#[test]
fn every_dead_letter_reason_and_alert_is_explained() {
    let dlq = read("docs/dlq.md");
    for reason in hookstream::metrics::DLQ_REASONS
        .iter()
        .chain(&["http_<status>"])
    {
        assert!(
            dlq.contains(&format!("| `{reason}` |")),
            "docs/dlq.md explains {reason}"
        );
    }
    let alerts = read("docs/alerts.md");
    let rules: serde_yaml::Value =
        serde_yaml::from_str(&read("deploy/prometheus/hookstream-alerts.yml")).unwrap();
    for group in rules["groups"].as_sequence().unwrap() {
        for rule in group["rules"].as_sequence().unwrap() {
            let name = rule["alert"].as_str().unwrap();
            assert!(
                alerts.contains(&format!("\n## {name}\n")),
                "docs/alerts.md has a section for {name}"
            );
            let runbook = rule["annotations"]["runbook"].as_str().unwrap();
            assert_eq!(
                runbook,
                format!("docs/alerts.md#{}", name.to_lowercase()),
                "{name}'s runbook annotation points at its section"
            );
        }
    }
}

/// Relative link targets of a Markdown text (`](target)`), without anchors.
fn relative_links(text: &str) -> Vec<String> {
    text.split("](")
        .skip(1)
        .filter_map(|rest| rest.split(')').next())
        .filter(|t| !t.starts_with("http") && !t.starts_with('#') && !t.is_empty())
        .map(|t| t.split('#').next().unwrap().to_string())
        .collect()
}

#[test]
fn the_readme_links_into_docs_and_every_link_leads_somewhere() {
    let readme = read("README.md");
    assert!(
        !readme.contains("SPEC"),
        "README.md cites no specification users do not have"
    );
    for page in [
        "configuration.md",
        "signatures.md",
        "topics.md",
        "api.md",
        "metrics.md",
        "dlq.md",
        "alerts.md",
    ] {
        assert!(
            readme.contains(&format!("](docs/{page}")),
            "README.md links docs/{page}"
        );
    }
    let mut pages: Vec<(PathBuf, String)> = vec![(root().join("README.md"), readme)];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            let text = std::fs::read_to_string(&path).unwrap();
            pages.push((path, text));
        }
    }
    pages.push((root().join("docker/README.md"), read("docker/README.md")));
    for (page, text) in &pages {
        let dir = page.parent().unwrap();
        for link in relative_links(text) {
            assert!(
                Path::new(dir).join(&link).exists(),
                "{}: link {link} leads nowhere",
                page.display()
            );
        }
    }
}
