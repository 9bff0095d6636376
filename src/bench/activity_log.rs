//! Bench (g): what the durable activity log costs deliveries. Scenario (a)
//! (one endpoint, one signed event per POST) with `topics.attempts_log`
//! off and on, in [`ROUNDS`] interleaved rounds: each round's pair runs
//! back to back and the rounds alternate which runs first, so a shared
//! machine's slow and fast spells fall on both sides of a ratio. Reports
//! the median of the rounds' on ÷ off rates and the CPU per event of each.

use anyhow::Result;

use super::{Baselines, Bench, Measured, Run, Scenario, ScenarioReport, median};

/// Rounds of scenario (g).
const ROUNDS: usize = 5;

impl Bench {
    /// Scenario (g): scenario (a) with the activity log off, then on.
    ///
    /// Long on purpose: paired rounds alternating which runs first, then
    /// the medians of four series into the report.
    pub(super) async fn activity_log_cost(
        &self,
        events: u64,
        baselines: &Baselines,
    ) -> Result<ScenarioReport> {
        let scenario = Scenario::ActivityLog;
        let base = format!("bench-{}-activity-log", self.run_id);
        let (off_topic, on_topic) = (format!("{base}-off"), format!("{base}-on"));
        for topic in [&off_topic, &on_topic] {
            self.create_topic(topic).await?;
        }
        eprintln!("{}: preloading {events} events twice", scenario.label());
        self.preload(&off_topic, 0, events).await?;
        self.preload(&on_topic, 0, events).await?;
        let url = self.receiver.url();
        let (mut ratios, mut on_rates) = (Vec::new(), Vec::new());
        let (mut off_cpu, mut on_cpu) = (Vec::new(), Vec::new());
        let mut last: Option<Measured> = None;
        for round in 0..ROUNDS {
            // Each run reads its topic from the start in a group of its
            // own, with owned topics of its own.
            let run_config = |topic: &str, on: bool| {
                let tag = if on { "on" } else { "off" };
                let mut c = self.config(topic, &format!("{topic}-r{round}"));
                c.topics.prefix = format!("bench{}log{tag}{round}", self.run_id);
                c.topics.attempts_log = on;
                c.endpoints.push(self.endpoint("bench", url.clone()));
                c
            };
            let on_first = round % 2 == 1;
            let mut pair = Vec::new();
            for on in [on_first, !on_first] {
                let topic = if on { &on_topic } else { &off_topic };
                let (measured, pipeline) = self.measure(run_config(topic, on), events).await?;
                pipeline.shutdown().await?;
                pair.push((on, measured));
            }
            let rate = |on: bool| {
                pair.iter()
                    .find(|(o, _)| *o == on)
                    .map_or(0.0, |(_, m)| events as f64 / m.secs.max(1e-9))
            };
            let cpu = |on: bool| {
                pair.iter()
                    .find(|(o, _)| *o == on)
                    .map_or(0.0, |(_, m)| m.cpu_secs * 1e6 / events.max(1) as f64)
            };
            eprintln!(
                "  round {} ({} first): log off {:.0} events/s ({:.1} µs CPU/event), on {:.0} events/s ({:.1} µs CPU/event) (×{:.3})",
                round + 1,
                if on_first { "on" } else { "off" },
                rate(false),
                cpu(false),
                rate(true),
                cpu(true),
                rate(true) / rate(false).max(1e-9)
            );
            ratios.push(rate(true) / rate(false).max(1e-9));
            on_rates.push(rate(true));
            off_cpu.push(cpu(false));
            on_cpu.push(cpu(true));
            last = pair.into_iter().find(|(on, _)| *on).map(|(_, m)| m);
        }
        eprintln!(
            "  activity log on ÷ off (median of rounds) ×{:.3}; ratios {ratios:.3?}; CPU/event off {:.1} µs, on {:.1} µs (medians)",
            median(&ratios),
            median(&off_cpu),
            median(&on_cpu),
        );
        let on_rate = median(&on_rates);
        let Some(mut measured) = last else {
            anyhow::bail!("scenario (g) ran no round");
        };
        measured.secs = events as f64 / on_rate.max(1e-9);
        measured.cpu_secs = median(&on_cpu) * events as f64 / 1e6;
        let run = Run {
            events,
            deliveries: events,
            measured,
            latency_ms: (0.0, 0.0),
        };
        Ok(ScenarioReport {
            activity_log_ratio: Some(median(&ratios)),
            activity_log_off_cpu_us_per_event: Some(median(&off_cpu)),
            ..ScenarioReport::of(scenario, run, baselines)
        })
    }
}
