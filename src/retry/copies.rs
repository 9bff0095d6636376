//! Copies on the retry tiers: the same delivery written to a tier twice.
//!
//! A tier record (or an input record) processed twice makes two children:
//! a partition handed to another member before its last offsets were
//! committed is read again from the committed offset, and everything it
//! had already deferred or scheduled for retry is written once more. Each
//! copy then lives on by itself, is deferred again whenever the endpoint's
//! circuit is open, and is finally delivered: one duplicate per copy,
//! however long the endpoint stays unwell.
//!
//! Every retry record carries its delivery's identity (source record and
//! endpoint) and its hop (how many times the delivery has been written to
//! a tier). Two records with the same identity and hop are copies of each
//! other. [`CopyFilter`] remembers the last [`CopyFilter::CAPACITY`] it let
//! through; the dispatcher settles a later copy without sending it. That is
//! safe because what this process lets through always reaches a durable
//! outcome while the process lives (and the memory dies with it): the
//! first copy is sent, deferred or dead-lettered, and until then its own
//! offset holds its partition's commits back.
//!
//! Pure: no Kafka, no clock.

use std::collections::{HashSet, VecDeque};
use std::hash::Hasher;

/// The identity of one delivery at one hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CopyKey(u128);

impl CopyKey {
    /// The key of the delivery of the record at `source`
    /// (`topic/partition/offset`) to `endpoint`, written to a tier for the
    /// `hop`-th time. 128 bits: two different deliveries share a key with
    /// a probability of about 2⁻¹¹⁰ per lookup at full capacity.
    pub fn new(source: &[u8], endpoint: &str, hop: u32) -> Self {
        let half = |seed: u64| {
            let mut h = Fnv1a64(0xcbf2_9ce4_8422_2325 ^ seed);
            // Lengths first, so that fields cannot run into each other.
            h.write(&(source.len() as u64).to_le_bytes());
            h.write(source);
            h.write(&(endpoint.len() as u64).to_le_bytes());
            h.write(endpoint.as_bytes());
            h.write(&hop.to_le_bytes());
            h.finish()
        };
        Self(u128::from(half(0)) << 64 | u128::from(half(0x9e37_79b9_7f4a_7c15)))
    }
}

/// FNV-1a, 64 bits, with a final mix.
struct Fnv1a64(u64);

impl Hasher for Fnv1a64 {
    fn finish(&self) -> u64 {
        // A final mix: FNV's low bits are weak for short inputs.
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

/// The tier deliveries this process let through lately.
#[derive(Debug)]
pub struct CopyFilter {
    seen: HashSet<CopyKey>,
    order: VecDeque<CopyKey>,
    capacity: usize,
}

impl Default for CopyFilter {
    fn default() -> Self {
        Self::with_capacity(Self::CAPACITY)
    }
}

impl CopyFilter {
    /// Keys remembered by default (about 5 MiB).
    pub const CAPACITY: usize = 131_072;

    /// A filter that remembers the last `capacity` keys (at least one).
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            seen: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// Whether `key` is met for the first time (then it is remembered); a
    /// `false` is a copy of a delivery let through before.
    pub fn first_sighting(&mut self, key: CopyKey) -> bool {
        if !self.seen.insert(key) {
            return false;
        }
        if self.order.len() == self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        self.order.push_back(key);
        true
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_record_of_the_same_delivery_and_hop_is_a_copy() {
        let mut f = CopyFilter::default();
        let a = CopyKey::new(b"device-events/3/1200", "analytics", 2);
        assert!(f.first_sighting(a));
        assert!(!f.first_sighting(a), "same source, endpoint and hop");
        assert!(!f.first_sighting(CopyKey::new(b"device-events/3/1200", "analytics", 2)));
    }

    #[test]
    fn the_next_hop_another_endpoint_or_another_record_is_not_a_copy() {
        let mut f = CopyFilter::default();
        assert!(f.first_sighting(CopyKey::new(b"t/0/1", "a", 1)));
        assert!(f.first_sighting(CopyKey::new(b"t/0/1", "a", 2)), "next hop");
        assert!(f.first_sighting(CopyKey::new(b"t/0/1", "b", 1)), "endpoint");
        assert!(f.first_sighting(CopyKey::new(b"t/0/2", "a", 1)), "record");
        assert!(
            f.first_sighting(CopyKey::new(b"t/1/1", "a", 1)),
            "partition"
        );
        // Fields are not run together: "t/0/1" + "1a" ≠ "t/0/11" + "a".
        assert_ne!(
            CopyKey::new(b"t/0/1", "1a", 1),
            CopyKey::new(b"t/0/11", "a", 1)
        );
    }

    #[test]
    fn only_the_last_capacity_keys_are_remembered() {
        let mut f = CopyFilter::with_capacity(3);
        let key = |i: u32| CopyKey::new(b"t/0/0", "a", i);
        for i in 0..3 {
            assert!(f.first_sighting(key(i)));
        }
        assert!(!f.first_sighting(key(0)));
        assert!(f.first_sighting(key(3)), "the oldest (0) is forgotten");
        assert_eq!(f.len(), 3);
        assert!(f.first_sighting(key(0)), "forgotten, so let through again");
        assert!(!f.first_sighting(key(3)));
    }

    #[test]
    fn the_two_halves_of_a_key_differ() {
        let k = CopyKey::new(b"device-events/0/7", "ep", 1);
        assert_ne!(k.0 >> 64, k.0 & u128::from(u64::MAX));
    }
}
