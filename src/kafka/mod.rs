//! Kafka plumbing shared by the stages: client settings, the embedded
//! development broker, owned-topic creation, the durable producer, and
//! serving producers' delivery reports without spinning.
//!
//! Owns how hookstream talks to a cluster, not what it reads or writes.

pub mod awaited;
pub mod embedded;
pub mod reports;

use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::FutureProducer;
use rdkafka::types::RDKafkaErrorCode;

pub use awaited::AwaitedProducer;
pub use embedded::EmbeddedBroker;
pub use reports::ReportThread;

use crate::config::Config;

/// Settings every client gets, then the user's `[kafka.properties]` on top
/// (admin clients).
pub fn base_client_config(config: &Config, bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c.set("client.id", "hookstream");
    for (key, value) in &config.kafka.properties {
        c.set(key, value.to_string());
    }
    c
}

/// [`base_client_config`] with `[kafka.consumer]` on top: the readers of
/// owned topics (endpoint store, `dlq` commands), which set their own group
/// and offsets.
pub fn reader_client_config(config: &Config, bootstrap: &str) -> ClientConfig {
    let mut c = base_client_config(config, bootstrap);
    for (key, value) in &config.kafka.consumer {
        c.set(key, value.to_string());
    }
    c
}

/// A reader of an owned topic that assigns its partitions itself: a group
/// id of its own that nothing is ever committed under (librdkafka wants
/// one), no offsets stored, from the beginning, EOF events when `eof`;
/// static membership (`group.instance.id`) is for the input group only.
/// `name` becomes `client.id` and the group id's prefix.
pub fn assigned_reader_config(
    config: &Config,
    bootstrap: &str,
    name: &str,
    eof: bool,
) -> ClientConfig {
    let mut c = reader_client_config(config, bootstrap);
    c.set("client.id", name)
        .set("group.id", format!("{name}-{:016x}", rand::random::<u64>()))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        .set("enable.partition.eof", if eof { "true" } else { "false" })
        .set("fetch.wait.max.ms", fetch_wait_ms(config));
    c.remove("group.instance.id");
    c
}

/// `fetch.wait.max.ms` of every consumer and reader but the retry member.
///
/// The embedded (mock) broker holds a fetch that found no data for the
/// whole wait and is not woken by records produced meanwhile; real brokers
/// answer as soon as data is there. So on the embedded broker this wait is
/// a record's extra latency on an idle partition, and also how often an
/// idle member fetches (every fetch names each of its partitions).
fn fetch_wait_ms(config: &Config) -> &'static str {
    if config.kafka.is_embedded() {
        "5"
    } else {
        "100"
    }
}

/// The retry member's `fetch.wait.max.ms` on the embedded broker.
///
/// The retry member owns every tier's partitions (7 × 64 in the bench),
/// idle nearly always, and fetched them every 5 ms: 5 % of bench (b)'s
/// pipeline CPU and as much again of the broker's. Its records need not
/// be seen at once (a retry is due a tier's delay after it was written),
/// only the records behind a held retry, which the gates fetch ahead of
/// their due time ([`crate::pipeline::gate::RESUME_AHEAD_MS`], more than
/// this wait). Before that, 25 ms instead of 5 raised bench (f)'s
/// due-to-received p99 from 6.5-7.9 ms to 24 ms.
pub const RETRY_FETCH_WAIT_EMBEDDED_MS: i64 = 50;

/// Consumer settings: manual offsets, earliest for a new group, no EOF events.
pub fn consumer_config(config: &Config, bootstrap: &str, group_id: &str) -> ClientConfig {
    member_config(config, bootstrap, group_id, fetch_wait_ms(config))
}

/// The retry member's settings: [`consumer_config`]'s, with a longer fetch
/// wait on the embedded broker ([`RETRY_FETCH_WAIT_EMBEDDED_MS`]).
pub fn retry_consumer_config(config: &Config, bootstrap: &str, group_id: &str) -> ClientConfig {
    let wait = if config.kafka.is_embedded() {
        RETRY_FETCH_WAIT_EMBEDDED_MS.to_string()
    } else {
        fetch_wait_ms(config).to_string()
    };
    member_config(config, bootstrap, group_id, &wait)
}

/// A group member's settings with `fetch_wait_ms`; user properties last.
fn member_config(
    config: &Config,
    bootstrap: &str,
    group_id: &str,
    fetch_wait_ms: &str,
) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c.set("client.id", "hookstream");
    c.set("group.id", group_id);
    c.set("enable.auto.commit", "false");
    c.set("enable.auto.offset.store", "false");
    c.set("auto.offset.reset", "earliest");
    c.set("enable.partition.eof", "false");
    c.set("session.timeout.ms", "10000");
    c.set("heartbeat.interval.ms", "3000");
    // Incremental rebalances: a member joining or leaving moves only the
    // partitions that change owner; the others keep consuming, with their
    // in-flight deliveries and gates, instead of being drained, committed
    // and fetched again at every rebalance.
    c.set("partition.assignment.strategy", "cooperative-sticky");
    // Bound what librdkafka prefetches; hookstream's own back-pressure
    // (max_in_flight) bounds the rest. Each record costs librdkafka a few
    // hundred bytes beside its payload, which this bound does not count:
    // 8 MiB rather than 16 took ~10 MiB off bench (i)'s peak, and 4 rather
    // than 8 another ~10 (183-188 against 193-201 MiB), nothing off bench
    // (b)'s rate or CPU either time. 4 MiB is still ~25 000 records of
    // 150 bytes, tens of milliseconds of delivery at (b)'s rate.
    c.set("queued.max.messages.kbytes", "4096");
    // When that queue is full librdkafka postpones the partition's next
    // fetch by this much (default 1 s: a stall of up to a second whenever a
    // burst fills the queue); the queue drains in tens of milliseconds.
    c.set("fetch.queue.backoff.ms", "20");
    // Consumer lag per partition comes from librdkafka's statistics.
    c.set("statistics.interval.ms", "5000");
    c.set("fetch.wait.max.ms", fetch_wait_ms);
    for (key, value) in config.kafka.properties.iter().chain(&config.kafka.consumer) {
        c.set(key, value.to_string());
    }
    c
}

/// Settings of the idempotent `acks=all` producers of owned topics (retry
/// and DLQ records, endpoints, replays): a delivery report from them means
/// the broker has the record durably.
pub fn durable_producer_config(config: &Config, bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c.set("client.id", "hookstream-producer");
    c.set("linger.ms", "5");
    c.set("message.timeout.ms", "30000");
    // Retry and DLQ records repeat the same header names and endpoint ids
    // record after record (a deferral batch holds hundreds): lz4 makes them
    // several times smaller on the broker and the wire for little CPU.
    c.set("compression.type", "lz4");
    for (key, value) in config.kafka.properties.iter().chain(&config.kafka.producer) {
        c.set(key, value.to_string());
    }
    // Durability is not negotiable: these win over user properties.
    c.set("enable.idempotence", "true");
    c.set("acks", "all");
    c
}

/// A [`FutureProducer`] with [`durable_producer_config`] settings.
pub fn durable_producer(config: &Config, bootstrap: &str) -> Result<FutureProducer> {
    durable_producer_config(config, bootstrap)
        .create()
        .context("creating a durable producer")
}

/// A topic hookstream needs, with how to create it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Topic name.
    pub name: String,
    /// Partitions when created.
    pub partitions: i32,
    /// `cleanup.policy=compact`.
    pub compacted: bool,
    /// `retention.ms` when created (`None`: the broker's default).
    pub retention_ms: Option<u64>,
}

/// The topics hookstream owns: every retry tier, the ordered lane, the DLQ, the endpoint
/// store, the replay ledger, and (unless switched off) the activity log
/// and the device directory.
pub fn owned_topics(config: &Config) -> Vec<TopicSpec> {
    let t = &config.topics;
    let mut out: Vec<TopicSpec> = t
        .retry_tiers
        .iter()
        .map(|tier| TopicSpec {
            name: t.retry_topic(*tier),
            partitions: t.partitions,
            compacted: false,
            retention_ms: None,
        })
        .collect();
    out.push(TopicSpec {
        name: t.ordered_topic(),
        partitions: t.partitions,
        compacted: false,
        retention_ms: None,
    });
    out.push(TopicSpec {
        name: t.dlq_topic(),
        partitions: t.partitions,
        compacted: false,
        retention_ms: None,
    });
    out.push(TopicSpec {
        name: t.endpoints_topic(),
        partitions: 1,
        compacted: true,
        retention_ms: None,
    });
    out.push(TopicSpec {
        name: config.topics.replay_ledger_topic(),
        partitions: 1,
        compacted: true,
        retention_ms: None,
    });
    if t.attempts_log {
        out.push(TopicSpec {
            name: t.attempts_topic(),
            partitions: t.partitions,
            compacted: false,
            retention_ms: Some(t.attempts_retention.get().as_millis() as u64),
        });
    }
    if t.devices_log {
        out.push(TopicSpec {
            name: t.devices_topic(),
            partitions: 1,
            compacted: true,
            retention_ms: None,
        });
    }
    out
}

/// Creates missing owned topics (when `topics.create`), and on the embedded
/// broker the input topics too. Existing topics are left as they are.
pub async fn ensure_topics(
    config: &Config,
    bootstrap: &str,
    embedded: Option<&EmbeddedBroker>,
) -> Result<()> {
    let mut wanted = Vec::new();
    if config.topics.create {
        wanted.extend(owned_topics(config));
    }
    if let Some(broker) = embedded {
        for topic in &config.kafka.topics {
            wanted.push(TopicSpec {
                name: topic.clone(),
                partitions: config.kafka.embedded_partitions,
                compacted: false,
                retention_ms: None,
            });
        }
        for spec in &wanted {
            broker
                .create_topic(&spec.name, spec.partitions)
                .with_context(|| format!("creating topic {} on the embedded broker", spec.name))?;
        }
        return Ok(());
    }
    if wanted.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = base_client_config(config, bootstrap)
        .create()
        .context("creating the Kafka admin client")?;
    let replication = config.topics.replication_factor;
    let retentions: Vec<Option<String>> = wanted
        .iter()
        .map(|spec| spec.retention_ms.map(|ms| ms.to_string()))
        .collect();
    let new_topics: Vec<NewTopic<'_>> = wanted
        .iter()
        .zip(&retentions)
        .map(|(spec, retention)| {
            let mut topic = NewTopic::new(
                &spec.name,
                spec.partitions,
                TopicReplication::Fixed(replication),
            );
            if spec.compacted {
                topic = topic.set("cleanup.policy", "compact");
            }
            if let Some(ms) = retention {
                topic = topic.set("retention.ms", ms);
            }
            topic
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let results = admin
        .create_topics(new_topics.iter(), &options)
        .await
        .context("creating owned topics")?;
    for result in results {
        match result {
            Ok(name) => tracing::info!(topic = %name, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                anyhow::bail!(
                    "creating topic {name}: {code} (set topics.create = false to manage topics yourself)"
                )
            }
        }
    }
    Ok(())
}
