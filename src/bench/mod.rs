//! `hookstream bench`: the real pipeline against a broker and a lean local
//! receiver, with the baselines measured in the same run.
//!
//! Baselines, the physical limits of this machine: the raw consume rate
//! (same consumer settings, no work) and the raw loopback HTTP request rate
//! (a lean load generator against the lean receiver answering 204, no
//! Kafka: [`loadgen`]; `wrk` too when it is on the `PATH`). Each scenario
//! preloads its events, starts a pipeline, and measures from the first
//! delivery to the last (a broker takes a moment to assign a new group):
//! the rate, and the CPU time per event of the pipeline (this process less
//! the receiver's threads), of the receiver (a runtime of its own) and of
//! the embedded broker (a child process), each apart. A paced second phase at half the measured rate
//! gives produce-to-receive latencies. Peak RSS is read from `/proc/self/status`
//! after resetting it (`/proc/self/clear_refs`). The embedded broker runs in
//! a child process, as a real broker would, so the pipeline's peak RSS does
//! not include the broker's copy of the data; the broker's own peak is
//! reported beside it.

mod activity_log;
pub mod capacity;
pub mod cpu;
mod dlq_replay;
pub mod loadgen;
pub mod receiver;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;

use crate::config::{Config, EndpointConfig, HumanDuration};
use crate::kafka::EmbeddedBroker;
use crate::pipeline::{BrokerTarget, Pipeline};
use crate::sign::SignatureScheme;
use cpu::process_cpu_secs;
use receiver::FastReceiver;

/// The benchmark scenarios.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Scenario {
    /// (a) one endpoint, one event per POST, signed.
    Single,
    /// (b) one endpoint, 100 events per POST.
    Batch,
    /// (c) every event to 100 endpoints.
    FanOut,
    /// (d) 100 000 endpoints in the index.
    BigIndex,
    /// (e) a healthy endpoint beside a dead one.
    DeadNeighbour,
    /// (f) due time → sent, for a backlog of retries on a delay tier.
    RetryTiming,
    /// (g) (a) with the durable activity log off and on.
    ActivityLog,
    /// (h) `dlq replay` of a DLQ full of letters, against raw produce.
    DlqReplay,
    /// (i) 100 000 endpoints, traffic to 1 000 of them: memory.
    SparseIndex,
    /// (j) a receiver whose capacity drops and rises: fixed limits against
    /// adaptive concurrency.
    CapacityChange,
}

impl Scenario {
    /// Every scenario, in order.
    pub const ALL: [Scenario; 10] = [
        Self::Single,
        Self::Batch,
        Self::FanOut,
        Self::BigIndex,
        Self::DeadNeighbour,
        Self::RetryTiming,
        Self::ActivityLog,
        Self::DlqReplay,
        Self::SparseIndex,
        Self::CapacityChange,
    ];

    /// Parses `a`..`j` or a name.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "a" | "single" => Some(Self::Single),
            "b" | "batch" => Some(Self::Batch),
            "c" | "fan_out" | "fan-out" => Some(Self::FanOut),
            "d" | "big_index" | "big-index" => Some(Self::BigIndex),
            "e" | "dead_neighbour" | "dead-neighbour" => Some(Self::DeadNeighbour),
            "f" | "retry_timing" | "retry-timing" => Some(Self::RetryTiming),
            "g" | "activity_log" | "activity-log" => Some(Self::ActivityLog),
            "h" | "dlq_replay" | "dlq-replay" => Some(Self::DlqReplay),
            "i" | "sparse_index" | "sparse-index" => Some(Self::SparseIndex),
            "j" | "capacity_change" | "capacity-change" => Some(Self::CapacityChange),
            _ => None,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Single => "(a) 1 endpoint, 1 event/POST, signed",
            Self::Batch => "(b) 1 endpoint, 100 events/POST, signed",
            Self::FanOut => "(c) fan-out to 100 endpoints",
            Self::BigIndex => "(d) 100 000 endpoints indexed",
            Self::DeadNeighbour => "(e) healthy beside a dead endpoint",
            Self::RetryTiming => "(f) retry backlog: due → received",
            Self::ActivityLog => "(g) (a) with the activity log off vs on",
            Self::DlqReplay => "(h) dlq replay",
            Self::SparseIndex => "(i) 100 000 endpoints, traffic to 1 000",
            Self::CapacityChange => "(j) capacity 16 → 4 → 16: fixed vs adaptive",
        }
    }
}

/// Options of a bench run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Scenarios to run.
    pub scenarios: Vec<Scenario>,
    /// Events per scenario (fan-out uses a twentieth).
    pub events: u64,
    /// `None` = embedded broker.
    pub brokers: Option<String>,
    /// Partitions of the bench topics.
    pub partitions: i32,
    /// Requests in flight per endpoint (pipeline and raw HTTP baseline).
    pub concurrency: u32,
}

/// Baselines measured in the same run.
#[derive(Debug, Clone, Serialize)]
pub struct Baselines {
    /// Records/s a consumer with the pipeline's settings reads, doing nothing.
    pub raw_consume_per_s: f64,
    /// Requests/s of the faster lean generator against the lean receiver
    /// (the one ratios are taken to).
    pub raw_http_per_s: f64,
    /// The built-in hyper generator's run.
    pub raw_http_hyper: loadgen::LoopbackRun,
    /// `wrk`'s run, when it is on the `PATH`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raw_http_wrk: Option<loadgen::LoopbackRun>,
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
    /// For (j): the runs against the changing receiver (fixed at the
    /// ceiling, adaptive, fixed at the low capacity); the report's rates
    /// and CPU are the adaptive run's.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capacity_runs: Option<Vec<capacity::CapacityRun>>,
}

/// What one measured run gives a report: its size, what
/// [`Bench::measure`] measured and the latency phase.
struct Run {
    events: u64,
    deliveries: u64,
    measured: Measured,
    latency_ms: (f64, f64),
}

/// Memory of one measured run (MiB).
#[derive(Debug, Clone, Copy)]
struct Memory {
    /// Peak RSS of this process.
    peak: f64,
    /// RSS of this process before the pipeline started.
    before: f64,
    /// Peak RSS of the broker process, if there is one.
    broker_peak: Option<f64>,
}

impl Memory {
    /// The larger peaks and the smaller starting point of two runs.
    fn max(self, other: Memory) -> Memory {
        Memory {
            peak: self.peak.max(other.peak),
            before: self.before.min(other.before),
            broker_peak: match (self.broker_peak, other.broker_peak) {
                (Some(a), Some(b)) => Some(a.max(b)),
                (a, b) => a.or(b),
            },
        }
    }
}

/// What [`Bench::measure`] measured of a run (its pipeline is returned
/// beside it, still running).
struct Measured {
    /// Seconds the receiver was busy.
    secs: f64,
    /// Requests it answered.
    requests: u64,
    memory: Memory,
    /// CPU seconds the pipeline (this process less the receiver) used
    /// meanwhile.
    cpu_secs: f64,
    /// CPU seconds the receiver's threads used meanwhile.
    receiver_cpu_secs: f64,
    /// CPU seconds the broker process used meanwhile.
    broker_cpu_secs: Option<f64>,
}

impl ScenarioReport {
    fn of(scenario: Scenario, run: Run, baselines: &Baselines) -> Self {
        let per_s = |n: u64| n as f64 / run.measured.secs.max(1e-9);
        let per_event = |secs: f64| secs * 1e6 / (run.events.max(1) as f64);
        let Memory {
            peak,
            before,
            broker_peak,
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
            cpu_us_per_event: per_event(run.measured.cpu_secs),
            receiver_cpu_us_per_event: per_event(run.measured.receiver_cpu_secs),
            broker_cpu_us_per_event: run.measured.broker_cpu_secs.map(per_event),
            ratio_to_raw_http: per_s(run.deliveries) / baselines.raw_http_per_s.max(1e-9),
            ratio_to_raw_consume: per_s(run.events) / baselines.raw_consume_per_s.max(1e-9),
            healthy_ratio_with_dead_neighbour: None,
            healthy_alone_cpu_us_per_event: None,
            activity_log_ratio: None,
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
    /// Baselines.
    pub baselines: Baselines,
    /// Scenarios.
    pub scenarios: Vec<ScenarioReport>,
}

fn status_kib(field: &str) -> f64 {
    process_status_kib("self", field).unwrap_or(0.0)
}

/// A field of `/proc/<pid>/status` in KiB.
fn process_status_kib(pid: &str, field: &str) -> Option<f64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
}

/// Returns to the system what the allocators keep of memory already freed
/// (mimalloc serves Rust and, with its `override` feature, librdkafka;
/// `malloc_trim` covers what glibc may still hold): the bench's own
/// preloading producer and baseline consumer leave tens of MiB behind that
/// a production process never had, and that would otherwise count as the
/// pipeline's.
fn release_freed_memory() {
    // SAFETY: both only walk their allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
        libmimalloc_sys::mi_collect(true);
    }
}

/// Resets the peak RSS of process `pid` (`self` or a number).
fn reset_peak_rss(pid: &str) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Devices the bench's events come from.
const DEVICES: u64 = 100_000;

/// Devices of (g)'s events: 1 000 of its 100 000 endpoints get traffic.
const SPARSE_DEVICES: u64 = 1_000;

fn event_body(i: u64, sent_ns: u128) -> String {
    device_event_body(i, sent_ns, DEVICES)
}

/// Event `i`, from device `i % devices`.
fn device_event_body(i: u64, sent_ns: u128, devices: u64) -> String {
    format!(
        r#"{{"id":"bench-{i}","type":"device-status-changed","data":{{"id":"dev-{}","status":"accepted"}},"time":"2026-04-15T12:00:00Z","sent_ns":{sent_ns}}}"#,
        i % devices.max(1)
    )
}

/// Awaits `sends` ten thousand at a time (the producer batches them).
async fn send_in_chunks<F>(sends: impl Iterator<Item = F>) -> Result<()>
where
    F: std::future::Future<Output = Result<()>>,
{
    let mut pending = Vec::with_capacity(10_000);
    for send in sends {
        pending.push(send);
        if pending.len() == 10_000 {
            for r in futures::future::join_all(std::mem::take(&mut pending)).await {
                r?;
            }
        }
    }
    for r in futures::future::join_all(pending).await {
        r?;
    }
    Ok(())
}

/// Fields drop in order: clients before the broker they talk to.
struct Bench {
    producer: FutureProducer,
    receiver: FastReceiver,
    bootstrap: String,
    options: BenchOptions,
    run_id: u64,
    broker: Option<Arc<EmbeddedBroker>>,
}

impl Bench {
    fn target(&self) -> BrokerTarget {
        match &self.broker {
            Some(b) => BrokerTarget::Embedded(Arc::clone(b)),
            None => BrokerTarget::External(self.bootstrap.clone()),
        }
    }

    async fn create_topic(&self, name: &str) -> Result<()> {
        match &self.broker {
            Some(b) => b.create_topic(name, self.options.partitions),
            None => {
                let mut config = Config::default();
                config.kafka.topics = vec![name.to_string()];
                config.topics.create = false;
                let admin: rdkafka::admin::AdminClient<rdkafka::client::DefaultClientContext> =
                    crate::kafka::base_client_config(&config, &self.bootstrap).create()?;
                let topic = rdkafka::admin::NewTopic::new(
                    name,
                    self.options.partitions,
                    rdkafka::admin::TopicReplication::Fixed(-1),
                );
                admin
                    .create_topics([&topic], &rdkafka::admin::AdminOptions::new())
                    .await
                    .context("creating a bench topic")?;
                Ok(())
            }
        }
    }

    async fn preload(&self, topic: &str, from: u64, to: u64) -> Result<()> {
        self.preload_devices(topic, from, to, DEVICES).await
    }

    /// Preloads events `from..to` from `devices` devices.
    async fn preload_devices(&self, topic: &str, from: u64, to: u64, devices: u64) -> Result<()> {
        send_in_chunks((from..to).map(|i| {
            let body = device_event_body(i, 0, devices);
            let key = format!("dev-{}", i % 100_000);
            let producer = self.producer.clone();
            let topic = topic.to_string();
            async move {
                producer
                    .send(
                        FutureRecord::to(&topic).key(&key).payload(&body),
                        Duration::from_secs(60),
                    )
                    .await
                    .map(|_| ())
                    .map_err(|(e, _)| anyhow::anyhow!("preloading: {e}"))
            }
        }))
        .await
    }

    fn config(&self, topic: &str, group: &str) -> Config {
        let mut c = Config::default();
        c.kafka.brokers = if self.broker.is_some() {
            crate::config::EMBEDDED_BROKERS.into()
        } else {
            self.bootstrap.clone()
        };
        c.kafka.group_id = group.into();
        c.kafka.topics = vec![topic.into()];
        c.kafka.embedded_partitions = self.options.partitions;
        c.topics.prefix = format!("bench{}", self.run_id);
        c.topics.partitions = self.options.partitions;
        c.delivery.allow_private_destinations = true;
        c.delivery.timeout = HumanDuration::from_secs(10);
        c.metrics.listen = String::new();
        c
    }

    fn endpoint(&self, id: &str, url: String) -> EndpointConfig {
        let mut e = EndpointConfig::new(id, url);
        e.signature = SignatureScheme::Standard;
        e.secret = Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into());
        e.allow_http = true;
        e.max_concurrency = self.options.concurrency;
        e.queue_size = 4096;
        e
    }

    /// Raw consume rate: the pipeline's consumer settings, no work.
    async fn raw_consume(&self, topic: &str, records: u64) -> Result<f64> {
        let config = self.config(topic, "unused");
        let group = format!("bench-raw-{}", self.run_id);
        let consumer: BaseConsumer =
            crate::kafka::consumer_config(&config, &self.bootstrap, &group)
                .create()
                .context("creating the raw consumer")?;
        consumer.subscribe(&[topic])?;
        tokio::task::spawn_blocking(move || {
            let mut seen = 0u64;
            let mut first = None;
            let deadline = Instant::now() + Duration::from_secs(600);
            while seen < records && Instant::now() < deadline {
                if let Some(Ok(_)) = consumer.poll(Duration::from_millis(100)) {
                    first.get_or_insert_with(Instant::now);
                    seen += 1;
                }
            }
            let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
            seen as f64 / secs.max(1e-9)
        })
        .await
        .context("raw consume")
    }

    /// Raw loopback HTTP: the lean generators against the lean receiver.
    fn raw_http(
        &self,
        requests: u64,
    ) -> Result<(loadgen::LoopbackRun, Option<loadgen::LoopbackRun>)> {
        let body = event_body(0, 0);
        let connections = self.options.concurrency;
        let counts = self.receiver.counts();
        counts.reset();
        let hyper = tokio::task::block_in_place(|| {
            loadgen::hyper_baseline(
                &self.receiver,
                connections,
                requests,
                bytes::Bytes::from(body.clone()),
            )
        })?;
        counts.reset();
        let wrk = tokio::task::block_in_place(|| {
            loadgen::wrk_baseline(&self.receiver, connections, loadgen::WRK_SECS, &body)
        })?;
        counts.reset();
        Ok((hyper, wrk))
    }

    /// Runs one pipeline until `expected` events reached the receiver.
    async fn measure(&self, config: Config, expected: u64) -> Result<(Measured, Pipeline)> {
        let counts = Arc::clone(self.receiver.counts());
        counts.reset();
        release_freed_memory();
        let rss_before = status_kib("VmRSS:") / 1024.0;
        reset_peak_rss("self");
        let broker_pid = self
            .broker
            .as_ref()
            .and_then(|b| b.process_id())
            .map(|p| p.to_string());
        if let Some(pid) = &broker_pid {
            reset_peak_rss(pid);
        }
        // (this process, its receiver's threads, the broker process)
        let cpu_now = || {
            (
                process_cpu_secs("self").unwrap_or(0.0),
                self.receiver.cpu_secs(),
                broker_pid.as_deref().and_then(process_cpu_secs),
            )
        };
        let pipeline = Pipeline::start(config, self.target()).await?;
        let deadline = Instant::now() + Duration::from_secs(900);
        let mut last_report = Instant::now();
        // CPU is counted from the first delivery, like the rate: not the
        // seconds the broker takes to assign a new group.
        let mut cpu_before = None;
        while counts.events.load(Ordering::Relaxed) < expected {
            if cpu_before.is_none() && counts.events.load(Ordering::Relaxed) > 0 {
                cpu_before = Some(cpu_now());
            }
            if Instant::now() > deadline || pipeline.is_finished() {
                anyhow::bail!(
                    "only {} of {expected} events arrived",
                    counts.events.load(Ordering::Relaxed)
                );
            }
            if last_report.elapsed() > Duration::from_secs(5) {
                last_report = Instant::now();
                eprintln!("  … {} / {expected}", counts.events.load(Ordering::Relaxed));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (process_cpu, receiver_cpu, broker_cpu) = match cpu_before {
            Some((process, receiver, broker)) => {
                let (p, r, b) = cpu_now();
                (p - process, r - receiver, b.zip(broker).map(|(b, a)| b - a))
            }
            None => (0.0, 0.0, None),
        };
        let memory = Memory {
            peak: status_kib("VmHWM:") / 1024.0,
            before: rss_before,
            broker_peak: broker_pid
                .and_then(|pid| process_status_kib(&pid, "VmHWM:"))
                .map(|kib| kib / 1024.0),
        };
        let measured = Measured {
            secs: counts.busy_secs(),
            requests: counts.requests.load(Ordering::Relaxed),
            memory,
            cpu_secs: (process_cpu - receiver_cpu).max(0.0),
            receiver_cpu_secs: receiver_cpu,
            broker_cpu_secs: broker_cpu,
        };
        Ok((measured, pipeline))
    }

    /// Paced phase after a run of `from` events at `measured_rate`: a tenth
    /// as many (500 to 5 000) at half that rate, with send times; returns
    /// p50/p99 produce-to-receive ms.
    async fn latency(
        &self,
        topic: &str,
        from: u64,
        measured_rate: f64,
        per_event: u64,
    ) -> Result<(f64, f64)> {
        let n = (from / 10).clamp(500, 5_000);
        let rate = (measured_rate / 2.0).clamp(10.0, 20_000.0);
        let counts = Arc::clone(self.receiver.counts());
        counts.reset();
        counts.sample_latency.store(true, Ordering::SeqCst);
        let started = Instant::now();
        for i in 0..n {
            let due = started + Duration::from_secs_f64(i as f64 / rate.max(1.0));
            tokio::time::sleep_until(due.into()).await;
            let body = event_body(from + i, now_ns());
            let key = format!("dev-{}", (from + i) % 100_000);
            let record = FutureRecord::to(topic).key(&key).payload(&body);
            // The delivery future is dropped: the receiver tells arrival.
            if let Err((e, _)) = self.producer.send_result(record) {
                anyhow::bail!("producing a latency event: {e}");
            }
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        while counts.events.load(Ordering::Relaxed) < n * per_event && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        counts.sample_latency.store(false, Ordering::SeqCst);
        let [p50, p99] = counts.latency_percentiles_ms([0.50, 0.99]);
        Ok((p50, p99))
    }

    /// (f): `events` retry records on the first tier, due over ten seconds
    /// from a few seconds after start; latency is due time → received.
    async fn retry_timing(&self, events: u64, baselines: &Baselines) -> Result<ScenarioReport> {
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
                    .map_err(|(e, _)| anyhow::anyhow!("producing a retry record: {e}"))
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

    async fn scenario(&self, scenario: Scenario, baselines: &Baselines) -> Result<ScenarioReport> {
        match scenario {
            Scenario::RetryTiming => {
                return self.retry_timing(self.options.events, baselines).await;
            }
            Scenario::DeadNeighbour => {
                return self.dead_neighbour(self.options.events, baselines).await;
            }
            Scenario::ActivityLog => {
                return self.activity_log_cost(self.options.events, baselines).await;
            }
            Scenario::DlqReplay => {
                return self.dlq_replay(self.options.events, baselines).await;
            }
            Scenario::CapacityChange => return self.capacity_change(baselines).await,
            _ => {}
        }
        let events = match scenario {
            Scenario::FanOut => (self.options.events / 20).max(100),
            _ => self.options.events,
        };
        let topic = format!("bench-{}-{:?}", self.run_id, scenario).to_lowercase();
        self.create_topic(&topic).await?;
        eprintln!("{}: preloading {events} events", scenario.label());
        let devices = match scenario {
            Scenario::SparseIndex => SPARSE_DEVICES,
            _ => DEVICES,
        };
        self.preload_devices(&topic, 0, events, devices).await?;
        let group = format!("{topic}-group");
        let mut config = self.config(&topic, &group);
        let url = self.receiver.url();
        let mut per_event = 1;
        match scenario {
            Scenario::Single => config.endpoints.push(self.endpoint("bench", url)),
            Scenario::Batch => {
                let mut e = self.endpoint("bench", url);
                e.batch.max_events = 100;
                e.batch.max_wait = HumanDuration::from_millis(50);
                config.endpoints.push(e);
            }
            Scenario::FanOut => {
                per_event = 100;
                for i in 0..100 {
                    let mut e = self.endpoint(&format!("fan-{i}"), format!("{url}/{i}"));
                    e.max_concurrency = (self.options.concurrency / 8).max(4);
                    config.endpoints.push(e);
                }
            }
            Scenario::BigIndex | Scenario::SparseIndex => {
                // 100 000 endpoints, each watching one device; events are
                // spread over 100 000 devices, so each matches one endpoint.
                for i in 0..100_000 {
                    let mut e = self.endpoint(&format!("dev-ep-{i}"), url.clone());
                    e.devices = vec![format!("dev-{i}")];
                    e.max_concurrency = 2;
                    e.queue_size = 16;
                    config.endpoints.push(e);
                }
                config.metrics.per_endpoint_labels = false;
            }
            Scenario::RetryTiming
            | Scenario::DeadNeighbour
            | Scenario::ActivityLog
            | Scenario::DlqReplay
            | Scenario::CapacityChange => {
                unreachable!("dispatched at the top of this function")
            }
        }
        let expected = events * per_event;
        let (measured, pipeline) = self.measure(config, expected).await?;
        let events_per_s = events as f64 / measured.secs.max(1e-9);
        // (g) measures memory: its events come from 1 000 devices, which
        // the latency phase's do not.
        let (p50, p99) = if scenario == Scenario::SparseIndex {
            (0.0, 0.0)
        } else {
            self.latency(&topic, events, events_per_s, per_event)
                .await?
        };
        log_activity(&pipeline, &["bench"]);
        pipeline.shutdown().await?;
        let run = Run {
            events,
            deliveries: expected,
            measured,
            latency_ms: (p50, p99),
        };
        Ok(ScenarioReport::of(scenario, run, baselines))
    }

    /// (e): the healthy endpoint alone and beside an endpoint whose port
    /// refuses connections (both receive every event), in
    /// [`DEAD_NEIGHBOUR_ROUNDS`] interleaved rounds: each round's pair runs
    /// back to back, so a shared machine's slow and fast spells fall on
    /// both sides of a ratio, and the rounds alternate which of the pair
    /// runs first. Reports the median of the rounds' ratios, the median
    /// rates, and the latency of the last round beside the dead one.
    async fn dead_neighbour(&self, events: u64, baselines: &Baselines) -> Result<ScenarioReport> {
        let scenario = Scenario::DeadNeighbour;
        let base = format!("bench-{}-dead-neighbour", self.run_id);
        let (alone_topic, with_topic) = (format!("{base}-alone"), format!("{base}-with"));
        for topic in [&alone_topic, &with_topic] {
            self.create_topic(topic).await?;
        }
        eprintln!("{}: preloading {events} events twice", scenario.label());
        self.preload(&alone_topic, 0, events).await?;
        self.preload(&with_topic, 0, events).await?;
        let url = self.receiver.url();
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
            // Each run reads its topic from the start in a group of its own,
            // with owned topics of its own (no retries of earlier rounds).
            let run_config = |topic: &str, tag: &str| {
                let mut c = self.config(topic, &format!("{topic}-r{round}"));
                c.topics.prefix = format!("bench{}{tag}{round}", self.run_id);
                c.endpoints.push(self.endpoint("healthy", url.clone()));
                c
            };
            let mut with = run_config(&with_topic, "with");
            with.endpoints
                .push(self.endpoint("dead", format!("http://127.0.0.1:{dead_port}/gone")));
            // Odd rounds run beside the dead endpoint first, so whatever the
            // order itself does (a warmer receiver, a broker holding more
            // topics) falls on both sides. With an odd number of rounds the
            // last runs alone first, and its pipeline beside the dead
            // endpoint stays up for the latency phase.
            let with_first = round % 2 == 1;
            let (alone, with, with_pipeline) = if with_first {
                let (with, pipeline) = self.measure(with, events).await?;
                pipeline.shutdown().await?;
                let (alone, pipeline) = self
                    .measure(run_config(&alone_topic, "alone"), events)
                    .await?;
                pipeline.shutdown().await?;
                (alone, with, None)
            } else {
                let (alone, pipeline) = self
                    .measure(run_config(&alone_topic, "alone"), events)
                    .await?;
                pipeline.shutdown().await?;
                let (with, pipeline) = self.measure(with, events).await?;
                (alone, with, Some(pipeline))
            };
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
}

/// Rounds of scenario (e); its ratio is the median of theirs. Odd: the
/// last round runs alone first, so that its pipeline beside the dead
/// endpoint is still up for the latency phase.
const DEAD_NEIGHBOUR_ROUNDS: usize = 11;

/// The median of `values` (0 when empty).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// Logs what the pipeline did for each of `ids`.
fn log_activity(pipeline: &Pipeline, ids: &[&str]) {
    for id in ids {
        let a = pipeline.registry().activity(id).stats();
        if a.attempts + a.deferred > 0 {
            eprintln!(
                "  {id}: {} attempts, {} delivered, {} retries scheduled, {} deferred, {} dead-lettered",
                a.attempts, a.delivered, a.retry_scheduled, a.deferred, a.dead_lettered
            );
        }
    }
}

/// Runs the benchmark.
pub async fn run(options: BenchOptions) -> Result<BenchReport> {
    let (broker, bootstrap) = match &options.brokers {
        Some(b) => (None, b.clone()),
        None => {
            let exe = std::env::current_exe().context("finding the hookstream executable")?;
            let broker = Arc::new(EmbeddedBroker::spawn_process(&exe)?);
            let bootstrap = broker.bootstrap_servers().to_string();
            (Some(broker), bootstrap)
        }
    };
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .context("creating the bench producer")?;
    let bench = Bench {
        broker,
        bootstrap,
        producer,
        receiver: FastReceiver::start()?,
        run_id: rand::random::<u32>() as u64,
        options,
    };
    let baseline_topic = format!("bench-{}-baseline", bench.run_id);
    bench.create_topic(&baseline_topic).await?;
    let n = bench.options.events;
    eprintln!("baselines: preloading {n} events");
    bench.preload(&baseline_topic, 0, n).await?;
    let raw_consume_per_s = bench.raw_consume(&baseline_topic, n).await?;
    let (raw_http_hyper, raw_http_wrk) = bench.raw_http(n.clamp(50_000, 300_000))?;
    let raw_http_per_s = raw_http_wrk.map_or(raw_http_hyper.requests_per_s, |w| {
        w.requests_per_s.max(raw_http_hyper.requests_per_s)
    });
    let baselines = Baselines {
        raw_consume_per_s,
        raw_http_per_s,
        raw_http_hyper,
        raw_http_wrk,
    };
    eprint!("{}", format_baselines(&baselines));
    let mut scenarios = Vec::new();
    for s in bench.options.scenarios.clone() {
        let report = bench.scenario(s, &baselines).await?;
        eprintln!("{}", format_line(&report));
        scenarios.push(report);
    }
    Ok(BenchReport {
        baselines,
        scenarios,
    })
}

fn format_line(r: &ScenarioReport) -> String {
    let mut line = format!(
        "{:<42} {:>9.0} ev/s {:>9.0} deliv/s  ×{:.2} raw HTTP  ×{:.2} raw consume  p50 {:>6.1} ms  p99 {:>7.1} ms  peak RSS {:>5.0} MiB ({:.0} before)",
        r.scenario.label(),
        r.events_per_s,
        r.deliveries_per_s,
        r.ratio_to_raw_http,
        r.ratio_to_raw_consume,
        r.latency_p50_ms,
        r.latency_p99_ms,
        r.peak_rss_mib,
        r.rss_before_mib
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
    let mut out = format_baselines(&report.baselines);
    for r in &report.scenarios {
        out.push_str(&format_line(r));
        out.push('\n');
    }
    out
}

/// The baselines, one line each.
fn format_baselines(b: &Baselines) -> String {
    let run = |name: &str, r: &loadgen::LoopbackRun| {
        let client = r
            .client_cpu_us_per_request
            .map_or(String::new(), |c| format!(", client {c:.1} µs CPU/request"));
        format!(
            "baseline: raw loopback HTTP ({name}) {:.0} requests/s{client}, receiver {:.1} µs CPU/request\n",
            r.requests_per_s, r.receiver_cpu_us_per_request
        )
    };
    let mut out = format!(
        "baseline: raw consume {:.0} records/s\n",
        b.raw_consume_per_s
    );
    out.push_str(&run("hyper generator", &b.raw_http_hyper));
    if let Some(w) = &b.raw_http_wrk {
        out.push_str(&run("wrk -t1", w));
    }
    out.push_str(&format!(
        "baseline: raw loopback HTTP (ratios taken to) {:.0} requests/s\n",
        b.raw_http_per_s
    ));
    out
}
