//! Scenario (e): a healthy endpoint alone and beside a dead one, in
//! interleaved rounds, so that a shared machine's spells fall on both sides
//! of the ratio.

use super::*;

/// Rounds of scenario (e); its ratio is the median of theirs. Odd: the
/// last round runs alone first, so that its pipeline beside the dead
/// endpoint is still up for the latency phase.
const DEAD_NEIGHBOUR_ROUNDS: usize = 11;

impl Bench {
    /// (e): the healthy endpoint alone and beside an endpoint whose port
    /// refuses connections (both receive every event), in
    /// [`DEAD_NEIGHBOUR_ROUNDS`] interleaved rounds: each round's pair runs
    /// back to back, so a shared machine's slow and fast spells fall on
    /// both sides of a ratio, and the rounds alternate which of the pair
    /// runs first. Reports the median of the rounds' ratios, the median
    /// rates, and the latency of the last round beside the dead one.
    ///
    /// Long on purpose: the rounds' loop gathers six series whose medians
    /// make the report; apart they would travel in a struct of their own.
    pub(super) async fn dead_neighbour(
        &self,
        events: u64,
        baselines: &Baselines,
    ) -> Result<ScenarioReport> {
        let scenario = Scenario::DeadNeighbour;
        let base = format!("bench-{}-dead-neighbour", self.run_id);
        let (alone_topic, with_topic) = (format!("{base}-alone"), format!("{base}-with"));
        for topic in [&alone_topic, &with_topic] {
            self.create_topic(topic).await?;
        }
        eprintln!("{}: preloading {events} events twice", scenario.label());
        self.preload(&alone_topic, 0, events).await?;
        self.preload(&with_topic, 0, events).await?;
        let dead_port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let mut alone_rates = Vec::new();
        let mut with_rates = Vec::new();
        let mut ratios = Vec::new();
        let (mut alone_cpu, mut with_cpu) = (Vec::new(), Vec::new());
        let mut memory: Option<Memory> = None;
        let (mut requests, mut secs) = (0, 0.0);
        let (mut receiver_cpu, mut broker_cpu) = (0.0, None);
        let (mut p50, mut p99) = (0.0, 0.0);
        for round in 0..DEAD_NEIGHBOUR_ROUNDS {
            let with_first = round % 2 == 1;
            let pair = Pair {
                round,
                alone_topic: &alone_topic,
                with_topic: &with_topic,
                dead_port,
                with_first,
            };
            let (alone, with, with_pipeline) = self.dead_neighbour_pair(pair, events).await?;
            let alone_rate = events as f64 / alone.secs.max(1e-9);
            let with_rate = events as f64 / with.secs.max(1e-9);
            let per_event = |cpu: f64| cpu * 1e6 / events.max(1) as f64;
            alone_cpu.push(per_event(alone.cpu_secs));
            with_cpu.push(per_event(with.cpu_secs));
            eprintln!(
                "  round {} ({}): healthy alone {alone_rate:.0} events/s ({:.1} µs CPU/event), beside the dead endpoint {with_rate:.0} events/s ({:.1} µs CPU/event) (×{:.2})",
                round + 1,
                if with_first {
                    "beside first"
                } else {
                    "alone first"
                },
                per_event(alone.cpu_secs),
                per_event(with.cpu_secs),
                with_rate / alone_rate
            );
            alone_rates.push(alone_rate);
            with_rates.push(with_rate);
            ratios.push(with_rate / alone_rate);
            let round_memory = alone.memory.max(with.memory);
            memory = Some(memory.map_or(round_memory, |m| m.max(round_memory)));
            (requests, secs) = (with.requests, with.secs);
            (receiver_cpu, broker_cpu) = (with.receiver_cpu_secs, with.broker_cpu_secs);
            if let Some(pipeline) = with_pipeline {
                if round + 1 == DEAD_NEIGHBOUR_ROUNDS {
                    (p50, p99) = self.latency(&with_topic, events, with_rate, 1).await?;
                    log_activity(&pipeline, &["healthy", "dead"]);
                }
                pipeline.shutdown().await?;
            }
        }
        let with_rate = median(&with_rates);
        eprintln!(
            "  healthy alone (median) {:.0} events/s, {:.1} µs CPU/event; beside a dead endpoint (median) {with_rate:.0} events/s, {:.1} µs CPU/event; ratio of the medians ×{:.2}; ratios by round {ratios:.2?}, median ×{:.2}",
            median(&alone_rates),
            median(&alone_cpu),
            median(&with_cpu),
            with_rate / median(&alone_rates).max(1e-9),
            median(&ratios),
        );
        // Rates are the medians; requests/s is the last round's.
        let run = Run {
            events,
            deliveries: events,
            measured: Measured {
                secs: events as f64 / with_rate.max(1e-9),
                cpu_secs: median(&with_cpu) * events as f64 / 1e6,
                receiver_cpu_secs: receiver_cpu,
                broker_cpu_secs: broker_cpu,
                requests: 0,
                memory: memory.unwrap_or(Memory {
                    peak: 0.0,
                    before: 0.0,
                    broker_peak: None,
                    startup_peak: None,
                }),
            },
            latency_ms: (p50, p99),
        };
        Ok(ScenarioReport {
            requests_per_s: requests as f64 / secs.max(1e-9),
            healthy_ratio_with_dead_neighbour: Some(median(&ratios)),
            healthy_alone_cpu_us_per_event: Some(median(&alone_cpu)),
            ..ScenarioReport::of(scenario, run, baselines)
        })
    }

    /// One round's pair of runs, in the round's order: the healthy
    /// endpoint alone, and beside the dead one. The pipeline beside the
    /// dead endpoint comes back still running when it ran second.
    async fn dead_neighbour_pair(
        &self,
        pair: Pair<'_>,
        events: u64,
    ) -> Result<(Measured, Measured, Option<Pipeline>)> {
        let url = self.receiver.url();
        // Each run reads its topic from the start in a group of its own,
        // with owned topics of its own (no retries of earlier rounds).
        let round = pair.round;
        let run_config = |topic: &str, tag: &str| {
            let mut c = self.config(topic, &format!("{topic}-r{round}"));
            c.topics.prefix = format!("bench{}{tag}{round}", self.run_id);
            c.endpoints.push(self.endpoint("healthy", url.clone()));
            c
        };
        let mut with = run_config(pair.with_topic, "with");
        with.endpoints
            .push(self.endpoint("dead", format!("http://127.0.0.1:{}/gone", pair.dead_port)));
        // Odd rounds run beside the dead endpoint first, so whatever the
        // order itself does (a warmer receiver, a broker holding more
        // topics) falls on both sides. With an odd number of rounds the
        // last runs alone first, and its pipeline beside the dead
        // endpoint stays up for the latency phase.
        if pair.with_first {
            let (with, pipeline) = self.measure(with, events).await?;
            pipeline.shutdown().await?;
            let (alone, pipeline) = self
                .measure(run_config(pair.alone_topic, "alone"), events)
                .await?;
            pipeline.shutdown().await?;
            Ok((alone, with, None))
        } else {
            let (alone, pipeline) = self
                .measure(run_config(pair.alone_topic, "alone"), events)
                .await?;
            pipeline.shutdown().await?;
            let (with, pipeline) = self.measure(with, events).await?;
            Ok((alone, with, Some(pipeline)))
        }
    }
}

/// One round of scenario (e): its number, topics, the dead endpoint's
/// port, and which of the pair runs first.
struct Pair<'a> {
    round: usize,
    alone_topic: &'a str,
    with_topic: &'a str,
    dead_port: u16,
    with_first: bool,
}
