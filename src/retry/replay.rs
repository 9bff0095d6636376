//! `hookstream dlq replay`: republishing chosen dead letters to the first
//! retry tier, once.
//!
//! A replayed record goes to its endpoint again with the attempt count
//! reset, its event id kept (so its `webhook-id` is the same), and
//! `hookstream-replay-of` set to its DLQ coordinates. Every replay is noted
//! in the compacted `<prefix>.dlq.replays` topic; selecting a letter that
//! was replayed before is refused unless forced.

use std::collections::HashSet;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;

use super::dlq::{DeadLetter, DlqFilter, read_topic, select};
use crate::config::Config;
use crate::wire::headers::{header, now_ms};

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
}

/// What a replay did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ReplayReport {
    /// Dead letters the filter selected.
    pub selected: usize,
    /// Republished to the first retry tier (would be, on a dry run).
    pub replayed: usize,
    /// Skipped: no endpoint to send them to (invalid events).
    pub skipped_no_endpoint: usize,
    /// Selected letters that were replayed before.
    pub replayed_before: usize,
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
    AlreadyReplayed(usize, usize),
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
    let client = crate::kafka::base_client_config(config, bootstrap);
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
        Err(e) if format!("{e:#}").contains("UnknownTopic") => Ok(seen),
        Err(e) => Err(e),
    }
}

/// Replays the selected dead letters. `progress` draws a progress line on
/// stderr (when it is a terminal).
pub async fn replay(
    config: &Config,
    bootstrap: &str,
    options: &ReplayOptions,
) -> Result<ReplayReport, ReplayError> {
    let dlq_topic = config.topics.dlq_topic();
    let client = crate::kafka::base_client_config(config, bootstrap);
    let letters = {
        let client = client.clone();
        let topic = dlq_topic.clone();
        let filter = options.filter.clone();
        tokio::task::spawn_blocking(move || select(&client, &topic, &filter))
            .await
            .context("reading the DLQ")??
    };
    let before = {
        let config = config.clone();
        let bootstrap = bootstrap.to_string();
        tokio::task::spawn_blocking(move || replayed_before(&config, &bootstrap))
            .await
            .context("reading the replay ledger")??
    };
    let mut report = ReplayReport {
        selected: letters.len(),
        dry_run: options.dry_run,
        ..ReplayReport::default()
    };
    report.replayed_before = letters
        .iter()
        .filter(|l| before.contains(&l.coordinates(&dlq_topic)))
        .count();
    if report.replayed_before > 0 && !options.force {
        return Err(ReplayError::AlreadyReplayed(
            report.replayed_before,
            report.selected,
        ));
    }
    let (sendable, skipped): (Vec<&DeadLetter>, Vec<&DeadLetter>) =
        letters.iter().partition(|l| l.endpoint.is_some());
    report.skipped_no_endpoint = skipped.len();
    if options.dry_run {
        report.replayed = sendable.len();
        return Ok(report);
    }
    let producer = crate::kafka::durable_producer(config, bootstrap)?;
    let first_tier = config
        .topics
        .retry_tiers
        .first()
        .map(|t| config.topics.retry_topic(*t))
        .context("no retry tiers configured")?;
    let ledger = ledger_topic(config);
    let started = Instant::now();
    let show = std::io::stderr().is_terminal();
    for (i, letter) in sendable.iter().enumerate() {
        if let Some(rate) = options.rate.filter(|r| *r > 0.0) {
            // (The CLI keeps the rate within limits; this stays finite
            // whatever it is.)
            let wait = Duration::try_from_secs_f64(i as f64 / rate).unwrap_or(Duration::MAX);
            let due = started.checked_add(wait).unwrap_or(started);
            tokio::time::sleep_until(due.into()).await;
        }
        let coordinates = letter.coordinates(&dlq_topic);
        republish(&producer, &first_tier, letter, &coordinates).await?;
        let note = format!(r#"{{"replayed_ms":{}}}"#, now_ms());
        send(
            &producer,
            FutureRecord::to(&ledger).key(&coordinates).payload(&note),
        )
        .await?;
        report.replayed += 1;
        if show && (i % 50 == 0 || i + 1 == sendable.len()) {
            draw_progress(i + 1, sendable.len(), started);
        }
    }
    if show {
        eprintln!();
    }
    Ok(report)
}

async fn republish(
    producer: &FutureProducer,
    topic: &str,
    letter: &DeadLetter,
    coordinates: &str,
) -> Result<()> {
    let now = now_ms().to_string();
    let mut headers = OwnedHeaders::new();
    for (k, v) in &letter.headers {
        if !k.starts_with(header::PREFIX) {
            headers = headers.insert(Header {
                key: k,
                value: Some(v),
            });
        }
    }
    let endpoint = letter.endpoint.clone().unwrap_or_default();
    for (k, v) in [
        (header::ENDPOINT, endpoint.as_str()),
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
    let mut record = FutureRecord::<[u8], [u8]>::to(topic)
        .payload(&letter.value)
        .headers(headers);
    if let Some(key) = &letter.key {
        record = record.key(key);
    }
    send(producer, record).await
}

async fn send<K, P>(producer: &FutureProducer, record: FutureRecord<'_, K, P>) -> Result<()>
where
    K: rdkafka::message::ToBytes + ?Sized,
    P: rdkafka::message::ToBytes + ?Sized,
{
    producer
        .send(record, Duration::from_secs(30))
        .await
        .map(|_| ())
        .map_err(|(e, _)| anyhow::anyhow!("producing: {e}"))
}

fn draw_progress(done: usize, total: usize, started: Instant) {
    let width = 30;
    let filled = (done * width)
        .checked_div(total)
        .unwrap_or(width)
        .min(width);
    let rate = done as f64 / started.elapsed().as_secs_f64().max(0.001);
    let mut err = std::io::stderr();
    let _ = write!(
        err,
        "\r[{}{}] {done}/{total} replayed ({rate:.0}/s)",
        "#".repeat(filled),
        " ".repeat(width - filled)
    );
    let _ = err.flush();
}
