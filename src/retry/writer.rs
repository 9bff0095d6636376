//! Durable outcome records: retries to `<prefix>.retry.<tier>` and dead
//! letters to `<prefix>.dlq`.
//!
//! Every write returns only once the broker acknowledged the record
//! (idempotent producer, `acks=all`); until then it keeps trying. So the
//! caller may settle the event's offset when a write returns, and never
//! before: an offset is never committed for a record whose retry or dead
//! letter was not stored.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use super::backoff::RetryTiers;
use super::record::{History, dead_letter_headers, now_ms, retry_headers};
use crate::source::event::Event;

/// Why a record could not be stored as it is.
enum Refusal {
    /// The value is larger than the topic accepts.
    TooLarge,
}

/// Writes retry and DLQ records durably.
#[derive(Clone)]
pub struct OutcomeWriter {
    producer: FutureProducer,
    dlq_topic: String,
    tiers: RetryTiers,
    /// Dead letters by reason since the last summary line.
    dead_since_summary: Arc<Mutex<BTreeMap<String, u64>>>,
}

impl std::fmt::Debug for OutcomeWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutcomeWriter")
            .field("dlq_topic", &self.dlq_topic)
            .field("tiers", &self.tiers)
            .finish()
    }
}

impl OutcomeWriter {
    /// A writer through `producer` (idempotent, acks=all).
    pub fn new(producer: FutureProducer, dlq_topic: String, tiers: RetryTiers) -> Self {
        Self {
            producer,
            dlq_topic,
            tiers,
            dead_since_summary: Arc::default(),
        }
    }

    /// Logs one line summarising the dead letters written since the last
    /// call (nothing when there were none): never one line per event.
    pub fn log_dead_letter_summary(&self, period: Duration) {
        let counts = match self.dead_since_summary.lock() {
            Ok(mut c) => std::mem::take(&mut *c),
            Err(_) => return,
        };
        if counts.is_empty() {
            return;
        }
        let total: u64 = counts.values().sum();
        let reasons = counts
            .iter()
            .map(|(r, n)| format!("{r}={n}"))
            .collect::<Vec<_>>()
            .join(", ");
        tracing::warn!(total, %reasons, topic = %self.dlq_topic, every_s = period.as_secs(), "events dead-lettered since the last summary");
    }

    /// The retry tiers.
    pub fn tiers(&self) -> &RetryTiers {
        &self.tiers
    }

    /// The DLQ topic.
    pub fn dlq_topic(&self) -> &str {
        &self.dlq_topic
    }

    /// Dead-letters `event`. An event too large for the DLQ topic is written
    /// without its value (its headers point at the source record).
    pub async fn dead_letter(&self, event: &Event, history: &History, reason: &str) {
        let now = now_ms();
        let headers = dead_letter_headers(event, history, reason, now, None);
        if let Err(Refusal::TooLarge) = self
            .produce(&self.dlq_topic, event, &event.body, headers)
            .await
        {
            tracing::warn!(source = %event.source_coordinates(), size = event.body.len(),
                "event too large for the DLQ topic: dead-lettering it without its value");
            let note = format!(
                "value of {} bytes omitted: too large for the DLQ topic",
                event.body.len()
            );
            let headers = dead_letter_headers(event, history, reason, now, Some(&note));
            let _ = self.produce(&self.dlq_topic, event, &[], headers).await;
        }
        crate::metrics::dead_letter(reason);
        if let Ok(mut c) = self.dead_since_summary.lock() {
            *c.entry(reason.to_string()).or_default() += 1;
        }
    }

    /// Schedules a retry of `event` in `delay`, on the largest tier not
    /// longer than it. Returns the tier index. An event too large for the
    /// tier topic is dead-lettered (`exhausted`) instead.
    pub async fn schedule_retry(
        &self,
        event: &Event,
        history: &History,
        delay: Duration,
    ) -> Option<usize> {
        let tier = self.tiers.tier_for(delay);
        let due = now_ms() + delay.as_millis() as i64;
        let headers = retry_headers(event, history, due);
        match self
            .produce(self.tiers.topic(tier), event, &event.body, headers)
            .await
        {
            Ok(()) => Some(tier),
            Err(Refusal::TooLarge) => {
                self.dead_letter(event, history, "exhausted").await;
                None
            }
        }
    }

    /// Produces until acknowledged; only a size refusal ends it otherwise.
    async fn produce(
        &self,
        topic: &str,
        event: &Event,
        value: &[u8],
        headers: OwnedHeaders,
    ) -> Result<(), Refusal> {
        let mut delay = Duration::from_millis(100);
        let mut headers = headers;
        loop {
            let mut record = FutureRecord::<[u8], [u8]>::to(topic)
                .payload(value)
                .headers(headers);
            if let Some(key) = &event.key {
                record = record.key(key.as_ref());
            }
            match self.producer.send(record, Duration::from_secs(5)).await {
                Ok(_) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), _))
                    if !value.is_empty() =>
                {
                    return Err(Refusal::TooLarge);
                }
                Err((e, failed)) => {
                    // The headers come back with the failed message: reuse
                    // them rather than copying them for every try.
                    headers = rdkafka::Message::headers(&failed)
                        .cloned()
                        .unwrap_or_default();
                    tracing::warn!(error = %e, topic, "outcome write failed; retrying (the offset stays uncommitted)");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}
