//! Scenario (h): `hookstream dlq replay` of a DLQ full of letters, against
//! the raw produce rate of the same broker measured in the same run.
//!
//! The baseline produces as many records as there are letters, each the
//! record a replay writes to the tier (same payload, same headers), with
//! the replay's durable producer settings (idempotent, `acks=all`, lz4) and
//! the same number in flight, doing nothing else. The replay is timed whole
//! as a user waits for it: reading the ledger, counting the selection,
//! then reading the DLQ again while republishing every letter and noting
//! it in the ledger (two records per letter).

use std::collections::VecDeque;

use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;

use super::*;
use crate::retry::replay::{MAX_IN_FLIGHT, ReplayOptions, replay};

/// A dead letter's headers, as the DLQ writer makes them.
fn letter_headers(i: u64, dead_ms: &str) -> OwnedHeaders {
    let id = format!("bench-{i}");
    let source = format!("bench-input/{}/{i}", i % 16);
    [
        ("hookstream-endpoint", "bench"),
        ("hookstream-attempt", "8"),
        ("hookstream-first-ms", dead_ms),
        ("hookstream-source", source.as_str()),
        ("hookstream-event-id", id.as_str()),
        ("hookstream-event-type", "device-status-changed"),
        ("hookstream-last-status", "503"),
        ("hookstream-last-error", ""),
        ("hookstream-reason", "exhausted"),
        ("hookstream-dead-ms", dead_ms),
    ]
    .into_iter()
    .fold(OwnedHeaders::new_with_capacity(10), |h, (key, value)| {
        h.insert(Header {
            key,
            value: Some(value),
        })
    })
}

impl Bench {
    /// (h): `letters` dead letters replayed, against raw produce.
    ///
    /// Long on purpose: the phases of one measurement in order (topics,
    /// the raw produce baseline, the letters, the timed replay with its CPU
    /// readings, the report), each a few lines.
    pub(super) async fn dlq_replay(
        &self,
        letters: u64,
        baselines: &Baselines,
    ) -> Result<ScenarioReport> {
        let scenario = Scenario::DlqReplay;
        let mut config = self.config(&format!("bench-{}-dlq-input", self.run_id), "unused");
        if self.broker.is_some() {
            // `dlq replay` talks to the broker by its address.
            config.kafka.brokers = self.bootstrap.clone();
        }
        let tier = config.topics.retry_topic(config.topics.retry_tiers[0]);
        let raw_topic = format!("bench-{}-raw-produce", self.run_id);
        for topic in [
            config.topics.dlq_topic(),
            config.topics.replay_ledger_topic(),
            tier.clone(),
            raw_topic.clone(),
        ] {
            self.create_topic(&topic).await?;
        }
        eprintln!("{}: writing {letters} dead letters", scenario.label());
        self.write_letters(&config.topics.dlq_topic(), letters)
            .await?;
        let raw_produce_per_s = self.raw_produce(&config, &raw_topic, letters).await?;
        eprintln!(
            "  raw produce (durable producer, {MAX_IN_FLIGHT} in flight): {raw_produce_per_s:.0} records/s"
        );

        release_freed_memory();
        let rss_before = status_kib("VmRSS:") / 1024.0;
        reset_peak_rss("self");
        let broker_pid = self.broker_pid_with_peak_reset();
        let cpu_now = || {
            process_cpu_secs("self").unwrap_or(0.0)
                + broker_pid
                    .as_deref()
                    .and_then(process_cpu_secs)
                    .unwrap_or(0.0)
        };
        let cpu_before = cpu_now();
        let started = Instant::now();
        let report = replay(&config, &self.bootstrap, &ReplayOptions::default())
            .await
            .map_err(|e| anyhow::anyhow!("replaying: {e}"))?;
        let secs = started.elapsed().as_secs_f64().max(1e-9);
        let cpu_secs = cpu_now() - cpu_before;
        anyhow::ensure!(
            report.replayed == letters,
            "replayed {} of {letters} letters",
            report.replayed
        );
        let per_s = letters as f64 / secs;
        eprintln!(
            "  replayed {letters} letters in {secs:.2} s: {per_s:.0} letters/s, ×{:.2} raw produce",
            per_s / raw_produce_per_s.max(1e-9)
        );
        Ok(ScenarioReport {
            scenario,
            events: letters,
            deliveries: letters,
            events_per_s: per_s,
            deliveries_per_s: per_s,
            requests_per_s: 0.0,
            latency_p50_ms: 0.0,
            latency_p99_ms: 0.0,
            peak_rss_mib: (status_kib("VmHWM:") / 1024.0).max(rss_before),
            rss_before_mib: rss_before,
            service_startup_peak_rss_mib: None,
            broker_peak_rss_mib: broker_pid
                .and_then(|pid| process_status_kib(&pid, "VmHWM:"))
                .map(|kib| kib / 1024.0),
            cpu_us_per_event: cpu_secs * 1e6 / letters.max(1) as f64,
            ratio_to_raw_http: 0.0,
            ratio_to_raw_consume: per_s / baselines.raw_consume_per_s.max(1e-9),
            ratio_to_raw_forward: None,
            healthy_ratio_with_dead_neighbour: None,
            healthy_alone_cpu_us_per_event: None,
            raw_produce_per_s: Some(raw_produce_per_s),
            ratio_to_raw_produce: Some(per_s / raw_produce_per_s.max(1e-9)),
            activity_log_ratio: None,
            ordered_others_ratio_with_failing_device: None,
            ordered_to_unordered_ratio: None,
            activity_log_off_cpu_us_per_event: None,
            capacity_runs: None,
            receiver_cpu_us_per_event: 0.0,
            broker_cpu_us_per_event: None,
        })
    }

    /// Writes `letters` dead letters to `dlq`, as the DLQ writer makes them.
    async fn write_letters(&self, dlq: &str, letters: u64) -> Result<()> {
        let dead_ms = crate::wire::headers::now_ms().to_string();
        send_in_chunks((0..letters).map(|i| {
            let (producer, dlq, dead_ms) =
                (self.producer.clone(), dlq.to_string(), dead_ms.clone());
            async move {
                let body = event_body(i, 0);
                let key = format!("dev-{}", i % 100_000);
                let record = FutureRecord::to(&dlq)
                    .key(&key)
                    .payload(&body)
                    .headers(letter_headers(i, &dead_ms));
                producer
                    .send(record, Duration::from_secs(60))
                    .await
                    .map(|_| ())
                    .map_err(|e| anyhow::anyhow!("writing a dead letter: {e}"))
            }
        }))
        .await
    }

    /// Records/s the replay's durable producer writes to `topic`, `records`
    /// of the size and headers a replay writes, [`MAX_IN_FLIGHT`] at once.
    async fn raw_produce(&self, config: &Config, topic: &str, records: u64) -> Result<f64> {
        let producer = crate::kafka::durable_producer(config, &self.bootstrap)?;
        let dead_ms = crate::wire::headers::now_ms().to_string();
        let mut in_flight = VecDeque::with_capacity(MAX_IN_FLIGHT);
        let started = Instant::now();
        for i in 0..records {
            let body = event_body(i, 0);
            let key = format!("dev-{}", i % 100_000);
            let mut record = FutureRecord::to(topic)
                .key(&key)
                .payload(&body)
                .headers(letter_headers(i, &dead_ms));
            let delivery = loop {
                match producer.send_result(record) {
                    Ok(delivery) => break delivery,
                    Err((_, back)) => {
                        record = back;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            };
            in_flight.push_back(delivery);
            while in_flight.len() >= MAX_IN_FLIGHT {
                settle(in_flight.pop_front()).await?;
            }
        }
        while let Some(delivery) = in_flight.pop_front() {
            settle(Some(delivery)).await?;
        }
        Ok(records as f64 / started.elapsed().as_secs_f64().max(1e-9))
    }
}

async fn settle(delivery: Option<rdkafka::producer::DeliveryFuture>) -> Result<()> {
    match delivery {
        Some(d) => match d.await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(anyhow::anyhow!("raw produce: {e}")),
            Err(_) => Err(anyhow::anyhow!("raw produce: the producer went away")),
        },
        None => Ok(()),
    }
}
