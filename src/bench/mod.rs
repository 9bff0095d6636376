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
//!
//! Why this file is long: the scenario table and the one measurement loop every
//! scenario shares (baselines, CPU and memory accounting) read best together;
//! the scenarios themselves are files of their own.

mod activity_log;
pub mod capacity;
pub mod cpu;
mod dead_neighbour;
mod dlq_replay;
mod events;
mod forward;
pub mod loadgen;
mod ordering;
mod raw_consume;
pub mod receiver;
mod report;
mod retry_timing;
pub mod rounds;
mod rss;
mod service_process;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::FutureRecord;
use serde::Serialize;

use crate::config::{Config, EndpointConfig, HumanDuration};
use crate::kafka::{AwaitedProducer, EmbeddedBroker};
use crate::pipeline::{BrokerTarget, Pipeline};
use crate::sign::SignatureScheme;
use cpu::process_cpu_secs;
use events::{DEVICES, SPARSE_DEVICES, device_event_body, event_body, now_ns, send_in_chunks};
pub use raw_consume::RawConsume;
use raw_consume::Reads;
use receiver::FastReceiver;
pub use report::{Baselines, BenchReport, ScenarioReport, format_report};
use report::{Measured, Memory, Run, format_baselines, format_line};
use rss::{process_status_kib, release_freed_memory, reset_peak_rss, status_kib};

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
    /// (k) per-device ordering, one device failing: the others' rate.
    OrderedFailingDevice,
}

impl Scenario {
    /// Every scenario, in order.
    pub const ALL: [Scenario; 11] = [
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
        Self::OrderedFailingDevice,
    ];

    /// Parses `a`..`k` or a name.
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
            "k" | "ordered_failing_device" | "ordered-failing-device" | "ordered" => {
                Some(Self::OrderedFailingDevice)
            }
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
            Self::OrderedFailingDevice => "(k) ordered per device, one device failing",
        }
    }
}

/// How often a measured run looks at the receiver's count once
/// deliveries arrive ([`Bench::await_deliveries`]).
const ARRIVALS_LOOK: Duration = Duration::from_millis(5);

/// What the raw forward baseline measured.
#[derive(Debug, Default)]
struct RawForward {
    per_s: f64,
    cpu_us_per_record: f64,
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
    /// Rounds: each measures the baselines and every scenario anew
    /// ([`rounds`]).
    pub rounds: u32,
}

/// Fields drop in order: clients before the broker they talk to.
struct Bench {
    /// Writes the events (its reports served without a spinning thread,
    /// which would count as the pipeline's CPU: it shares the process).
    producer: Arc<AwaitedProducer>,
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
            let key = format!("dev-{}", i % devices.max(1));
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
                    .map_err(|e| anyhow::anyhow!("preloading: {e}"))
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

    /// A consumer with the pipeline's settings, in a group of its own
    /// (`bench-<baseline>-<run>`), subscribed to `topic`.
    fn baseline_consumer(&self, topic: &str, baseline: &str) -> Result<BaseConsumer> {
        let config = self.config(topic, "unused");
        let group = format!("bench-{baseline}-{}", self.run_id);
        let consumer: BaseConsumer =
            crate::kafka::consumer_config(&config, &self.bootstrap, &group)
                .create()
                .with_context(|| format!("creating the {baseline} baseline's consumer"))?;
        consumer
            .subscribe(&[topic])
            .with_context(|| format!("subscribing the {baseline} baseline's consumer"))?;
        Ok(consumer)
    }

    /// Raw consume ([`raw_consume`]): the pipeline's consumer settings, no
    /// work, reading as `reads` says. Its rate, and the CPU per record of
    /// this process (the consumer's threads; the rest of it is idle
    /// meanwhile) and of the embedded broker, counted from the first record
    /// like the rate.
    async fn raw_consume(&self, topic: &str, records: u64, reads: Reads) -> Result<RawConsume> {
        let name = match reads {
            Reads::OneByOne => "raw",
            Reads::Batches => "raw-batches",
        };
        let consumer = self.baseline_consumer(topic, name)?;
        let broker_pid = self.broker.as_ref().and_then(|b| b.process_id());
        let cpu_now = move || {
            (
                cpu::own_cpu_secs_precise(),
                broker_pid.and_then(|pid| cpu::threads_cpu_secs_precise(&pid.to_string())),
            )
        };
        tokio::task::spawn_blocking(move || {
            let mut first = None;
            let deadline = Instant::now() + Duration::from_secs(600);
            let at_first = || first = Some((Instant::now(), cpu_now()));
            let seen = raw_consume::read(&consumer, records, reads, deadline, at_first, |_| true);
            let Some((at, (own_before, broker_before))) = first else {
                return RawConsume::default();
            };
            let (own_after, broker_after) = cpu_now();
            let secs = at.elapsed().as_secs_f64().max(1e-9);
            // The first record's own cost is before the count starts.
            let counted = seen.saturating_sub(1).max(1) as f64;
            RawConsume {
                per_s: seen as f64 / secs,
                cpu_us_per_record: (own_after - own_before) * 1e6 / counted,
                broker_cpu_us_per_record: broker_before
                    .zip(broker_after)
                    .map(|(before, after)| (after - before) * 1e6 / counted),
            }
        })
        .await
        .context("raw consume")
    }

    /// Raw forward ([`forward`]): `records` of `topic` POSTed to the lean
    /// receiver in arrays of `batch`, with no work between. Its rate
    /// (first to last arrival, like a scenario's) and the CPU per record of
    /// this process less the receiver's threads, from the first record
    /// read to the last answer (a small run can be over before the first
    /// look a scenario takes at the arrivals).
    fn raw_forward(&self, topic: &str, records: u64, batch: usize) -> Result<RawForward> {
        let consumer = self.baseline_consumer(topic, "forward")?;
        let counts = self.receiver.counts();
        counts.reset();
        let cpu_now = || (cpu::own_cpu_secs_precise(), self.receiver.cpu_secs());
        let mut at_first = None;
        tokio::task::block_in_place(|| {
            forward::forward(&consumer, records, batch, self.receiver.addr(), || {
                at_first = Some(cpu_now());
            })
        })?;
        let (process_after, receiver_after) = cpu_now();
        let (process_before, receiver_before) = at_first.unwrap_or((process_after, receiver_after));
        // The first record's own cost is before the count starts.
        let counted = records.saturating_sub(1).max(1) as f64;
        let forward = RawForward {
            per_s: counts.events.load(Ordering::Relaxed) as f64 / counts.busy_secs().max(1e-9),
            cpu_us_per_record: ((process_after - process_before)
                - (receiver_after - receiver_before))
                .max(0.0)
                * 1e6
                / counted,
        };
        counts.reset();
        Ok(forward)
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

    /// The embedded broker process's pid (none with `--brokers`), its peak
    /// RSS reset so that the next reading covers what follows.
    fn broker_pid_with_peak_reset(&self) -> Option<String> {
        let pid = self.broker.as_ref()?.process_id()?.to_string();
        reset_peak_rss(&pid);
        Some(pid)
    }

    /// Runs one pipeline until `expected` events reached the receiver.
    async fn measure(&self, config: Config, expected: u64) -> Result<(Measured, Pipeline)> {
        self.measure_with(config, expected, || {}).await
    }

    /// [`Self::measure`], calling `set_up` once the receiver's counts are
    /// reset, before the pipeline starts.
    async fn measure_with(
        &self,
        config: Config,
        expected: u64,
        set_up: impl FnOnce(),
    ) -> Result<(Measured, Pipeline)> {
        let counts = Arc::clone(self.receiver.counts());
        counts.reset();
        set_up();
        release_freed_memory();
        let rss_before = status_kib("VmRSS:") / 1024.0;
        reset_peak_rss("self");
        let broker_pid = self.broker_pid_with_peak_reset();
        // (this process, its receiver's threads, the broker process), to
        // the nanosecond: `/proc`'s 10 ms ticks are 0.03 µs per event over
        // 300 000 events, as much as a change being measured.
        let cpu_now = || {
            (
                cpu::own_cpu_secs_precise(),
                self.receiver.cpu_secs(),
                broker_pid
                    .as_deref()
                    .and_then(cpu::threads_cpu_secs_precise),
            )
        };
        let pipeline = Pipeline::start(config, self.target()).await?;
        // CPU is counted from the first delivery, like the rate: not the
        // seconds the broker takes to assign a new group.
        let mut cpu_before = None;
        self.await_deliveries(
            expected,
            Duration::from_secs(900),
            || cpu_before = Some(cpu_now()),
            || pipeline.is_finished(),
        )
        .await?;
        let (process_cpu, receiver_cpu, broker_cpu) = cpu_since(cpu_before, cpu_now());
        let memory = Memory {
            peak: status_kib("VmHWM:") / 1024.0,
            before: rss_before,
            broker_peak: broker_pid
                .and_then(|pid| process_status_kib(&pid, "VmHWM:"))
                .map(|kib| kib / 1024.0),
            startup_peak: None,
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

    /// Waits until `expected` events reached the receiver, printing
    /// progress every 5 s; calls `at_first` once, at the first delivery.
    /// Fails after `timeout`, or once `stopped` says the pipeline ended.
    ///
    /// Looks every millisecond until the first delivery, then every
    /// [`ARRIVALS_LOOK`]: CPU is counted from the look that sees the first
    /// delivery to the one that sees the last, so a coarse look would leave
    /// out the start of a short run (20 ms, as before, was up to 6 % of a
    /// 300 000-event (b) run).
    async fn await_deliveries(
        &self,
        expected: u64,
        timeout: Duration,
        mut at_first: impl FnMut(),
        mut stopped: impl FnMut() -> bool,
    ) -> Result<()> {
        let counts = self.receiver.counts();
        let deadline = Instant::now() + timeout;
        let mut last_report = Instant::now();
        let mut first_seen = false;
        loop {
            let arrived = counts.events.load(Ordering::Relaxed);
            if !first_seen && arrived > 0 {
                first_seen = true;
                at_first();
            }
            if arrived >= expected {
                return Ok(());
            }
            if Instant::now() > deadline || stopped() {
                anyhow::bail!("only {arrived} of {expected} events arrived");
            }
            if last_report.elapsed() > Duration::from_secs(5) {
                last_report = Instant::now();
                eprintln!("  … {arrived} / {expected}");
            }
            let look = if first_seen {
                ARRIVALS_LOOK
            } else {
                Duration::from_millis(1)
            };
            tokio::time::sleep(look).await;
        }
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
            if let Err(e) = self.producer.enqueue(record) {
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
            Scenario::OrderedFailingDevice => {
                return self
                    .ordered_with_failing_device(self.options.events, baselines)
                    .await;
            }
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
        let per_event = self.add_endpoints(scenario, &mut config);
        let expected = events * per_event;
        // (i) measures the memory of the service a user runs, in a process
        // of its own; its events come from 1 000 devices, which the latency
        // phase's do not, so it has none.
        let (measured, latency_ms) = if scenario == Scenario::SparseIndex {
            let measured = self.measure_service_process(config, expected).await?;
            (measured, (0.0, 0.0))
        } else {
            let (measured, pipeline) = self.measure(config, expected).await?;
            let events_per_s = events as f64 / measured.secs.max(1e-9);
            let latency = self
                .latency(&topic, events, events_per_s, per_event)
                .await?;
            log_activity(&pipeline, &["bench"]);
            pipeline.shutdown().await?;
            (measured, latency)
        };
        let run = Run {
            events,
            deliveries: expected,
            measured,
            latency_ms,
        };
        Ok(ScenarioReport::of(scenario, run, baselines))
    }

    /// Adds the endpoints of one of the simple scenarios (a)–(d), (i) to
    /// `config`; says how many deliveries each event makes.
    fn add_endpoints(&self, scenario: Scenario, config: &mut Config) -> u64 {
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
            | Scenario::CapacityChange
            | Scenario::OrderedFailingDevice => {
                unreachable!("dispatched at the top of this function")
            }
        }
        per_event
    }
}

/// CPU seconds of (the pipeline's process, the receiver's threads, the
/// broker process).
type CpuSecs = (f64, f64, Option<f64>);

/// CPU used between `before` (none: nothing measured) and `now`.
fn cpu_since(before: Option<CpuSecs>, now: CpuSecs) -> CpuSecs {
    match before {
        Some((process, receiver, broker)) => (
            now.0 - process,
            now.1 - receiver,
            now.2.zip(broker).map(|(n, b)| n - b),
        ),
        None => (0.0, 0.0, None),
    }
}

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
    let producer = Arc::new(AwaitedProducer::create(
        rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("linger.ms", "5")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "1000000"),
        "bench-reports",
    )?);
    let mut bench = Bench {
        broker,
        bootstrap,
        producer,
        receiver: FastReceiver::start()?,
        run_id: rand::random::<u32>() as u64,
        options,
    };
    let rounds = bench.options.rounds.max(1);
    let mut done = Vec::new();
    for round in 1..=rounds {
        if rounds > 1 {
            eprintln!("round {round} of {rounds}");
            // Topics and groups of their own in every round.
            bench.run_id = rand::random::<u32>() as u64;
        }
        done.push(bench.round().await?);
    }
    let summary = match rounds {
        1 => Vec::new(),
        _ => rounds::summarise(&done),
    };
    eprint!("{}", rounds::format_summary(&summary));
    let mut done = done.into_iter();
    let first = done.next().context("no bench round ran")?;
    Ok(BenchReport {
        baselines: first.baselines,
        scenarios: first.scenarios,
        later_rounds: done.collect(),
        summary,
    })
}

impl Bench {
    /// One round: the baselines, then every scenario, its ratios taken to
    /// this round's baselines.
    async fn round(&self) -> Result<rounds::RoundReport> {
        let baseline_topic = format!("bench-{}-baseline", self.run_id);
        self.create_topic(&baseline_topic).await?;
        let n = self.options.events;
        eprintln!("baselines: preloading {n} events");
        self.preload(&baseline_topic, 0, n).await?;
        let polled = self
            .raw_consume(&baseline_topic, n, Reads::OneByOne)
            .await?;
        let batched = self.raw_consume(&baseline_topic, n, Reads::Batches).await?;
        let raw_forward = if self.options.scenarios.contains(&Scenario::Batch) {
            Some(self.raw_forward(&baseline_topic, n, 100)?)
        } else {
            None
        };
        let (raw_http_hyper, raw_http_wrk) = self.raw_http(n.clamp(50_000, 300_000))?;
        let raw_http_per_s = raw_http_wrk.map_or(raw_http_hyper.requests_per_s, |w| {
            w.requests_per_s.max(raw_http_hyper.requests_per_s)
        });
        let baselines = Baselines {
            raw_consume_per_s: polled.per_s.max(batched.per_s),
            raw_consume_polled: polled,
            raw_consume_batched: batched,
            raw_forward_per_s: raw_forward.as_ref().map(|f| f.per_s),
            raw_forward_cpu_us_per_record: raw_forward.as_ref().map(|f| f.cpu_us_per_record),
            raw_http_per_s,
            raw_http_hyper,
            raw_http_wrk,
            pipeline_workers: tokio::runtime::Handle::current().metrics().num_workers(),
        };
        eprint!("{}", format_baselines(&baselines));
        let mut scenarios = Vec::new();
        for s in self.options.scenarios.clone() {
            let report = self.scenario(s, &baselines).await?;
            eprintln!("{}", format_line(&report));
            scenarios.push(report);
        }
        Ok(rounds::RoundReport {
            baselines,
            scenarios,
        })
    }
}
