//! The endpoint store's follower: reads `<prefix>.endpoints` from the
//! beginning and applies every record to the instance's registry, in
//! order, in swaps; ends secret-rotation grace periods when they are over.
//! Writes nothing to the topic (the store in [`super`] does).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::FutureExt as _;
use rdkafka::consumer::StreamConsumer;
use rdkafka::message::{BorrowedMessage, Message};
use tokio::sync::watch;

use super::{BuildSettings, SYNC_KEY};
use crate::config::EndpointConfig;
use crate::core::lock;
use crate::index::{Endpoint, EndpointRegistry};

/// Records applied to the registry in one swap at most, while it holds
/// fewer than `MAX_BATCH * SWAP_GROWTH` endpoints (see [`swap_limit`]).
const MAX_BATCH: usize = 1000;
/// A swap may add one endpoint per this many the registry holds.
const SWAP_GROWTH: usize = 8;
/// How often the follower looks for rotation grace periods that ended.
const EXPIRY_TICK: Duration = Duration::from_secs(1);

/// One record of the topic, owned.
#[derive(Debug)]
enum Change {
    /// An endpoint's new settings.
    Put(Box<EndpointConfig>),
    /// A tombstone.
    Delete,
    /// A value that is not an endpoint (logged, skipped).
    Unreadable,
}

/// Records read in one go, folded by id (the last one wins).
#[derive(Debug, Default)]
struct Batch {
    changes: HashMap<String, Change>,
    order: Vec<String>,
    next_offset: i64,
    records: usize,
}

impl Batch {
    fn add(&mut self, m: &BorrowedMessage<'_>) {
        self.records += 1;
        self.next_offset = self.next_offset.max(m.offset() + 1);
        let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
            tracing::warn!(
                offset = m.offset(),
                "endpoint record without a UTF-8 key: skipped"
            );
            return;
        };
        if key == SYNC_KEY {
            return;
        }
        let change = match m.payload() {
            None => Change::Delete,
            Some(bytes) => match serde_json::from_slice::<EndpointConfig>(bytes) {
                Ok(config) if config.id == key => Change::Put(Box::new(config)),
                Ok(_) => {
                    tracing::warn!(endpoint = %key, offset = m.offset(), "endpoint record whose id differs from its key: skipped");
                    Change::Unreadable
                }
                Err(e) => {
                    // serde_json's message names the place, never the value.
                    tracing::warn!(endpoint = %key, offset = m.offset(), error = %e, "unreadable endpoint record: skipped");
                    Change::Unreadable
                }
            },
        };
        if !self.changes.contains_key(key) {
            self.order.push(key.to_string());
        }
        self.changes.insert(key.to_string(), change);
    }

    /// Applies the batch to `registry` (at most two swaps).
    fn apply(
        self,
        registry: &EndpointRegistry,
        build: BuildSettings,
        known: &Mutex<HashSet<String>>,
    ) {
        let mut upserts = Vec::new();
        let mut removes = Vec::new();
        let mut changes = self.changes;
        for id in &self.order {
            match changes.remove(id) {
                Some(Change::Put(config)) => match build.build(*config) {
                    Ok(endpoint) => upserts.push(Arc::new(endpoint)),
                    Err(e) => tracing::warn!(
                        endpoint = %id,
                        field = %e.field,
                        problem = %e.message,
                        "stored endpoint is not valid here: keeping the previous version"
                    ),
                },
                Some(Change::Delete) => removes.push(id.as_str()),
                Some(Change::Unreadable) | None => {}
            }
        }
        {
            let mut known = lock(known);
            known.extend(self.order.iter().cloned());
        }
        if !upserts.is_empty() {
            registry.upsert(upserts);
        }
        if !removes.is_empty() {
            registry.remove(&removes);
        }
    }
}

/// Records one swap may apply to a registry of `len` endpoints. Each swap
/// rebuilds the whole index, so a fixed limit would make loading a large
/// store quadratic (100 000 endpoints: 100 rebuilds, and the memory each
/// leaves freed); growing with the registry keeps the total linear, with
/// at most an eighth of it parsed and waiting at once.
fn swap_limit(len: usize) -> usize {
    MAX_BATCH.max(len / SWAP_GROWTH)
}

/// The follower: applies every record of the topic, in order, and ends
/// rotation grace periods when they are over.
pub(super) async fn follow(
    consumer: StreamConsumer,
    registry: Arc<EndpointRegistry>,
    build: BuildSettings,
    applied: watch::Sender<i64>,
    known: Arc<Mutex<HashSet<String>>>,
) {
    let mut tick = tokio::time::interval(EXPIRY_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            first = consumer.recv() => {
                let mut batch = Batch {
                    next_offset: *applied.borrow(),
                    ..Batch::default()
                };
                match first {
                    Ok(m) => batch.add(&m),
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the endpoint store");
                        tokio::time::sleep(Duration::from_millis(200)).await;
                        continue;
                    }
                }
                // Whatever else is already fetched goes into the same swap.
                let limit = swap_limit(registry.snapshot().len());
                while batch.records < limit {
                    match consumer.recv().now_or_never() {
                        Some(Ok(m)) => batch.add(&m),
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "reading the endpoint store");
                            break;
                        }
                        None => break,
                    }
                }
                let next = batch.next_offset;
                batch.apply(&registry, build, &known);
                applied.send_replace(next);
            }
            _ = tick.tick() => end_grace_periods(&registry, build, SystemTime::now()),
        }
    }
}

/// Rebuilds endpoints whose previous secret's grace period is over, so that
/// only the current secret signs from now on.
pub(super) fn end_grace_periods(
    registry: &EndpointRegistry,
    build: BuildSettings,
    now: SystemTime,
) {
    let expired: Vec<Arc<Endpoint>> = registry
        .snapshot()
        .endpoints()
        .iter()
        .filter(|e| e.previous_secret_until().is_some_and(|until| until <= now))
        .filter_map(|e| match build.build(e.config.clone()) {
            Ok(rebuilt) => Some(Arc::new(rebuilt)),
            Err(err) => {
                tracing::warn!(endpoint = %e.id(), field = %err.field, "rebuilding after the rotation grace period failed");
                None
            }
        })
        .collect();
    if !expired.is_empty() {
        for e in &expired {
            tracing::info!(endpoint = %e.id(), "rotation grace period over: the previous secret no longer signs");
        }
        registry.upsert(expired);
    }
}
