//! Where configuration values come from besides the file itself:
//! `${NAME}` and `${NAME:-default}` from the environment, secrets from
//! files (`token_file`, an endpoint's `secret_file` and the `*_file` keys
//! of its `auth` and `tls`, librdkafka properties ending in `_file`), and
//! the masked view `hookstream check` prints.
//!
//! Owns expansion and masking; the lookups (environment, files) are given
//! by the caller, so the logic here is testable without either.

use std::collections::BTreeMap;

use super::{Config, ConfigError, PropertyValue};

/// What secrets are shown as.
pub const SECRET_MASK: &str = "********";

/// Replaces `${NAME}` and `${NAME:-default}` in every string value; `path`
/// tracks the key for errors.
pub(super) fn expand_env(
    value: &mut toml::Value,
    path: &mut String,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    match value {
        toml::Value::String(s) if s.contains("${") => {
            *s = expand_string(s, env).map_err(|name| {
                ConfigError::new(
                    path.clone(),
                    format!("environment variable `{name}` is not set (`${{{name}:-default}}` gives a default)"),
                )
            })?;
        }
        toml::Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                expand_env(item, path, env)?;
                path.truncate(len);
            }
        }
        toml::Value::Table(table) => {
            for (key, item) in table.iter_mut() {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                expand_env(item, path, env)?;
                path.truncate(len);
            }
        }
        _ => {}
    }
    Ok(())
}

/// Expands `${NAME}` and `${NAME:-default}` (the default when `NAME` is
/// unset or empty, as in a shell); returns the name of the first unset
/// variable without a default as error.
fn expand_string(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        match after.find('}') {
            Some(end) => {
                let reference = &after[..end];
                let value = match reference.split_once(":-") {
                    Some((name, default)) => env(name)
                        .filter(|v| !v.is_empty())
                        .unwrap_or_else(|| default.to_string()),
                    None => env(reference).ok_or_else(|| reference.to_string())?,
                };
                out.push_str(&value);
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// A secret read from `file`, without its trailing newline; `key` names
/// the configuration key in errors.
fn read_secret(
    key: &str,
    file: &str,
    read: &dyn Fn(&str) -> std::io::Result<String>,
) -> Result<String, ConfigError> {
    let text =
        read(file).map_err(|e| ConfigError::new(key, format!("cannot read `{file}`: {e}")))?;
    let secret = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(&text);
    if secret.is_empty() {
        return Err(ConfigError::new(key, format!("`{file}` is empty")));
    }
    Ok(secret.to_string())
}

/// Replaces every `<name>_file` property by `<name>` with the file's text.
fn resolve_property_files(
    table: &mut BTreeMap<String, PropertyValue>,
    section: &str,
    read: &dyn Fn(&str) -> std::io::Result<String>,
) -> Result<(), ConfigError> {
    let files: Vec<String> = table
        .keys()
        .filter(|k| k.ends_with("_file"))
        .cloned()
        .collect();
    for key in files {
        let path = format!("kafka.{section}.{key}");
        let name = key.trim_end_matches("_file").to_string();
        if table.contains_key(&name) {
            return Err(ConfigError::new(
                path,
                format!("`{name}` is set too; give one of them"),
            ));
        }
        let file = table
            .remove(&key)
            .map(|v| v.to_string())
            .unwrap_or_default();
        let secret = read_secret(&path, &file, read)?;
        table.insert(name, PropertyValue::Text(secret));
    }
    Ok(())
}

/// Reads the secrets that `*_file` keys name into the keys they stand for.
pub(super) fn resolve_files(
    config: &mut Config,
    read: &dyn Fn(&str) -> std::io::Result<String>,
) -> Result<(), ConfigError> {
    let kafka = &mut config.kafka;
    resolve_property_files(&mut kafka.properties, "properties", read)?;
    resolve_property_files(&mut kafka.consumer, "consumer", read)?;
    resolve_property_files(&mut kafka.producer, "producer", read)?;
    for (i, token) in config.api.tokens.iter_mut().enumerate() {
        if let Some(file) = &token.token_file {
            token.token = Some(read_secret(
                &format!("api.tokens[{i}].token_file"),
                file,
                read,
            )?);
        }
    }
    Ok(())
}

/// Replaces every `<field>_file` of every `[[endpoints]]` table
/// (`secret_file`, `auth.basic.password_file`, `tls.client_key_file`, ...:
/// [`super::egress::FILE_FIELDS`]) by `<field>` with the file's text,
/// before the tables become endpoints (an endpoint holds no file name: the
/// API never reads this server's files).
pub(super) fn resolve_endpoint_secret_files(
    value: &mut toml::Value,
    read: &dyn Fn(&str) -> std::io::Result<String>,
) -> Result<(), ConfigError> {
    let Some(toml::Value::Array(endpoints)) = value.get_mut("endpoints") else {
        return Ok(());
    };
    for (i, endpoint) in endpoints.iter_mut().enumerate() {
        for field in super::egress::FILE_FIELDS {
            let (parents, leaf) = match field.rsplit_once('.') {
                Some((parents, leaf)) => (Some(parents), leaf),
                None => (None, field),
            };
            let mut table = endpoint.as_table_mut();
            for parent in parents.into_iter().flat_map(|p| p.split('.')) {
                table = table
                    .and_then(|t| t.get_mut(parent))
                    .and_then(toml::Value::as_table_mut);
            }
            let Some(table) = table else {
                continue;
            };
            let Some(file) = table.remove(&format!("{leaf}_file")) else {
                continue;
            };
            let key = format!("endpoints[{i}].{field}_file");
            let Some(file) = file.as_str() else {
                return Err(ConfigError::new(key, "must be a file name"));
            };
            if table.contains_key(leaf) || table.contains_key(&format!("{leaf}_env")) {
                return Err(ConfigError::new(
                    key,
                    format!("takes the place of `{leaf}` and `{leaf}_env`: give only one"),
                ));
            }
            let secret = read_secret(&key, file, read)?;
            table.insert(leaf.into(), toml::Value::String(secret));
        }
    }
    Ok(())
}

/// Whether a librdkafka property holds a secret (passwords, client
/// secrets, private keys in PEM).
fn is_secret_property(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    key.contains("password")
        || key.contains("secret")
        || key.ends_with(".pem")
        || key == "sasl.oauthbearer.config"
}

/// `config` with every secret replaced by [`SECRET_MASK`]: tokens,
/// endpoint secrets and header values, secret librdkafka properties.
pub fn masked(config: &Config) -> Config {
    let mut c = config.clone();
    let mask = |v: &mut Option<String>| {
        if v.is_some() {
            *v = Some(SECRET_MASK.to_string());
        }
    };
    for table in [
        &mut c.kafka.properties,
        &mut c.kafka.consumer,
        &mut c.kafka.producer,
    ] {
        for (key, value) in table.iter_mut() {
            if is_secret_property(key) {
                *value = PropertyValue::Text(SECRET_MASK.to_string());
            }
        }
    }
    for token in &mut c.api.tokens {
        mask(&mut token.token);
    }
    if !c.delivery.proxy.is_empty() {
        c.delivery.proxy = super::egress::masked_proxy(&c.delivery.proxy, SECRET_MASK);
    }
    for e in &mut c.endpoints {
        for secret in [&mut e.secret, &mut e.previous_secret] {
            if secret.is_some() {
                *secret = Some(SECRET_MASK.into());
            }
        }
        for value in e.headers.values_mut() {
            *value = SECRET_MASK.to_string();
        }
        if let Some(auth) = &mut e.auth {
            auth.mask_secrets(SECRET_MASK);
        }
        if let Some(tls) = &mut e.tls {
            tls.mask_secrets(SECRET_MASK);
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "SET" => Some("value".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn references_expand_with_defaults() {
        let x = |t: &str| expand_string(t, &env);
        assert_eq!(x("a-${SET}-b"), Ok("a-value-b".into()));
        assert_eq!(x("${SET:-other}"), Ok("value".into()));
        assert_eq!(x("${UNSET:-other}"), Ok("other".into()));
        assert_eq!(x("${EMPTY:-other}"), Ok("other".into()));
        assert_eq!(x("${UNSET:-}"), Ok(String::new()));
        assert_eq!(x("${UNSET:-a:-b}"), Ok("a:-b".into()));
        assert_eq!(x("${EMPTY}"), Ok(String::new()));
        assert_eq!(x("${UNSET}"), Err("UNSET".into()));
        assert_eq!(x("${unclosed"), Ok("${unclosed".into()));
    }

    #[test]
    fn secrets_come_from_files_without_their_newline() {
        let read = |path: &str| match path {
            "/s/kafka" => Ok("hunter2\n".to_string()),
            "/s/token" => Ok("tok\r\n".to_string()),
            "/s/empty" => Ok("\n".to_string()),
            _ => Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
        };
        let text = r#"
[kafka.consumer]
"sasl.password_file" = "/s/kafka"
[api]
tokens = [{ token_file = "/s/token", role = "admin" }]
"#;
        let c = Config::from_toml_resolving(text, &env, &read).unwrap();
        assert_eq!(c.kafka.consumer["sasl.password"].to_string(), "hunter2");
        let with_endpoint = "[delivery]\nallow_private_destinations = true\n[[endpoints]]\nid = \"a\"\nurl = \"https://10.0.0.1/\"\nsecret_file = \"/s/kafka\"";
        let e = Config::from_toml_resolving(with_endpoint, &env, &read).unwrap();
        assert_eq!(e.endpoints[0].secret.as_deref(), Some("hunter2"));
        assert!(!c.kafka.consumer.contains_key("sasl.password_file"));
        assert_eq!(c.api.tokens[0].token.as_deref(), Some("tok"));
        for (text, key) in [
            (
                "[kafka.properties]\n\"sasl.password_file\" = \"/s/none\"",
                "kafka.properties.sasl.password_file",
            ),
            (
                "[kafka.producer]\n\"sasl.password_file\" = \"/s/empty\"",
                "kafka.producer.sasl.password_file",
            ),
            (
                "[kafka.properties]\n\"a_file\" = \"/s/kafka\"\n\"a\" = \"x\"",
                "kafka.properties.a_file",
            ),
            (
                "[api]\ntokens = [{ token_file = \"/s/none\", role = \"viewer\" }]",
                "api.tokens[0].token_file",
            ),
            (
                "[api]\ntokens = [{ token_file = \"/s/token\", token = \"x\", role = \"viewer\" }]",
                "api.tokens[0]",
            ),
        ] {
            let err = Config::from_toml_resolving(text, &env, &read).unwrap_err();
            assert_eq!(err.key, key, "{text}: {err}");
        }
    }

    #[test]
    fn auth_and_tls_secrets_come_from_files_named_under_their_tables() {
        let read = |path: &str| match path {
            "/s/pw" => Ok("p4ss\n".to_string()),
            "/s/key.pem" => {
                Ok("-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n".to_string())
            }
            _ => Err(std::io::Error::from(std::io::ErrorKind::NotFound)),
        };
        let text = r#"
[[endpoints]]
id = "a"
url = "https://hooks.example.com/"
auth = { basic = { username = "u", password_file = "/s/pw" } }
tls = { client_key_file = "/s/key.pem" }
"#;
        let c = Config::from_toml_resolving(text, &env, &read).unwrap();
        let e = &c.endpoints[0];
        let basic = e.auth.as_ref().unwrap().basic.as_ref().unwrap();
        assert_eq!(basic.password.as_deref(), Some("p4ss"));
        assert!(
            e.tls
                .as_ref()
                .unwrap()
                .client_key
                .as_ref()
                .unwrap()
                .starts_with("-----BEGIN")
        );
        let both = text.replace(
            "password_file = \"/s/pw\"",
            "password_file = \"/s/pw\", password = \"x\"",
        );
        let err = Config::from_toml_resolving(&both, &env, &read).unwrap_err();
        assert_eq!(err.key, "endpoints[0].auth.basic.password_file");
        let missing = text.replace("/s/key.pem", "/s/none");
        let err = Config::from_toml_resolving(&missing, &env, &read).unwrap_err();
        assert_eq!(err.key, "endpoints[0].tls.client_key_file");
    }

    #[test]
    fn the_masked_view_hides_every_secret() {
        let text = r#"
[kafka.properties]
"sasl.password" = "p"
"sasl.username" = "u"
[api]
tokens = [{ token = "t", role = "admin" }]
[delivery]
allow_private_destinations = true
proxy = "http://proxyuser:pr0xypw@127.0.0.1:3128"
[[endpoints]]
id = "a"
url = "http://127.0.0.1/"
allow_http = true
secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
headers = { "X-Api-Key" = "k" }
auth = { oauth2 = { token_url = "https://auth.example.com/token", client_id = "cid", client_secret = "cs3cret" } }
tls = { client_key = "k3y-pem" }
[[endpoints]]
id = "b"
url = "https://hooks.example.com/"
auth = { bearer = { token = "b3arer" } }
"#;
        let c = masked(&Config::from_toml_with_env(text, &env).unwrap());
        let shown = toml::to_string(&c).unwrap();
        for secret in [
            "\"p\"", "\"t\"", "whsec_", "\"k\"", "cs3cret", "k3y-pem", "b3arer", "pr0xypw",
        ] {
            assert!(!shown.contains(secret), "{secret} in\n{shown}");
        }
        assert!(shown.contains("\"u\""));
        assert!(shown.contains("proxyuser") && shown.contains("\"cid\""));
    }
}
