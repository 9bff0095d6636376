//! The device directory: which group (and tenant) each device belongs to,
//! learned from the events' extracted fields. hookstream has no things
//! service of its own; the directory stands in for one where an event
//! names a device but not its group (a Magistrala message names only its
//! publisher): the Mainflux routes show a thing's `group_id` from it, list
//! a group's webhooks through it, and group-scoped endpoints receive the
//! events of the group's devices.
//!
//! Pure bookkeeping, no I/O: changes learned here go to a sink (the
//! [`device_store`](super::device_store) writes them to the compacted
//! `<prefix>.devices` topic, which every instance follows and applies with
//! [`DeviceDirectory::apply`]). Bounded: at most [`MAX_DEVICES`] devices
//! (about 150 MiB at 36-byte ids); past it, devices not known yet are not
//! learned (counted in [`DeviceDirectory::refused`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{OnceLock, RwLock, RwLockReadGuard, RwLockWriteGuard};

use serde::{Deserialize, Serialize};

/// Devices the directory holds at most.
pub const MAX_DEVICES: usize = 1_000_000;

/// What the directory knows of one device.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeviceInfo {
    /// Its group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<Box<str>>,
    /// Its tenant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<Box<str>>,
}

/// Where learned changes go (the device store's producer).
pub type DeviceSink = Box<dyn Fn(&str, &DeviceInfo) + Send + Sync>;

/// Device → group and tenant.
#[derive(Default)]
pub struct DeviceDirectory {
    map: RwLock<HashMap<Box<str>, DeviceInfo>>,
    len: AtomicUsize,
    refused: AtomicU64,
    sink: OnceLock<DeviceSink>,
}

impl std::fmt::Debug for DeviceDirectory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceDirectory")
            .field("devices", &self.len())
            .finish_non_exhaustive()
    }
}

impl DeviceDirectory {
    fn read(&self) -> RwLockReadGuard<'_, HashMap<Box<str>, DeviceInfo>> {
        match self.map.read() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<Box<str>, DeviceInfo>> {
        match self.map.write() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Sends learned changes to `sink` from now on (set once).
    pub fn set_sink(&self, sink: DeviceSink) {
        let _ = self.sink.set(sink);
    }

    /// Devices known.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }

    /// Whether no device is known (one atomic load: the dispatcher asks
    /// for every event without a group).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Devices not learned because the directory was full.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// What is known of `device`.
    pub fn get(&self, device: &str) -> Option<DeviceInfo> {
        if self.is_empty() {
            return None;
        }
        self.read().get(device).cloned()
    }

    /// The group of `device`, if known.
    pub fn group_of(&self, device: &str) -> Option<String> {
        self.get(device)?.group.map(String::from)
    }

    /// The devices known to be in `group` (a scan: for the API, not per event).
    pub fn devices_in(&self, group: &str) -> Vec<String> {
        self.read()
            .iter()
            .filter(|(_, info)| info.group.as_deref() == Some(group))
            .map(|(device, _)| device.to_string())
            .collect()
    }

    /// Learns what an event says of `device`: a group or tenant it names
    /// that differs from what is known is stored and sent to the sink.
    /// Fields the event does not name keep what is known. Without a sink
    /// (no device store: `topics.devices_log = false`) nothing is learned.
    pub fn learn(&self, device: &str, group: Option<&str>, tenant: Option<&str>) {
        if (group.is_none() && tenant.is_none()) || self.sink.get().is_none() {
            return;
        }
        let merged = {
            let map = self.read();
            let known = map.get(device);
            let same = |new: Option<&str>, old: Option<&Box<str>>| {
                new.is_none() || new == old.map(|b| &**b)
            };
            if known
                .is_some_and(|k| same(group, k.group.as_ref()) && same(tenant, k.tenant.as_ref()))
            {
                return;
            }
            let old = known.cloned().unwrap_or_default();
            DeviceInfo {
                group: group.map(Box::from).or(old.group),
                tenant: tenant.map(Box::from).or(old.tenant),
            }
        };
        if self.apply(device, Some(merged.clone()))
            && let Some(sink) = self.sink.get()
        {
            sink(device, &merged);
        }
    }

    /// Stores (or with `None` forgets) what is known of `device`; returns
    /// whether it is stored (false when the directory is full).
    pub fn apply(&self, device: &str, info: Option<DeviceInfo>) -> bool {
        let mut map = self.write();
        match info {
            None => {
                if map.remove(device).is_some() {
                    self.len.fetch_sub(1, Ordering::Relaxed);
                }
                false
            }
            Some(info) => {
                if let Some(slot) = map.get_mut(device) {
                    *slot = info;
                    return true;
                }
                if map.len() >= MAX_DEVICES {
                    self.refused.fetch_add(1, Ordering::Relaxed);
                    return false;
                }
                map.insert(device.into(), info);
                self.len.fetch_add(1, Ordering::Relaxed);
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn learns_changes_once_and_keeps_what_an_event_does_not_name() {
        let d = DeviceDirectory::default();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&sent);
        d.set_sink(Box::new(move |dev, info| {
            s.lock().unwrap().push((dev.to_string(), info.clone()))
        }));
        assert!(d.is_empty() && d.group_of("t1").is_none());
        d.learn("t1", Some("g1"), None);
        d.learn("t1", Some("g1"), None);
        d.learn("t1", None, Some("acme"));
        d.learn("t1", None, None);
        assert_eq!(d.group_of("t1").as_deref(), Some("g1"));
        assert_eq!(d.get("t1").unwrap().tenant.as_deref(), Some("acme"));
        assert_eq!(sent.lock().unwrap().len(), 2, "only changes are sent");
        d.learn("t2", Some("g1"), None);
        let unsunk = DeviceDirectory::default();
        unsunk.learn("t1", Some("g1"), None);
        assert!(unsunk.is_empty(), "nothing learned without a device store");
        let mut in_g1 = d.devices_in("g1");
        in_g1.sort();
        assert_eq!(in_g1, ["t1", "t2"]);
        d.apply("t2", None);
        assert_eq!(d.len(), 1);
    }
}
