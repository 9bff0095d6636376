//! Bench (j): adaptive concurrency against a receiver whose capacity
//! changes mid-run. The receiver answers at most `capacity` requests at
//! once (each takes [`SERVICE_TIME`]) and 429 or 503, alternately, to any
//! beyond; its capacity is [`HIGH`] for the first third of the offered
//! period, [`LOW`] for the second, [`HIGH`] again for the last and while
//! the backlog drains. Events are produced at [`OFFERED_PER_S`] for
//! [`OFFERED_SECS`] (between the two capacities' rates), the same for every
//! run, and each run lasts until every event was delivered (retries through
//! short tiers: 250 ms, 1 s, 5 s).
//!
//! Runs: a fixed limit at the ceiling ([`CEILING`], headroom above the
//! high capacity), `adaptive_concurrency` under the same ceiling, and a
//! fixed limit at the low capacity (no rejection, but capped at the low
//! rate). Each reports its throughput (events delivered per second until
//! the last, and during the offered period), the 429 and 503 answers, and a
//! timeline per second: capacity, delivered, rejected, the most requests the
//! receiver saw at once, and (adaptive) the limit as
//! `hookstream_endpoint_concurrency_limit` showed it. The gauge needs the
//! metrics recorder, which this scenario installs for the process (on
//! 127.0.0.1, an ephemeral port) if nothing did: scenarios run after it
//! record metrics too.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use rdkafka::producer::FutureRecord;
use serde::Serialize;

use super::cpu::{OwnRuntime, process_cpu_secs};
use super::receiver::serve_http1;
use super::{Baselines, Bench, Measured, Memory, Run, Scenario, ScenarioReport, now_ns};
use crate::config::{AdaptiveConcurrencyConfig, HumanDuration};

/// Time the receiver takes to answer an accepted request.
pub const SERVICE_TIME: Duration = Duration::from_millis(20);
/// Requests the receiver answers at once, outside the dip (800/s).
pub const HIGH: u64 = 16;
/// Requests it answers at once during the dip (200/s).
pub const LOW: u64 = 4;
/// Events produced per second.
pub const OFFERED_PER_S: u64 = 400;
/// Seconds events are produced for (a third at each capacity).
pub const OFFERED_SECS: u64 = 12;
/// `max_concurrency`: the fixed limit, and the adaptive limit's ceiling.
pub const CEILING: u32 = 32;
/// Longest a run may take to deliver everything.
const RUN_TIMEOUT: Duration = Duration::from_secs(180);

/// The receiver's capacity `elapsed` into a run.
fn capacity_at(elapsed: Duration) -> u64 {
    let third = Duration::from_secs(OFFERED_SECS) / 3;
    if elapsed >= third && elapsed < third * 2 {
        LOW
    } else {
        HIGH
    }
}

/// Counters of a [`CapacityReceiver`].
#[derive(Debug, Default)]
struct Counts {
    capacity: AtomicU64,
    in_progress: AtomicU64,
    /// Most requests at once since it was last taken.
    max_in_progress: AtomicU64,
    delivered: AtomicU64,
    rejected_429: AtomicU64,
    rejected_503: AtomicU64,
    rejections: AtomicU64,
}

/// A lean receiver of limited capacity on 127.0.0.1, on threads of its
/// own (so its CPU is apart from the pipeline's).
struct CapacityReceiver {
    url: String,
    counts: Arc<Counts>,
    runtime: OwnRuntime,
}

impl CapacityReceiver {
    fn start() -> Result<Self> {
        let listener =
            std::net::TcpListener::bind("127.0.0.1:0").context("binding the capacity receiver")?;
        listener.set_nonblocking(true)?;
        let url = format!("http://{}/hooks", listener.local_addr()?);
        let counts = Arc::new(Counts::default());
        counts.capacity.store(HIGH, Ordering::SeqCst);
        let runtime = OwnRuntime::start("bench-capacity", 2)?;
        serve_http1(&runtime, listener, Arc::clone(&counts), answer);
        Ok(Self {
            url,
            counts,
            runtime,
        })
    }
}

async fn answer(
    req: Request<Incoming>,
    counts: Arc<Counts>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let _ = req.into_body().collect().await;
    let now = counts.in_progress.fetch_add(1, Ordering::SeqCst) + 1;
    counts.max_in_progress.fetch_max(now, Ordering::SeqCst);
    let status = if now > counts.capacity.load(Ordering::SeqCst) {
        if counts
            .rejections
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(2)
        {
            counts.rejected_429.fetch_add(1, Ordering::Relaxed);
            hyper::StatusCode::TOO_MANY_REQUESTS
        } else {
            counts.rejected_503.fetch_add(1, Ordering::Relaxed);
            hyper::StatusCode::SERVICE_UNAVAILABLE
        }
    } else {
        tokio::time::sleep(SERVICE_TIME).await;
        counts.delivered.fetch_add(1, Ordering::Relaxed);
        hyper::StatusCode::NO_CONTENT
    };
    counts.in_progress.fetch_sub(1, Ordering::SeqCst);
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    Ok(response)
}

/// One second of a run.
#[derive(Debug, Clone, Serialize)]
pub struct CapacitySecond {
    /// Seconds since the run started producing.
    pub t_s: u64,
    /// The receiver's capacity at the second's end.
    pub capacity: u64,
    /// Events delivered in it.
    pub delivered: u64,
    /// 429 answers in it.
    pub rejected_429: u64,
    /// 503 answers in it.
    pub rejected_503: u64,
    /// Most requests the receiver saw at once in it.
    pub max_concurrency: u64,
    /// Lowest and highest adaptive limit seen in it (sampled every 100 ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<(f64, f64)>,
}

/// One run of (j).
#[derive(Debug, Clone, Serialize)]
pub struct CapacityRun {
    /// `fixed 32`, `adaptive ≤ 32`, `fixed 4`.
    pub limit: String,
    /// Seconds from the first event produced to the last delivered.
    pub secs_to_deliver_all: f64,
    /// Events ÷ those seconds.
    pub delivered_per_s: f64,
    /// Events delivered while events were offered ÷ the offered seconds.
    pub delivered_per_s_while_offered: f64,
    /// 429 answers in all.
    pub rejected_429: u64,
    /// 503 answers in all.
    pub rejected_503: u64,
    /// Per second.
    pub timeline: Vec<CapacitySecond>,
}

/// The value of `hookstream_endpoint_concurrency_limit{endpoint="<id>"}`.
fn limit_of(id: &str) -> Option<f64> {
    let text = crate::metrics::render()?;
    let prefix = format!("hookstream_endpoint_concurrency_limit{{endpoint=\"{id}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(prefix.as_str()))
        .and_then(|v| v.trim().parse().ok())
}

impl Bench {
    /// Scenario (j): a fixed limit, the adaptive one, and a fixed limit at
    /// the low capacity, each against the same changing receiver.
    pub(super) async fn capacity_change(&self, baselines: &Baselines) -> Result<ScenarioReport> {
        let scenario = Scenario::CapacityChange;
        if crate::metrics::render().is_none() {
            crate::metrics::install_exporter("127.0.0.1:0")
                .context("installing the metrics recorder for the limit gauge")?;
        }
        let receiver = CapacityReceiver::start()?;
        let events = OFFERED_PER_S * OFFERED_SECS;
        eprintln!(
            "{}: {events} events at {OFFERED_PER_S}/s; capacity {HIGH} → {LOW} → {HIGH} at once, {} ms each",
            scenario.label(),
            SERVICE_TIME.as_millis()
        );
        let mut runs = Vec::new();
        let mut adaptive_measured = None;
        for (tag, fixed) in [
            ("fixed", Some(CEILING)),
            ("adaptive", None),
            ("low", Some(LOW as u32)),
        ] {
            let (run, measured) = self.capacity_run(&receiver, tag, fixed, events).await?;
            eprint!("{}", format_run(&run));
            if fixed.is_none() {
                adaptive_measured = Some(measured);
            }
            runs.push(run);
        }
        let Some(measured) = adaptive_measured else {
            anyhow::bail!("scenario (j) made no adaptive run");
        };
        let run = Run {
            events,
            deliveries: events,
            measured,
            latency_ms: (0.0, 0.0),
        };
        Ok(ScenarioReport {
            capacity_runs: Some(runs),
            ..ScenarioReport::of(scenario, run, baselines)
        })
    }

    /// One run: an endpoint with the fixed limit `fixed` (or adaptive under
    /// [`CEILING`]) against `receiver`, events produced at the offered rate
    /// until every one was delivered.
    ///
    /// Long on purpose: the producer at the offered rate and the observer
    /// sampling the receiver every 100 ms run side by side in one `join`
    /// over the run's counters, between one setup and one summary.
    async fn capacity_run(
        &self,
        receiver: &CapacityReceiver,
        tag: &str,
        fixed: Option<u32>,
        events: u64,
    ) -> Result<(CapacityRun, Measured)> {
        let topic = format!("bench-{}-capacity-{tag}", self.run_id);
        self.create_topic(&topic).await?;
        let mut config = self.config(&topic, &format!("{topic}-group"));
        config.topics.prefix = format!("bench{}cap{tag}", self.run_id);
        config.topics.retry_tiers = ["250ms", "1s", "5s"]
            .iter()
            .filter_map(|t| crate::config::parse_duration(t).ok().map(HumanDuration))
            .collect();
        config.delivery.backoff.initial = HumanDuration::from_millis(250);
        config.delivery.backoff.max = HumanDuration::from_secs(5);
        config.delivery.max_attempts = 10_000;
        let id = format!("capacity-{tag}");
        let mut endpoint = self.endpoint(&id, receiver.url.clone());
        endpoint.max_concurrency = fixed.unwrap_or(CEILING);
        if fixed.is_none() {
            endpoint.adaptive_concurrency = Some(Box::new(AdaptiveConcurrencyConfig::default()));
        }
        config.endpoints.push(endpoint);
        let counts = &receiver.counts;
        for c in [
            &counts.max_in_progress,
            &counts.delivered,
            &counts.rejected_429,
            &counts.rejected_503,
        ] {
            c.store(0, Ordering::SeqCst);
        }
        counts.capacity.store(HIGH, Ordering::SeqCst);
        let rss_before = super::status_kib("VmRSS:") / 1024.0;
        let pipeline = crate::pipeline::Pipeline::start(config, self.target()).await?;
        let cpu_before = (
            process_cpu_secs("self").unwrap_or(0.0),
            receiver.runtime.cpu_secs(),
        );
        let started = Instant::now();
        let produce = async {
            for i in 0..events {
                let due = started + Duration::from_secs_f64(i as f64 / OFFERED_PER_S as f64);
                tokio::time::sleep_until(due.into()).await;
                let body = super::event_body(i, now_ns());
                let key = format!("dev-{}", i % 100_000);
                let record = FutureRecord::to(&topic).key(&key).payload(&body);
                if let Err(e) = self.producer.enqueue(record) {
                    anyhow::bail!("producing a capacity event: {e}");
                }
            }
            Ok(())
        };
        let observe = async {
            let mut timeline = Vec::new();
            let mut last = (0, 0, 0);
            let mut limits: Option<(f64, f64)> = None;
            let mut delivered_while_offered = 0;
            let mut tick = 0u64;
            loop {
                tick += 1;
                tokio::time::sleep_until((started + Duration::from_millis(100 * tick)).into())
                    .await;
                let elapsed = started.elapsed();
                counts
                    .capacity
                    .store(capacity_at(elapsed), Ordering::SeqCst);
                if let Some(limit) = fixed.is_none().then(|| limit_of(&id)).flatten() {
                    limits = Some(
                        limits.map_or((limit, limit), |(lo, hi)| (lo.min(limit), hi.max(limit))),
                    );
                }
                let delivered = counts.delivered.load(Ordering::SeqCst);
                if elapsed <= Duration::from_secs(OFFERED_SECS) {
                    delivered_while_offered = delivered;
                }
                let done = delivered >= events;
                if tick.is_multiple_of(10) || done {
                    let now = (
                        delivered,
                        counts.rejected_429.load(Ordering::SeqCst),
                        counts.rejected_503.load(Ordering::SeqCst),
                    );
                    timeline.push(CapacitySecond {
                        t_s: tick.div_ceil(10),
                        capacity: capacity_at(elapsed),
                        delivered: now.0 - last.0,
                        rejected_429: now.1 - last.1,
                        rejected_503: now.2 - last.2,
                        max_concurrency: counts
                            .max_in_progress
                            .swap(counts.in_progress.load(Ordering::SeqCst), Ordering::SeqCst),
                        limit: limits.take(),
                    });
                    last = now;
                }
                if done {
                    return Ok((timeline, delivered_while_offered, elapsed));
                }
                if elapsed > RUN_TIMEOUT || pipeline.is_finished() {
                    anyhow::bail!("(j) {tag}: only {delivered} of {events} events delivered");
                }
            }
        };
        let (produced, observed) = tokio::join!(produce, observe);
        produced?;
        let (timeline, delivered_while_offered, elapsed) = observed?;
        let cpu_after = (
            process_cpu_secs("self").unwrap_or(0.0),
            receiver.runtime.cpu_secs(),
        );
        pipeline.shutdown().await?;
        let secs = elapsed.as_secs_f64();
        let run = CapacityRun {
            limit: match fixed {
                Some(n) => format!("fixed {n}"),
                None => format!("adaptive ≤ {CEILING}"),
            },
            secs_to_deliver_all: secs,
            delivered_per_s: events as f64 / secs.max(1e-9),
            delivered_per_s_while_offered: delivered_while_offered as f64 / OFFERED_SECS as f64,
            rejected_429: counts.rejected_429.load(Ordering::SeqCst),
            rejected_503: counts.rejected_503.load(Ordering::SeqCst),
            timeline,
        };
        let receiver_cpu = cpu_after.1 - cpu_before.1;
        let measured = Measured {
            secs,
            requests: events + run.rejected_429 + run.rejected_503,
            memory: Memory {
                peak: super::status_kib("VmHWM:") / 1024.0,
                before: rss_before,
                broker_peak: None,
                startup_peak: None,
            },
            cpu_secs: (cpu_after.0 - cpu_before.0 - receiver_cpu).max(0.0),
            receiver_cpu_secs: receiver_cpu,
            broker_cpu_secs: None,
        };
        Ok((run, measured))
    }
}

/// A run's summary and timeline, for the terminal.
fn format_run(run: &CapacityRun) -> String {
    let mut out = format!(
        "  {}: all delivered in {:.1} s ({:.0} events/s; {:.0}/s while offered), {} × 429, {} × 503\n    t(s) capacity delivered 429 503 max-at-once limit\n",
        run.limit,
        run.secs_to_deliver_all,
        run.delivered_per_s,
        run.delivered_per_s_while_offered,
        run.rejected_429,
        run.rejected_503
    );
    for s in &run.timeline {
        let limit = s.limit.map_or(String::new(), |(lo, hi)| {
            if lo == hi {
                format!("{lo:.0}")
            } else {
                format!("{lo:.0}-{hi:.0}")
            }
        });
        out.push_str(&format!(
            "    {:>4} {:>8} {:>9} {:>4} {:>4} {:>11} {}\n",
            s.t_s,
            s.capacity,
            s.delivered,
            s.rejected_429,
            s.rejected_503,
            s.max_concurrency,
            limit
        ));
    }
    out
}
