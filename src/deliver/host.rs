//! Requests in flight per destination host, shared by every endpoint that
//! sends there.
//!
//! Endpoint limits (`max_concurrency`) bound each endpoint; this bounds a
//! host that many endpoints point at (100 000 device endpoints on one
//! receiver must not open 100 000 connections to it). Owns the map from
//! origin to semaphore only; it is consulted when a sender is made or its
//! endpoint changes, never per request.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Semaphore;
use url::Url;

/// One semaphore per origin (`scheme://host:port`), alive while a sender
/// holds it.
#[derive(Debug)]
pub struct HostLimits {
    per_host: usize,
    hosts: Mutex<HashMap<String, Weak<Semaphore>>>,
}

impl HostLimits {
    /// Limits of `per_host` requests in flight to each origin.
    pub fn new(per_host: usize) -> Self {
        Self {
            per_host: per_host.max(1),
            hosts: Mutex::new(HashMap::new()),
        }
    }

    /// The semaphore of `url`'s origin, shared with every sender to it.
    pub fn slots_for(&self, url: &Url) -> Arc<Semaphore> {
        let origin = url.origin().ascii_serialization();
        let mut hosts = crate::core::lock(&self.hosts);
        if let Some(slots) = hosts.get(&origin).and_then(Weak::upgrade) {
            return slots;
        }
        // Forget origins nobody sends to any more before adding one.
        hosts.retain(|_, slots| slots.strong_count() > 0);
        let slots = Arc::new(Semaphore::new(self.per_host));
        hosts.insert(origin, Arc::downgrade(&slots));
        slots
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    #[test]
    fn endpoints_on_one_origin_share_its_slots() {
        let limits = HostLimits::new(4);
        let a = limits.slots_for(&url("https://hooks.example.com/a"));
        let b = limits.slots_for(&url("https://hooks.example.com:443/b?x=1"));
        assert!(Arc::ptr_eq(&a, &b), "same scheme, host and port");
        assert_eq!(a.available_permits(), 4);
        let other_port = limits.slots_for(&url("https://hooks.example.com:8443/a"));
        let other_host = limits.slots_for(&url("https://other.example.com/a"));
        let plain = limits.slots_for(&url("http://hooks.example.com/a"));
        for s in [&other_port, &other_host, &plain] {
            assert!(!Arc::ptr_eq(&a, s));
        }
    }

    #[test]
    fn an_origin_nobody_uses_is_forgotten() {
        let limits = HostLimits::new(2);
        let first = limits.slots_for(&url("http://127.0.0.1:9000/"));
        let _permit = first.try_acquire().unwrap();
        drop(_permit);
        drop(first);
        let again = limits.slots_for(&url("http://127.0.0.1:9000/"));
        assert_eq!(again.available_permits(), 2);
        assert_eq!(limits.hosts.lock().unwrap().len(), 1);
    }
}
