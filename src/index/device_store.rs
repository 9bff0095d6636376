//! The device store: the [`DeviceDirectory`] on the compacted
//! `<prefix>.devices` topic (key = device id, value = `{"group", "tenant"}`
//! JSON, tombstone = forgotten), written when an instance learns a change
//! from an event and followed by every instance, so all know every device's
//! group within the follower's fetch latency, also after a restart.
//!
//! Owns that topic only. Writes are fire-and-forget (lz4, `acks=1`): a
//! lost one is learned again from the device's next event.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::task::JoinHandle;

use super::devices::{DeviceDirectory, DeviceInfo};
use crate::config::Config;
use crate::kafka::ReportThread;

/// The device store of one instance: stops following when dropped.
pub struct DeviceStore {
    follower: JoinHandle<()>,
    /// The writer of learned changes. The directory's sink holds a `Weak`
    /// of it, so the store's end is the writer's.
    producer: Arc<BaseProducer<DefaultProducerContext>>,
    /// Serves the writer's delivery reports (stopped with the store).
    _reports: ReportThread,
}

impl std::fmt::Debug for DeviceStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceStore").finish_non_exhaustive()
    }
}

impl Drop for DeviceStore {
    fn drop(&mut self) {
        self.follower.abort();
    }
}

impl DeviceStore {
    /// Follows `<prefix>.devices` into `directory` and writes what it
    /// learns there; `None` when `topics.devices_log` is off.
    pub fn open(
        config: &Config,
        bootstrap: &str,
        directory: &Arc<DeviceDirectory>,
    ) -> Result<Option<Self>> {
        if !config.topics.devices_log {
            return Ok(None);
        }
        let topic = config.topics.devices_topic();
        let mut p = crate::kafka::base_client_config(config, bootstrap);
        p.set("client.id", "hookstream-devices")
            .set("linger.ms", "50")
            .set("compression.type", "lz4")
            .set("queue.buffering.max.messages", "100000")
            .set("enable.idempotence", "false")
            .set("acks", "1");
        let producer: Arc<BaseProducer<DefaultProducerContext>> =
            Arc::new(p.create().context("creating the device store producer")?);
        let reports = ReportThread::spawn("devices-reports", Arc::clone(&producer))?;
        let sink_topic = topic.clone();
        let writer = Arc::downgrade(&producer);
        directory.set_sink(Box::new(move |device, info| {
            let Some(producer) = writer.upgrade() else {
                return;
            };
            let Ok(value) = serde_json::to_vec(info) else {
                return;
            };
            let record = BaseRecord::<str, [u8]>::to(&sink_topic)
                .partition(0)
                .key(device)
                .payload(&value);
            if let Err((e, _)) = producer.send(record) {
                tracing::debug!(error = %e, "writing a device's group: dropped");
            }
        }));
        let consumer = follower(config, bootstrap, &topic)?;
        let follower = tokio::spawn(follow(consumer, Arc::clone(directory)));
        Ok(Some(Self {
            follower,
            producer,
            _reports: reports,
        }))
    }

    /// Stops following and writing: waits until the follower, and its
    /// consumer, are gone, and gives the writer up to a second to send
    /// what it holds before it is dropped with the store. A stopping
    /// service does this before an embedded broker stops, so that no
    /// client is left to report the broker gone.
    pub async fn close(self) {
        crate::core::sync::abort_and_wait(&self.follower, FOLLOWER_STOP_WAIT).await;
        let producer = Arc::clone(&self.producer);
        let _ = tokio::task::spawn_blocking(move || producer.flush(FLUSH_AT_CLOSE)).await;
    }
}

/// How long [`DeviceStore::close`] waits for the follower to end.
const FOLLOWER_STOP_WAIT: Duration = Duration::from_secs(1);
/// How long [`DeviceStore::close`] then waits for the writer.
const FLUSH_AT_CLOSE: Duration = Duration::from_secs(1);

fn follower(config: &Config, bootstrap: &str, topic: &str) -> Result<StreamConsumer> {
    let c = crate::kafka::assigned_reader_config(config, bootstrap, "hookstream-devices", false);
    let consumer: StreamConsumer = c.create().context("creating the device store consumer")?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .context("building the device store assignment")?;
    consumer
        .assign(&tpl)
        .with_context(|| format!("assigning {topic}"))?;
    Ok(consumer)
}

async fn follow(consumer: StreamConsumer, directory: Arc<DeviceDirectory>) {
    loop {
        match consumer.recv().await {
            Ok(m) => {
                let Some(device) = m.key().and_then(|k| std::str::from_utf8(k).ok()) else {
                    continue;
                };
                match m.payload() {
                    None => {
                        directory.apply(device, None);
                    }
                    Some(bytes) => match serde_json::from_slice::<DeviceInfo>(bytes) {
                        Ok(info) => {
                            directory.apply(device, Some(info));
                        }
                        Err(e) => {
                            tracing::warn!(offset = m.offset(), error = %e, "unreadable device record: skipped")
                        }
                    },
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the device store");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}
