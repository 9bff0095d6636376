//! `hookstream dlq replay`: republishing chosen dead letters to the first
//! retry tier, once.
//!
//! A replayed record goes to its endpoint (or the one `--to` names) again
//! with the attempt count reset, its event id kept (so its `webhook-id` is
//! the same), and `hookstream-replay-of` set to its DLQ coordinates. Every
//! replay is noted in the compacted `<prefix>.dlq.replays` topic; selecting
//! a letter that was replayed before is refused unless forced.
//!
//! The DLQ is read twice with one [`ScanPlan`]: a first pass counts the
//! selection (and what was replayed before) without keeping letters, the
//! second streams them to the producer. Produces are pipelined: up to
//! [`MAX_IN_FLIGHT`] letters are unacknowledged at once on the idempotent
//! `acks=all` producer, and a letter's ledger note is produced only once
//! its republished record is acknowledged, in the order the letters were
//! read, so the ledger never names a replay the tier does not have.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;
use serde::Serialize;

use super::dlq::{DeadLetter, DlqFilter, read_topic};
use super::dlq_scan::ScanPlan;
use crate::config::Config;
use crate::wire::headers::{header, now_ms};

/// Letters produced and not yet acknowledged, at most.
pub const MAX_IN_FLIGHT: usize = 20_000;

/// What to replay and how.
#[derive(Debug, Clone, Default)]
pub struct ReplayOptions {
    /// Which dead letters.
    pub filter: DlqFilter,
    /// Count, write nothing.
    pub dry_run: bool,
    /// Records per second (none = as fast as the broker takes them).
    pub rate: Option<f64>,
    /// Replay letters that were replayed before.
    pub force: bool,
    /// Send every letter to this endpoint instead of its own.
    pub to: Option<String>,
    /// Draw a progress bar on standard error.
    pub progress: bool,
}

/// What a replay did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ReplayReport {
    /// Dead letters the filter selected.
    pub selected: u64,
    /// Republished to the first retry tier (would be, on a dry run).
    pub replayed: u64,
    /// Skipped: no endpoint to send them to (invalid events).
    pub skipped_no_endpoint: u64,
    /// Selected letters that were replayed before.
    pub replayed_before: u64,
    /// Nothing was written.
    pub dry_run: bool,
}

/// Why a replay did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Some of the selection was replayed before and `force` is off.
    #[error(
        "{0} of the {1} selected dead letters were replayed before; add --force to replay them again"
    )]
    AlreadyReplayed(u64, u64),
    /// `--to` names an endpoint that neither the configuration file nor
    /// the endpoint store has.
    #[error("--to: no endpoint `{0}` in the configuration file or the endpoint store")]
    UnknownEndpoint(String),
    /// Kafka or I/O failure.
    #[error("{0:#}")]
    Failed(#[from] anyhow::Error),
}

/// The ledger topic of replays.
pub fn ledger_topic(config: &Config) -> String {
    config.topics.replay_ledger_topic()
}

/// Reads the coordinates of every letter replayed before.
fn replayed_before(config: &Config, bootstrap: &str) -> Result<HashSet<String>> {
    let client = crate::kafka::reader_client_config(config, bootstrap);
    let mut seen = HashSet::new();
    let topic = ledger_topic(config);
    match read_topic(&client, &topic, |m| {
        if let Some(key) = rdkafka::Message::key(m) {
            seen.insert(String::from_utf8_lossy(key).into_owned());
        }
        true
    }) {
        Ok(()) => Ok(seen),
        // No ledger yet: nothing was replayed.
        Err(e) if is_unknown_topic(&e) => Ok(seen),
        Err(e) => Err(e),
    }
}

/// Whether `e` says the topic does not exist.
fn is_unknown_topic(e: &anyhow::Error) -> bool {
    let text = format!("{e:#}");
    text.contains("UnknownTopic") || text.contains("UNKNOWN_TOPIC")
}

/// Whether endpoint `id` is in the configuration file or, not deleted, in
/// the endpoint store's topic.
fn endpoint_exists(config: &Config, bootstrap: &str, id: &str) -> Result<bool> {
    if config.endpoints.iter().any(|e| e.id == id) {
        return Ok(true);
    }
    let client = crate::kafka::reader_client_config(config, bootstrap);
    // The last record of the id decides: a tombstone (no value) deletes.
    let mut exists = false;
    match read_topic(&client, &config.topics.endpoints_topic(), |m| {
        if rdkafka::Message::key(m) == Some(id.as_bytes()) {
            exists = rdkafka::Message::payload(m).is_some();
        }
        true
    }) {
        Ok(()) => Ok(exists),
        // No store yet: no endpoint beyond the configuration file's.
        Err(e) if is_unknown_topic(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Runs `work` on a blocking thread.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work).await.context(what)?
}

/// Replays the selected dead letters.
pub async fn replay(
    config: &Config,
    bootstrap: &str,
    options: &ReplayOptions,
) -> Result<ReplayReport, ReplayError> {
    let dlq_topic = config.topics.dlq_topic();
    let client = crate::kafka::reader_client_config(config, bootstrap);
    let before = {
        let (config, bootstrap) = (config.clone(), bootstrap.to_string());
        blocking("reading the replay ledger", move || {
            replayed_before(&config, &bootstrap)
        })
        .await?
    };
    let filter = options.filter.clone();
    let (plan, report) = blocking("counting the selection", move || {
        let plan = ScanPlan::plan(&client, &dlq_topic, &filter)?;
        let mut report = ReplayReport::default();
        report.selected = plan.scan_facts(&filter, |letter| {
            if letter.endpoint.is_none() {
                report.skipped_no_endpoint += 1;
            } else if before.contains(&letter.coordinates(&dlq_topic)) {
                report.replayed_before += 1;
            }
            true
        })?;
        Ok((plan, report))
    })
    .await?;
    let mut report = ReplayReport {
        replayed: report.selected - report.skipped_no_endpoint,
        dry_run: options.dry_run,
        ..report
    };
    if report.replayed_before > 0 && !options.force {
        return Err(ReplayError::AlreadyReplayed(
            report.replayed_before,
            report.selected,
        ));
    }
    if let Some(to) = &options.to {
        let (c, b, id) = (config.clone(), bootstrap.to_string(), to.clone());
        if !blocking("reading the endpoint store", move || {
            endpoint_exists(&c, &b, &id)
        })
        .await?
        {
            return Err(ReplayError::UnknownEndpoint(to.clone()));
        }
    }
    if options.dry_run {
        return Ok(report);
    }
    let total = report.replayed;
    report.replayed = write(config, bootstrap, options, plan, total).await?;
    Ok(report)
}

/// The second pass: streams the selection from a reader thread and
/// republishes it; returns how many letters were replayed.
async fn write(
    config: &Config,
    bootstrap: &str,
    options: &ReplayOptions,
    plan: ScanPlan,
    total: u64,
) -> Result<u64> {
    let first_tier = config
        .topics
        .retry_tiers
        .first()
        .map(|t| config.topics.retry_topic(*t))
        .context("no retry tiers configured")?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<DeadLetter>(1024);
    let filter = options.filter.clone();
    let reader = tokio::task::spawn_blocking(move || {
        plan.scan(&filter, |letter| {
            letter.endpoint.is_none() || tx.blocking_send(letter).is_ok()
        })
    });
    let progress = if options.progress {
        let bar = ProgressBar::new(total);
        if let Ok(style) =
            ProgressStyle::with_template("{bar:30} {pos}/{len} replayed ({per_sec}, {eta} left)")
        {
            bar.set_style(style);
        }
        bar
    } else {
        ProgressBar::hidden()
    };
    let mut writer = Writer {
        producer: crate::kafka::durable_producer(config, bootstrap)?,
        tier: first_tier,
        ledger: ledger_topic(config),
        dlq: config.topics.dlq_topic(),
        to: options.to.clone(),
        republished: VecDeque::new(),
        noted: VecDeque::new(),
        replayed: 0,
        progress,
    };
    let started = Instant::now();
    let mut sent = 0u64;
    let written: Result<()> = async {
        while let Some(letter) = rx.recv().await {
            if let Some(rate) = options.rate.filter(|r| *r > 0.0) {
                // (The CLI keeps the rate within limits; this stays finite
                // whatever it is.)
                let wait = Duration::try_from_secs_f64(sent as f64 / rate).unwrap_or(Duration::MAX);
                tokio::time::sleep_until(started.checked_add(wait).unwrap_or(started).into()).await;
            }
            writer.republish(&letter).await?;
            sent += 1;
        }
        writer.finish().await
    }
    .await;
    drop(rx);
    writer.progress.finish_and_clear();
    written.with_context(|| {
        format!(
            "{} letters were replayed and noted before the failure",
            writer.replayed
        )
    })?;
    reader.await.context("reading the DLQ")??;
    Ok(writer.replayed)
}

/// The pipelined producer side of a replay.
struct Writer {
    producer: FutureProducer,
    tier: String,
    ledger: String,
    dlq: String,
    to: Option<String>,
    /// Republished records not yet acknowledged, in read order, with the
    /// coordinates of their letters.
    republished: VecDeque<(DeliveryFuture, String)>,
    /// Ledger notes not yet acknowledged.
    noted: VecDeque<DeliveryFuture>,
    replayed: u64,
    progress: ProgressBar,
}

impl Writer {
    /// Produces `letter` to the tier; settles the oldest letters while
    /// [`MAX_IN_FLIGHT`] are unacknowledged.
    async fn republish(&mut self, letter: &DeadLetter) -> Result<()> {
        let coordinates = letter.coordinates(&self.dlq);
        let endpoint = self
            .to
            .as_deref()
            .or(letter.endpoint.as_deref())
            .unwrap_or_default();
        let headers = retry_headers(letter, endpoint, &coordinates);
        let mut record = FutureRecord::<[u8], [u8]>::to(&self.tier)
            .payload(&letter.value)
            .headers(headers);
        if let Some(key) = &letter.key {
            record = record.key(key);
        }
        let delivery = enqueue(&self.producer, record).await?;
        self.republished.push_back((delivery, coordinates));
        while self.republished.len() >= MAX_IN_FLIGHT {
            self.settle_oldest().await?;
        }
        Ok(())
    }

    /// Waits for the oldest republished record, then notes it in the
    /// ledger.
    async fn settle_oldest(&mut self) -> Result<()> {
        let Some((delivery, coordinates)) = self.republished.pop_front() else {
            return Ok(());
        };
        acknowledged(delivery)
            .await
            .with_context(|| format!("republishing {coordinates}"))?;
        let note = format!(r#"{{"replayed_ms":{}}}"#, now_ms());
        let record = FutureRecord::to(&self.ledger)
            .key(&coordinates)
            .payload(&note);
        let noted = enqueue(&self.producer, record).await?;
        self.noted.push_back(noted);
        self.replayed += 1;
        self.progress.inc(1);
        while self.noted.len() >= MAX_IN_FLIGHT {
            if let Some(oldest) = self.noted.pop_front() {
                acknowledged(oldest)
                    .await
                    .context("noting a replay in the ledger")?;
            }
        }
        Ok(())
    }

    /// Settles everything in flight.
    async fn finish(&mut self) -> Result<()> {
        while !self.republished.is_empty() {
            self.settle_oldest().await?;
        }
        while let Some(oldest) = self.noted.pop_front() {
            acknowledged(oldest)
                .await
                .context("noting a replay in the ledger")?;
        }
        Ok(())
    }
}

/// Hands `record` to librdkafka, waiting while its queue is full.
async fn enqueue<K, P>(
    producer: &FutureProducer,
    mut record: FutureRecord<'_, K, P>,
) -> Result<DeliveryFuture>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    loop {
        match producer.send_result(record) {
            Ok(delivery) => return Ok(delivery),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                // librdkafka's own thread drains the queue meanwhile.
                record = back;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err((e, _)) => return Err(anyhow::anyhow!("producing: {e}")),
        }
    }
}

/// Waits for a record's delivery report.
async fn acknowledged(delivery: DeliveryFuture) -> Result<()> {
    match delivery.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(anyhow::anyhow!("producing: {e}")),
        Err(_) => Err(anyhow::anyhow!("producing: the producer went away")),
    }
}

/// The headers of a replayed letter's retry record: its own non-hookstream
/// headers, then a fresh retry history pointing back at the letter.
fn retry_headers(letter: &DeadLetter, endpoint: &str, coordinates: &str) -> OwnedHeaders {
    let now = now_ms().to_string();
    let mut headers = OwnedHeaders::new_with_capacity(letter.headers.len() + 10);
    for (k, v) in &letter.headers {
        if !k.starts_with(header::PREFIX) {
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
    }
    for (k, v) in [
        (header::ENDPOINT, endpoint),
        (header::ATTEMPT, "0"),
        (header::DUE_MS, &now),
        (header::FIRST_MS, &now),
        (header::SOURCE, &letter.source),
        (header::EVENT_ID, &letter.event_id),
        (header::LAST_STATUS, &letter.last_status),
        (header::LAST_ERROR, &letter.last_error),
        (header::REPLAY_OF, coordinates),
    ] {
        headers = headers.insert(Header {
            key: k,
            value: Some(v),
        });
    }
    // The event type, when the letter has it, spares the retry a parse;
    // its time and body pointer shape it as its first attempt was.
    for (k, v) in letter.headers.iter().filter(|(k, _)| {
        [
            header::EVENT_TYPE,
            header::EVENT_TIME_MS,
            header::BODY_POINTER,
        ]
        .contains(&k.as_str())
    }) {
        headers = headers.insert(Header {
            key: k,
            value: Some(v),
        });
    }
    headers
}
