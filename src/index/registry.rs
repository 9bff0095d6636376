//! The live endpoint set: an [`EndpointIndex`] snapshot swapped atomically
//! when endpoints change, so lookups never wait for a writer.
//!
//! Owns the current snapshot and its version; writers (config seeding, the
//! management API, the endpoint-store follower) replace endpoints here and
//! the dispatcher picks the new snapshot up on its next record. Also keeps
//! each endpoint's activity log, which outlives snapshot swaps, and the
//! device directory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

use super::{Endpoint, EndpointIndex};
use crate::index::activity::{EndpointActivity, RETAINED_RECORDS, RecordBudget};
use crate::index::devices::DeviceDirectory;

/// The live set of endpoints.
#[derive(Debug)]
pub struct EndpointRegistry {
    current: ArcSwap<EndpointIndex>,
    version: AtomicU64,
    /// Serialises writers (readers never take it).
    write: Mutex<()>,
    activity: Mutex<HashMap<String, Arc<EndpointActivity>>>,
    /// Attempt records all activity logs may keep together.
    records: Arc<RecordBudget>,
    /// Device → group and tenant, learned from events.
    devices: Arc<DeviceDirectory>,
}

impl EndpointRegistry {
    /// A registry holding `endpoints`.
    pub fn new(endpoints: Vec<Arc<Endpoint>>) -> Arc<Self> {
        let registry = Arc::new(Self {
            current: ArcSwap::from_pointee(EndpointIndex::new(Vec::new())),
            version: AtomicU64::new(0),
            write: Mutex::new(()),
            activity: Mutex::new(HashMap::new()),
            records: RecordBudget::new(RETAINED_RECORDS),
            devices: Arc::default(),
        });
        registry.replace_all(endpoints);
        registry
    }

    /// The device directory (device → group and tenant).
    pub fn devices(&self) -> &Arc<DeviceDirectory> {
        &self.devices
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<EndpointIndex> {
        self.current.load_full()
    }

    /// Bumped on every change.
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }

    fn publish(&self, endpoints: Vec<Arc<Endpoint>>) {
        let index = EndpointIndex::new(endpoints);
        let enabled = index
            .endpoints()
            .iter()
            .filter(|e| e.config.enabled)
            .count();
        crate::metrics::endpoints(enabled, index.len() - enabled);
        self.current.store(Arc::new(index));
        self.version.fetch_add(1, Ordering::AcqRel);
    }

    /// Replaces every endpoint.
    pub fn replace_all(&self, endpoints: Vec<Arc<Endpoint>>) {
        let _w = self.write.lock();
        self.publish(endpoints);
    }

    /// Adds or replaces endpoints by id, in one swap.
    pub fn upsert(&self, changed: Vec<Arc<Endpoint>>) {
        let _w = self.write.lock();
        let current = self.snapshot();
        let mut endpoints: Vec<Arc<Endpoint>> = current.endpoints().to_vec();
        for endpoint in changed {
            match current.slot_of(endpoint.id()) {
                Some(slot) => endpoints[slot as usize] = endpoint,
                None => endpoints.push(endpoint),
            }
        }
        self.publish(endpoints);
    }

    /// Removes endpoints by id; returns how many existed.
    pub fn remove(&self, ids: &[&str]) -> usize {
        let _w = self.write.lock();
        let current = self.snapshot();
        let before = current.len();
        let endpoints: Vec<Arc<Endpoint>> = current
            .endpoints()
            .iter()
            .filter(|e| !ids.contains(&e.id()))
            .cloned()
            .collect();
        let removed = before - endpoints.len();
        if removed > 0 {
            self.publish(endpoints);
            // A deleted endpoint's log goes with it (a sender finishing its
            // queue keeps its own handle until then).
            let mut map = crate::core::lock(&self.activity);
            for id in ids {
                map.remove(*id);
            }
            crate::metrics::forget_endpoints(ids);
        }
        removed
    }

    /// The activity log of `id` (created on first use).
    pub fn activity(&self, id: &str) -> Arc<EndpointActivity> {
        let mut map = crate::core::lock(&self.activity);
        let activity = map
            .entry(id.to_string())
            .or_insert_with(|| Arc::new(EndpointActivity::new(Arc::clone(&self.records))));
        Arc::clone(activity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EndpointConfig;
    use std::time::Duration;

    fn ep(id: &str, events: &[&str]) -> Arc<Endpoint> {
        let mut c = EndpointConfig::new(id, "https://hooks.example.com/");
        c.events = events.iter().map(|s| s.to_string()).collect();
        Arc::new(Endpoint::build(c, false, Duration::from_secs(1), &|_| None).unwrap())
    }

    #[test]
    fn writes_swap_the_snapshot_and_bump_the_version() {
        let r = EndpointRegistry::new(vec![ep("a", &["x"])]);
        let v0 = r.version();
        let before = r.snapshot();
        r.upsert(vec![ep("b", &["x"]), ep("a", &["y"])]);
        assert!(r.version() > v0);
        assert_eq!(before.len(), 1, "readers keep their snapshot");
        let now = r.snapshot();
        assert_eq!(now.len(), 2);
        assert_eq!(now.get("a").unwrap().config.events, ["y"]);
        assert_eq!(r.remove(&["a", "zz"]), 1);
        assert!(r.snapshot().get("a").is_none());
        assert_eq!(r.remove(&["zz"]), 0);
    }

    #[test]
    fn activity_outlives_snapshots() {
        let r = EndpointRegistry::new(vec![ep("a", &["x"])]);
        let a1 = r.activity("a");
        r.upsert(vec![ep("a", &["y"])]);
        assert!(Arc::ptr_eq(&a1, &r.activity("a")));
    }
}
