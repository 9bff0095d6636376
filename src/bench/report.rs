//! What a bench run reports: the baselines, each scenario's figures
//! ([`ScenarioReport`], made from a measured [`Run`]) and the text lines
//! of `hookstream bench` (`--json` serialises the same types).
//!
//! Pure: numbers in, numbers and text out; the measuring is the parent's.

use serde::Serialize;

use super::raw_consume::RawConsume;
use super::rounds::{RoundReport, ScenarioSummary, format_summary};
use super::{Scenario, capacity, loadgen};

/// Baselines measured in the same run.
#[derive(Debug, Clone, Serialize)]
pub struct Baselines {
    /// Records/s a consumer with the pipeline's settings reads, doing
    /// nothing: the faster of the two readers below (ratios are taken to
    /// it).
    pub raw_consume_per_s: f64,
    /// Reading a record per `poll`.
    pub raw_consume_polled: RawConsume,
    /// Reading batches of up to 64, as the pipeline reads: its CPU per
    /// record is what consuming alone costs the pipeline, to set the
    /// pipeline's CPU per event against.
    pub raw_consume_batched: RawConsume,
    /// Events/s of the raw forward (records read and POSTed to the lean
    /// receiver in arrays of 100, no other work): the limit of batch
    /// delivery (b) on this machine. Measured when (b) runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_forward_per_s: Option<f64>,
    /// The raw forward's CPU per record (µs): this process less the
    /// receiver's threads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_forward_cpu_us_per_record: Option<f64>,
    /// Requests/s of the faster lean generator against the lean receiver
    /// (the one ratios are taken to).
    pub raw_http_per_s: f64,
    /// The built-in hyper generator's run.
    pub raw_http_hyper: loadgen::LoopbackRun,
    /// `wrk`'s run, when it is on the `PATH`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_http_wrk: Option<loadgen::LoopbackRun>,
    /// Worker threads of the runtime the pipeline runs on (one per core,
    /// or `TOKIO_WORKER_THREADS`); the generator runs on one.
    pub pipeline_workers: usize,
}

/// One scenario's result.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    /// Which scenario.
    pub scenario: Scenario,
    /// Events consumed.
    pub events: u64,
    /// Deliveries made (events × matching endpoints).
    pub deliveries: u64,
    /// Events per second.
    pub events_per_s: f64,
    /// Deliveries (events received by the receiver) per second.
    pub deliveries_per_s: f64,
    /// HTTP requests per second.
    pub requests_per_s: f64,
    /// Produce-to-receive latency p50 (ms), paced at half the rate.
    pub latency_p50_ms: f64,
    /// Produce-to-receive latency p99 (ms).
    pub latency_p99_ms: f64,
    /// Peak RSS of the hookstream process during the scenario (MiB).
    pub peak_rss_mib: f64,
    /// Its RSS before the pipeline started (MiB): the bench's receiver,
    /// producer and endpoint configurations.
    pub rss_before_mib: f64,
    /// Set when the RSS figures are of `hookstream run` in a process of its
    /// own (scenario (i)), not of the bench's process: its peak RSS until
    /// the first delivery (MiB; reading the configuration, loading the
    /// endpoints). `peak_rss_mib` is then its peak from the first delivery
    /// on, and `rss_before_mib` its RSS at the first delivery.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_startup_peak_rss_mib: Option<f64>,
    /// Peak RSS of the embedded broker's process (MiB; none with `--brokers`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_peak_rss_mib: Option<f64>,
    /// CPU time (user + system) per event of the pipeline: the hookstream
    /// process less the receiver's threads, from the first delivery to the
    /// last (µs). Less sensitive than rates to a shared machine's slow and
    /// fast spells.
    pub cpu_us_per_event: f64,
    /// The receiver's CPU per event meanwhile (µs).
    pub receiver_cpu_us_per_event: f64,
    /// The embedded broker process's CPU per event meanwhile (µs; none
    /// with `--brokers`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_cpu_us_per_event: Option<f64>,
    /// deliveries/s ÷ raw HTTP requests/s.
    pub ratio_to_raw_http: f64,
    /// events/s ÷ raw consume records/s.
    pub ratio_to_raw_consume: f64,
    /// For (b): events/s ÷ the raw forward's events/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_to_raw_forward: Option<f64>,
    /// For (e): healthy deliveries/s with the dead neighbour ÷ without.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthy_ratio_with_dead_neighbour: Option<f64>,
    /// For (e): CPU µs per event of the healthy endpoint alone (median of
    /// the rounds; `cpu_us_per_event` is beside the dead one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub healthy_alone_cpu_us_per_event: Option<f64>,
    /// For (g): deliveries/s with the activity log on ÷ off (median of
    /// the rounds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activity_log_ratio: Option<f64>,
    /// For (g): CPU µs per event with the log off (`cpu_us_per_event` is
    /// with it on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub activity_log_off_cpu_us_per_event: Option<f64>,
    /// For (h): records/s the replay's producer writes doing nothing else.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_produce_per_s: Option<f64>,
    /// For (h): letters replayed per second ÷ raw produce records/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_to_raw_produce: Option<f64>,
    /// For (k): the other devices' deliveries/s while one device fails ÷
    /// the ordered rate with every device healthy (median of the rounds).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ordered_others_ratio_with_failing_device: Option<f64>,
    /// For (k): ordered deliveries/s ÷ unordered (what the lane costs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ordered_to_unordered_ratio: Option<f64>,
    /// For (j): the runs against the changing receiver (fixed at the
    /// ceiling, adaptive, fixed at the low capacity); the report's rates
    /// and CPU are the adaptive run's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity_runs: Option<Vec<capacity::CapacityRun>>,
}

/// What one measured run gives a report: its size, what
/// [`Bench::measure`] measured and the latency phase.
pub(super) struct Run {
    pub(super) events: u64,
    pub(super) deliveries: u64,
    pub(super) measured: Measured,
    pub(super) latency_ms: (f64, f64),
}

/// Memory of one measured run (MiB).
#[derive(Debug, Clone, Copy)]
pub(super) struct Memory {
    /// Peak RSS of this process.
    pub(super) peak: f64,
    /// RSS of this process before the pipeline started.
    pub(super) before: f64,
    /// Peak RSS of the broker process, if there is one.
    pub(super) broker_peak: Option<f64>,
    /// When measured on `hookstream run` in a process of its own: its peak
    /// RSS until the first delivery (reading the configuration, building
    /// the index); `peak` is then its peak from the first delivery on, and
    /// `before` its RSS at the first delivery.
    pub(super) startup_peak: Option<f64>,
}

impl Memory {
    /// The larger peaks and the smaller starting point of two runs.
    pub(super) fn max(self, other: Memory) -> Memory {
        Memory {
            peak: self.peak.max(other.peak),
            before: self.before.min(other.before),
            broker_peak: match (self.broker_peak, other.broker_peak) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
            startup_peak: match (self.startup_peak, other.startup_peak) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
        }
    }
}

/// What [`Bench::measure`] measured of a run (its pipeline is returned
/// beside it, still running).
pub(super) struct Measured {
    /// Seconds the receiver was busy.
    pub(super) secs: f64,
    /// Requests it answered.
    pub(super) requests: u64,
    pub(super) memory: Memory,
    /// CPU seconds the pipeline (this process less the receiver) used
    /// meanwhile.
    pub(super) cpu_secs: f64,
    /// CPU seconds the receiver's threads used meanwhile.
    pub(super) receiver_cpu_secs: f64,
    /// CPU seconds the broker process used meanwhile.
    pub(super) broker_cpu_secs: Option<f64>,
}

impl ScenarioReport {
    pub(super) fn of(scenario: Scenario, run: Run, baselines: &Baselines) -> Self {
        let per_s = |n: u64| n as f64 / run.measured.secs.max(1e-9);
        let per_event = |secs: f64| secs * 1e6 / (run.events.max(1) as f64);
        let Memory {
            peak,
            before,
            broker_peak,
            startup_peak,
        } = run.measured.memory;
        Self {
            scenario,
            events: run.events,
            deliveries: run.deliveries,
            events_per_s: per_s(run.events),
            deliveries_per_s: per_s(run.deliveries),
            requests_per_s: per_s(run.measured.requests),
            latency_p50_ms: run.latency_ms.0,
            latency_p99_ms: run.latency_ms.1,
            peak_rss_mib: peak.max(before),
            rss_before_mib: before,
            broker_peak_rss_mib: broker_peak,
            service_startup_peak_rss_mib: startup_peak,
            cpu_us_per_event: per_event(run.measured.cpu_secs),
            receiver_cpu_us_per_event: per_event(run.measured.receiver_cpu_secs),
            broker_cpu_us_per_event: run.measured.broker_cpu_secs.map(per_event),
            ratio_to_raw_http: per_s(run.deliveries) / baselines.raw_http_per_s.max(1e-9),
            ratio_to_raw_consume: per_s(run.events) / baselines.raw_consume_per_s.max(1e-9),
            ratio_to_raw_forward: match scenario {
                Scenario::Batch => baselines
                    .raw_forward_per_s
                    .map(|raw| per_s(run.events) / raw.max(1e-9)),
                _ => None,
            },
            healthy_ratio_with_dead_neighbour: None,
            healthy_alone_cpu_us_per_event: None,
            activity_log_ratio: None,
            ordered_others_ratio_with_failing_device: None,
            ordered_to_unordered_ratio: None,
            activity_log_off_cpu_us_per_event: None,
            raw_produce_per_s: None,
            ratio_to_raw_produce: None,
            capacity_runs: None,
        }
    }
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Baselines (of the first round).
    pub baselines: Baselines,
    /// Scenarios (of the first round).
    pub scenarios: Vec<ScenarioReport>,
    /// With `--rounds`: the rounds after the first.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub later_rounds: Vec<RoundReport>,
    /// With `--rounds`: each scenario across all rounds.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub summary: Vec<ScenarioSummary>,
}

pub(super) fn format_line(r: &ScenarioReport) -> String {
    let rss_note = if let Some(startup) = r.service_startup_peak_rss_mib {
        format!(
            "of `hookstream run` from its first delivery, {:.0} then; {startup:.0} during start-up",
            r.rss_before_mib
        )
    } else {
        format!("{:.0} before", r.rss_before_mib)
    };
    let mut line = format!(
        "{:<42} {:>9.0} ev/s {:>9.0} deliv/s  ×{:.2} raw HTTP  ×{:.2} raw consume  p50 {:>6.1} ms  p99 {:>7.1} ms  peak RSS {:>5.0} MiB ({rss_note})",
        r.scenario.label(),
        r.events_per_s,
        r.deliveries_per_s,
        r.ratio_to_raw_http,
        r.ratio_to_raw_consume,
        r.latency_p50_ms,
        r.latency_p99_ms,
        r.peak_rss_mib,
    );
    if let Some(b) = r.broker_peak_rss_mib {
        line.push_str(&format!("  broker process {b:.0} MiB"));
    }
    line.push_str(&format!(
        "  CPU µs/event: pipeline {:.1}, receiver {:.1}",
        r.cpu_us_per_event, r.receiver_cpu_us_per_event
    ));
    if let Some(b) = r.broker_cpu_us_per_event {
        line.push_str(&format!(", broker {b:.1}"));
    }
    if let Some(ratio) = r.ratio_to_raw_forward {
        line.push_str(&format!("  ×{ratio:.2} raw forward"));
    }
    if let Some(h) = r.healthy_ratio_with_dead_neighbour {
        line.push_str(&format!("  healthy with dead neighbour ×{h:.2} of alone"));
    }
    if let Some(c) = r.healthy_alone_cpu_us_per_event {
        line.push_str(&format!(" (CPU {c:.1} µs/event alone)"));
    }
    if let Some(ratio) = r.activity_log_ratio {
        line.push_str(&format!("  log on ×{ratio:.3} of off"));
    }
    if let Some(c) = r.activity_log_off_cpu_us_per_event {
        line.push_str(&format!(" (CPU {c:.1} µs/event off)"));
    }
    if let Some(ratio) = r.ordered_others_ratio_with_failing_device {
        line.push_str(&format!(
            "  others while one device fails ×{ratio:.2} of ordered healthy"
        ));
    }
    if let Some(ratio) = r.ordered_to_unordered_ratio {
        line.push_str(&format!("  ordered ×{ratio:.2} of unordered"));
    }
    if let (Some(raw), Some(ratio)) = (r.raw_produce_per_s, r.ratio_to_raw_produce) {
        line.push_str(&format!(
            "  letters/s ×{ratio:.2} raw produce ({raw:.0} records/s)"
        ));
    }
    for run in r.capacity_runs.iter().flatten() {
        line.push_str(&format!(
            "\n    {}: {:.0} events/s to the last ({:.0}/s while offered), {} × 429, {} × 503",
            run.limit,
            run.delivered_per_s,
            run.delivered_per_s_while_offered,
            run.rejected_429,
            run.rejected_503
        ));
    }
    line
}

/// A human-readable report.
pub fn format_report(report: &BenchReport) -> String {
    let first = [(&report.baselines, &report.scenarios)];
    let later = report
        .later_rounds
        .iter()
        .map(|r| (&r.baselines, &r.scenarios));
    let mut out = String::new();
    for (i, (baselines, scenarios)) in first.into_iter().chain(later).enumerate() {
        if !report.later_rounds.is_empty() {
            out.push_str(&format!("round {}\n", i + 1));
        }
        out.push_str(&format_baselines(baselines));
        for r in scenarios {
            out.push_str(&format_line(r));
            out.push('\n');
        }
    }
    out.push_str(&format_summary(&report.summary));
    out
}

/// The baselines, one line each.
pub(super) fn format_baselines(b: &Baselines) -> String {
    let run = |name: &str, r: &loadgen::LoopbackRun| {
        let client = r
            .client_cpu_us_per_request
            .map_or(String::new(), |c| format!(", client {c:.1} µs CPU/request"));
        format!(
            "baseline: raw loopback HTTP ({name}) {:.0} requests/s{client}, receiver {:.1} µs CPU/request\n",
            r.requests_per_s, r.receiver_cpu_us_per_request
        )
    };
    let consume = |how: &str, r: &RawConsume| {
        let broker = r
            .broker_cpu_us_per_record
            .map_or(String::new(), |c| format!(", broker {c:.2}"));
        format!(
            "baseline: raw consume, {how}: {:.0} records/s, CPU µs/record: consumer {:.2}{broker}\n",
            r.per_s, r.cpu_us_per_record
        )
    };
    let mut out = consume("a record per poll", &b.raw_consume_polled);
    out.push_str(&consume(
        "batches of 64 as the pipeline reads",
        &b.raw_consume_batched,
    ));
    out.push_str(&format!(
        "baseline: raw consume (ratios taken to) {:.0} records/s\n",
        b.raw_consume_per_s
    ));
    if let (Some(per_s), Some(cpu)) = (b.raw_forward_per_s, b.raw_forward_cpu_us_per_record) {
        out.push_str(&format!(
            "baseline: raw forward (consume, POST in arrays of 100, no other work) {per_s:.0} events/s, {cpu:.2} µs CPU/event\n"
        ));
    }
    out.push_str(&run("hyper generator", &b.raw_http_hyper));
    if let Some(w) = &b.raw_http_wrk {
        out.push_str(&run("wrk -t1", w));
    }
    out.push_str(&format!(
        "baseline: raw loopback HTTP (ratios taken to) {:.0} requests/s\n",
        b.raw_http_per_s
    ));
    out.push_str(&format!(
        "pipeline runtime: {} worker threads (TOKIO_WORKER_THREADS sets them)\n",
        b.pipeline_workers
    ));
    out
}
