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
use rdkafka::producer::{BaseRecord, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use tokio::task::JoinHandle;

use super::devices::{DeviceDirectory, DeviceInfo};
use crate::config::Config;

/// The device store of one instance: stops following when dropped.
#[derive(Debug)]
pub struct DeviceStore {
    follower: JoinHandle<()>,
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
        let producer: ThreadedProducer<DefaultProducerContext> =
            p.create().context("creating the device store producer")?;
        let sink_topic = topic.clone();
        directory.set_sink(Box::new(move |device, info| {
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
        Ok(Some(Self { follower }))
    }
}

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
