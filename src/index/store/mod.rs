//! The endpoint store: endpoints on the compacted `<prefix>.endpoints` topic
//! (key = endpoint id, value = the endpoint's JSON, tombstone = deleted) and
//! the follower that keeps this instance's [`EndpointRegistry`] equal to it.
//!
//! Owns writes (answered only once the broker acknowledged them and the
//! local registry applied them), the start-up load (read to the end, then
//! seed the configuration file's endpoints whose id is not in the topic yet,
//! so API changes win), and the end of secret-rotation grace periods. Every
//! instance follows the topic, so all converge within the follower's fetch
//! latency. Knows nothing of HTTP; callers validate before writing.
//!
//! Secrets are part of the stored JSON (the topic is the source of truth)
//! and never logged: log lines name endpoint ids and fields only.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::FutureRecord;
use rdkafka::{Offset, TopicPartitionList};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use follower::follow;

use super::{Endpoint, EndpointRegistry};
use crate::config::{Config, EndpointConfig};
use crate::core::lock;
use crate::core::sync::abort_and_wait;
use crate::kafka::AwaitedProducer;

/// Key of the marker record written to find the end of the topic (a
/// tombstone; `#` is not allowed in endpoint ids).
const SYNC_KEY: &str = "#sync";
/// The store's records all go to this partition (the topic has one).
const PARTITION: i32 = 0;
/// Endpoints of the configuration file seeded in one write at most.
const SEED_SLICE: usize = 1000;
/// Ids of seeded endpoints named in the start-up log line.
const SEED_IDS_LOGGED: usize = 10;

/// Why a write did not complete.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The broker did not acknowledge the write.
    #[error("the endpoint store is unavailable: {0}")]
    Unavailable(String),
    /// The broker acknowledged the write but this instance did not read it
    /// back in time (it will still apply it when it does).
    #[error("the write was stored but not applied locally within {0:?}")]
    NotApplied(Duration),
}

/// How records are turned into endpoints.
#[derive(Debug, Clone, Copy)]
struct BuildSettings {
    allow_private: bool,
    default_timeout: Duration,
}

impl BuildSettings {
    fn build(&self, config: EndpointConfig) -> Result<Endpoint, super::FieldError> {
        let env = |name: &str| std::env::var(name).ok();
        Endpoint::build(config, self.allow_private, self.default_timeout, &env)
    }
}

/// The endpoint store of one instance.
pub struct EndpointStore {
    registry: Arc<EndpointRegistry>,
    producer: AwaitedProducer,
    topic: String,
    /// The next offset the follower will apply.
    applied: watch::Receiver<i64>,
    /// Ids seen in the topic, tombstoned ones included.
    known: Arc<Mutex<HashSet<String>>>,
    writes: tokio::sync::Mutex<()>,
    loaded: AtomicBool,
    follower: JoinHandle<()>,
    apply_timeout: Duration,
    produce_timeout: Duration,
}

impl std::fmt::Debug for EndpointStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointStore")
            .field("topic", &self.topic)
            .field("loaded", &self.is_loaded())
            .finish_non_exhaustive()
    }
}

impl Drop for EndpointStore {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

/// How long [`EndpointStore::stop_following`] waits for the follower.
const FOLLOWER_STOP_WAIT: Duration = Duration::from_secs(1);

impl EndpointStore {
    /// Starts following `<prefix>.endpoints` (which must exist: see
    /// [`crate::kafka::ensure_topics`]), reads it to the end into a new
    /// registry, then seeds `seeds` (the configuration file's endpoints)
    /// whose ids the topic does not know. Returns once all of that is
    /// applied. `config.endpoints` is not read.
    ///
    /// `seeds` is taken whole and let go of a slice at a time, as each is
    /// seeded: with 100 000 endpoints the file's copies and the registry's
    /// would otherwise be resident together until the end.
    pub async fn open(
        config: &Config,
        seeds: Vec<EndpointConfig>,
        bootstrap: &str,
    ) -> Result<Arc<Self>> {
        let topic = config.topics.endpoints_topic();
        let registry = EndpointRegistry::new(Vec::new());
        let consumer = follower_consumer(config, bootstrap, &topic)?;
        let producer = AwaitedProducer::create(
            &crate::kafka::durable_producer_config(config, bootstrap),
            "store-reports",
        )
        .context("creating the endpoint store producer")?;
        let (applied_tx, applied) = watch::channel(0i64);
        let known = Arc::new(Mutex::new(HashSet::new()));
        let build = BuildSettings {
            allow_private: config.delivery.allow_private_destinations,
            default_timeout: config.delivery.timeout.get(),
        };
        let follower = tokio::spawn(follow(
            consumer,
            Arc::clone(&registry),
            build,
            applied_tx,
            Arc::clone(&known),
        ));
        let store = Arc::new(Self {
            registry,
            producer,
            topic,
            applied,
            known,
            writes: tokio::sync::Mutex::new(()),
            loaded: AtomicBool::new(false),
            follower,
            apply_timeout: Duration::from_secs(30),
            produce_timeout: Duration::from_secs(30),
        });
        store
            .sync()
            .await
            .with_context(|| format!("reading endpoints from {}", store.topic))?;
        // Seeded a slice at a time: 100 000 endpoints in one write would
        // hold all their JSON and librdkafka's copies of it at once. The
        // list shrinks as slices leave it, so the file's copies are let go
        // of while the registry grows.
        let mut seeded = 0usize;
        let mut last = -1i64;
        let mut shown: Vec<String> = Vec::new();
        let mut rest = VecDeque::from(seeds);
        while !rest.is_empty() {
            let taken = rest.len().min(SEED_SLICE);
            let mut slice: Vec<EndpointConfig> = rest.drain(..taken).collect();
            if rest.capacity() > 2 * rest.len() {
                rest.shrink_to_fit();
            }
            {
                let known = lock(&store.known);
                slice.retain(|e| !known.contains(&e.id));
            }
            if slice.is_empty() {
                continue;
            }
            // Acknowledged by the broker slice by slice, applied by the
            // follower in swaps as large as it finds them (below).
            last = store
                .produce(records_of(&slice)?)
                .await
                .context("seeding endpoints of the configuration file")?
                .max(last);
            seeded += slice.len();
            let room = SEED_IDS_LOGGED.saturating_sub(shown.len());
            shown.extend(slice.iter().take(room).map(|e| e.id.clone()));
        }
        store
            .await_applied(last)
            .await
            .context("applying the seeded endpoints of the configuration file")?;
        if seeded > 0 {
            tracing::info!(
                seeded,
                first = ?shown,
                "seeded endpoints of the configuration file the store did not know"
            );
        }
        store.loaded.store(true, Ordering::Release);
        tracing::info!(
            topic = %store.topic,
            endpoints = store.registry.snapshot().len(),
            "endpoint store loaded"
        );
        Ok(store)
    }

    /// Stops following the topic and waits (up to a second) until the
    /// follower, and its consumer, are gone. A stopping service does this
    /// before an embedded broker stops, so that no client is left to
    /// report the broker gone; the store still answers from its registry.
    pub async fn stop_following(&self) {
        abort_and_wait(&self.follower, FOLLOWER_STOP_WAIT).await;
    }

    /// The registry this store keeps up to date.
    pub fn registry(&self) -> &Arc<EndpointRegistry> {
        &self.registry
    }

    /// Whether the start-up load (and seeding) is done.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Serialises read-modify-write sequences of this instance (hold the
    /// guard across reading an endpoint and writing its new version).
    pub async fn write_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.writes.lock().await
    }

    /// The current endpoint `id`.
    pub fn get(&self, id: &str) -> Option<Arc<Endpoint>> {
        self.registry.snapshot().get(id).cloned()
    }

    /// Whether `id` is stored (or was, and is tombstoned).
    pub fn knows(&self, id: &str) -> bool {
        lock(&self.known).contains(id)
    }

    /// Stores endpoints (validated by the caller) and returns once the
    /// broker has them and this instance's registry applied them.
    pub async fn put(&self, endpoints: &[EndpointConfig]) -> Result<(), StoreError> {
        self.write(records_of(endpoints)?).await
    }

    /// Disables endpoint `id` because of `cause` (it answered 410 Gone, or
    /// failed every attempt for `delivery.auto_disable.after`), told in
    /// words by `reason`: stored with `enabled = false` and
    /// `disabled = {reason, at, cause}`, so every instance stops delivering
    /// to it and it stays disabled after a restart, until enabled through
    /// the API. Nothing is written when it is deleted or disabled already.
    pub async fn disable(
        &self,
        id: &str,
        cause: crate::config::DisableCause,
        reason: &str,
    ) -> Result<(), StoreError> {
        let _write = self.write_lock().await;
        let Some(current) = self.get(id) else {
            return Ok(());
        };
        if !current.config.enabled {
            return Ok(());
        }
        let disabled = EndpointConfig {
            enabled: false,
            disabled: Some(Box::new(crate::config::DisabledBy {
                reason: reason.to_string(),
                at: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
                cause,
            })),
            ..current.config.clone()
        };
        self.put(&[disabled]).await
    }

    /// Deletes endpoints (tombstones) and returns once applied here.
    pub async fn delete(&self, ids: &[&str]) -> Result<(), StoreError> {
        self.write(ids.iter().map(|id| (*id, None)).collect()).await
    }

    /// Writes a marker and waits until it is applied: everything written
    /// before it is then in the registry.
    pub async fn sync(&self) -> Result<(), StoreError> {
        self.write(vec![(SYNC_KEY, None)]).await
    }

    async fn write(&self, records: Vec<Record<'_>>) -> Result<(), StoreError> {
        let last = self.produce(records).await?;
        self.await_applied(last).await
    }

    /// Sends `records` and returns the offset of the last once the broker
    /// acknowledged all of them (-1 when there were none).
    async fn produce(&self, records: Vec<Record<'_>>) -> Result<i64, StoreError> {
        let sends = records.iter().map(|(key, value)| {
            let record = FutureRecord::<str, [u8]>::to(&self.topic)
                .partition(PARTITION)
                .key(*key);
            let record = match value {
                Some(v) => record.payload(v.as_slice()),
                None => record,
            };
            self.producer.send(record, self.produce_timeout)
        });
        let mut last = -1i64;
        for result in futures::future::join_all(sends).await {
            match result {
                Ok((_, offset)) => last = last.max(offset),
                Err(e) => return Err(StoreError::Unavailable(e.to_string())),
            }
        }
        Ok(last)
    }

    /// Waits until the follower applied the record at offset `last`.
    async fn await_applied(&self, last: i64) -> Result<(), StoreError> {
        let mut applied = self.applied.clone();
        match tokio::time::timeout(self.apply_timeout, applied.wait_for(|next| *next > last)).await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(StoreError::Unavailable("the store follower stopped".into())),
            Err(_) => Err(StoreError::NotApplied(self.apply_timeout)),
        }
    }
}

/// A record of the store: key (endpoint id), value (JSON; `None` a
/// tombstone).
type Record<'a> = (&'a str, Option<Vec<u8>>);

/// The records that store `endpoints`: key the id, value the JSON.
fn records_of(endpoints: &[EndpointConfig]) -> Result<Vec<Record<'_>>, StoreError> {
    endpoints
        .iter()
        .map(|e| {
            let json = serde_json::to_vec(e)
                .map_err(|err| StoreError::Unavailable(format!("encoding `{}`: {err}", e.id)))?;
            Ok((e.id.as_str(), Some(json)))
        })
        .collect()
}

/// A consumer assigned to the store's partition from the beginning; it
/// joins no group and commits nothing.
fn follower_consumer(config: &Config, bootstrap: &str, topic: &str) -> Result<StreamConsumer> {
    let client =
        crate::kafka::assigned_reader_config(config, bootstrap, "hookstream-endpoints", false);
    let consumer: StreamConsumer = client
        .create()
        .context("creating the endpoint store consumer")?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, PARTITION, Offset::Beginning)
        .context("building the endpoint store assignment")?;
    consumer
        .assign(&tpl)
        .with_context(|| format!("assigning {topic}"))?;
    Ok(consumer)
}

mod follower;
#[cfg(test)]
mod tests;
