//! The endpoint index: which endpoints an event goes to, and the endpoint
//! set it is built from.
//!
//! This file owns matching ([`EndpointIndex`], pure, no I/O); [`endpoint`]
//! a validated endpoint (pure), [`egress`] its auth, TLS and proxy
//! settings (pure), [`registry`] the live snapshots,
//! [`activity`] each endpoint's attempt log, and [`store`] the one part
//! with I/O: the compacted endpoints topic every instance follows. A lookup never scans all endpoints:
//! endpoints are filed under their most selective restriction (device, then
//! group, then tenant, else unrestricted), and within that under their event
//! patterns: `*` in a list; up to eight exact types and prefix globs in a
//! slice compared one by one (a device's bucket holds one or two); beyond
//! that, exact types in a hash map and prefix globs in a hash map probed
//! once per distinct prefix length. A list whose endpoints
//! have no restriction beyond the bucket is copied whole; otherwise each
//! candidate is checked against its remaining restrictions.

pub mod activity;
pub mod attempt_lines;
pub mod attempt_log;
pub mod attempt_reader;
pub mod device_store;
pub mod devices;
pub mod egress;
pub mod endpoint;
pub mod filter;
pub mod registry;
pub mod store;

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Arc;

pub use endpoint::{Endpoint, FieldError, RouteKey};
pub use registry::EndpointRegistry;
pub use store::EndpointStore;

/// Position of an endpoint in an [`EndpointIndex`].
pub type Slot = u32;

/// Endpoints filed under one pattern of one restriction bucket, with what
/// a lookup must still do for them.
#[derive(Debug, Default)]
struct SlotList {
    slots: Vec<Slot>,
    /// Some endpoint here has several patterns (it may be visited twice).
    overlapping: bool,
    /// Some endpoint here has restrictions beyond the bucket it is filed
    /// under, so each slot must be checked; otherwise the whole list matches.
    filtered: bool,
}

impl SlotList {
    fn push(&mut self, slot: Slot, overlapping: bool, filtered: bool) {
        self.slots.push(slot);
        self.overlapping |= overlapping;
        self.filtered |= filtered;
    }
}

/// How an endpoint is filed: its slot and what a lookup must know about it.
#[derive(Debug, Clone, Copy)]
struct Filing {
    slot: Slot,
    overlapping: bool,
    filtered: bool,
}

/// Patterns of one restriction bucket. Most buckets (one per device of
/// 100 000 device endpoints) hold a single endpoint with one or two
/// patterns, so the wildcard list is a box of its own, a few typed patterns sit in
/// one boxed slice scanned in order, and only a bucket with more than
/// [`SCAN_PATTERNS`] of them gets hash maps.
#[derive(Debug, Default)]
struct TypeTable {
    /// Endpoints of `*` (boxed: a device's bucket rarely has one).
    wildcard: Option<Box<SlotList>>,
    typed: Typed,
}

/// Typed patterns (exact and prefix) of one bucket, shaped by how many.
#[derive(Debug, Default)]
enum Typed {
    #[default]
    None,
    /// At most [`SCAN_PATTERNS`], compared one by one.
    Few(Box<[Pattern]>),
    /// More: looked up by hash.
    Many(Box<PatternMaps>),
}

/// Up to this many typed patterns a bucket scans: cheaper in memory than
/// two hash maps (about 300 bytes less for a device's bucket) and as fast
/// for a handful of short comparisons.
const SCAN_PATTERNS: usize = 8;

/// One typed pattern of a small bucket.
#[derive(Debug)]
struct Pattern {
    /// As written: an exact type, or a `prefix*` glob (the `*` kept, so no
    /// flag beside it: 48 bytes, one size class below 56).
    text: Box<str>,
    list: SlotList,
}

impl Pattern {
    /// The prefix of a glob, `None` for an exact type.
    fn prefix(&self) -> Option<&str> {
        self.text.strip_suffix('*')
    }

    /// Whether this is the pattern `text` (a prefix when `prefix`).
    fn is(&self, text: &str, prefix: bool) -> bool {
        match self.prefix() {
            Some(p) => prefix && p == text,
            None => !prefix && *self.text == *text,
        }
    }

    fn admits(&self, event_type: &str) -> bool {
        match self.prefix() {
            Some(p) => event_type.starts_with(p),
            None => *self.text == *event_type,
        }
    }
}

/// The exact and prefix patterns of a large bucket.
#[derive(Debug, Default)]
struct PatternMaps {
    exact: HashMap<String, SlotList>,
    prefixes: HashMap<String, SlotList>,
    /// Distinct prefix lengths, ascending.
    prefix_lens: Vec<usize>,
}

impl PatternMaps {
    fn list(&mut self, text: &str, prefix: bool) -> &mut SlotList {
        if prefix {
            if let Err(pos) = self.prefix_lens.binary_search(&text.len()) {
                self.prefix_lens.insert(pos, text.len());
            }
            self.prefixes.entry(text.to_string()).or_default()
        } else {
            self.exact.entry(text.to_string()).or_default()
        }
    }
}

impl Typed {
    /// The list of pattern `text` (a prefix when `prefix`), made if new.
    fn list(&mut self, text: &str, prefix: bool) -> &mut SlotList {
        let at = self.make_room(text, prefix);
        match self {
            Typed::Many(maps) => maps.list(text, prefix),
            Typed::Few(few) if at < few.len() => &mut few[at].list,
            _ => unreachable!("make_room leaves the pattern at `at` or maps"),
        }
    }

    /// Gives the pattern a place: where a small bucket holds it (added
    /// if new), or, in a bucket that would grow past [`SCAN_PATTERNS`],
    /// hash maps (the returned position then means nothing).
    fn make_room(&mut self, text: &str, prefix: bool) -> usize {
        let same = |p: &Pattern| p.is(text, prefix);
        let mut few = match self {
            Typed::Many(_) => return 0,
            Typed::Few(few) => match few.iter().position(same) {
                Some(at) => return at,
                None => std::mem::take(few).into_vec(),
            },
            Typed::None => Vec::new(),
        };
        if few.len() < SCAN_PATTERNS {
            few.push(Pattern {
                text: if prefix {
                    format!("{text}*").into()
                } else {
                    text.into()
                },
                list: SlotList::default(),
            });
            let at = few.len() - 1;
            *self = Typed::Few(few.into_boxed_slice());
            return at;
        }
        let mut maps = PatternMaps::default();
        for p in few {
            let list = match p.prefix() {
                Some(prefix) => maps.list(prefix, true),
                None => maps.list(&p.text, false),
            };
            *list = p.list;
        }
        *self = Typed::Many(Box::new(maps));
        0
    }
}

impl TypeTable {
    fn insert(&mut self, pattern: &str, f: Filing) {
        let list = if pattern == "*" {
            self.wildcard.get_or_insert_with(Box::default)
        } else if let Some(prefix) = pattern.strip_suffix('*') {
            self.typed.list(prefix, true)
        } else {
            self.typed.list(pattern, false)
        };
        list.push(f.slot, f.overlapping, f.filtered);
    }

    fn candidates<'t>(&'t self, event_type: &str, mut visit: impl FnMut(&'t SlotList)) {
        if let Some(wildcard) = &self.wildcard {
            visit(wildcard);
        }
        match &self.typed {
            Typed::None => {}
            Typed::Few(few) => {
                for p in few.iter().filter(|p| p.admits(event_type)) {
                    visit(&p.list);
                }
            }
            Typed::Many(maps) => {
                if let Some(list) = maps.exact.get(event_type) {
                    visit(list);
                }
                for &len in &maps.prefix_lens {
                    if len > event_type.len() {
                        break;
                    }
                    if let Some(prefix) = event_type.get(..len)
                        && let Some(list) = maps.prefixes.get(prefix)
                    {
                        visit(list);
                    }
                }
            }
        }
    }
}

/// An immutable snapshot of all endpoints, built once and shared; changes
/// build a new snapshot.
#[derive(Debug, Default)]
pub struct EndpointIndex {
    endpoints: Vec<Arc<Endpoint>>,
    /// Slots by endpoint id: only the slot is stored, hashed and compared
    /// through the id its endpoint holds (no second copy of every id).
    by_id: hashbrown::HashTable<Slot>,
    /// Hashes the ids of `by_id`.
    ids: std::hash::RandomState,
    open: TypeTable,
    by_device: HashMap<Box<str>, TypeTable>,
    by_group: HashMap<Box<str>, TypeTable>,
    by_tenant: HashMap<Box<str>, TypeTable>,
}

impl EndpointIndex {
    /// Indexes `endpoints`. Disabled ones that keep their backlog match as
    /// enabled ones do (their deliveries then wait on a retry tier); the
    /// others (disabled after 410 Gone) are kept for lookups by id but
    /// never match.
    pub fn new(endpoints: Vec<Arc<Endpoint>>) -> Self {
        let mut index = Self {
            by_id: hashbrown::HashTable::with_capacity(endpoints.len()),
            ..Self::default()
        };
        let id_of = |slot: Slot| endpoints[slot as usize].config.id.as_str();
        for (slot, endpoint) in endpoints.iter().enumerate() {
            let slot = slot as Slot;
            // A later endpoint with the same id takes its place.
            let id = endpoint.config.id.as_str();
            let hash = index.ids.hash_one(id);
            match index.by_id.find_mut(hash, |s| id_of(*s) == id) {
                Some(earlier) => *earlier = slot,
                None => {
                    let ids = &index.ids;
                    index
                        .by_id
                        .insert_unique(hash, slot, |s| ids.hash_one(id_of(*s)));
                }
            }
            if !endpoint.config.takes_events() {
                continue;
            }
            let c = &endpoint.config;
            // Filed under its most selective restriction; the ones after it
            // are checked per lookup.
            let (buckets, filtered): (Vec<(u8, &str)>, bool) = if !c.devices.is_empty() {
                (
                    c.devices.iter().map(|d| (0u8, d.as_str())).collect(),
                    !c.groups.is_empty() || !c.tenant.is_empty(),
                )
            } else if !c.groups.is_empty() {
                (
                    c.groups.iter().map(|g| (1u8, g.as_str())).collect(),
                    !c.tenant.is_empty(),
                )
            } else if !c.tenant.is_empty() {
                (vec![(2u8, &*c.tenant)], false)
            } else {
                (vec![(3u8, "")], false)
            };
            let filing = Filing {
                slot,
                overlapping: endpoint.patterns().len() > 1,
                filtered,
            };
            for (kind, key) in buckets {
                let table = match kind {
                    0 => index.by_device.entry(key.into()).or_default(),
                    1 => index.by_group.entry(key.into()).or_default(),
                    2 => index.by_tenant.entry(key.into()).or_default(),
                    _ => &mut index.open,
                };
                for pattern in endpoint.patterns() {
                    table.insert(pattern, filing);
                }
            }
        }
        index.endpoints = endpoints;
        index
    }

    /// Number of endpoints (enabled or not).
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// True when there are no endpoints.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// The endpoint in `slot`.
    pub fn endpoint(&self, slot: Slot) -> &Arc<Endpoint> {
        &self.endpoints[slot as usize]
    }

    /// All endpoints, in slot order.
    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    /// The slot of the endpoint with `id`.
    pub fn slot_of(&self, id: &str) -> Option<Slot> {
        let hash = self.ids.hash_one(id);
        self.by_id
            .find(hash, |s| self.endpoints[*s as usize].config.id == id)
            .copied()
    }

    /// The endpoint with `id`, enabled or not.
    pub fn get(&self, id: &str) -> Option<&Arc<Endpoint>> {
        self.slot_of(id).map(|s| self.endpoint(s))
    }

    /// Fills `out` with the slots of every endpoint that takes events
    /// (enabled, or disabled keeping its backlog) the event goes to, each once, in ascending slot order when deduplication was needed.
    pub fn matches(&self, key: &RouteKey<'_>, out: &mut Vec<Slot>) {
        out.clear();
        let mut needs_dedup = false;
        let mut visit = |list: &SlotList| {
            needs_dedup |= list.overlapping;
            if list.filtered {
                out.extend(
                    list.slots
                        .iter()
                        .copied()
                        .filter(|&slot| self.endpoints[slot as usize].admits(key)),
                );
            } else {
                out.extend_from_slice(&list.slots);
            }
        };
        self.open.candidates(key.event_type, &mut visit);
        let buckets = [
            (key.device, &self.by_device),
            (key.group, &self.by_group),
            (key.tenant, &self.by_tenant),
        ];
        for (value, map) in buckets {
            if let Some(table) = value.and_then(|v| map.get(v)) {
                table.candidates(key.event_type, &mut visit);
            }
        }
        // An endpoint sits in one restriction dimension and an event has one
        // device, group and tenant, so only several patterns of one endpoint
        // can visit it twice.
        if needs_dedup {
            out.sort_unstable();
            out.dedup();
        }
    }
}

#[cfg(test)]
mod tests;
