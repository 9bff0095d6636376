//! Durable outcome records: retries to `<prefix>.retry.<tier>` and dead
//! letters to `<prefix>.dlq`.
//!
//! A write is submitted without waiting and carries a [`Completion`] that
//! runs once the broker acknowledged the record (idempotent producer,
//! `acks=all`). Completions settle offsets, so an offset is never committed
//! for a record whose retry or dead letter was not stored. There is no task
//! or future per write: librdkafka batches the records, and one thread
//! serves the delivery reports and runs the completions. A failed write is
//! sent again after a pause, for as long as it takes; only a size refusal
//! changes what is written (a retry too large for its tier is dead-lettered
//! as `exhausted`; a dead letter too large for the DLQ loses its value, and
//! its headers point at the source record).
//!
//! Owns the producer of outcome records: sending, delivery reports,
//! resending after failures, size refusals, and gathering one endpoint's
//! deferrals for a few milliseconds into one batch record. What each record
//! holds is assembled in [`super::records`]; what a completion does is the
//! caller's business.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use rdkafka::error::KafkaError;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::{Notify, mpsc};

use super::records::{Body, Deferral, DeferralBatch, Target, Write, single_retry};
pub use super::records::{Completion, Stored};
use crate::config::Config;
use crate::core::Payload;
use crate::core::Reason;
use crate::kafka::ReportThread;
use crate::outcome::backoff::RetryTiers;
use crate::wire::headers::{History, dead_letter_headers, endpoint_partition, now_ms};

mod gather;
mod lane;
mod report;
mod threads;

use report::{Resend, WriteContext};
use threads::spawn_partitions_thread;

/// How long deferrals wait for others of their endpoint before their batch
/// is written.
const BATCH_LINGER: Duration = Duration::from_millis(5);

/// How long [`OutcomeWriter::start`] waits for the tiers' partition counts.
const PARTITIONS_WAIT: Duration = Duration::from_secs(2);

/// How long [`OutcomeWriter::closed`] waits for the delivery-report thread.
const REPORT_THREAD_WAIT: Duration = Duration::from_secs(2);

/// Pause after librdkafka refused a record because its queue is full.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(10);

/// The producer and what it writes to. Shared by every clone of the
/// writer; dropping the last one stops its threads.
struct Inner {
    producer: Arc<BaseProducer<WriteContext>>,
    dlq_topic: String,
    tiers: RetryTiers,
    /// Partitions of each tier topic as last seen in the cluster's
    /// metadata (0 until known: records are then placed by key).
    tier_partitions: Arc<[AtomicI32]>,
    resend: mpsc::UnboundedSender<Resend>,
    dead_since_summary: Arc<Mutex<BTreeMap<String, u64>>>,
    stop: Arc<AtomicBool>,
    /// Deferrals gathering into batches: per tier, by endpoint.
    gathering: Mutex<Vec<HashMap<Arc<str>, DeferralBatch>>>,
    /// Wakes the task that writes batches after [`BATCH_LINGER`].
    batch_started: Arc<Notify>,
    /// The delivery-report thread, until [`OutcomeWriter::closed`] waits
    /// for it (dropping it stops it).
    report_thread: Mutex<Option<ReportThread>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Lets the batch task see that the writer is gone.
        self.batch_started.notify_one();
        // The report thread stops at once but is not waited for here (this
        // may run on a runtime thread, and the thread may be closing the
        // producer): `closed` is where it is waited for.
        if let Some(thread) = crate::core::lock(&self.report_thread).as_mut() {
            drop(thread.stopped());
        }
    }
}

impl Inner {
    fn topic(&self, target: Target) -> &str {
        match target {
            Target::Tier(tier) => self.tiers.topic(tier),
            Target::Dlq => &self.dlq_topic,
        }
    }

    /// Writes a single retry record, on `endpoint`'s partition of its tier.
    fn send_single(&self, endpoint: &str, (headers, write): (OwnedHeaders, Write)) {
        let partition = match write.target {
            Target::Tier(tier) => self.endpoint_partition(tier, endpoint),
            Target::Dlq => None,
        };
        self.send(Box::new(Write { partition, ..write }), Some(headers));
    }

    /// Writes one deferral as a single retry record.
    fn send_alone(&self, tier: usize, endpoint: &str, deferral: Deferral) {
        self.send_single(endpoint, deferral.into_single(tier, endpoint));
    }

    /// The partition of `tier` for `endpoint`'s records, once known.
    fn endpoint_partition(&self, tier: usize, endpoint: &str) -> Option<i32> {
        let partitions = self.tier_partitions[tier].load(Ordering::Relaxed);
        (partitions > 0).then(|| endpoint_partition(endpoint, partitions))
    }

    /// Hands a write to librdkafka; what it refuses at once comes back
    /// through the resend queue.
    fn send(&self, write: Box<Write>, headers: Option<OwnedHeaders>) {
        // Handles on the value and key: the write itself moves into the
        // record as its opaque.
        let (value, key) = match &write.payload {
            Body::One {
                event, with_value, ..
            } => (
                if *with_value {
                    event.body().clone()
                } else {
                    Bytes::new()
                },
                event.key().cloned(),
            ),
            Body::Deferrals(batch) => (
                batch.value.clone(),
                Some(Bytes::copy_from_slice(batch.endpoint.as_bytes())),
            ),
        };
        let topic = self.topic(write.target);
        let mut record = BaseRecord::<[u8], [u8], Box<Write>>::with_opaque_to(topic, write)
            .payload(value.as_ref());
        if let Some(headers) = headers {
            record = record.headers(headers);
        }
        if let Some(key) = &key {
            record = record.key(key.as_ref());
        }
        if let Some(partition) = record.delivery_opaque.partition {
            record = record.partition(partition);
        }
        match self.producer.send(record) {
            Ok(()) => {}
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), record)) => {
                let _ = self.resend.send(Resend {
                    write: record.delivery_opaque,
                    headers: record.headers,
                    delay: QUEUE_FULL_PAUSE,
                });
            }
            // Refused before it left (larger than `message.max.bytes`, a
            // partition the client does not know, …): handled as if the
            // broker had refused it.
            Err((error, record)) => self.producer.context().failed(
                record.delivery_opaque,
                record.headers,
                &error,
                topic,
            ),
        }
    }
}

/// A delivery an endpoint cannot take now (see [`OutcomeWriter::defer`]).
#[derive(Debug, Clone, Copy)]
pub struct DeferralOf<'a> {
    /// The endpoint it is for.
    pub endpoint: &'a str,
    /// Attempts it made so far (a deferral uses none).
    pub attempt: u32,
    /// Unix ms of its first attempt (or of consumption).
    pub first_ms: i64,
    /// How long until it is tried again; also picks the tier (the
    /// largest not longer than it).
    pub delay: Duration,
    /// When it is due, if not `delay` from now (a disabled endpoint's
    /// backlog is due at the next multiple of its recheck interval).
    pub due_ms: Option<i64>,
    /// Why (`hookstream-last-error`).
    pub why: &'static str,
}

/// Writes retry and DLQ records durably. Cheap to clone.
#[derive(Clone)]
pub struct OutcomeWriter {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for OutcomeWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutcomeWriter")
            .field("dlq_topic", &self.inner.dlq_topic)
            .field("tiers", &self.inner.tiers)
            .finish()
    }
}

impl OutcomeWriter {
    /// A writer with its own idempotent `acks=all` producer, its
    /// delivery-report thread and its resend task (on the current runtime).
    /// Waits briefly (at most [`PARTITIONS_WAIT`]) to learn how many
    /// partitions each tier has, so that retries go to their endpoint's
    /// partition from the first; until then they are placed by key.
    pub async fn start(
        config: &Config,
        bootstrap: &str,
        dlq_topic: String,
        tiers: RetryTiers,
    ) -> Result<Self> {
        let (resend_tx, resend_rx) = mpsc::unbounded_channel();
        let dead_since_summary = Arc::default();
        let context = WriteContext {
            resend: resend_tx.clone(),
            dead_since_summary: Arc::clone(&dead_since_summary),
            last_warning: Mutex::new(None),
        };
        let producer: BaseProducer<WriteContext> =
            crate::kafka::durable_producer_config(config, bootstrap)
                .create_with_context(context)
                .context("creating the retry/DLQ producer")?;
        let producer = Arc::new(producer);
        let stop = Arc::new(AtomicBool::new(false));
        let tier_partitions: Arc<[AtomicI32]> = tiers.topics().map(|_| AtomicI32::new(0)).collect();
        let report_thread = ReportThread::spawn("outcome-reports", Arc::clone(&producer))?;
        spawn_partitions_thread(
            Arc::downgrade(&producer),
            Arc::clone(&stop),
            tiers.topics().map(str::to_string).collect(),
            Arc::clone(&tier_partitions),
        )?;
        let gathering = Mutex::new(tiers.topics().map(|_| HashMap::new()).collect());
        let batch_started = Arc::new(Notify::new());
        let inner = Arc::new(Inner {
            producer,
            dlq_topic,
            tiers,
            tier_partitions,
            resend: resend_tx,
            dead_since_summary,
            stop,
            gathering,
            batch_started: Arc::clone(&batch_started),
            report_thread: Mutex::new(Some(report_thread)),
        });
        tokio::spawn(resend_loop(Arc::downgrade(&inner), resend_rx));
        tokio::spawn(batch_loop(Arc::downgrade(&inner), batch_started));
        let waited = Instant::now();
        while waited.elapsed() < PARTITIONS_WAIT
            && inner
                .tier_partitions
                .iter()
                .any(|c| c.load(Ordering::Relaxed) == 0)
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok(Self { inner })
    }

    /// Stops serving delivery reports without waiting for writes in
    /// flight: they never complete, so their offsets stay uncommitted (what
    /// a crash does). Used when the pipeline is aborted or has shut down.
    pub fn close(&self) {
        self.inner.stop.store(true, Ordering::Release);
        if let Some(thread) = &*crate::core::lock(&self.inner.report_thread) {
            thread.stop();
        }
    }

    /// [`Self::close`], then waits until the delivery-report thread has let
    /// go of the producer (at once, unless it is in a completion; one
    /// held up there is not waited for past
    /// [`REPORT_THREAD_WAIT`]): once the last clone of the writer is
    /// dropped, the producer is closed, not left talking to a broker that
    /// may be going away.
    pub async fn closed(&self) {
        self.close();
        let thread = crate::core::lock(&self.inner.report_thread)
            .as_mut()
            .and_then(ReportThread::stopped);
        if let Some(thread) = thread {
            let joined = tokio::task::spawn_blocking(move || thread.join());
            if tokio::time::timeout(REPORT_THREAD_WAIT, joined)
                .await
                .is_err()
            {
                tracing::warn!(
                    waited_ms = REPORT_THREAD_WAIT.as_millis() as u64,
                    "the retry/DLQ producer's delivery-report thread did not stop in time; \
                     its producer closes when the thread does"
                );
            }
        }
    }

    /// Logs one line summarising the dead letters written since the last
    /// call (nothing when there were none): never one line per event.
    pub fn log_dead_letter_summary(&self, period: Duration) {
        let counts = match self.inner.dead_since_summary.lock() {
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
        tracing::warn!(total, %reasons, topic = %self.inner.dlq_topic, every_s = period.as_secs(), "events dead-lettered since the last summary");
    }

    /// The retry tiers.
    pub fn tiers(&self) -> &RetryTiers {
        &self.inner.tiers
    }

    /// The DLQ topic.
    pub fn dlq_topic(&self) -> &str {
        &self.inner.dlq_topic
    }

    /// Dead-letters `event` with `reason`; `done` runs once it is stored.
    pub fn dead_letter(
        &self,
        event: &Payload,
        history: &History<'_>,
        reason: Reason,
        done: Completion,
    ) {
        let headers = dead_letter_headers(event, history, reason.as_str(), now_ms());
        let write = Box::new(Write {
            target: Target::Dlq,
            payload: Body::One {
                event: event.clone(),
                with_value: true,
                done,
            },
            reason: Some(reason),
            failures: 0,
            partition: None,
        });
        self.inner.send(write, Some(headers));
    }

    /// Schedules a retry of `event` in `delay`, on the largest tier not
    /// longer than it; `done` runs once it is stored (on the DLQ instead,
    /// as `exhausted`, when it is too large for the tier topic).
    pub fn retry(&self, event: &Payload, history: &History<'_>, delay: Duration, done: Completion) {
        let tier = self.inner.tiers.tier_for(delay);
        let due = now_ms() + delay.as_millis() as i64;
        let single = single_retry(tier, event.clone(), history, due, done);
        self.inner.send_single(history.endpoint, single);
    }

    /// Defers `event` for `deferral.delay` (due then, or at
    /// `deferral.due_ms`) without using an attempt, on the largest tier not
    /// longer than the delay; `done` runs once it is stored.
    /// Deferrals of one endpoint within [`BATCH_LINGER`] of each other share
    /// one record ([`crate::wire::batch`]); a lone one, or one too large to
    /// share, is written as a single retry record.
    pub fn defer(&self, event: &Payload, deferral: DeferralOf<'_>, done: Completion) {
        let tier = self.inner.tiers.tier_for(deferral.delay);
        let due_ms = deferral
            .due_ms
            .unwrap_or_else(|| now_ms() + deferral.delay.as_millis() as i64);
        let entry = Deferral {
            event: event.clone(),
            attempt: deferral.attempt,
            first_ms: deferral.first_ms,
            due_ms,
            why: deferral.why,
            done,
        };
        if let Some(full) = self.inner.gather(tier, deferral.endpoint, entry) {
            self.inner.send_batch(full);
        }
    }

    /// Writes the deferrals gathered so far without waiting for more.
    pub fn flush_deferrals(&self) {
        self.inner.flush_deferrals();
    }
}

/// Writes deferral batches [`BATCH_LINGER`] after the first of a round was
/// started (batches that fill up are written at once by their caller).
async fn batch_loop(inner: Weak<Inner>, started: Arc<Notify>) {
    loop {
        started.notified().await;
        tokio::time::sleep(BATCH_LINGER).await;
        let Some(writer) = inner.upgrade() else {
            return;
        };
        writer.flush_deferrals();
    }
}

/// Sends refused or failed writes again once their pause is over. Writes
/// that need no pause (a size refusal rewritten) go at once; the others
/// wait for the longest pause among those that failed together.
async fn resend_loop(inner: Weak<Inner>, mut queue: mpsc::UnboundedReceiver<Resend>) {
    let mut batch = Vec::new();
    while queue.recv_many(&mut batch, 4096).await > 0 {
        let pause = batch.iter().map(|r| r.delay).max().unwrap_or_default();
        let (now, later): (Vec<Resend>, Vec<Resend>) =
            batch.drain(..).partition(|r| r.delay.is_zero());
        let Some(writer) = inner.upgrade() else {
            return;
        };
        for r in now {
            writer.send(r.write, r.headers);
        }
        drop(writer);
        if later.is_empty() {
            continue;
        }
        tokio::time::sleep(pause).await;
        let Some(writer) = inner.upgrade() else {
            return;
        };
        for r in later {
            writer.send(r.write, r.headers);
        }
    }
}

#[cfg(test)]
mod tests;
