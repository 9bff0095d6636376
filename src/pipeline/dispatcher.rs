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
//!
//! Why this file is long: the dispatcher's loop and the state only it owns;
//! routing, rebalance and chores are already files of their own.

use foldhash::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Result;
use tokio::sync::{mpsc, watch};

use super::PipelineStats;
use super::gate::{Gated, PartitionGates};
use super::lines::DeviceLines;
use crate::commit::AckTracker;
use crate::core::Polled;
use crate::core::{PartitionId, Settled};
use crate::deliver::sender::{LineReturn, Sender, SenderDeps};
use crate::index::filter::FilterParser;
use crate::index::{EndpointIndex, EndpointRegistry, Slot};
use crate::metrics::{PipelineMetrics, TopicMetrics};
use crate::retry::copies::CopyFilter;
use crate::retry::writer::OutcomeWriter;
use crate::source::consumer::SourceConsumer;
use crate::source::inbound::Arrival;
use crate::source::inbound::Inbound;
use crate::wire::headers::now_ms;

mod chores;
mod ordered;
mod rebalance;
mod route;

use chores::Chores;
use rebalance::Draining;

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

/// Records dispatched between two looks at the periodic work while a batch
/// of arrivals is dispatched without waiting: a look reads the clock, which
/// once per record was 1 % of bench (b)'s CPU. A dispatch that had to wait
/// (for room in an endpoint's queue) is always followed by one.
const CHORES_EVERY: usize = 32;

/// Ack tokens taken from the channel per turn of the dispatcher loop.
const ACKS_PER_TURN: usize = 1024;

/// How long closing the consumer may take at shutdown (a clean close
/// leaves the group and takes well under a second).
const CONSUMER_CLOSE_LIMIT: Duration = Duration::from_secs(15);

/// Most records held by closed gates before the dispatcher stops reading
/// the inbound channel (a safety net: paused partitions fetch nothing new,
/// and a retry due more than 100 ms ahead pauses its partition before
/// anything behind it is polled, so only retries near their due time and
/// back-pressure hold records).
const HELD_LIMIT: usize = 16_384;

/// One ordered-lane partition's device lines may hold this share of
/// `delivery.max_in_flight` (1/2) before the partition waits: a stalled
/// ordered device or endpoint parks the rest on Kafka. What lines hold is
/// not counted against `max_in_flight` itself, so a waiting device never
/// pauses every input.
const LINES_SHARE: usize = 2;

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
    acks: mpsc::UnboundedSender<Settled>,
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
    /// Per-device order of `ordering = "per_device"` endpoints.
    lines: DeviceLines,
    /// Where the lines' tickets report (taken by `run`).
    line_returns: Option<mpsc::UnboundedReceiver<LineReturn>>,
}

impl Dispatcher {
    pub(super) fn new(
        registry: Arc<EndpointRegistry>,
        deps: Arc<SenderDeps>,
        writer: OutcomeWriter,
        acks: mpsc::UnboundedSender<Settled>,
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
        let (returns_tx, returns_rx) = mpsc::unbounded_channel();
        let mut dispatcher = Self {
            tracker: AckTracker::new(),
            gates: PartitionGates::new(),
            index: registry.snapshot(),
            version: u64::MAX,
            registry,
            senders: Vec::new(),
            by_id: HashMap::default(),
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
            lines: DeviceLines::new(max_in_flight / LINES_SHARE, returns_tx),
            line_returns: Some(returns_rx),
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
        let mut by_id = HashMap::with_capacity_and_hasher(self.by_id.len(), Default::default());
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

    /// Runs until shutdown: each turn takes what is ready (acks first, then
    /// a stop request, consumed records and rebalances, due retries, the
    /// chores' deadline), then does the chores that are due, releases held
    /// records, applies pauses and finishes a drained revoke.
    ///
    /// Long on purpose: the select arms and the end-of-turn steps are one
    /// state machine (consuming, draining a revoke, stopping), read whole.
    pub(super) async fn run(
        mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut acks: mpsc::UnboundedReceiver<Settled>,
        mut shutdown: watch::Receiver<bool>,
        timing: Timing,
    ) -> Result<()> {
        let mut check_tick = tokio::time::interval(Duration::from_millis(50));
        check_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut draining: Option<Draining> = None;
        let mut stopping: Option<Instant> = None;
        let mut more_ready = false;
        let mut settled = Vec::with_capacity(ACKS_PER_TURN);
        let mut line_returns = self
            .line_returns
            .take()
            .ok_or_else(|| anyhow::anyhow!("the dispatcher ran twice"))?;
        let mut returned = Vec::with_capacity(ACKS_PER_TURN);
        self.chores = Chores::new(Instant::now(), timing.commit_interval);
        loop {
            // A held retry falling due, or a partition paused for one to be
            // resumed ahead of it.
            let next_due = [self.gates.next_due(), self.gates.next_resume()]
                .into_iter()
                .flatten()
                .min();
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
                    for tokens in settled.drain(..n) {
                        tokens.for_each(|token| {
                            self.tracker.complete(token);
                        });
                    }
                    self.after_settle();
                }
                n = line_returns.recv_many(&mut returned, ACKS_PER_TURN), if stopping.is_none() => {
                    for r in returned.drain(..n) {
                        self.line_returned(r).await;
                    }
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
                            self.take_arrivals(arrivals, &mut acks).await;
                        }
                    }
                    Some(Inbound::Assigned(partitions)) => self.assign(&partitions),
                    Some(Inbound::Revoke { partitions, lost, reply }) => {
                        draining = Some(self.start_revoke(partitions, lost, reply, &mut acks, timing));
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
        if !self.source.close_within(CONSUMER_CLOSE_LIMIT).await {
            tracing::warn!(
                limit = ?CONSUMER_CLOSE_LIMIT,
                "the Kafka consumer did not close in time; stopping without it (offsets were committed: the group notices this member gone after its session timeout)"
            );
        }
        self.writer.log_dead_letter_summary(DEAD_LETTER_SUMMARY);
        tracing::info!("pipeline stopped");
        Ok(())
    }

    /// Offers consumed records to their gates and dispatches those let
    /// through; notes partitions the consumer thread paused early.
    async fn take_arrivals(
        &mut self,
        arrivals: Vec<Arrival>,
        acks: &mut mpsc::UnboundedReceiver<Settled>,
    ) {
        let now = now_ms();
        let mut dispatched = 0;
        for arrival in arrivals {
            let polled = match arrival {
                Arrival::PausedEarly(p) => {
                    self.gates.paused_by_consumer(p);
                    continue;
                }
                Arrival::Record(polled) => polled,
            };
            if let Some(polled) = self.gates.offer(polled, now) {
                let waited = {
                    let mut dispatch = std::pin::pin!(self.dispatch(polled));
                    let mut waited = false;
                    std::future::poll_fn(|cx| {
                        let poll = dispatch.as_mut().poll(cx);
                        waited |= poll.is_pending();
                        poll
                    })
                    .await;
                    waited
                };
                // A batch can take a while (enqueues wait for room):
                // commits keep their rhythm.
                dispatched += 1;
                if waited || dispatched % CHORES_EVERY == 0 {
                    self.do_chores(acks);
                }
            }
        }
    }

    /// Settles every ack token waiting in the channel.
    fn take_acks(&mut self, acks: &mut mpsc::UnboundedReceiver<Settled>) {
        let mut any = false;
        while let Ok(tokens) = acks.try_recv() {
            tokens.for_each(|token| {
                self.tracker.complete(token);
            });
            any = true;
        }
        if any {
            self.after_settle();
        }
    }

    /// Does the periodic work that is due: commit settled offsets (after
    /// settling what the channel holds), drop idle senders, summarise dead
    /// letters. Called after every turn of the loop, after every record whose
    /// dispatch had to wait and after every [`CHORES_EVERY`] others, so no
    /// amount of work starves it.
    fn do_chores(&mut self, acks: &mut mpsc::UnboundedReceiver<Settled>) {
        let due = self.chores.take_due(Instant::now());
        if due.commit {
            self.take_acks(acks);
            self.commit(false);
        }
        if due.reap {
            self.drop_idle_senders();
        }
        if due.summary {
            self.writer.log_dead_letter_summary(DEAD_LETTER_SUMMARY);
        }
        if due.stall_check {
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
        }
    }

    /// Dispatches held records whose gates opened, at most
    /// [`RELEASE_BATCH`] at a time so input records interleave with a burst
    /// of due retries. Returns whether more are ready.
    async fn release_ready(&mut self, acks: &mut mpsc::UnboundedReceiver<Settled>) -> bool {
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

    /// Publishes what is in flight and in device lines; returns the
    /// unsettled events that count against `max_in_flight` (not what
    /// device lines hold: they have a bound of their own).
    fn publish_inflight(&self) -> usize {
        let unsettled = self.tracker.unsettled();
        self.metrics.inflight.set(unsettled as f64);
        self.metrics
            .inflight_deliveries
            .set(self.tracker.outstanding() as f64);
        let (held, lines) = self.lines.counts();
        self.metrics.line_deliveries.set(held as f64);
        self.metrics.lines.set(lines as f64);
        unsettled.saturating_sub(held)
    }

    fn after_dispatch(&mut self) {
        let unsettled = self.publish_inflight();
        if !self.gates.flow_paused() && unsettled >= self.max_in_flight {
            tracing::debug!(
                in_flight = unsettled,
                "max_in_flight reached: pausing input"
            );
            self.gates.set_flow_paused(true);
        }
    }

    fn after_settle(&mut self) {
        let unsettled = self.publish_inflight();
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
