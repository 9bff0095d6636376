//! Dead letters: writing an event that will not be delivered to
//! `<prefix>.dlq`, with the headers of SPEC §5, durably.
//!
//! [`DeadLetterWriter::write`] returns only once the broker acknowledged the
//! record (idempotent producer, `acks=all`); until then it keeps trying, so
//! the caller may settle the event's offset when it returns and never before.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use crate::source::event::Event;
use crate::source::extract::coordinates_id;

/// Header names hookstream writes on retry and DLQ records.
pub mod header {
    /// Endpoint id.
    pub const ENDPOINT: &str = "hookstream-endpoint";
    /// Attempts made so far.
    pub const ATTEMPT: &str = "hookstream-attempt";
    /// Unix ms when the record may be sent.
    pub const DUE_MS: &str = "hookstream-due-ms";
    /// Unix ms of the first attempt.
    pub const FIRST_MS: &str = "hookstream-first-ms";
    /// `topic/partition/offset` of the original record.
    pub const SOURCE: &str = "hookstream-source";
    /// Event id.
    pub const EVENT_ID: &str = "hookstream-event-id";
    /// Last HTTP status or failure kind.
    pub const LAST_STATUS: &str = "hookstream-last-status";
    /// Last error text.
    pub const LAST_ERROR: &str = "hookstream-last-error";
    /// Why the record was dead-lettered.
    pub const REASON: &str = "hookstream-reason";
    /// Unix ms when it was dead-lettered.
    pub const DEAD_MS: &str = "hookstream-dead-ms";
    /// DLQ coordinates a replayed record came from.
    pub const REPLAY_OF: &str = "hookstream-replay-of";
    /// Prefix shared by all of the above.
    pub const PREFIX: &str = "hookstream-";
}

/// Unix milliseconds now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The delivery history an outcome record carries.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// Endpoint id (empty for invalid events, which have none).
    pub endpoint: String,
    /// Attempts made so far.
    pub attempt: u32,
    /// Unix ms of the first attempt (or of consumption).
    pub first_ms: i64,
    /// Last status text.
    pub last_status: String,
    /// Last error text.
    pub last_error: String,
}

/// The event id used in headers and webhook ids.
pub fn event_id(event: &Event) -> String {
    if let Some(id) = event.header(header::EVENT_ID) {
        return String::from_utf8_lossy(id).into_owned();
    }
    match &event.fields {
        Ok(f) => f.id.clone(),
        Err(_) => coordinates_id(&crate::source::extract::Coordinates {
            topic: &event.topic,
            partition: event.partition.partition,
            offset: event.offset,
        }),
    }
}

/// `hookstream-source` of an event: kept from a retry record, else its own.
pub fn source_of(event: &Event) -> String {
    event
        .header(header::SOURCE)
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .unwrap_or_else(|| event.source_coordinates())
}

/// The original headers (minus earlier hookstream ones) plus `extra`.
pub fn outcome_headers(event: &Event, extra: &[(&str, String)]) -> OwnedHeaders {
    let mut headers = OwnedHeaders::new_with_capacity(event.headers.len() + extra.len());
    for (k, v) in &event.headers {
        if !k.starts_with(header::PREFIX) || k == header::REPLAY_OF {
            headers = headers.insert(Header {
                key: k,
                value: Some(v.as_ref()),
            });
        }
    }
    for (k, v) in extra {
        headers = headers.insert(Header {
            key: k,
            value: Some(v.as_bytes()),
        });
    }
    headers
}

/// Writes dead letters durably.
#[derive(Clone)]
pub struct DeadLetterWriter {
    producer: FutureProducer,
    topic: String,
}

impl std::fmt::Debug for DeadLetterWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterWriter")
            .field("topic", &self.topic)
            .finish()
    }
}

impl DeadLetterWriter {
    /// A writer to `topic` through `producer` (idempotent, acks=all).
    pub fn new(producer: FutureProducer, topic: String) -> Self {
        Self { producer, topic }
    }

    /// The DLQ topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Produces the dead letter and waits for the broker's acknowledgement,
    /// retrying until it comes. An event too large for the DLQ topic is
    /// written without its value (the headers point at the source record).
    pub async fn write(&self, event: &Event, history: &History, reason: &str) {
        let now = now_ms();
        let mut extra = vec![
            (header::ATTEMPT, history.attempt.to_string()),
            (header::DUE_MS, now.to_string()),
            (header::FIRST_MS, history.first_ms.to_string()),
            (header::SOURCE, source_of(event)),
            (header::EVENT_ID, event_id(event)),
            (header::LAST_STATUS, history.last_status.clone()),
            (header::LAST_ERROR, history.last_error.clone()),
            (header::REASON, reason.to_string()),
            (header::DEAD_MS, now.to_string()),
        ];
        if !history.endpoint.is_empty() {
            extra.insert(0, (header::ENDPOINT, history.endpoint.clone()));
        }
        let mut body: &[u8] = &event.body;
        let mut delay = Duration::from_millis(100);
        loop {
            let mut record = FutureRecord::<[u8], [u8]>::to(&self.topic)
                .payload(body)
                .headers(outcome_headers(event, &extra));
            if let Some(key) = &event.key {
                record = record.key(key.as_ref());
            }
            match self.producer.send(record, Duration::from_secs(5)).await {
                Ok(_) => {
                    crate::metrics::dead_letter(reason);
                    return;
                }
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        RDKafkaErrorCode::MessageSizeTooLarge,
                    ),
                    _,
                )) if !body.is_empty() => {
                    tracing::warn!(source = %event.source_coordinates(), size = event.body.len(),
                        "event too large for the DLQ topic: dead-lettering it without its value");
                    let note = format!(
                        "value of {} bytes omitted: too large for the DLQ topic",
                        event.body.len()
                    );
                    for (k, v) in extra.iter_mut() {
                        if *k == header::LAST_ERROR {
                            *v = format!("{v}; {note}");
                        }
                    }
                    body = &[];
                }
                Err((e, _)) => {
                    tracing::warn!(error = %e, topic = %self.topic, "dead-letter write failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
    }
}
