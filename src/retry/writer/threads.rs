//! The outcome writer's thread that keeps the tier topics' partition
//! counts (its delivery reports are served by a
//! [`ReportThread`](crate::kafka::ReportThread)). A thread, not a task:
//! librdkafka's metadata call blocks. It touches nothing of the writer but
//! the producer, the stop flag and the counts it is given.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::producer::{BaseProducer, Producer};

use super::report::WriteContext;

/// How often the partition counts of the tier topics are looked up again.
const PARTITIONS_REFRESH: Duration = Duration::from_secs(60);

/// Looks up how many partitions each tier topic has; returns whether every
/// count is known. A topic it cannot see keeps its last count (0: records
/// go by key).
fn learn_partitions(
    producer: &BaseProducer<WriteContext>,
    topics: &[String],
    counts: &[AtomicI32],
) -> bool {
    for (topic, count) in topics.iter().zip(counts) {
        match producer
            .client()
            .fetch_metadata(Some(topic), Duration::from_secs(5))
        {
            Ok(metadata) => {
                let found = metadata
                    .topics()
                    .iter()
                    .find(|t| t.name() == topic && t.error().is_none())
                    .map_or(0, |t| t.partitions().len() as i32);
                if found > 0 {
                    count.store(found, Ordering::Relaxed);
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, topic, "looking up the partitions of a retry tier")
            }
        }
    }
    counts.iter().all(|c| c.load(Ordering::Relaxed) > 0)
}

/// Learns how many partitions each tier has (into `counts`), again every
/// [`PARTITIONS_REFRESH`], until `stop` or the producer is gone. Its own
/// thread: a metadata request can take seconds while a broker is away, and
/// delivery reports must not wait for it. It holds the producer only while
/// it asks, so a writer that is closed and dropped lets its producer go at
/// once rather than at this thread's next look at `stop`.
pub(super) fn spawn_partitions_thread(
    producer: Weak<BaseProducer<WriteContext>>,
    stop: Arc<AtomicBool>,
    topics: Vec<String>,
    counts: Arc<[AtomicI32]>,
) -> Result<()> {
    std::thread::Builder::new()
        .name("tier-partitions".into())
        .spawn(move || {
            while !stop.load(Ordering::Acquire) {
                let Some(producer) = producer.upgrade() else {
                    return;
                };
                let known = learn_partitions(&producer, &topics, &counts);
                drop(producer);
                let wait = if known {
                    PARTITIONS_REFRESH
                } else {
                    Duration::from_secs(1)
                };
                let until = Instant::now() + wait;
                while Instant::now() < until && !stop.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        })
        .context("spawning the tier-partitions thread")?;
    Ok(())
}
