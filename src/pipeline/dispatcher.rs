//! The dispatcher: the one task that owns offsets and routing.
//!
//! It is the only owner of the [`AckTracker`] and the [`PartitionGates`], so
//! no lock is shared across partitions. It reads consumed records and
//! rebalance requests, routes input records to every matching endpoint and
//! retry records to their one endpoint, defers deliveries an endpoint cannot
//! take now, settles outcomes and commits. Its partitions move through
//! explicit states: consuming (gate open, or closed for back-pressure or a
//! retry not yet due), draining (revoked, waiting for outcomes up to a
//! deadline); the pipeline through running → stopping (drain, final commit)
//! → stopped.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::consumer::{CommitMode, Consumer};
use tokio::sync::{mpsc, watch};

use super::PipelineStats;
use super::gate::{Gated, PartitionGates};
use crate::commit::{AckToken, AckTracker, PartitionId};
use crate::deliver::sender::{Delivery, EnqueueError, Sender, SenderDeps};
use crate::index::{EndpointIndex, EndpointRegistry, RouteKey, Slot};
use crate::metrics::{PipelineMetrics, TopicMetrics};
use crate::retry::record::{History, now_ms};
use crate::retry::writer::OutcomeWriter;
use crate::source::consumer::{
    Inbound, RevokeReply, SourceConsumer, offsets_list, partitions_list,
};
use crate::source::event::{Event, RecordKind};

/// How long the dispatcher waits for room in a busy endpoint's queue before
/// deferring the delivery (a stalled endpoint gets no wait at all).
const ENQUEUE_PATIENCE: Duration = Duration::from_millis(500);

/// How often dead letters are summarised in the log.
const DEAD_LETTER_SUMMARY: Duration = Duration::from_secs(30);

/// Held records released per turn of the dispatcher loop.
const RELEASE_BATCH: usize = 256;

/// How long a sender must have had nothing to do before it is dropped, and
/// how often senders are looked at: an index of 100 000 endpoints that each
/// get an event now and then keeps senders only for the ones in use.
const SENDER_IDLE: Duration = Duration::from_millis(250);

/// Ack tokens taken from the channel per turn of the dispatcher loop.
const ACKS_PER_TURN: usize = 1024;

/// Most records held by closed gates before the dispatcher stops reading
/// the inbound channel (a safety net: paused partitions fetch nothing new,
/// and a retry due more than 100 ms ahead pauses its partition before
/// anything behind it is polled, so only retries near their due time and
/// back-pressure hold records).
const HELD_LIMIT: usize = 16_384;

impl Gated for Arc<Event> {
    fn partition(&self) -> PartitionId {
        self.partition
    }

    fn due_ms(&self) -> Option<i64> {
        Event::due_ms(self)
    }

    fn paused_its_partition(&self) -> bool {
        self.paused_partition
    }
}

/// Intervals the dispatcher works to.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timing {
    /// How often settled offsets are committed.
    pub commit_interval: Duration,
    /// How long a revoke or shutdown waits for outcomes.
    pub drain_timeout: Duration,
}

/// A revoke waiting for its partitions to settle.
struct Draining {
    partitions: Vec<PartitionId>,
    deadline: Instant,
    reply: RevokeReply,
}

/// The pipeline's single owner of offsets and routing.
pub(super) struct Dispatcher {
    tracker: AckTracker,
    gates: PartitionGates<Arc<Event>>,
    registry: Arc<EndpointRegistry>,
    /// The snapshot in use and its version.
    index: Arc<EndpointIndex>,
    version: u64,
    /// Senders by slot of `index` (made on an endpoint's first delivery),
    /// and by endpoint id.
    senders: Vec<Option<Arc<Sender>>>,
    by_id: HashMap<String, Arc<Sender>>,
    deps: Arc<SenderDeps>,
    writer: OutcomeWriter,
    acks: mpsc::UnboundedSender<AckToken>,
    source: SourceConsumer,
    max_in_flight: usize,
    low_water: usize,
    metrics: PipelineMetrics,
    topic_metrics: Vec<TopicMetrics>,
    tier_due_lag: Vec<metrics::Histogram>,
    stats: Arc<PipelineStats>,
    /// Reused match buffer.
    slots: Vec<Slot>,
}

impl Dispatcher {
    pub(super) fn new(
        registry: Arc<EndpointRegistry>,
        deps: Arc<SenderDeps>,
        writer: OutcomeWriter,
        acks: mpsc::UnboundedSender<AckToken>,
        source: SourceConsumer,
        max_in_flight: usize,
        stats: Arc<PipelineStats>,
    ) -> Self {
        let topic_metrics = source
            .topics()
            .names()
            .iter()
            .map(|t| TopicMetrics::new(t))
            .collect();
        let tier_due_lag = (0..writer.tiers().len())
            .map(|i| {
                crate::metrics::retry_due_lag(
                    &crate::config::HumanDuration(writer.tiers().delay(i)).to_string(),
                )
            })
            .collect();
        let mut dispatcher = Self {
            tracker: AckTracker::new(),
            gates: PartitionGates::new(),
            index: registry.snapshot(),
            version: u64::MAX,
            registry,
            senders: Vec::new(),
            by_id: HashMap::new(),
            deps,
            writer,
            acks,
            source,
            max_in_flight,
            low_water: max_in_flight - max_in_flight / 4,
            metrics: PipelineMetrics::new(),
            topic_metrics,
            tier_due_lag,
            stats,
            slots: Vec::new(),
        };
        dispatcher.refresh();
        dispatcher
    }

    /// Picks up a new endpoint snapshot: senders of unchanged limits take the
    /// new settings in place, others are dropped (the old one drains its
    /// queue; a new one is made on the next delivery), deleted endpoints'
    /// senders dead-letter what they still hold.
    fn refresh(&mut self) {
        let version = self.registry.version();
        if version == self.version {
            return;
        }
        self.version = version;
        self.index = self.registry.snapshot();
        let mut by_id = HashMap::with_capacity(self.by_id.len());
        let mut senders = Vec::with_capacity(self.index.len());
        for endpoint in self.index.endpoints() {
            let sender = match self.by_id.remove(endpoint.id()) {
                Some(s) if s.fits(endpoint) => {
                    s.update(Arc::clone(endpoint));
                    by_id.insert(endpoint.id().to_string(), Arc::clone(&s));
                    Some(s)
                }
                _ => None,
            };
            senders.push(sender);
        }
        for (id, gone) in self.by_id.drain() {
            tracing::info!(endpoint = %id, "endpoint deleted");
            gone.retire();
        }
        self.by_id = by_id;
        self.senders = senders;
        self.count_senders();
    }

    pub(super) async fn run(
        mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut acks: mpsc::UnboundedReceiver<AckToken>,
        mut shutdown: watch::Receiver<bool>,
        timing: Timing,
    ) -> Result<()> {
        let mut commit_tick = tokio::time::interval(timing.commit_interval);
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut check_tick = tokio::time::interval(Duration::from_millis(50));
        let mut reap_tick = tokio::time::interval(SENDER_IDLE / 2);
        reap_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut summary_tick = tokio::time::interval(DEAD_LETTER_SUMMARY);
        summary_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut draining: Option<Draining> = None;
        let mut stopping: Option<Instant> = None;
        let mut more_ready = false;
        let mut settled = Vec::with_capacity(ACKS_PER_TURN);
        loop {
            let next_due = self.gates.next_due();
            let due_sleep = async {
                match next_due {
                    Some(due) => {
                        let wait = Duration::from_millis((due - now_ms()).max(0) as u64);
                        tokio::time::sleep(wait).await
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                n = acks.recv_many(&mut settled, ACKS_PER_TURN) => {
                    for token in settled.drain(..n) {
                        self.tracker.complete(token);
                    }
                    self.after_settle();
                }
                changed = shutdown.changed(), if stopping.is_none() => {
                    if changed.is_err() || *shutdown.borrow() {
                        tracing::info!(in_flight = self.tracker.unsettled(), "shutting down: draining in-flight deliveries");
                        stopping = Some(Instant::now() + timing.drain_timeout);
                        self.source.request_stop();
                    }
                }
                msg = inbound.recv(), if draining.is_none() && self.gates.held() < HELD_LIMIT => match msg {
                    Some(Inbound::Records(events)) => {
                        // While stopping, records are not registered: they
                        // are consumed again after a restart.
                        if stopping.is_none() {
                            let now = now_ms();
                            for event in events {
                                if let Some(event) = self.gates.offer(event, now) {
                                    self.dispatch(event).await;
                                }
                            }
                        }
                    }
                    Some(Inbound::Assigned(partitions)) => {
                        self.stats.assigned.store(true, Ordering::Release);
                        for p in &partitions {
                            self.tracker.assign(*p);
                            self.gates.assign(*p);
                        }
                    }
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
                _ = due_sleep => {}
                _ = std::future::ready(()), if more_ready => {}
                _ = commit_tick.tick() => self.commit(CommitMode::Async),
                _ = summary_tick.tick() => self.writer.log_dead_letter_summary(DEAD_LETTER_SUMMARY),
                _ = reap_tick.tick() => self.drop_idle_senders(),
                _ = check_tick.tick() => {}
            }
            more_ready = stopping.is_none() && self.release_ready().await;
            self.apply_pauses();
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
        self.senders.clear();
        for (_, sender) in self.by_id.drain() {
            sender.abort();
        }
        drop(inbound);
        let source = self.source;
        tokio::task::spawn_blocking(move || source.close())
            .await
            .context("closing the consumer")?;
        self.writer.log_dead_letter_summary(DEAD_LETTER_SUMMARY);
        tracing::info!("pipeline stopped");
        Ok(())
    }

    /// Dispatches held records whose gates opened, at most
    /// [`RELEASE_BATCH`] at a time so input records interleave with a burst
    /// of due retries. Returns whether more are ready.
    async fn release_ready(&mut self) -> bool {
        if self.gates.held() == 0 {
            return false;
        }
        let now = now_ms();
        for _ in 0..RELEASE_BATCH {
            match self.gates.pop_ready(now) {
                Some(event) => self.dispatch(event).await,
                None => return false,
            }
        }
        true
    }

    /// Tells Kafka which partitions to pause or resume.
    fn apply_pauses(&mut self) {
        let changes = self.gates.pause_changes();
        if changes.is_empty() {
            return;
        }
        let consumer = self.source.consumer();
        if !changes.pause.is_empty() {
            let tpl = partitions_list(self.source.topics(), &changes.pause);
            if let Err(e) = consumer.pause(&tpl) {
                tracing::warn!(error = %e, "pausing partitions failed; will retry");
                self.gates.forget_paused(&changes.pause, true);
            }
        }
        if !changes.resume.is_empty() {
            let tpl = partitions_list(self.source.topics(), &changes.resume);
            if let Err(e) = consumer.resume(&tpl) {
                tracing::warn!(error = %e, "resuming partitions failed; will retry");
                self.gates.forget_paused(&changes.resume, false);
            }
        }
    }

    fn finish_revoke(&mut self, d: Draining, settled: bool) {
        if !settled {
            tracing::warn!(
                partitions = d.partitions.len(),
                "revoke drain deadline reached; unsettled records will be delivered again"
            );
        }
        let mut offsets = Vec::with_capacity(d.partitions.len());
        for p in &d.partitions {
            self.gates.revoke(*p);
            if let Some(o) = self.tracker.revoke(*p) {
                offsets.push((*p, o));
            }
        }
        self.count_commits(offsets.len());
        let _ = d.reply.send(offsets);
        self.after_settle();
    }

    /// Routes one record whose gate is open.
    async fn dispatch(&mut self, event: Arc<Event>) {
        self.refresh();
        let topic = event.partition.topic as usize;
        self.topic_metrics[topic].consumed.increment(1);
        match &event.kind {
            RecordKind::Input => {
                self.stats.consumed.fetch_add(1, Ordering::Relaxed);
                self.dispatch_input(event).await;
            }
            RecordKind::Retry { .. } => {
                self.stats.retries_consumed.fetch_add(1, Ordering::Relaxed);
                if let Some(token) = self.tracker.register(event.partition, event.offset, 1) {
                    self.dispatch_retry(event, token).await;
                }
            }
            RecordKind::RetryBatch { entries, .. } => {
                self.stats
                    .retries_consumed
                    .fetch_add(entries.len() as u64, Ordering::Relaxed);
                let outcomes = u32::try_from(entries.len()).unwrap_or(u32::MAX);
                if let Some(token) = self
                    .tracker
                    .register(event.partition, event.offset, outcomes)
                {
                    for entry in entries {
                        self.dispatch_retry(Arc::clone(entry), token).await;
                    }
                }
            }
        }
        self.after_dispatch();
    }

    /// Routes a retry (a single record, or an entry of a deferral batch,
    /// registered under `token`) to its one endpoint, or dead-letters it
    /// when its headers are unreadable or its endpoint is gone or disabled.
    async fn dispatch_retry(&mut self, event: Arc<Event>, token: AckToken) {
        let RecordKind::Retry { tier, headers } = &event.kind else {
            // (Batch entries are read as retries: cannot happen. Settled,
            // so the partition does not wait for it for ever.)
            let detail = "a retry tier entry that is not a retry record";
            self.dead_letter_settling(token, &event, History::default(), "invalid_event", detail);
            return;
        };
        let h = match headers {
            Err(problem) => {
                self.dead_letter_settling(
                    token,
                    &event,
                    History::default(),
                    "invalid_event",
                    problem,
                );
                return;
            }
            Ok(h) => h,
        };
        if let Some(lag) = self.tier_due_lag.get(*tier) {
            lag.record(((now_ms() - h.due_ms).max(0) as f64) / 1000.0);
        }
        let history = History {
            endpoint: &h.endpoint,
            attempt: h.attempt,
            first_ms: h.first_ms,
            ..History::default()
        };
        match self.index.slot_of(&h.endpoint) {
            None => self.dead_letter_settling(
                token,
                &event,
                history,
                "endpoint_deleted",
                "the endpoint no longer exists",
            ),
            Some(slot) if !self.index.endpoint(slot).config.enabled => self.dead_letter_settling(
                token,
                &event,
                history,
                "endpoint_disabled",
                "the endpoint is disabled",
            ),
            Some(slot) => {
                let delivery = Delivery {
                    attempt: h.attempt,
                    first_ms: Some(h.first_ms),
                    event: Arc::clone(&event),
                    token,
                };
                self.enqueue(slot, delivery).await;
            }
        }
    }

    async fn dispatch_input(&mut self, event: Arc<Event>) {
        let topic = event.partition.topic as usize;
        let fields = match &event.fields {
            Ok(fields) => fields,
            Err(invalid) => {
                self.topic_metrics[topic].invalid.increment(1);
                self.stats.invalid.fetch_add(1, Ordering::Relaxed);
                let detail = invalid.to_string();
                self.dead_letter_now(&event, History::default(), "invalid_event", &detail);
                return;
            }
        };
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
            let slot = self.slots[i];
            let delivery = Delivery {
                event: Arc::clone(&event),
                token,
                attempt: 0,
                first_ms: None,
            };
            self.enqueue(slot, delivery).await;
        }
    }

    /// Queues a delivery, or defers it without using an attempt when the
    /// endpoint cannot take it now: its circuit is open (deferred until it
    /// half-opens) or its queue stayed full (deferred to the first tier). A
    /// busy endpoint that keeps taking from its queue gets up to
    /// [`ENQUEUE_PATIENCE`] of back-pressure first.
    async fn enqueue(&mut self, slot: Slot, delivery: Delivery) {
        let sender = self.sender(slot);
        if let Some(delay) = sender.circuit().defer_for(now_ms()) {
            sender.defer(delivery, delay, "circuit open");
            return;
        }
        match sender.enqueue(delivery, ENQUEUE_PATIENCE).await {
            Ok(()) => {}
            Err(EnqueueError::Full(d)) => {
                let first_tier = self.writer.tiers().delay(0);
                sender.defer(d, first_tier, "endpoint queue full");
            }
            Err(EnqueueError::Closed(_)) => {
                // Shutdown: left unsettled, consumed again after a restart.
            }
        }
    }

    /// The sender of `slot`, made on its first delivery.
    fn sender(&mut self, slot: Slot) -> Arc<Sender> {
        if let Some(sender) = &self.senders[slot as usize] {
            return Arc::clone(sender);
        }
        let endpoint = self.index.endpoint(slot);
        let sender = Arc::new(Sender::new(
            Arc::clone(endpoint),
            &self.deps,
            self.registry.activity(endpoint.id()),
        ));
        self.by_id
            .insert(endpoint.id().to_string(), Arc::clone(&sender));
        self.senders[slot as usize] = Some(Arc::clone(&sender));
        self.count_senders();
        sender
    }

    /// Publishes how many senders exist.
    fn count_senders(&self) {
        self.stats
            .senders
            .store(self.by_id.len() as u64, Ordering::Relaxed);
    }

    /// Drops the senders that had nothing to do for [`SENDER_IDLE`].
    fn drop_idle_senders(&mut self) {
        if self.by_id.is_empty() {
            return;
        }
        let (now, idle_ms) = (now_ms(), SENDER_IDLE.as_millis() as i64);
        let mut dropped = 0;
        for slot in &mut self.senders {
            if let Some(sender) = slot.take_if(|s| s.is_idle(now, idle_ms)) {
                self.by_id.remove(sender.endpoint().id());
                dropped += 1;
            }
        }
        if dropped > 0 {
            self.count_senders();
            tracing::debug!(dropped, kept = self.by_id.len(), "idle senders dropped");
        }
    }

    /// Registers a record needing one outcome and dead-letters it.
    fn dead_letter_now(
        &mut self,
        event: &Arc<Event>,
        history: History<'_>,
        reason: &'static str,
        detail: &str,
    ) {
        let Some(token) = self.tracker.register(event.partition, event.offset, 1) else {
            return;
        };
        self.dead_letter_settling(token, event, history, reason, detail);
    }

    /// Dead-letters a record registered under `token`; one outcome of the
    /// token settles once the dead letter is stored.
    fn dead_letter_settling(
        &mut self,
        token: AckToken,
        event: &Arc<Event>,
        history: History<'_>,
        reason: &'static str,
        detail: &str,
    ) {
        let history = History {
            first_ms: if history.first_ms == 0 {
                now_ms()
            } else {
                history.first_ms
            },
            last_status: if history.last_status.is_empty() {
                reason
            } else {
                history.last_status
            },
            last_error: detail,
            ..history
        };
        let acks = self.acks.clone();
        self.writer.dead_letter(
            event,
            &history,
            reason,
            Box::new(move |_| {
                let _ = acks.send(token);
            }),
        );
    }

    fn after_dispatch(&mut self) {
        let unsettled = self.tracker.unsettled();
        self.metrics.inflight.set(unsettled as f64);
        if !self.gates.flow_paused() && unsettled >= self.max_in_flight {
            tracing::debug!(
                in_flight = unsettled,
                "max_in_flight reached: pausing input"
            );
            self.gates.set_flow_paused(true);
        }
    }

    fn after_settle(&mut self) {
        let unsettled = self.tracker.unsettled();
        self.metrics.inflight.set(unsettled as f64);
        if self.gates.flow_paused() && unsettled <= self.low_water {
            tracing::debug!(
                in_flight = unsettled,
                "below the low-water mark: resuming input"
            );
            self.gates.set_flow_paused(false);
        }
    }

    fn count_commits(&self, partitions: usize) {
        self.stats
            .commits
            .fetch_add(partitions as u64, Ordering::Relaxed);
        self.metrics.offsets_committed.increment(partitions as u64);
    }

    fn commit(&mut self, mode: CommitMode) {
        let offsets = self.tracker.take_commits();
        if offsets.is_empty() {
            return;
        }
        let tpl = offsets_list(self.source.topics(), &offsets);
        match self.source.consumer().commit(&tpl, mode) {
            Ok(()) => self.count_commits(offsets.len()),
            Err(e) => {
                tracing::warn!(error = %e, "offset commit failed; will retry");
                let failed: HashSet<PartitionId> = offsets.iter().map(|(p, _)| *p).collect();
                self.tracker.retry_commits(&failed);
            }
        }
    }
}
