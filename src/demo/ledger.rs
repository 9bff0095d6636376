//! What the demo expects and observes: the ledger of which endpoint should
//! receive which event, the DLQ reader that fills in the dead letters, the
//! check that every expectation is met, and the final committed offsets.
//!
//! Reads Kafka and the receivers' logs; prints nothing.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::deliver::request::webhook_id;
use crate::index::endpoint::pattern_matches;
use crate::source::extract::coordinates_id;
use crate::wire::headers::header;

use super::receiver::Receiver;

use super::ENDPOINTS;
use super::generator::{self, TOPICS};

/// What the demo expects and what it observed, per endpoint.
#[derive(Default)]
pub(super) struct Ledger {
    pub(super) expected: HashMap<&'static str, HashSet<String>>,
    pub(super) dead: HashMap<String, HashSet<String>>,
    pub(super) dead_invalid: usize,
    pub(super) reasons: HashMap<String, usize>,
}

/// Records which endpoints expect `ev` (by webhook-id).
pub(super) fn expect(
    ledger: &Mutex<Ledger>,
    ev: &generator::GeneratedEvent,
    event_type: &str,
    partition: i32,
    offset: i64,
) {
    let topic = TOPICS[ev.topic];
    let event_id = match topic.preset {
        crate::source::extract::Preset::Magistrala | crate::source::extract::Preset::Cmdb => {
            coordinates_id(&crate::source::extract::Coordinates {
                topic: topic.name,
                partition,
                offset,
            })
        }
        _ => serde_json::from_slice::<serde_json::Value>(&ev.body)
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_string))
            .unwrap_or_default(),
    };
    if let Ok(mut l) = ledger.lock() {
        for ep in &ENDPOINTS {
            if ep.events.iter().any(|p| pattern_matches(p, event_type)) {
                l.expected
                    .entry(ep.id)
                    .or_default()
                    .insert(webhook_id(&event_id, ep.id));
            }
        }
    }
}

pub(super) fn all_accounted(
    receivers: &[Receiver],
    ledger: &Mutex<Ledger>,
    invalid: usize,
) -> bool {
    let Ok(l) = ledger.lock() else {
        return false;
    };
    if l.dead_invalid < invalid {
        return false;
    }
    ENDPOINTS.iter().zip(receivers).all(|(ep, r)| {
        let Some(expected) = l.expected.get(ep.id) else {
            return true;
        };
        let accepted = match r.log().accepted.lock() {
            Ok(a) => a,
            Err(_) => return false,
        };
        let dead = l.dead.get(ep.id);
        expected
            .iter()
            .all(|id| accepted.contains(id) || dead.is_some_and(|d| d.contains(id)))
    })
}

pub(super) fn spawn_dlq_reader(
    bootstrap: &str,
    topic: &str,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Result<tokio::task::JoinHandle<()>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "hookstream-demo-dlq-reader")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .context("creating the DLQ reader")?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .context("reading DLQ metadata")?;
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .context("assigning the DLQ")?;
        }
    }
    consumer.assign(&tpl).context("assigning the DLQ")?;
    Ok(tokio::task::spawn_blocking(move || {
        while !stop.load(Ordering::Relaxed) {
            let Some(Ok(msg)) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let mut endpoint = None;
            let mut event_id = None;
            let mut reason = String::new();
            if let Some(headers) = msg.headers() {
                for h in headers.iter() {
                    let v = String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned();
                    match h.key {
                        header::ENDPOINT => endpoint = Some(v),
                        header::EVENT_ID => event_id = Some(v),
                        header::REASON => reason = v,
                        _ => {}
                    }
                }
            }
            let Ok(mut l) = ledger.lock() else {
                return;
            };
            *l.reasons.entry(reason.clone()).or_default() += 1;
            match (endpoint, event_id) {
                (Some(ep), Some(id)) => {
                    let wid = webhook_id(&id, &ep);
                    l.dead.entry(ep).or_default().insert(wid);
                }
                _ if reason == "invalid_event" => l.dead_invalid += 1,
                _ => {}
            }
        }
    }))
}

/// Whether the group's committed offsets equal the end of every partition.
pub(super) fn committed_at_end(bootstrap: &str, group: &str, topics: &[String]) -> Result<bool> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .context("creating the offset checker")?;
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        for t in metadata.topics() {
            for p in t.partitions() {
                tpl.add_partition(topic, p.id());
            }
        }
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    for e in committed.elements() {
        let (_, high) =
            consumer.fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(10))?;
        let at = match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        };
        if at != high {
            tracing::warn!(
                topic = e.topic(),
                partition = e.partition(),
                committed = at,
                end = high,
                "committed offset is not at the end"
            );
            return Ok(false);
        }
    }
    Ok(true)
}
