//! Scenario (f): retries due over ten seconds, and how late each one
//! reaches the receiver after its due time.

use super::*;

impl Bench {
    /// (f): `events` retry records on the first tier, due over ten seconds
    /// from a few seconds after start; latency is due time → received.
    pub(super) async fn retry_timing(
        &self,
        events: u64,
        baselines: &Baselines,
    ) -> Result<ScenarioReport> {
        let topic = format!("bench-{}-retry-input", self.run_id);
        self.create_topic(&topic).await?;
        let mut config = self.config(&topic, &format!("{topic}-group"));
        config
            .endpoints
            .push(self.endpoint("bench", self.receiver.url()));
        let tier = config.topics.retry_topic(config.topics.retry_tiers[0]);
        self.create_topic(&tier).await?;
        eprintln!(
            "{}: producing {events} retry records due over 10 s",
            Scenario::RetryTiming.label()
        );
        let base_ms = crate::wire::headers::now_ms() + 8_000;
        let spread_ms = 10_000i64;
        send_in_chunks((0..events).map(|i| {
            let due_ms = base_ms + (i as i64 * spread_ms) / events as i64;
            let body = event_body(i, due_ms as u128 * 1_000_000);
            let due = due_ms.to_string();
            let id = format!("bench-{i}");
            let source = format!("{topic}/0/{i}");
            let producer = self.producer.clone();
            let tier = tier.clone();
            let key = format!("dev-{}", i % 100_000);
            async move {
                fn header<'a>(
                    key: &'a str,
                    value: &'a str,
                ) -> rdkafka::message::Header<'a, &'a str> {
                    rdkafka::message::Header {
                        key,
                        value: Some(value),
                    }
                }
                let headers = rdkafka::message::OwnedHeaders::new()
                    .insert(header("hookstream-endpoint", "bench"))
                    .insert(header("hookstream-attempt", "1"))
                    .insert(header("hookstream-due-ms", &due))
                    .insert(header("hookstream-first-ms", &due))
                    .insert(header("hookstream-source", &source))
                    .insert(header("hookstream-event-id", &id));
                producer
                    .send(
                        FutureRecord::to(&tier)
                            .key(&key)
                            .payload(&body)
                            .headers(headers),
                        Duration::from_secs(60),
                    )
                    .await
                    .map(|_| ())
                    .map_err(|e| anyhow::anyhow!("producing a retry record: {e}"))
            }
        }))
        .await?;
        let counts = Arc::clone(self.receiver.counts());
        counts.sample_latency.store(true, Ordering::SeqCst);
        let (measured, pipeline) = self.measure(config, events).await?;
        counts.sample_latency.store(false, Ordering::SeqCst);
        let [p50, p99] = counts.latency_percentiles_ms([0.50, 0.99]);
        let early = counts.early.load(Ordering::Relaxed);
        eprintln!("  {early} of {events} retries arrived before they were due");
        pipeline.shutdown().await?;
        let run = Run {
            events,
            deliveries: events,
            measured,
            latency_ms: (p50, p99),
        };
        Ok(ScenarioReport::of(Scenario::RetryTiming, run, baselines))
    }
}
