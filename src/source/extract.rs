//! Field extraction: which id, type, device, group, tenant and time an event
//! has, by preset (SPEC §3) or by custom JSON pointers and record headers.
//!
//! Pure: bytes and headers in, [`Fields`] out. Parsing uses simd-json's
//! tape with reused buffers; the original bytes are never modified (a scratch
//! copy is parsed), because they are what gets signed and sent.

pub use crate::config::Preset;
pub use crate::core::{Fields, InvalidEvent};
use simd_json::prelude::{TypedScalarValue, ValueAsScalar, ValueIntoString};
use std::borrow::Cow;

use crate::core::FieldTexts;
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
            let id = find(id).unwrap_or_else(|| Cow::Owned(coordinates_id(coords)));
            Ok(Fields::new(
                FieldTexts {
                    id: &id,
                    event_type: &event_type,
                    device: find(device).as_deref(),
                    group: find(group).as_deref(),
                    tenant: find(tenant).as_deref(),
                },
                find_time(time, root, header),
                *body_pointer,
            ))
        })
    }
}

/// A scalar's text: a string borrowed from the event, a number or a
/// boolean written out.
fn scalar_text<'a>(v: simd_json::tape::Value<'_, 'a>) -> Option<Cow<'a, str>> {
    if let Some(s) = v.into_string() {
        return (!s.is_empty()).then_some(Cow::Borrowed(s));
    }
    if let Some(i) = v.as_i64() {
        return Some(Cow::Owned(i.to_string()));
    }
    if let Some(u) = v.as_u64() {
        return Some(Cow::Owned(u.to_string()));
    }
    if let Some(f) = v.as_f64() {
        return Some(Cow::Owned(f.to_string()));
    }
    v.as_bool().map(|b| Cow::Owned(b.to_string()))
}

/// `text` behind `prefix` (borrowed as it is without one).
fn prefixed<'a>(prefix: &str, text: Cow<'a, str>) -> Cow<'a, str> {
    if prefix.is_empty() {
        text
    } else {
        Cow::Owned(format!("{prefix}{text}"))
    }
}

/// The event type: the first alternative of `rule` that holds a non-empty
/// string (a JSON `null` or `""` counts as absent). A value of another kind
/// is an invalid event, not text.
fn find_type<'a, 'h: 'a>(
    rule: &Rule,
    root: simd_json::tape::Value<'_, 'a>,
    header: &dyn Fn(&str) -> Option<&'h [u8]>,
) -> Result<Cow<'a, str>, InvalidEvent> {
    for alt in &rule.0 {
        let text = match &alt.locator {
            Locator::Pointer(tokens) => match lookup(root, tokens) {
                None => None,
                Some(v) if v.is_null() => None,
                Some(v) => match v.into_string() {
                    Some(s) => (!s.is_empty()).then_some(Cow::Borrowed(s)),
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
            Locator::Header(name) => header_text(header, name),
            Locator::Literal(l) => Some(Cow::Borrowed(*l)),
        };
        if let Some(text) = text {
            return Ok(prefixed(alt.prefix, text));
        }
    }
    Err(InvalidEvent::NoType(rule.describe()))
}

/// Header `name`'s value as text, when it is non-empty UTF-8.
fn header_text<'h>(header: &dyn Fn(&str) -> Option<&'h [u8]>, name: &str) -> Option<Cow<'h, str>> {
    header(name)
        .and_then(|v| std::str::from_utf8(v).ok())
        .filter(|s| !s.is_empty())
        .map(Cow::Borrowed)
}

fn find_text<'a, 'h: 'a>(
    rule: &Rule,
    root: simd_json::tape::Value<'_, 'a>,
    header: &dyn Fn(&str) -> Option<&'h [u8]>,
) -> Option<Cow<'a, str>> {
    rule.0.iter().find_map(|alt| {
        let text = match &alt.locator {
            Locator::Pointer(tokens) => lookup(root, tokens).and_then(scalar_text),
            Locator::Header(name) => header_text(header, name),
            Locator::Literal(l) => Some(Cow::Borrowed(*l)),
        }?;
        Some(prefixed(alt.prefix, text))
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
mod tests;
