//! The event types each source produces, as its platform documents them:
//! for the API's `GET /v1/event-types`, and to tell an endpoint whose
//! patterns can match none of them (saved with `object.create` for a CMDB
//! that sends `create`, it would never receive anything).
//!
//! Pure data and matching. A preset whose platform documents a closed list
//! (the CMDB's `create`/`update`/`delete`) is *closed*; one whose types
//! come from the data (Magistrala's subtopics, OpenMDM's open union,
//! CloudEvents, custom rules), Mender (the preset of every topic without a
//! `[[sources]]` entry) and a source that overrides `type` are *open*, and
//! nothing is refused for them.

use serde::Serialize;

use crate::config::{Config, Preset, SourceConfig};
use crate::index::endpoint::pattern_matches;

/// The types a preset's platform documents, and whether that list is all
/// it sends.
pub fn preset_types(preset: Preset) -> (&'static [&'static str], bool) {
    match preset {
        Preset::Mender => (
            &[
                "device-provisioned",
                "device-decommissioned",
                "device-status-changed",
                "devices-inventory-changed",
            ],
            // Open: `mender` is also the preset of every topic without a
            // `[[sources]]` entry, which may carry any type.
            false,
        ),
        Preset::Cmdb => (&["create", "update", "delete"], true),
        Preset::Openmdm => (
            &[
                "device.enrolled",
                "device.unenrolled",
                "command.completed",
                "security.tamper",
                "security.rootDetected",
            ],
            false,
        ),
        Preset::Magistrala => (&["message.published"], false),
        Preset::Cloudevents | Preset::Custom => (&[], false),
    }
}

/// What one input topic produces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct SourceTypes {
    /// The input topic.
    pub topic: String,
    /// Its preset.
    pub preset: Preset,
    /// The types its platform documents.
    pub types: Vec<&'static str>,
    /// Whether it may produce other types too (an open list, or a `type`
    /// override).
    pub open: bool,
}

impl SourceTypes {
    fn of(source: &SourceConfig) -> Self {
        let (types, closed) = preset_types(source.preset);
        Self {
            topic: source.topic.clone(),
            preset: source.preset,
            types: types.to_vec(),
            open: !closed || source.event_type.is_some(),
        }
    }
}

/// The types of every input topic of `config`.
pub fn of_config(config: &Config) -> Vec<SourceTypes> {
    config
        .kafka
        .topics
        .iter()
        .map(|topic| SourceTypes::of(&config.source_for(topic)))
        .collect()
}

/// Why `patterns` can match no type the sources produce (`None` when one
/// may match: some pattern matches a known type, or a source is open).
pub fn unmatched(patterns: &[String], sources: &[SourceTypes]) -> Option<String> {
    if sources.is_empty() || sources.iter().any(|s| s.open) {
        return None;
    }
    let matches = sources
        .iter()
        .flat_map(|s| s.types.iter())
        .any(|t| patterns.iter().any(|p| pattern_matches(p, t)));
    if matches {
        return None;
    }
    let mut known: Vec<&str> = sources.iter().flat_map(|s| s.types.clone()).collect();
    known.sort_unstable();
    known.dedup();
    Some(format!(
        "match no event type the configured sources produce ({}); see GET /v1/event-types",
        known.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(preset: Preset) -> SourceTypes {
        SourceTypes::of(&SourceConfig::for_preset("t", preset))
    }

    fn patterns(p: &[&str]) -> Vec<String> {
        p.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn cmdb_names_match_and_the_old_prefixed_ones_do_not() {
        let cmdb = [source(Preset::Cmdb)];
        assert_eq!(unmatched(&patterns(&["create", "delete"]), &cmdb), None);
        assert_eq!(unmatched(&patterns(&["*"]), &cmdb), None);
        let why = unmatched(&patterns(&["object.create"]), &cmdb).unwrap();
        assert!(why.contains("create, delete, update"), "{why}");
    }

    #[test]
    fn open_sources_refuse_nothing() {
        let mixed = [source(Preset::Cmdb), source(Preset::Magistrala)];
        assert_eq!(unmatched(&patterns(&["temperature"]), &mixed), None);
        let mut overridden = SourceConfig::for_preset("t", Preset::Cmdb);
        overridden.event_type = Some("/kind".into());
        let open = [SourceTypes::of(&overridden)];
        assert_eq!(unmatched(&patterns(&["anything"]), &open), None);
    }

    #[test]
    fn mender_lists_its_types_but_stays_open() {
        let mender = source(Preset::Mender);
        assert!(mender.types.contains(&"devices-inventory-changed"));
        assert_eq!(unmatched(&patterns(&["order.created"]), &[mender]), None);
    }
}
