//! The delivery reports of outcome records: a stored record runs its
//! completion; a failed one is sent again after a pause, or, refused for
//! its size, written differently (a retry dead-lettered as `exhausted`, a
//! dead letter without its value, a deferral batch as single records).
//!
//! Runs on librdkafka's delivery-report thread; sends nothing itself but
//! through the resend channel and the size-refusal fallbacks.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::mpsc;

use crate::core::Reason;
use crate::retry::records::Stored;
use crate::retry::records::{Body, Target, Write};
use crate::wire::headers::{header, now_ms};

/// A write to send again after `delay`, with the headers it had.
pub(super) struct Resend {
    pub(super) write: Box<Write>,
    pub(super) headers: Option<OwnedHeaders>,
    pub(super) delay: Duration,
}

/// The delivery reports of outcome records.
pub(super) struct WriteContext {
    pub(super) resend: mpsc::UnboundedSender<Resend>,
    pub(super) dead_since_summary: Arc<Mutex<BTreeMap<String, u64>>>,
    /// When the last failure was logged (failures are logged at most every
    /// few seconds, not once per record).
    pub(super) last_warning: Mutex<Option<Instant>>,
}

impl ClientContext for WriteContext {
    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "kafka producer error (retry/DLQ writes)");
    }
}

impl ProducerContext for WriteContext {
    type DeliveryOpaque = Box<Write>;

    fn delivery(&self, result: &DeliveryResult<'_>, write: Box<Write>) {
        match result {
            Ok(_) => self.stored(*write),
            Err((error, message)) => {
                let headers = message.headers().map(|h| h.detach());
                self.failed(write, headers, error, message.topic());
            }
        }
    }
}

impl WriteContext {
    pub(super) fn stored(&self, write: Write) {
        let Write {
            target,
            reason,
            payload,
            ..
        } = write;
        let stored = match target {
            Target::Tier(tier) => Stored::Retry { tier },
            Target::Dlq => {
                let reason = reason.map_or("unknown", |r| r.as_str());
                crate::metrics::dead_letter(reason);
                if let Ok(mut c) = self.dead_since_summary.lock() {
                    *c.entry(reason.to_string()).or_default() += 1;
                }
                Stored::DeadLetter
            }
        };
        match payload {
            Body::One { done, .. } => done(stored),
            Body::Deferrals(batch) => {
                for deferral in batch.entries {
                    (deferral.done)(stored);
                }
            }
        }
    }

    /// A write the broker refused: sent again after a pause, or, refused
    /// for its size or an unknown partition, sent differently at once.
    pub(super) fn failed(
        &self,
        mut write: Box<Write>,
        headers: Option<OwnedHeaders>,
        error: &KafkaError,
        topic: &str,
    ) {
        let too_large = matches!(
            error,
            KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)
        );
        if too_large && matches!(write.payload, Body::Deferrals(_)) {
            self.resend_as_singles(*write);
            return;
        }
        if too_large
            && matches!(
                write.payload,
                Body::One {
                    with_value: true,
                    ..
                }
            )
        {
            self.resend_smaller(write, headers);
            return;
        }
        if matches!(
            error,
            KafkaError::MessageProduction(RDKafkaErrorCode::UnknownPartition)
        ) && write.partition.take().is_some()
        {
            // The tier has fewer partitions than last seen (recreated):
            // placed by key instead, at once.
            let _ = self.resend.send(Resend {
                write,
                headers,
                delay: Duration::ZERO,
            });
            return;
        }
        write.failures += 1;
        let delay = resend_delay(write.failures);
        self.warn(error, topic);
        let _ = self.resend.send(Resend {
            write,
            headers,
            delay,
        });
    }

    /// A deferral batch larger than its tier takes: each deferral goes as
    /// a single record, on the same partition.
    fn resend_as_singles(&self, write: Write) {
        let Write {
            payload, partition, ..
        } = write;
        let Body::Deferrals(batch) = payload else {
            return;
        };
        for deferral in batch.entries {
            let (headers, single) = deferral.into_single(batch.tier, &batch.endpoint);
            let single = Box::new(Write {
                partition,
                ..single
            });
            let _ = self.resend.send(Resend {
                write: single,
                headers: Some(headers),
                delay: Duration::ZERO,
            });
        }
    }

    /// A single record too large for its topic: a retry is dead-lettered
    /// as exhausted at once (with the headers it has and the reason), a
    /// dead letter goes without its value, with a note saying why.
    fn resend_smaller(&self, mut write: Box<Write>, headers: Option<OwnedHeaders>) {
        let Body::One {
            event, with_value, ..
        } = &mut write.payload
        else {
            return;
        };
        let headers = headers.unwrap_or_default();
        let headers = match write.target {
            Target::Tier(_) => {
                write.target = Target::Dlq;
                write.reason = Some(Reason::Exhausted);
                let now = now_ms().to_string();
                headers
                    .insert(Header {
                        key: header::REASON,
                        value: Some("exhausted"),
                    })
                    .insert(Header {
                        key: header::DEAD_MS,
                        value: Some(now.as_str()),
                    })
            }
            Target::Dlq => {
                tracing::warn!(source = %String::from_utf8_lossy(&event.source()), size = event.body().len(),
                    "event too large for the DLQ topic: dead-lettering it without its value");
                *with_value = false;
                let note = format!(
                    "value of {} bytes omitted: too large for the DLQ topic",
                    event.body().len()
                );
                with_note(&headers, &note)
            }
        };
        let _ = self.resend.send(Resend {
            write,
            headers: Some(headers),
            delay: Duration::ZERO,
        });
    }

    pub(super) fn warn(&self, error: &KafkaError, topic: &str) {
        let Ok(mut last) = self.last_warning.lock() else {
            return;
        };
        if last.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
            *last = Some(Instant::now());
            tracing::warn!(%error, topic, "outcome write failed; retrying (the offset stays uncommitted)");
        }
    }
}

/// `headers` with `note` added to `hookstream-last-error`.
pub(super) fn with_note(headers: &OwnedHeaders, note: &str) -> OwnedHeaders {
    let mut out = OwnedHeaders::new_with_capacity(headers.count() + 1);
    let mut last_error = None;
    for h in headers.iter() {
        if h.key == header::LAST_ERROR {
            last_error = h.value.map(String::from_utf8_lossy);
        } else {
            out = out.insert(h);
        }
    }
    let text = match last_error.filter(|e| !e.is_empty()) {
        Some(e) => format!("{e}; {note}"),
        None => note.to_string(),
    };
    out.insert(Header {
        key: header::LAST_ERROR,
        value: Some(text.as_str()),
    })
}

/// Pause before sending a write again after `failures` failures: 100 ms,
/// doubling, at most 10 s.
pub(super) fn resend_delay(failures: u32) -> Duration {
    Duration::from_millis(100u64 << failures.saturating_sub(1).min(7)).min(Duration::from_secs(10))
}
