//! Field extraction: which id, type, device, group, tenant and time an event
//! has, by preset (SPEC §3) or by custom JSON pointers and record headers.
//!
//! Pure: bytes and headers in, [`Fields`] out. Parsing uses simd-json's
//! tape with reused buffers; the original bytes are never modified (a scratch
//! copy is parsed), because they are what gets signed and sent.

pub use crate::config::Preset;
pub use crate::core::{Fields, InvalidEvent};
use simd_json::prelude::*;

use crate::core::tape::{TapeParser, lookup};

use crate::config::SourceConfig;

/// Where a record came from; the fallback id is derived from it.
#[derive(Debug, Clone, Copy)]
pub struct Coordinates<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// Hex id derived from `topic/partition/offset`, stable across restarts.
pub fn coordinates_id(c: &Coordinates<'_>) -> String {
    crate::core::event::coordinates_id(c.topic, c.partition, c.offset)
}

#[derive(Debug, Clone, PartialEq)]
enum Locator {
    /// RFC 6901 pointer, already split and unescaped.
    Pointer(Vec<String>),
    /// A Kafka record header.
    Header(String),
    /// A fixed value.
    Literal(&'static str),
}

/// One way to find a field, with a prefix added to what is found.
#[derive(Debug, Clone, PartialEq)]
struct Alternative {
    locator: Locator,
    prefix: &'static str,
}

/// Alternatives tried in order; the first that yields a value wins.
#[derive(Debug, Clone, PartialEq, Default)]
struct Rule(Vec<Alternative>);

impl Rule {
    fn describe(&self) -> String {
        self.0
            .iter()
            .map(|a| match &a.locator {
                Locator::Pointer(tokens) => format!("/{}", tokens.join("/")),
                Locator::Header(h) => format!("header:{h}"),
                Locator::Literal(l) => format!("\"{l}\""),
            })
            .collect::<Vec<_>>()
            .join(" or ")
    }
}

/// Extracts routing fields for one source topic. Not `Sync`: each consumer
/// thread owns one (it reuses parse buffers).
pub struct Extractor {
    id: Rule,
    event_type: Rule,
    device: Rule,
    group: Rule,
    tenant: Rule,
    time: Rule,
    /// The preset's body inside the event ([`Fields::body_pointer`]).
    body_pointer: Option<&'static str>,
    parser: TapeParser,
}

impl std::fmt::Debug for Extractor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extractor")
            .field("id", &self.id.describe())
            .field("type", &self.event_type.describe())
            .field("device", &self.device.describe())
            .finish()
    }
}

fn parse_locator(text: &str) -> Result<Locator, String> {
    if let Some(name) = text.strip_prefix("header:") {
        if name.is_empty() {
            return Err("`header:` needs a header name".into());
        }
        return Ok(Locator::Header(name.to_string()));
    }
    if text.is_empty() {
        return Ok(Locator::Pointer(Vec::new()));
    }
    let rest = text.strip_prefix('/').ok_or_else(|| {
        format!("`{text}` is neither a JSON pointer (\"/a/b\") nor \"header:<name>\"")
    })?;
    Ok(Locator::Pointer(
        rest.split('/')
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect(),
    ))
}

fn ptr(path: &str) -> Alternative {
    Alternative {
        locator: Locator::Pointer(
            path.trim_start_matches('/')
                .split('/')
                .map(String::from)
                .collect(),
        ),
        prefix: "",
    }
}

fn hdr(name: &str) -> Alternative {
    Alternative {
        locator: Locator::Header(name.to_string()),
        prefix: "",
    }
}

/// Where a preset's platform finds the body it sends inside the event:
/// Magistrala sends the message payload, the CMDB the object (as created,
/// as updated, or as it was before deletion); the others the whole event.
pub fn body_pointer(preset: Preset) -> Option<&'static str> {
    match preset {
        Preset::Magistrala => Some("/payload"),
        Preset::Cmdb => Some("/object"),
        Preset::Mender | Preset::Openmdm | Preset::Cloudevents | Preset::Custom => None,
    }
}

fn rule(alternatives: Vec<Alternative>) -> Rule {
    Rule(alternatives)
}

impl Extractor {
    /// Builds the rules of a `[[sources]]` entry. Errors name the field.
    pub fn from_config(source: &SourceConfig) -> Result<Self, (&'static str, String)> {
        let mut ex = Self::preset(source.preset);
        let overrides: [(&'static str, &Option<String>, &mut Rule); 6] = [
            ("id", &source.id, &mut ex.id),
            ("type", &source.event_type, &mut ex.event_type),
            ("device", &source.device, &mut ex.device),
            ("group", &source.group, &mut ex.group),
            ("tenant", &source.tenant, &mut ex.tenant),
            ("time", &source.time, &mut ex.time),
        ];
        for (field, text, slot) in overrides {
            if let Some(text) = text {
                let locator = parse_locator(text).map_err(|m| (field, m))?;
                let mut alternatives = vec![Alternative {
                    locator,
                    prefix: "",
                }];
                if field == "group" {
                    alternatives.push(hdr("group"));
                }
                *slot = Rule(alternatives);
            }
        }
        if ex.event_type.0.is_empty() {
            return Err((
                "type",
                "preset `custom` needs a `type` pointer or header".into(),
            ));
        }
        Ok(ex)
    }

    /// The rules of a preset, as SPEC §3 tabulates them.
    pub fn preset(preset: Preset) -> Self {
        let group = rule(vec![hdr("group")]);
        let (id, event_type, device, tenant, time) = match preset {
            Preset::Mender => (
                rule(vec![ptr("/id")]),
                rule(vec![ptr("/type")]),
                rule(vec![ptr("/data/id"), ptr("/data/device_id")]),
                rule(vec![ptr("/data/tenant_id")]),
                rule(vec![ptr("/time")]),
            ),
            Preset::Openmdm => (
                rule(vec![ptr("/id")]),
                rule(vec![ptr("/event")]),
                rule(vec![ptr("/data/device/id"), ptr("/data/deviceId")]),
                Rule::default(),
                rule(vec![ptr("/timestamp")]),
            ),
            Preset::Magistrala => (
                Rule::default(),
                rule(vec![
                    ptr("/subtopic"),
                    Alternative {
                        locator: Locator::Literal("message.published"),
                        prefix: "",
                    },
                ]),
                rule(vec![ptr("/publisher")]),
                Rule::default(),
                rule(vec![ptr("/created")]),
            ),
            Preset::Cmdb => (
                Rule::default(),
                // The CMDB's own names (`create`, `update`, `delete`): an
                // endpoint saved with the documented names matches.
                rule(vec![ptr("/event")]),
                rule(vec![ptr("/object/public_id")]),
                Rule::default(),
                rule(vec![ptr("/timestamp")]),
            ),
            Preset::Cloudevents => (
                rule(vec![hdr("ce_id"), ptr("/id")]),
                rule(vec![hdr("ce_type"), ptr("/type")]),
                rule(vec![hdr("ce_subject"), ptr("/subject")]),
                Rule::default(),
                rule(vec![hdr("ce_time"), ptr("/time")]),
            ),
            Preset::Custom => (
                Rule::default(),
                Rule::default(),
                Rule::default(),
                Rule::default(),
                Rule::default(),
            ),
        };
        Self {
            id,
            event_type,
            device,
            group,
            tenant,
            time,
            body_pointer: body_pointer(preset),
            parser: TapeParser::default(),
        }
    }

    /// Extracts the fields of one record. `header(name)` returns a record
    /// header's value.
    pub fn extract<'h>(
        &mut self,
        value: &[u8],
        header: &dyn Fn(&str) -> Option<&'h [u8]>,
        coords: &Coordinates<'_>,
        max_payload_bytes: usize,
    ) -> Result<Fields, InvalidEvent> {
        if value.is_empty() {
            return Err(InvalidEvent::Empty);
        }
        if value.len() > max_payload_bytes {
            return Err(InvalidEvent::TooLarge {
                size: value.len(),
                max: max_payload_bytes,
            });
        }
        let Self {
            id,
            event_type,
            device,
            group,
            tenant,
            time,
            body_pointer,
            parser,
        } = self;
        parser.parse(value, |parsed| {
            let root = parsed.map_err(|e| InvalidEvent::NotJson(e.to_string()))?;
            let event_type = find_type(event_type, root, header)?;
            let find = |rule: &Rule| find_text(rule, root, header);
            Ok(Fields {
                id: find(id).unwrap_or_else(|| coordinates_id(coords)),
                event_type,
                device: find(device),
                group: find(group),
                tenant: find(tenant),
                time_ms: find_time(time, root, header),
                body_pointer: *body_pointer,
            })
        })
    }
}

fn scalar_text(v: simd_json::tape::Value<'_, '_>) -> Option<String> {
    if let Some(s) = v.as_str() {
        return (!s.is_empty()).then(|| s.to_string());
    }
    if let Some(i) = v.as_i64() {
        return Some(i.to_string());
    }
    if let Some(u) = v.as_u64() {
        return Some(u.to_string());
    }
    if let Some(f) = v.as_f64() {
        return Some(f.to_string());
    }
    v.as_bool().map(|b| b.to_string())
}

/// The event type: the first alternative of `rule` that holds a non-empty
/// string (a JSON `null` or `""` counts as absent). A value of another kind
/// is an invalid event, not text.
fn find_type<'h>(
    rule: &Rule,
    root: simd_json::tape::Value<'_, '_>,
    header: &dyn Fn(&str) -> Option<&'h [u8]>,
) -> Result<String, InvalidEvent> {
    for alt in &rule.0 {
        let text = match &alt.locator {
            Locator::Pointer(tokens) => match lookup(root, tokens) {
                None => None,
                Some(v) if v.is_null() => None,
                Some(v) => match v.as_str() {
                    Some(s) => (!s.is_empty()).then(|| s.to_string()),
                    None => {
                        let found = if v.is_bool() {
                            "a boolean"
                        } else if v.is_number() {
                            "a number"
                        } else if v.is_array() {
                            "an array"
                        } else {
                            "an object"
                        };
                        return Err(InvalidEvent::TypeNotString {
                            at: format!("/{}", tokens.join("/")),
                            found,
                        });
                    }
                },
            },
            Locator::Header(name) => header(name)
                .and_then(|v| std::str::from_utf8(v).ok())
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            Locator::Literal(l) => Some((*l).to_string()),
        };
        if let Some(text) = text {
            return Ok(if alt.prefix.is_empty() {
                text
            } else {
                format!("{}{}", alt.prefix, text)
            });
        }
    }
    Err(InvalidEvent::NoType(rule.describe()))
}

fn find_text<'h>(
    rule: &Rule,
    root: simd_json::tape::Value<'_, '_>,
    header: &dyn Fn(&str) -> Option<&'h [u8]>,
) -> Option<String> {
    rule.0.iter().find_map(|alt| {
        let text = match &alt.locator {
            Locator::Pointer(tokens) => lookup(root, tokens).and_then(scalar_text),
            Locator::Header(name) => header(name)
                .and_then(|v| std::str::from_utf8(v).ok())
                .filter(|s| !s.is_empty())
                .map(str::to_string),
            Locator::Literal(l) => Some((*l).to_string()),
        }?;
        Some(if alt.prefix.is_empty() {
            text
        } else {
            format!("{}{}", alt.prefix, text)
        })
    })
}

fn find_time<'h>(
    rule: &Rule,
    root: simd_json::tape::Value<'_, '_>,
    header: &dyn Fn(&str) -> Option<&'h [u8]>,
) -> Option<i64> {
    rule.0.iter().find_map(|alt| match &alt.locator {
        Locator::Pointer(tokens) => {
            let v = lookup(root, tokens)?;
            if let Some(s) = v.as_str() {
                parse_time_text(s)
            } else {
                v.as_i64()
                    .or_else(|| v.as_u64().and_then(|u| i64::try_from(u).ok()))
                    .map(epoch_to_millis)
            }
        }
        Locator::Header(name) => header(name)
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(parse_time_text),
        Locator::Literal(_) => None,
    })
}

/// RFC 3339 text, or a number of seconds/ms/µs/ns since the epoch.
fn parse_time_text(s: &str) -> Option<i64> {
    if let Ok(n) = s.parse::<i64>() {
        return Some(epoch_to_millis(n));
    }
    let t = humantime::parse_rfc3339_weak(s).ok()?;
    let d = t.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(d.as_millis()).ok()
}

/// Guesses the unit of an epoch number from its magnitude.
fn epoch_to_millis(n: i64) -> i64 {
    match n.unsigned_abs() {
        x if x >= 100_000_000_000_000_000 => n / 1_000_000,
        x if x >= 100_000_000_000_000 => n / 1_000,
        x if x >= 100_000_000_000 => n,
        _ => n.saturating_mul(1_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COORDS: Coordinates<'static> = Coordinates {
        topic: "device-events",
        partition: 3,
        offset: 42,
    };

    fn no_headers(_: &str) -> Option<&'static [u8]> {
        None
    }

    fn run(preset: Preset, body: &str) -> Fields {
        Extractor::preset(preset)
            .extract(body.as_bytes(), &no_headers, &COORDS, 1 << 20)
            .unwrap()
    }

    fn sample(name: &str) -> &'static str {
        crate::samples::SAMPLES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, body)| *body)
            .unwrap()
    }

    #[test]
    fn mender_samples() {
        let e = run(Preset::Mender, sample("mender-device-provisioned.json"));
        assert_eq!(e.id, "5a0c6a0e-7d2b-4a53-9a6e-1d2f8c9b0a11");
        assert_eq!(e.event_type, "device-provisioned");
        assert_eq!(
            e.device.as_deref(),
            Some("769e5a83-259c-4506-ab05-9c2564f196fd")
        );
        assert_eq!(e.time_ms, Some(1_663_063_427_746));
        let e = run(
            Preset::Mender,
            sample("mender-devices-inventory-changed.json"),
        );
        assert_eq!(e.event_type, "devices-inventory-changed");
        assert_eq!(
            e.device.as_deref(),
            Some("1c251e63-ca93-41e2-ae39-97f402d93dd3")
        );
        assert_eq!(e.tenant.as_deref(), Some("66ff8a4650829de3d99a25f1"));
        let e = run(Preset::Mender, sample("mender-device-decommissioned.json"));
        assert_eq!(e.event_type, "device-decommissioned");
        assert_eq!(e.tenant, None);
        let e = run(Preset::Mender, sample("mender-device-status-changed.json"));
        assert_eq!(e.id, "e57adf60-5d8c-4c66-802a-e0c5f643102a");
    }

    #[test]
    fn openmdm_samples() {
        let e = run(Preset::Openmdm, sample("openmdm-device-enrolled.json"));
        assert_eq!(e.id, "7f3e9c20-9a8f-4e2a-8e29-4b5f0a3c0d10");
        assert_eq!(e.event_type, "device.enrolled");
        assert_eq!(e.device.as_deref(), Some("dev_123"));
        assert_eq!(e.time_ms, Some(1_776_254_400_000));
        let e = run(Preset::Openmdm, sample("openmdm-security-tamper.json"));
        assert_eq!(e.event_type, "security.tamper");
        let e = run(
            Preset::Openmdm,
            r#"{"id":"x","event":"a.b","data":{"deviceId":"d9"}}"#,
        );
        assert_eq!(e.device.as_deref(), Some("d9"));
    }

    #[test]
    fn magistrala_sample_uses_subtopic_and_coordinate_id() {
        let e = run(Preset::Magistrala, sample("magistrala-message.json"));
        assert_eq!(e.event_type, "temperature");
        assert_eq!(
            e.device.as_deref(),
            Some("a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d")
        );
        assert_eq!(e.id, coordinates_id(&COORDS));
        assert_eq!(e.time_ms, Some(1_776_254_400_000));
        let e = run(Preset::Magistrala, r#"{"publisher":"p","created":1}"#);
        assert_eq!(e.event_type, "message.published");
    }

    #[test]
    fn cmdb_sample_prefixes_the_event() {
        let e = run(Preset::Cmdb, sample("cmdb-object-updated.json"));
        assert_eq!(e.event_type, "update");
        assert_eq!(e.device.as_deref(), Some("4711"));
        assert_eq!(e.id, coordinates_id(&COORDS));
        assert_eq!(e.time_ms, Some(1_776_255_000_000));
    }

    #[test]
    fn cloudevents_headers_win_over_body() {
        let body =
            r#"{"id":"body-id","type":"body.type","subject":"s1","time":"2026-01-01T00:00:00Z"}"#;
        let e = run(Preset::Cloudevents, body);
        assert_eq!(
            (e.id.as_str(), e.event_type.as_str()),
            ("body-id", "body.type")
        );
        assert_eq!(e.device.as_deref(), Some("s1"));
        fn headers(name: &str) -> Option<&'static [u8]> {
            match name {
                "ce_id" => Some(b"hdr-id"),
                "ce_type" => Some(b"com.fleet.device.enrolled"),
                "ce_subject" => Some(b"dev-7"),
                _ => None,
            }
        }
        let e = Extractor::preset(Preset::Cloudevents)
            .extract(body.as_bytes(), &headers, &COORDS, 1 << 20)
            .unwrap();
        assert_eq!(e.id, "hdr-id");
        assert_eq!(e.event_type, "com.fleet.device.enrolled");
        assert_eq!(e.device.as_deref(), Some("dev-7"));
    }

    #[test]
    fn custom_pointers_and_headers() {
        let source = SourceConfig {
            topic: "t".into(),
            preset: Preset::Custom,
            id: Some("/meta/uuid".into()),
            event_type: Some("header:kind".into()),
            device: Some("/devices/0/sn".into()),
            group: Some("/a~1b".into()),
            tenant: None,
            time: Some("/ts".into()),
        };
        let mut ex = Extractor::from_config(&source).unwrap();
        fn headers(name: &str) -> Option<&'static [u8]> {
            (name == "kind").then_some(b"custom.kind")
        }
        let body = r#"{"meta":{"uuid":"u1"},"devices":[{"sn":"SN1"}],"a/b":"g1","ts":1700000000}"#;
        let e = ex
            .extract(body.as_bytes(), &headers, &COORDS, 1 << 20)
            .unwrap();
        assert_eq!(e.id, "u1");
        assert_eq!(e.event_type, "custom.kind");
        assert_eq!(e.device.as_deref(), Some("SN1"));
        assert_eq!(e.group.as_deref(), Some("g1"));
        assert_eq!(e.time_ms, Some(1_700_000_000_000));
    }

    #[test]
    fn group_comes_from_the_record_header_by_default() {
        fn headers(name: &str) -> Option<&'static [u8]> {
            (name == "group").then_some(b"fleet-eu")
        }
        let e = Extractor::preset(Preset::Mender)
            .extract(br#"{"type":"x"}"#, &headers, &COORDS, 1 << 20)
            .unwrap();
        assert_eq!(e.group.as_deref(), Some("fleet-eu"));
    }

    #[test]
    fn custom_without_type_is_a_config_error() {
        let source = SourceConfig::for_preset("t", Preset::Custom);
        assert_eq!(Extractor::from_config(&source).unwrap_err().0, "type");
        let bad = SourceConfig {
            event_type: Some("type".into()),
            ..source
        };
        assert_eq!(Extractor::from_config(&bad).unwrap_err().0, "type");
    }

    #[test]
    fn invalid_events_say_why() {
        let mut ex = Extractor::preset(Preset::Mender);
        let go =
            |ex: &mut Extractor, b: &[u8]| ex.extract(b, &no_headers, &COORDS, 64).unwrap_err();
        assert_eq!(go(&mut ex, b""), InvalidEvent::Empty);
        assert!(matches!(
            go(&mut ex, b"{not json"),
            InvalidEvent::NotJson(_)
        ));
        assert_eq!(
            go(&mut ex, br#"{"id":"1"}"#),
            InvalidEvent::NoType("/type".into())
        );
        assert!(matches!(
            go(&mut ex, &[b' '; 65]),
            InvalidEvent::TooLarge { size: 65, max: 64 }
        ));
    }

    #[test]
    fn a_type_that_is_not_a_string_is_invalid() {
        let mut ex = Extractor::preset(Preset::Mender);
        let go =
            |ex: &mut Extractor, b: &str| ex.extract(b.as_bytes(), &no_headers, &COORDS, 1 << 20);
        for (body, found) in [
            (r#"{"id":"1","type":42}"#, "a number"),
            (r#"{"id":"1","type":4.5}"#, "a number"),
            (r#"{"id":"1","type":true}"#, "a boolean"),
            (r#"{"id":"1","type":["a"]}"#, "an array"),
            (r#"{"id":"1","type":{"a":"b"}}"#, "an object"),
        ] {
            let invalid = go(&mut ex, body).unwrap_err();
            assert_eq!(
                invalid,
                InvalidEvent::TypeNotString {
                    at: "/type".into(),
                    found
                },
                "{body}"
            );
            assert_eq!(
                invalid.to_string(),
                format!("the event type at /type is {found}, not a string")
            );
        }
        // Absent, null or empty: no type.
        for body in [
            r#"{"id":"1"}"#,
            r#"{"id":"1","type":null}"#,
            r#"{"id":"1","type":""}"#,
        ] {
            assert_eq!(
                go(&mut ex, body).unwrap_err(),
                InvalidEvent::NoType("/type".into()),
                "{body}"
            );
        }
        // A string type is what the platforms send: kept as it is.
        assert_eq!(go(&mut ex, r#"{"type":"42"}"#).unwrap().event_type, "42");
        // Every preset: OpenMDM's `event`, CloudEvents' body `type`, CMDB's
        // `event`, Magistrala's `subtopic` (a null one falls back to its
        // default type).
        for (preset, body, at) in [
            (Preset::Openmdm, r#"{"event":7}"#, "/event"),
            (Preset::Cloudevents, r#"{"type":false}"#, "/type"),
            (Preset::Cmdb, r#"{"event":1}"#, "/event"),
            (Preset::Magistrala, r#"{"subtopic":1}"#, "/subtopic"),
        ] {
            let invalid = Extractor::preset(preset)
                .extract(body.as_bytes(), &no_headers, &COORDS, 1 << 20)
                .unwrap_err();
            assert!(
                matches!(&invalid, InvalidEvent::TypeNotString { at: a, .. } if a == at),
                "{preset:?}: {invalid:?}"
            );
        }
        let e = run(Preset::Magistrala, r#"{"subtopic":null,"publisher":"p"}"#);
        assert_eq!(e.event_type, "message.published");
    }

    #[test]
    fn the_original_bytes_are_untouched() {
        let body = br#"{"type":"a\"b","id":"x\u0041"}"#.to_vec();
        let copy = body.clone();
        let e = Extractor::preset(Preset::Mender)
            .extract(&body, &no_headers, &COORDS, 1 << 20)
            .unwrap();
        assert_eq!(e.event_type, "a\"b");
        assert_eq!(e.id, "xA");
        assert_eq!(body, copy);
    }

    /// Every file in the shared sample folder extracts with the preset its
    /// name starts with (runs when `../shared` is beside the checkout), and the
    /// copies built into the binary are identical to it.
    #[test]
    fn every_shared_sample_extracts() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/sample-events");
        let mut files: Vec<(String, String)> = match std::fs::read_dir(&dir) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .map(|e| {
                    let name = e.file_name().to_string_lossy().to_string();
                    (name, std::fs::read_to_string(e.path()).unwrap())
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        for (name, body) in &files {
            let embedded = sample(name);
            assert_eq!(
                embedded.trim(),
                body.trim(),
                "{name} differs from the built-in copy"
            );
        }
        if files.is_empty() {
            files = crate::samples::SAMPLES
                .iter()
                .map(|(n, b)| (n.to_string(), b.to_string()))
                .collect();
        }
        assert_eq!(files.len(), 8);
        for (name, body) in files {
            let preset = match name.split('-').next().unwrap() {
                "mender" => Preset::Mender,
                "openmdm" => Preset::Openmdm,
                "magistrala" => Preset::Magistrala,
                "cmdb" => Preset::Cmdb,
                other => panic!("no preset for {other}"),
            };
            let e = run(preset, &body);
            assert!(!e.event_type.is_empty() && !e.id.is_empty(), "{name}");
            assert!(e.device.is_some(), "{name} has a device");
            assert!(e.time_ms.is_some(), "{name} has a time");
        }
    }
}
