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

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::sync::{mpsc, watch};

use super::PipelineStats;
use super::gate::{Gated, PartitionGates};
use crate::commit::AckTracker;
use crate::core::{AckToken, PartitionId};
use crate::core::{InputEvent, Payload, Polled, Reason, RetryMeta};
use crate::deliver::refusal::Refusal;
use crate::deliver::sender::{Delivery, EnqueueError, Sender, SenderDeps};
use crate::index::filter::{Filter, FilterParser, empty_root};
use crate::index::{EndpointIndex, EndpointRegistry, RouteKey, Slot};
use crate::metrics::{PipelineMetrics, TopicMetrics};
use crate::retry::copies::{CopyFilter, CopyKey};
use crate::retry::writer::OutcomeWriter;
use crate::source::consumer::SourceConsumer;
use crate::source::inbound::Arrival;
use crate::source::inbound::{Inbound, RevokeReply};
use crate::wire::headers::{History, now_ms};

/// How long the dispatcher waits for room in a busy endpoint's queue before
/// deferring the delivery (a stalled endpoint gets no wait at all).
const ENQUEUE_PATIENCE: Duration = Duration::from_millis(500);

/// How often dead letters are summarised in the log.
const DEAD_LETTER_SUMMARY: Duration = Duration::from_secs(30);

/// Held records released per turn of the dispatcher loop.
const RELEASE_BATCH: usize = 256;

/// How long an assigned partition may have records waiting behind a fetch
/// position that does not move, while its gate is open, before it counts as
/// stalled (librdkafka reports positions every 5 s).
const STALL_AFTER: Duration = Duration::from_secs(15);

/// How often stalled partitions are looked for.
const STALL_CHECK: Duration = Duration::from_secs(5);

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

impl Gated for Polled {
    fn partition(&self) -> PartitionId {
        Polled::partition(self)
    }

    fn due_ms(&self) -> Option<i64> {
        Polled::due_ms(self)
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
    /// Lost, not revoked: no final offsets are answered.
    lost: bool,
    reply: RevokeReply,
}

/// When the dispatcher's periodic work is next due. Deadlines, not timer
/// arms of its select loop: a loop whose acks and records are always ready
/// would never reach a timer arm placed after them (a backlog then
/// committed nothing until it was drained).
#[derive(Debug, Clone, Copy)]
struct Chores {
    commit_interval: Duration,
    commit_at: Instant,
    reap_at: Instant,
    summary_at: Instant,
    stall_check_at: Instant,
}

impl Chores {
    fn new(now: Instant, commit_interval: Duration) -> Self {
        Self {
            commit_interval,
            commit_at: now + commit_interval,
            reap_at: now + SENDER_IDLE / 2,
            summary_at: now + DEAD_LETTER_SUMMARY,
            stall_check_at: now + STALL_CHECK,
        }
    }

    /// The earliest deadline.
    fn next(&self) -> Instant {
        self.commit_at
            .min(self.reap_at)
            .min(self.summary_at)
            .min(self.stall_check_at)
    }
}

/// The pipeline's single owner of offsets and routing.
pub(super) struct Dispatcher {
    tracker: AckTracker,
    gates: PartitionGates<Polled>,
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
    /// Parses event bodies for payload filters, buffers reused.
    filter_parser: FilterParser,
    /// Periodic work.
    chores: Chores,
    /// Tier deliveries let through lately (copies are settled unsent).
    copies: CopyFilter,
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
            filter_parser: FilterParser::default(),
            chores: Chores::new(Instant::now(), Duration::from_secs(1)),
            copies: CopyFilter::default(),
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
        let mut check_tick = tokio::time::interval(Duration::from_millis(50));
        check_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut draining: Option<Draining> = None;
        let mut stopping: Option<Instant> = None;
        let mut more_ready = false;
        let mut settled = Vec::with_capacity(ACKS_PER_TURN);
        self.chores = Chores::new(Instant::now(), timing.commit_interval);
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
            let chores_due = tokio::time::sleep_until(self.chores.next().into());
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
                    Some(Inbound::Records(arrivals)) => {
                        // While stopping, records are not registered: they
                        // are consumed again after a restart.
                        if stopping.is_none() {
                            let now = now_ms();
                            for arrival in arrivals {
                                let polled = match arrival {
                                    Arrival::PausedEarly(p) => {
                                        self.gates.paused_by_consumer(p);
                                        continue;
                                    }
                                    Arrival::Record(polled) => polled,
                                };
                                if let Some(polled) = self.gates.offer(polled, now) {
                                    self.dispatch(polled).await;
                                    // A batch can take a while (enqueues wait
                                    // for room): commits keep their rhythm.
                                    self.do_chores(&mut acks);
                                }
                            }
                        }
                    }
                    Some(Inbound::Assigned(partitions)) => {
                        if self.source.joined() {
                            self.stats.assigned.store(true, Ordering::Release);
                        }
                        let now = now_ms();
                        for p in &partitions {
                            self.tracker.assign(*p);
                            self.gates.assign(*p, now);
                            self.source.progress().forget(*p);
                        }
                        self.count_partitions(&partitions, 1);
                    }
                    Some(Inbound::Revoke { partitions, lost, reply }) => {
                        // Lost partitions belong to another member already:
                        // nothing of theirs is waited for or committed.
                        let deadline = if lost {
                            Instant::now()
                        } else {
                            // What is settled now is committed at once,
                            // before the drain: the group may move on (and
                            // refuse commits) while in-flight deliveries
                            // finish.
                            self.take_acks(&mut acks);
                            let early = self.tracker.committable_of(&partitions);
                            tracing::debug!(?early, "revoke: settled offsets before the drain");
                            let _ = reply.send(early);
                            Instant::now() + timing.drain_timeout
                        };
                        draining = Some(Draining {
                            partitions,
                            deadline,
                            lost,
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
                _ = chores_due => {}
                _ = check_tick.tick() => {}
            }
            self.do_chores(&mut acks);
            more_ready = stopping.is_none() && self.release_ready(&mut acks).await;
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
        self.take_acks(&mut acks);
        self.commit(true);
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

    /// Settles every ack token waiting in the channel.
    fn take_acks(&mut self, acks: &mut mpsc::UnboundedReceiver<AckToken>) {
        let mut any = false;
        while let Ok(token) = acks.try_recv() {
            self.tracker.complete(token);
            any = true;
        }
        if any {
            self.after_settle();
        }
    }

    /// Does the periodic work that is due: commit settled offsets (after
    /// settling what the channel holds), drop idle senders, summarise dead
    /// letters. Called after every turn of the loop and after every record
    /// dispatched, so no amount of work starves it.
    fn do_chores(&mut self, acks: &mut mpsc::UnboundedReceiver<AckToken>) {
        let now = Instant::now();
        if now < self.chores.next() {
            return;
        }
        if now >= self.chores.commit_at {
            self.take_acks(acks);
            self.commit(false);
            self.chores.commit_at = now + self.chores.commit_interval;
        }
        if now >= self.chores.reap_at {
            self.drop_idle_senders();
            self.chores.reap_at = now + SENDER_IDLE / 2;
        }
        if now >= self.chores.summary_at {
            self.writer.log_dead_letter_summary(DEAD_LETTER_SUMMARY);
            self.chores.summary_at = now + DEAD_LETTER_SUMMARY;
        }
        if now >= self.chores.stall_check_at {
            let (assigned, paused, waiting) = self.gates.counts();
            tracing::debug!(
                unsettled = self.tracker.unsettled(),
                held = self.gates.held(),
                flow_paused = self.gates.flow_paused(),
                assigned,
                paused,
                waiting,
                senders = self.by_id.len(),
                copies_known = self.copies.len(),
                "dispatcher state"
            );
            self.check_stalls();
            self.chores.stall_check_at = now + STALL_CHECK;
        }
    }

    /// Finds assigned partitions that should be fetching and are not: the
    /// gate is open (Kafka was told to resume it, or never to pause it,
    /// [`STALL_AFTER`] ago, and nothing of it is held), and for
    /// [`STALL_AFTER`] its fetcher has not been running or records have
    /// waited behind a fetch position that did not move. Such a partition is counted (metric, readiness),
    /// logged and resumed: a retry tier left paused would hold its
    /// deferred deliveries for ever.
    fn check_stalls(&mut self) {
        let stall_ms = STALL_AFTER.as_millis() as i64;
        let stalled: Vec<PartitionId> = self
            .gates
            .expected_to_fetch(now_ms(), stall_ms)
            .into_iter()
            .filter(|p| {
                self.source
                    .progress()
                    .get(*p)
                    .is_some_and(|f| f.stuck(Instant::now(), STALL_AFTER))
            })
            .collect();
        self.stats
            .stalled_partitions
            .store(stalled.len() as u64, Ordering::Relaxed);
        self.metrics.stalled.set(stalled.len() as f64);
        if stalled.is_empty() {
            return;
        }
        let names: Vec<String> = stalled
            .iter()
            .map(|p| format!("{}[{}]", self.source.topics().name(p.topic), p.partition))
            .collect();
        tracing::warn!(
            partitions = ?names,
            "partitions stalled: open for 15 s, but not fetching or not moving past waiting records; resuming them"
        );
        if let Err(e) = self.source.resume(&stalled) {
            tracing::warn!(error = %e, "resuming stalled partitions failed");
        }
    }

    /// Dispatches held records whose gates opened, at most
    /// [`RELEASE_BATCH`] at a time so input records interleave with a burst
    /// of due retries. Returns whether more are ready.
    async fn release_ready(&mut self, acks: &mut mpsc::UnboundedReceiver<AckToken>) -> bool {
        if self.gates.held() == 0 {
            return false;
        }
        let now = now_ms();
        for _ in 0..RELEASE_BATCH {
            match self.gates.pop_ready(now) {
                Some(event) => {
                    self.dispatch(event).await;
                    self.do_chores(acks);
                }
                None => return false,
            }
        }
        true
    }

    /// Tells Kafka which partitions to pause or resume.
    fn apply_pauses(&mut self) {
        let changes = self.gates.pause_changes(now_ms());
        if changes.is_empty() {
            return;
        }
        if !changes.pause.is_empty()
            && let Err(e) = self.source.pause(&changes.pause)
        {
            tracing::warn!(error = %e, "pausing partitions failed; will retry");
            self.gates.pause_call_failed(&changes.pause, true);
        }
        if !changes.resume.is_empty()
            && let Err(e) = self.source.resume(&changes.resume)
        {
            tracing::warn!(error = %e, "resuming partitions failed; will retry");
            self.gates.pause_call_failed(&changes.resume, false);
        }
    }

    fn finish_revoke(&mut self, d: Draining, settled: bool) {
        if !settled && !d.lost {
            tracing::warn!(
                partitions = d.partitions.len(),
                "revoke drain deadline reached; unsettled records will be delivered again"
            );
        }
        let mut offsets = Vec::with_capacity(d.partitions.len());
        for p in &d.partitions {
            self.gates.revoke(*p);
            self.source.progress().forget(*p);
            if let Some(o) = self.tracker.revoke(*p)
                && !d.lost
            {
                offsets.push((*p, o));
            }
        }
        tracing::debug!(
            ?offsets,
            settled,
            lost = d.lost,
            "revoked partitions settled"
        );
        self.count_partitions(&d.partitions, -1);
        self.count_commits(offsets.len());
        let _ = d.reply.send(offsets);
        self.after_settle();
    }

    /// Routes one record whose gate is open.
    async fn dispatch(&mut self, polled: Polled) {
        self.refresh();
        let partition = polled.partition();
        self.topic_metrics[partition.topic as usize]
            .consumed
            .increment(1);
        tracing::trace!(
            topic = %self.source.topics().name(partition.topic),
            partition = partition.partition,
            offset = polled.offset(),
            "dispatching"
        );
        match polled {
            Polled::Input(event) => {
                self.stats.consumed.fetch_add(1, Ordering::Relaxed);
                self.dispatch_input(event).await;
            }
            Polled::Invalid(record, why) => {
                self.stats.consumed.fetch_add(1, Ordering::Relaxed);
                self.topic_metrics[partition.topic as usize]
                    .invalid
                    .increment(1);
                self.stats.invalid.fetch_add(1, Ordering::Relaxed);
                self.dead_letter_now(
                    &Payload::Invalid(record),
                    partition,
                    Reason::InvalidEvent,
                    &why.to_string(),
                );
            }
            Polled::Retry(event) => {
                self.stats.retries_consumed.fetch_add(1, Ordering::Relaxed);
                if let Some(token) = self.tracker.register(partition, event.record.offset, 1) {
                    let (meta, tier) = (event.meta.clone(), event.tier);
                    self.dispatch_retry(Payload::Retry(event), tier, &meta, token)
                        .await;
                }
            }
            Polled::BadRetry(record) => {
                self.stats.retries_consumed.fetch_add(1, Ordering::Relaxed);
                let why = record.why.clone();
                self.dead_letter_now(
                    &Payload::Invalid(record),
                    partition,
                    Reason::InvalidEvent,
                    &why,
                );
            }
            Polled::Batch(batch) => {
                self.stats
                    .retries_consumed
                    .fetch_add(batch.entries.len() as u64, Ordering::Relaxed);
                let outcomes = u32::try_from(batch.entries.len()).unwrap_or(u32::MAX);
                if let Some(token) = self.tracker.register(partition, batch.offset, outcomes) {
                    for entry in batch.entries {
                        let meta = entry.meta.clone();
                        self.dispatch_retry(Payload::Entry(entry), batch.tier, &meta, token)
                            .await;
                    }
                }
            }
            Polled::Unreadable(record) => {
                // A stand-in for a record librdkafka could not decode: its
                // dead letter settles the offset.
                let error = record.error.clone();
                self.dead_letter_now(
                    &Payload::Unreadable(record),
                    partition,
                    Reason::UnreadableRecord,
                    &error,
                );
            }
        }
        self.after_dispatch();
    }

    /// Routes a retry (a single record, or an entry of a deferral batch,
    /// registered under `token`) of tier `tier` to its one endpoint, or
    /// dead-letters it when its endpoint is gone or disabled; settles a
    /// copy of a delivery let through before without sending it.
    async fn dispatch_retry(
        &mut self,
        event: Payload,
        tier: usize,
        h: &RetryMeta,
        token: AckToken,
    ) {
        if let Some(lag) = self.tier_due_lag.get(tier) {
            lag.record(((now_ms() - h.due_ms).max(0) as f64) / 1000.0);
        }
        if let Some(hop) = h.hop
            && !self
                .copies
                .first_sighting(CopyKey::new(&event.source(), &h.endpoint, hop))
        {
            // Another record of this delivery at this hop was let through
            // by this process: it reaches its own outcome.
            self.metrics.copies_skipped.increment(1);
            self.tracker.complete(token);
            return;
        }
        let history = History {
            endpoint: &h.endpoint,
            attempt: h.attempt,
            first_ms: h.first_ms,
            ..History::default()
        };
        let slot = self.index.slot_of(&h.endpoint);
        if let Some(refusal) = Refusal::of(slot.map(|s| self.index.endpoint(s).as_ref())) {
            self.dead_letter_settling(token, &event, history, refusal.reason, refusal.why);
            return;
        }
        if let Some(slot) = slot {
            let delivery = Delivery {
                attempt: h.attempt,
                first_ms: Some(h.first_ms),
                event,
                token,
            };
            self.enqueue(slot, delivery).await;
        }
    }

    async fn dispatch_input(&mut self, event: Arc<InputEvent>) {
        let fields = &event.fields;
        // Device → group: learned from events that name both, looked up
        // for events that name only the device.
        let devices = self.registry.devices();
        let mut known = None;
        if let Some(device) = fields.device.as_deref() {
            if fields.group.is_some() || fields.tenant.is_some() {
                devices.learn(device, fields.group.as_deref(), fields.tenant.as_deref());
            } else if !devices.is_empty() {
                known = devices.get(device);
            }
        }
        let key = RouteKey {
            event_type: &fields.event_type,
            device: fields.device.as_deref(),
            group: fields
                .group
                .as_deref()
                .or(known.as_ref().and_then(|k| k.group.as_deref())),
            tenant: fields
                .tenant
                .as_deref()
                .or(known.as_ref().and_then(|k| k.tenant.as_deref())),
        };
        self.index.matches(&key, &mut self.slots);
        self.apply_filters(&event);
        let Some(token) = self.tracker.register(
            event.record.partition,
            event.record.offset,
            self.slots.len() as u32,
        ) else {
            return;
        };
        let payload = Payload::Input(event);
        for i in 0..self.slots.len() {
            let slot = self.slots[i];
            let delivery = Delivery {
                event: payload.clone(),
                token,
                attempt: 0,
                first_ms: None,
            };
            self.enqueue(slot, delivery).await;
        }
    }

    /// Drops the matched endpoints whose payload filter the event fails;
    /// the body is parsed once, and only when a filter reads it.
    fn apply_filters(&mut self, event: &InputEvent) {
        let index = &self.index;
        let filtered = |slot: &Slot| index.endpoint(*slot).filter();
        if !self.slots.iter().any(|s| filtered(s).is_some()) {
            return;
        }
        let header = |name: &str| event.record.headers.get(name);
        let reads_body = self
            .slots
            .iter()
            .filter_map(filtered)
            .any(Filter::reads_body);
        let slots = &mut self.slots;
        let mut keep = |root: simd_json::tape::Value<'_, '_>| {
            slots.retain(|slot| filtered(slot).is_none_or(|f| f.matches(root, &header)));
        };
        match reads_body {
            true => self
                .filter_parser
                .with_body(&event.record.body, |root| match root {
                    Some(root) => keep(root),
                    None => empty_root(keep),
                }),
            false => empty_root(keep),
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

    /// Counts `partitions` in or out (`sign` 1 or -1) of the assigned
    /// input and tier partitions.
    fn count_partitions(&self, partitions: &[PartitionId], sign: i64) {
        let tiers = partitions
            .iter()
            .filter(|p| self.source.topics().tier_of(p.topic).is_some())
            .count() as u64;
        let inputs = partitions.len() as u64 - tiers;
        for (counter, n) in [
            (&self.stats.input_partitions, inputs),
            (&self.stats.tier_partitions, tiers),
        ] {
            if sign > 0 {
                counter.fetch_add(n, Ordering::Relaxed);
            } else {
                counter.fetch_sub(n, Ordering::Relaxed);
            }
        }
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
        event: &Payload,
        partition: PartitionId,
        reason: Reason,
        detail: &str,
    ) {
        let offset = match event {
            Payload::Invalid(r) => r.record.offset,
            Payload::Unreadable(u) => u.record.offset,
            Payload::Input(e) => e.record.offset,
            Payload::Retry(e) => e.record.offset,
            Payload::Entry(e) => e.offset,
        };
        let Some(token) = self.tracker.register(partition, offset, 1) else {
            return;
        };
        self.dead_letter_settling(token, event, History::default(), reason, detail);
    }

    /// Dead-letters a record registered under `token`; one outcome of the
    /// token settles once the dead letter is stored.
    fn dead_letter_settling(
        &mut self,
        token: AckToken,
        event: &Payload,
        history: History<'_>,
        reason: Reason,
        detail: &str,
    ) {
        let history = History {
            first_ms: if history.first_ms == 0 {
                now_ms()
            } else {
                history.first_ms
            },
            last_status: if history.last_status.is_empty() {
                reason.as_str()
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
        self.metrics
            .inflight_deliveries
            .set(self.tracker.outstanding() as f64);
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
        self.metrics
            .inflight_deliveries
            .set(self.tracker.outstanding() as f64);
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

    /// Commits what is settled: handed to the background committer while
    /// running (`wait` false), committed and waited for at shutdown.
    fn commit(&mut self, wait: bool) {
        let n = self
            .source
            .committer()
            .commit_settled(&mut self.tracker, wait);
        self.count_commits(n);
    }
}
