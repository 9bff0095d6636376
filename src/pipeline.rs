//! The pipeline: wires consumer → index → senders → ack tracker → commits,
//! and runs the dispatcher that owns the ack tracker.
//!
//! The dispatcher is one task and the only owner of the [`AckTracker`], so no
//! lock is shared across partitions. Its partitions move through explicit
//! states: consuming (open or paused for back-pressure), draining (revoked,
//! waiting for outcomes up to a deadline), and the whole pipeline through
//! running → stopping (drain, final commit) → stopped.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::consumer::{CommitMode, Consumer};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::commit::{AckToken, AckTracker, PartitionId};
use crate::config::Config;
use crate::deliver::client::HttpClients;
use crate::deliver::sender::{Delivery, EndpointStats, Sender, SenderDeps};
use crate::index::{Endpoint, EndpointIndex, RouteKey, Slot};
use crate::kafka::{self, EmbeddedBroker};
use crate::metrics::{PipelineMetrics, TopicMetrics};
use crate::retry::dlq::{DeadLetterWriter, History, now_ms};
use crate::source::consumer::{
    Inbound, RevokeReply, SourceConsumer, offsets_list, partitions_list,
};
use crate::source::event::Event;

/// Where the pipeline's Kafka is.
#[derive(Debug, Clone)]
pub enum BrokerTarget {
    /// A cluster at these bootstrap servers.
    External(String),
    /// The in-process mock cluster.
    Embedded(Arc<EmbeddedBroker>),
}

impl BrokerTarget {
    /// Bootstrap servers.
    pub fn bootstrap(&self) -> &str {
        match self {
            Self::External(s) => s,
            Self::Embedded(b) => b.bootstrap_servers(),
        }
    }

    fn embedded(&self) -> Option<&EmbeddedBroker> {
        match self {
            Self::External(_) => None,
            Self::Embedded(b) => Some(b),
        }
    }
}

/// Counters a running pipeline exposes (progress displays, tests).
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Records consumed.
    pub consumed: AtomicU64,
    /// Records dead-lettered as `invalid_event`.
    pub invalid: AtomicU64,
    /// Offsets committed (partition commits).
    pub commits: AtomicU64,
    /// Per endpoint: id and counters.
    pub endpoints: Vec<(String, Arc<EndpointStats>)>,
}

/// A running pipeline.
#[derive(Debug)]
pub struct Pipeline {
    shutdown: watch::Sender<bool>,
    task: JoinHandle<Result<()>>,
    stats: Arc<PipelineStats>,
}

impl Pipeline {
    /// Validates endpoints, creates topics as configured, and starts
    /// consuming.
    pub async fn start(config: Config, broker: BrokerTarget) -> Result<Self> {
        let bootstrap = broker.bootstrap().to_string();
        kafka::ensure_topics(&config, &bootstrap, broker.embedded()).await?;
        let env = |name: &str| std::env::var(name).ok();
        let mut endpoints = Vec::with_capacity(config.endpoints.len());
        for (i, ep) in config.endpoints.iter().enumerate() {
            let built = Endpoint::build(
                ep.clone(),
                config.delivery.allow_private_destinations,
                config.delivery.timeout.get(),
                &env,
            )
            .map_err(|e| anyhow::anyhow!("endpoints[{i}].{}: {}", e.field, e.message))?;
            endpoints.push(Arc::new(built));
        }
        let index = EndpointIndex::new(endpoints);
        let enabled = index
            .endpoints()
            .iter()
            .filter(|e| e.config.enabled)
            .count();
        crate::metrics::endpoints(enabled, index.len() - enabled);

        let producer = kafka::durable_producer(&config, &bootstrap)?;
        let dlq = DeadLetterWriter::new(producer, config.topics.dlq_topic());
        let clients = HttpClients::new(
            &config.delivery.user_agent,
            config.delivery.allow_private_destinations,
        )?;
        let (acks_tx, acks_rx) = mpsc::unbounded_channel();
        let deps = SenderDeps {
            clients,
            dlq: dlq.clone(),
            acks: acks_tx.clone(),
            retry_after_cap: config.delivery.backoff.max.get(),
            per_endpoint_labels: config.metrics.per_endpoint_labels,
        };
        let senders: Vec<Sender> = index
            .endpoints()
            .iter()
            .map(|e| Sender::spawn(Arc::clone(e), &deps))
            .collect();
        let stats = Arc::new(PipelineStats {
            endpoints: index
                .endpoints()
                .iter()
                .zip(&senders)
                .map(|(e, s)| (e.id().to_string(), Arc::clone(s.stats())))
                .collect(),
            ..PipelineStats::default()
        });
        let inbound_capacity = config.delivery.max_in_flight.clamp(16, 512);
        let (source, inbound) = SourceConsumer::start(&config, &bootstrap, inbound_capacity)?;
        let topic_metrics = source
            .topics()
            .names()
            .iter()
            .map(|t| TopicMetrics::new(t))
            .collect();
        let max_in_flight = config.delivery.max_in_flight;
        let dispatcher = Dispatcher {
            tracker: AckTracker::new(),
            index,
            senders,
            dlq,
            acks: acks_tx,
            source,
            flow: Flow::Open,
            max_in_flight,
            low_water: max_in_flight - max_in_flight / 4,
            metrics: PipelineMetrics::new(),
            topic_metrics,
            stats: Arc::clone(&stats),
            slots: Vec::new(),
            held: std::collections::VecDeque::new(),
        };
        let (shutdown, shutdown_rx) = watch::channel(false);
        let timing = Timing {
            commit_interval: config.kafka.commit_interval.get(),
            drain_timeout: config.delivery.drain_timeout.get(),
        };
        let task = tokio::spawn(dispatcher.run(inbound, acks_rx, shutdown_rx, timing));
        tracing::info!(
            brokers = %bootstrap,
            topics = ?config.kafka.topics,
            endpoints = stats.endpoints.len(),
            "pipeline started"
        );
        Ok(Self {
            shutdown,
            task,
            stats,
        })
    }

    /// Live counters.
    pub fn stats(&self) -> &Arc<PipelineStats> {
        &self.stats
    }

    /// Stops consuming, drains in-flight work (bounded by
    /// `delivery.drain_timeout`), commits final offsets, and returns.
    pub async fn shutdown(self) -> Result<()> {
        let _ = self.shutdown.send(true);
        self.task.await.context("pipeline task panicked")?
    }

    /// Stops at once without draining or committing anything: what a crash
    /// does. In-flight events are consumed again by the next owner.
    pub fn abort(self) {
        self.task.abort();
    }

    /// Whether the pipeline stopped by itself (an error).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Most records held during a pause before the dispatcher stops reading
/// the inbound channel (a safety net: pausing stops fetching).
const HELD_LIMIT: usize = 4096;

#[derive(Debug, Clone, Copy)]
struct Timing {
    commit_interval: Duration,
    drain_timeout: Duration,
}

/// Back-pressure state of the input partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// Consuming.
    Open,
    /// Paused: too many events in flight.
    Paused,
}

/// A revoke waiting for its partitions to settle.
struct Draining {
    partitions: Vec<PartitionId>,
    deadline: Instant,
    reply: RevokeReply,
}

/// The pipeline's single owner of offsets and routing.
struct Dispatcher {
    tracker: AckTracker,
    index: EndpointIndex,
    senders: Vec<Sender>,
    dlq: DeadLetterWriter,
    acks: mpsc::UnboundedSender<AckToken>,
    source: SourceConsumer,
    flow: Flow,
    max_in_flight: usize,
    low_water: usize,
    metrics: PipelineMetrics,
    topic_metrics: Vec<TopicMetrics>,
    stats: Arc<PipelineStats>,
    /// Reused match buffer.
    slots: Vec<Slot>,
    /// Records read while paused, dispatched on resume (bounded by the
    /// inbound channel: a paused consumer fetches nothing new).
    held: std::collections::VecDeque<Arc<Event>>,
}

impl Dispatcher {
    async fn run(
        mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut acks: mpsc::UnboundedReceiver<AckToken>,
        mut shutdown: watch::Receiver<bool>,
        timing: Timing,
    ) -> Result<()> {
        let mut commit_tick = tokio::time::interval(timing.commit_interval);
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut check_tick = tokio::time::interval(Duration::from_millis(50));
        let mut draining: Option<Draining> = None;
        let mut stopping: Option<Instant> = None;
        loop {
            tokio::select! {
                biased;
                Some(token) = acks.recv() => {
                    self.tracker.complete(token);
                    self.after_settle();
                    if stopping.is_none() {
                        self.dispatch_held().await;
                    }
                }
                changed = shutdown.changed(), if stopping.is_none() => {
                    if changed.is_err() || *shutdown.borrow() {
                        tracing::info!(in_flight = self.tracker.unsettled(), "shutting down: draining in-flight deliveries");
                        stopping = Some(Instant::now() + timing.drain_timeout);
                        self.source.request_stop();
                    }
                }
                msg = inbound.recv(), if draining.is_none() && self.held.len() < HELD_LIMIT => match msg {
                    Some(Inbound::Record(event)) => {
                        if stopping.is_some() {
                            // Not registered: consumed again after restart.
                        } else if self.flow == Flow::Paused || !self.held.is_empty() {
                            self.held.push_back(event);
                        } else {
                            self.dispatch(event).await;
                        }
                    }
                    Some(Inbound::Assigned(partitions)) => self.assign(&partitions),
                    Some(Inbound::Revoke { partitions, reply }) => {
                        draining = Some(Draining {
                            partitions,
                            deadline: Instant::now() + timing.drain_timeout,
                            reply,
                        });
                    }
                    None => {
                        if stopping.is_none() {
                            anyhow::bail!("the consumer thread stopped unexpectedly");
                        }
                        stopping = Some(Instant::now());
                    }
                },
                _ = commit_tick.tick() => self.commit(CommitMode::Async),
                _ = check_tick.tick() => {}
            }
            if let Some(d) = &draining {
                let settled = d
                    .partitions
                    .iter()
                    .all(|p| self.tracker.unsettled_in(*p) == 0);
                if (settled || Instant::now() >= d.deadline)
                    && let Some(d) = draining.take()
                {
                    self.finish_revoke(d, settled);
                }
            }
            if let Some(deadline) = stopping
                && draining.is_none()
                && (self.tracker.unsettled() == 0 || Instant::now() >= deadline)
            {
                break;
            }
        }
        let left = self.tracker.unsettled();
        if left > 0 {
            tracing::warn!(
                unsettled = left,
                "drain deadline reached: these events will be delivered again after restart"
            );
        }
        self.commit(CommitMode::Sync);
        for sender in &self.senders {
            sender.abort();
        }
        drop(inbound);
        let source = self.source;
        tokio::task::spawn_blocking(move || source.close())
            .await
            .context("closing the consumer")?;
        tracing::info!("pipeline stopped");
        Ok(())
    }

    fn assign(&mut self, partitions: &[PartitionId]) {
        for p in partitions {
            self.tracker.assign(*p);
        }
        if self.flow == Flow::Paused {
            let tpl = partitions_list(self.source.topics(), partitions);
            if let Err(e) = self.source.consumer().pause(&tpl) {
                tracing::warn!(error = %e, "pausing newly assigned partitions failed");
            }
        }
    }

    /// Dispatches records held during a pause, while the flow stays open.
    async fn dispatch_held(&mut self) {
        while self.flow == Flow::Open {
            let Some(event) = self.held.pop_front() else {
                break;
            };
            self.dispatch(event).await;
        }
    }

    fn finish_revoke(&mut self, d: Draining, settled: bool) {
        // Held records of revoked partitions were never registered; the new
        // owner consumes them again.
        self.held.retain(|e| !d.partitions.contains(&e.partition));
        if !settled {
            tracing::warn!(
                partitions = d.partitions.len(),
                "revoke drain deadline reached; unsettled records will be delivered again"
            );
        }
        let offsets: Vec<(PartitionId, i64)> = d
            .partitions
            .iter()
            .filter_map(|p| self.tracker.revoke(*p).map(|o| (*p, o)))
            .collect();
        self.stats
            .commits
            .fetch_add(offsets.len() as u64, Ordering::Relaxed);
        self.metrics
            .offsets_committed
            .increment(offsets.len() as u64);
        let _ = d.reply.send(offsets);
        self.after_settle();
    }

    async fn dispatch(&mut self, event: Arc<Event>) {
        let topic = event.partition.topic as usize;
        self.topic_metrics[topic].consumed.increment(1);
        self.stats.consumed.fetch_add(1, Ordering::Relaxed);
        match &event.fields {
            Err(invalid) => {
                let Some(token) = self.tracker.register(event.partition, event.offset, 1) else {
                    return;
                };
                self.topic_metrics[topic].invalid.increment(1);
                self.stats.invalid.fetch_add(1, Ordering::Relaxed);
                let history = History {
                    endpoint: String::new(),
                    attempt: 0,
                    first_ms: now_ms(),
                    last_status: "invalid".into(),
                    last_error: invalid.to_string(),
                };
                let dlq = self.dlq.clone();
                let acks = self.acks.clone();
                tokio::spawn(async move {
                    dlq.write(&event, &history, "invalid_event").await;
                    let _ = acks.send(token);
                });
            }
            Ok(fields) => {
                let key = RouteKey {
                    event_type: &fields.event_type,
                    device: fields.device.as_deref(),
                    group: fields.group.as_deref(),
                    tenant: fields.tenant.as_deref(),
                };
                self.index.matches(&key, &mut self.slots);
                let Some(token) =
                    self.tracker
                        .register(event.partition, event.offset, self.slots.len() as u32)
                else {
                    return;
                };
                for i in 0..self.slots.len() {
                    let slot = self.slots[i] as usize;
                    let delivery = Delivery {
                        event: Arc::clone(&event),
                        token,
                    };
                    if self.senders[slot].enqueue(delivery).await.is_err() {
                        // The sender is gone (shutdown): the record stays
                        // unsettled and is consumed again after a restart.
                        tracing::debug!("sender closed; delivery left unsettled");
                    }
                }
            }
        }
        self.after_dispatch();
    }

    fn after_dispatch(&mut self) {
        let unsettled = self.tracker.unsettled();
        self.metrics.inflight.set(unsettled as f64);
        if self.flow == Flow::Open && unsettled >= self.max_in_flight {
            self.set_flow(Flow::Paused);
        }
    }

    fn after_settle(&mut self) {
        let unsettled = self.tracker.unsettled();
        self.metrics.inflight.set(unsettled as f64);
        if self.flow == Flow::Paused && unsettled <= self.low_water {
            self.set_flow(Flow::Open);
        }
    }

    fn set_flow(&mut self, flow: Flow) {
        let partitions: Vec<PartitionId> = self.tracker.partitions().collect();
        let tpl = partitions_list(self.source.topics(), &partitions);
        let result = match flow {
            Flow::Paused => self.source.consumer().pause(&tpl),
            Flow::Open => self.source.consumer().resume(&tpl),
        };
        match result {
            Ok(()) => {
                tracing::debug!(
                    ?flow,
                    in_flight = self.tracker.unsettled(),
                    "input flow changed"
                );
                self.flow = flow;
            }
            Err(e) => tracing::warn!(error = %e, ?flow, "changing input flow failed"),
        }
    }

    fn commit(&mut self, mode: CommitMode) {
        let offsets = self.tracker.take_commits();
        if offsets.is_empty() {
            return;
        }
        let tpl = offsets_list(self.source.topics(), &offsets);
        match self.source.consumer().commit(&tpl, mode) {
            Ok(()) => {
                self.stats
                    .commits
                    .fetch_add(offsets.len() as u64, Ordering::Relaxed);
                self.metrics
                    .offsets_committed
                    .increment(offsets.len() as u64);
            }
            Err(e) => {
                tracing::warn!(error = %e, "offset commit failed; will retry");
                let failed: HashSet<PartitionId> = offsets.iter().map(|(p, _)| *p).collect();
                self.tracker.retry_commits(&failed);
            }
        }
    }
}
