//! The channel from the poll threads to the dispatcher: records in batches,
//! and the rebalance messages that must follow the records polled before
//! them.
//!
//! Owns message order per partition; decides nothing about the records.

use tokio::sync::mpsc;

use crate::core::PartitionId;
use crate::core::{Polled, lock};

/// Final offsets of revoked partitions, sent back by the dispatcher.
pub type RevokeReply = std::sync::mpsc::Sender<Vec<(PartitionId, i64)>>;

/// What the consumer thread tells the dispatcher, in order.
#[derive(Debug)]
pub enum Inbound {
    /// Partitions newly assigned: start tracking them.
    Assigned(Vec<PartitionId>),
    /// Partitions being revoked: settle them and reply with final offsets.
    Revoke {
        /// The revoked partitions.
        partitions: Vec<PartitionId>,
        /// They were lost (the session expired): another member may own
        /// them already, so nothing is drained or committed.
        lost: bool,
        /// Where to send the final offsets.
        reply: RevokeReply,
    },
    /// Consumed records, in the order they were polled.
    Records(Vec<Arrival>),
}

/// Records handed to the dispatcher per channel message: one wake-up of the
/// dispatcher per batch instead of one per record.
pub(super) const RECORDS_PER_MESSAGE: usize = 256;

/// Messages the inbound channel holds: with full batches, at most about a
/// thousand records wait between the poll thread and the dispatcher.
pub(super) const INBOUND_MESSAGES: usize = 4;

/// One item of a records message, in poll order.
#[derive(Debug)]
pub enum Arrival {
    /// A polled record.
    Record(Polled),
    /// The poll thread paused this partition as it polled a retry that is
    /// not due for a while (so librdkafka stops prefetching behind it at
    /// once): the partition's gate counts it as paused from here on, and
    /// the dispatcher, which owns pause state, resumes it when due.
    PausedEarly(PartitionId),
}

/// The poll thread's side of the inbound channel. Records are sent in
/// batches; a rebalance message first flushes the records polled before it,
/// so the dispatcher always sees a partition's records before its revoke.
/// Only the poll thread uses it (from the poll loop and from the rebalance
/// callbacks that run inside `poll`), so its lock is never contended.
pub(super) struct InboundSender {
    tx: mpsc::Sender<Inbound>,
    pending: std::sync::Mutex<Vec<Arrival>>,
}

impl InboundSender {
    pub(super) fn new(tx: mpsc::Sender<Inbound>) -> Self {
        Self {
            tx,
            pending: std::sync::Mutex::new(Vec::with_capacity(RECORDS_PER_MESSAGE)),
        }
    }

    pub(super) fn pending(&self) -> std::sync::MutexGuard<'_, Vec<Arrival>> {
        lock(&self.pending)
    }

    /// Adds a record; sends the batch once full. False when the dispatcher
    /// is gone.
    pub(super) fn push(&self, arrival: Arrival) -> bool {
        let full = {
            let mut pending = self.pending();
            pending.push(arrival);
            pending.len() >= RECORDS_PER_MESSAGE
        };
        !full || self.flush()
    }

    /// Sends what is pending. False when the dispatcher is gone.
    pub(super) fn flush(&self) -> bool {
        let batch = std::mem::take(&mut *self.pending());
        batch.is_empty() || self.send_now(Inbound::Records(batch))
    }

    /// Sends a rebalance message after the records polled before it.
    pub(super) fn send(&self, msg: Inbound) -> bool {
        self.flush() && self.send_now(msg)
    }

    /// Sends from the consumer thread; never from inside the async runtime
    /// (where blocking would stall a worker), which only happens if the
    /// consumer is dropped there, after the dispatcher is gone.
    pub(super) fn send_now(&self, msg: Inbound) -> bool {
        tokio::runtime::Handle::try_current().is_err() && self.tx.blocking_send(msg).is_ok()
    }
}
