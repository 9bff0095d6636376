//! A [`Config`] written back as TOML (`hookstream check`, and the bench's
//! service process), in time linear in its endpoints.
//!
//! The toml crate's document writer moves its whole output for every table
//! of an array it adds: `hookstream check` of 100 000 endpoints took a
//! minute in it. The endpoints are written one `[[endpoints]]` table at a
//! time instead. Plain data in, text out; no I/O.

use super::{Config, EndpointConfig};

/// `config` as TOML: every field, endpoints last.
pub fn to_toml(config: Config) -> Result<String, toml::ser::Error> {
    to_toml_with(config, |_| {})
}

/// `config` as TOML, only the endpoint fields that differ from those of an
/// endpoint written with only an `id` and a `url`: what a user with many endpoints would write.
pub fn to_toml_lean(config: Config) -> Result<String, toml::ser::Error> {
    // A new endpoint as the file's reader fills it in (`EndpointConfig::new`
    // differs: it signs nothing, for tests).
    let blank: EndpointConfig = toml::from_str("id = \"\"\nurl = \"\"")
        .map_err(|e| <toml::ser::Error as serde::ser::Error>::custom(e.to_string()))?;
    let defaults = toml::Table::try_from(blank)?;
    to_toml_with(config, |table: &mut toml::Table| {
        table.retain(|key, value| key == "id" || key == "url" || defaults.get(key) != Some(value));
    })
}

/// `config` as TOML, each endpoint's table passed through `edit` first.
fn to_toml_with(
    mut config: Config,
    mut edit: impl FnMut(&mut toml::Table),
) -> Result<String, toml::ser::Error> {
    let endpoints = std::mem::take(&mut config.endpoints);
    let mut text = toml::to_string_pretty(&config)?;
    for endpoint in &endpoints {
        let mut table = toml::Table::try_from(endpoint)?;
        edit(&mut table);
        let one = toml::Table::from_iter([(
            "endpoints".to_string(),
            toml::Value::Array(vec![toml::Value::Table(table)]),
        )]);
        text.push('\n');
        text.push_str(&toml::to_string_pretty(&one)?);
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config_with(endpoints: usize) -> Config {
        let mut config = Config::default();
        for i in 0..endpoints {
            let mut e = EndpointConfig::new(format!("ep-{i}"), "https://example.com/hook");
            e.devices = vec![format!("dev-{i}")];
            config.endpoints.push(e);
        }
        config
    }

    #[test]
    fn reads_back_equal() {
        let config = config_with(3);
        let text = to_toml(config.clone()).unwrap();
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(
            toml::Value::try_from(&back).unwrap(),
            toml::Value::try_from(&config).unwrap()
        );
    }

    #[test]
    fn lean_keeps_only_what_differs_and_reads_back_equal() {
        let config = config_with(2);
        let text = to_toml_lean(config.clone()).unwrap();
        assert!(!text.contains("max_concurrency"), "{text}");
        assert!(text.contains("devices = [\"dev-1\"]"), "{text}");
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(
            toml::Value::try_from(&back).unwrap(),
            toml::Value::try_from(&config).unwrap()
        );
    }
}
