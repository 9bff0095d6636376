//! Several rounds of one bench run (`--rounds`): each round measures the
//! baselines and every scenario anew, and the summary gives each
//! scenario's figures across the rounds as a median and a range.
//!
//! Why: on a shared machine the speed swings by a quarter within minutes,
//! so one round's ratio can land anywhere in that swing. Each round's
//! ratios are taken to the baselines of the same round, and the median of
//! the rounds is what a target is judged on; the range says how far one
//! round can stray.
//!
//! Pure: reports in, a summary and its text out; the measuring is the
//! parent's.

use serde::Serialize;

use super::report::{Baselines, ScenarioReport};
use super::{Scenario, median};

/// One round: its baselines and its scenarios, measured after them.
#[derive(Debug, Clone, Serialize)]
pub struct RoundReport {
    /// The round's baselines.
    pub baselines: Baselines,
    /// The round's scenarios, their ratios taken to `baselines`.
    pub scenarios: Vec<ScenarioReport>,
}

/// One figure across rounds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Spread {
    /// The median (of an even count, the mean of the middle two).
    pub median: f64,
    /// The smallest.
    pub min: f64,
    /// The largest.
    pub max: f64,
}

impl Spread {
    /// The spread of `values`; `None` when there are none.
    pub fn of(values: &[f64]) -> Option<Self> {
        let min = values.iter().copied().min_by(f64::total_cmp)?;
        let max = values.iter().copied().max_by(f64::total_cmp)?;
        Some(Self {
            median: median(values),
            min,
            max,
        })
    }

    /// `median (min–max)`, each with `decimals` decimals.
    fn text(&self, decimals: usize) -> String {
        format!(
            "{:.d$} ({:.d$}–{:.d$})",
            self.median,
            self.min,
            self.max,
            d = decimals
        )
    }
}

/// One scenario across rounds.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioSummary {
    /// Which scenario.
    pub scenario: Scenario,
    /// Rounds it ran in.
    pub rounds: usize,
    /// Events per second.
    pub events_per_s: Spread,
    /// Deliveries per second.
    pub deliveries_per_s: Spread,
    /// Deliveries/s ÷ the same round's raw loopback HTTP requests/s.
    pub ratio_to_raw_http: Spread,
    /// Events/s ÷ the same round's raw consume records/s.
    pub ratio_to_raw_consume: Spread,
    /// For (b): events/s ÷ the same round's raw forward.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_to_raw_forward: Option<Spread>,
    /// The pipeline's CPU per event (µs).
    pub cpu_us_per_event: Spread,
    /// Produce-to-receive latency p99 (ms).
    pub latency_p99_ms: Spread,
    /// Peak RSS of the pipeline's process (MiB).
    pub peak_rss_mib: Spread,
    /// For (e): healthy beside the dead neighbour ÷ alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthy_ratio_with_dead_neighbour: Option<Spread>,
    /// For (g): the activity log on ÷ off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activity_log_ratio: Option<Spread>,
}

/// Each scenario's figures across `rounds`, in the order the scenarios
/// first ran.
pub fn summarise(rounds: &[RoundReport]) -> Vec<ScenarioSummary> {
    let mut order: Vec<Scenario> = Vec::new();
    for r in rounds.iter().flat_map(|r| &r.scenarios) {
        if !order.contains(&r.scenario) {
            order.push(r.scenario);
        }
    }
    order
        .into_iter()
        .filter_map(|scenario| {
            let runs: Vec<&ScenarioReport> = rounds
                .iter()
                .flat_map(|r| &r.scenarios)
                .filter(|r| r.scenario == scenario)
                .collect();
            let all = |figure: fn(&ScenarioReport) -> f64| {
                Spread::of(&runs.iter().map(|r| figure(r)).collect::<Vec<_>>())
            };
            let some = |figure: fn(&ScenarioReport) -> Option<f64>| {
                Spread::of(&runs.iter().filter_map(|r| figure(r)).collect::<Vec<_>>())
            };
            Some(ScenarioSummary {
                scenario,
                rounds: runs.len(),
                events_per_s: all(|r| r.events_per_s)?,
                deliveries_per_s: all(|r| r.deliveries_per_s)?,
                ratio_to_raw_http: all(|r| r.ratio_to_raw_http)?,
                ratio_to_raw_consume: all(|r| r.ratio_to_raw_consume)?,
                ratio_to_raw_forward: some(|r| r.ratio_to_raw_forward),
                cpu_us_per_event: all(|r| r.cpu_us_per_event)?,
                latency_p99_ms: all(|r| r.latency_p99_ms)?,
                peak_rss_mib: all(|r| r.peak_rss_mib)?,
                healthy_ratio_with_dead_neighbour: some(|r| r.healthy_ratio_with_dead_neighbour),
                activity_log_ratio: some(|r| r.activity_log_ratio),
            })
        })
        .collect()
}

/// The summary, one line per scenario: median (min–max) of each figure.
pub fn format_summary(summary: &[ScenarioSummary]) -> String {
    let mut out = String::new();
    for s in summary {
        out.push_str(&format!(
            "{:<42} over {} rounds, median (range): {} ev/s, {} deliv/s, ×{} raw HTTP, ×{} raw consume",
            s.scenario.label(),
            s.rounds,
            s.events_per_s.text(0),
            s.deliveries_per_s.text(0),
            s.ratio_to_raw_http.text(2),
            s.ratio_to_raw_consume.text(2),
        ));
        if let Some(f) = &s.ratio_to_raw_forward {
            out.push_str(&format!(", ×{} raw forward", f.text(2)));
        }
        if let Some(h) = &s.healthy_ratio_with_dead_neighbour {
            out.push_str(&format!(
                ", healthy with dead neighbour ×{} of alone",
                h.text(2)
            ));
        }
        if let Some(a) = &s.activity_log_ratio {
            out.push_str(&format!(", log on ×{} of off", a.text(3)));
        }
        out.push_str(&format!(
            ", pipeline CPU {} µs/event, p99 {} ms, peak RSS {} MiB\n",
            s.cpu_us_per_event.text(1),
            s.latency_p99_ms.text(1),
            s.peak_rss_mib.text(0),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::loadgen;
    use super::super::raw_consume::RawConsume;
    use super::super::report::{Measured, Memory, Run};
    use super::*;

    #[test]
    fn a_spread_is_the_median_and_the_extremes() {
        let odd = Spread::of(&[0.42, 0.33, 0.37]).expect("values");
        assert_eq!(
            odd,
            Spread {
                median: 0.37,
                min: 0.33,
                max: 0.42
            }
        );
        let even = Spread::of(&[2.0, 4.0, 1.0, 3.0]).expect("values");
        assert_eq!((even.median, even.min, even.max), (2.5, 1.0, 4.0));
        assert_eq!(Spread::of(&[]), None);
        assert_eq!(even.text(1), "2.5 (1.0–4.0)");
    }

    fn baselines(raw_consume_per_s: f64, raw_http_per_s: f64) -> Baselines {
        let raw_http = loadgen::LoopbackRun {
            requests_per_s: raw_http_per_s,
            client_cpu_us_per_request: Some(7.0),
            receiver_cpu_us_per_request: 9.0,
        };
        Baselines {
            raw_consume_per_s,
            raw_consume_polled: RawConsume {
                per_s: raw_consume_per_s,
                cpu_us_per_record: 0.8,
                broker_cpu_us_per_record: None,
            },
            raw_consume_batched: RawConsume {
                per_s: raw_consume_per_s * 0.8,
                cpu_us_per_record: 0.5,
                broker_cpu_us_per_record: None,
            },
            raw_forward_per_s: None,
            raw_forward_cpu_us_per_record: None,
            raw_http_per_s,
            raw_http_hyper: raw_http,
            raw_http_wrk: None,
            pipeline_workers: 2,
        }
    }

    /// A run of `events` delivered in `secs`, at `cpu_secs` of pipeline CPU.
    fn report(
        scenario: Scenario,
        events: u64,
        secs: f64,
        cpu_secs: f64,
        b: &Baselines,
    ) -> ScenarioReport {
        let measured = Measured {
            secs,
            requests: events,
            memory: Memory {
                peak: 70.0,
                before: 25.0,
                broker_peak: None,
                startup_peak: None,
            },
            cpu_secs,
            receiver_cpu_secs: 0.0,
            broker_cpu_secs: None,
        };
        let run = Run {
            events,
            deliveries: events,
            measured,
            latency_ms: (1.0, 3.0),
        };
        ScenarioReport::of(scenario, run, b)
    }

    #[test]
    fn each_rounds_ratio_is_taken_to_its_own_baselines() {
        // Round 1 on a fast spell, round 2 on a slow one: the pipeline's
        // rate halves with the machine, and so does raw consume.
        let fast = baselines(2_000_000.0, 100_000.0);
        let slow = baselines(1_000_000.0, 50_000.0);
        let rounds = [
            RoundReport {
                scenarios: vec![
                    report(Scenario::Batch, 800_000, 1.0, 1.6, &fast),
                    report(Scenario::Single, 60_000, 1.0, 0.72, &fast),
                ],
                baselines: fast,
            },
            RoundReport {
                scenarios: vec![report(Scenario::Batch, 400_000, 1.0, 1.2, &slow)],
                baselines: slow,
            },
        ];
        let summary = summarise(&rounds);
        let order: Vec<(Scenario, usize)> =
            summary.iter().map(|s| (s.scenario, s.rounds)).collect();
        assert_eq!(order, [(Scenario::Batch, 2), (Scenario::Single, 1)]);
        let batch = &summary[0];
        // 0.4 × raw consume in both rounds, though the rates differ by 2×.
        assert_eq!(batch.ratio_to_raw_consume.min, 0.4);
        assert_eq!(batch.ratio_to_raw_consume.max, 0.4);
        assert_eq!(batch.events_per_s.median, 600_000.0);
        assert_eq!(
            (batch.cpu_us_per_event.min, batch.cpu_us_per_event.max),
            (2.0, 3.0)
        );
        assert!((summary[1].cpu_us_per_event.median - 12.0).abs() < 1e-9);
        assert!((summary[1].ratio_to_raw_http.median - 0.6).abs() < 1e-9);
        let text = format_summary(&summary);
        assert!(
            text.contains("over 2 rounds") && text.contains("×0.40 (0.40–0.40) raw consume"),
            "{text}"
        );
    }
}
