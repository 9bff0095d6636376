//! Device lines: per-device order for `ordering = "per_device"` endpoints.
//!
//! A record of the ordered lane belongs to the line of (lane partition,
//! endpoint, device). One delivery per line is under way at a time (it
//! holds the line's ticket, [`LineTicket`]); the line's later deliveries
//! wait here, in lane order, until the ticket ends. Pure: no Kafka, no
//! sender; the dispatcher hands out what this returns and closes the lane
//! partition whose lines pass [`DeviceLines::is_full`] (its
//! records then stay on Kafka, parked durably, not in memory).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::sync::mpsc;

use bytes::Bytes;

use crate::core::{BatchEntry, PartitionId, Payload};
use crate::deliver::sender::{Delivery, LineReturn, LineTicket};

/// Which line a delivery is in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LineKey {
    /// The lane partition its record came from.
    pub partition: PartitionId,
    /// The endpoint.
    pub endpoint: Arc<str>,
    /// The device (or record key) it orders by.
    pub device: Box<[u8]>,
}

#[derive(Debug)]
struct Line {
    /// The ticket of the delivery under way.
    ticket: u64,
    /// What waits behind it, in lane order.
    waiting: VecDeque<Delivery>,
}

/// Every line of the lane partitions this instance holds.
#[derive(Debug)]
pub struct DeviceLines {
    lines: HashMap<LineKey, Line>,
    /// Live ticket → its line.
    tickets: HashMap<u64, LineKey>,
    next_ticket: u64,
    /// Deliveries in lines (under way or waiting) per lane partition.
    held: HashMap<PartitionId, usize>,
    /// Their sum.
    held_total: usize,
    /// Deliveries in lines of one partition at which it is full.
    limit: usize,
    returns: mpsc::UnboundedSender<LineReturn>,
}

impl DeviceLines {
    /// No lines yet; tickets report to `returns`; a lane partition with
    /// `limit` waiting deliveries is full.
    pub fn new(limit: usize, returns: mpsc::UnboundedSender<LineReturn>) -> Self {
        Self {
            lines: HashMap::new(),
            tickets: HashMap::new(),
            next_ticket: 0,
            held: HashMap::new(),
            held_total: 0,
            limit: limit.max(1),
            returns,
        }
    }

    /// A delivery of line `key`: returned with the line's ticket when the
    /// line is free (send it now), or kept waiting behind the line's
    /// delivery under way (`None`).
    pub fn admit(&mut self, key: LineKey, mut delivery: Delivery) -> Option<Delivery> {
        *self.held.entry(key.partition).or_default() += 1;
        self.held_total += 1;
        if let Some(line) = self.lines.get_mut(&key) {
            delivery.event = detached(delivery.event);
            line.waiting.push_back(delivery);
            return None;
        }
        let ticket = self.issue(&key);
        let line = Line {
            ticket: ticket.id(),
            waiting: VecDeque::new(),
        };
        delivery.line = Some(ticket);
        self.lines.insert(key, line);
        Some(delivery)
    }

    fn issue(&mut self, key: &LineKey) -> LineTicket {
        let id = self.next_ticket;
        self.next_ticket += 1;
        self.tickets.insert(id, key.clone());
        LineTicket::new(id, self.returns.clone())
    }

    /// Ticket `id` ended: the next delivery of its line, with a new ticket,
    /// if one waits (`None` too for a ticket of a line dropped since).
    pub fn done(&mut self, id: u64) -> Option<(Arc<str>, Delivery)> {
        let key = self.tickets.remove(&id)?;
        let line = self.lines.get_mut(&key)?;
        if line.ticket != id {
            return None;
        }
        if let Some(n) = self.held.get_mut(&key.partition) {
            *n = n.saturating_sub(1);
            self.held_total = self.held_total.saturating_sub(1);
        }
        let Some(mut next) = line.waiting.pop_front() else {
            self.lines.remove(&key);
            return None;
        };
        let endpoint = Arc::clone(&key.endpoint);
        let ticket = self.issue(&key);
        if let Some(line) = self.lines.get_mut(&key) {
            line.ticket = ticket.id();
        }
        next.line = Some(ticket);
        Some((endpoint, next))
    }

    /// The lane partition of a live ticket.
    pub fn partition_of(&self, id: u64) -> Option<PartitionId> {
        self.tickets.get(&id).map(|k| k.partition)
    }

    /// The endpoint of a live ticket (`None`: its line was dropped, e.g.
    /// its partition revoked: the delivery is not to be sent).
    pub fn endpoint_of(&self, id: u64) -> Option<Arc<str>> {
        self.tickets.get(&id).map(|k| Arc::clone(&k.endpoint))
    }

    /// Drops the lines of a revoked partition and what waits in them
    /// (never sent, never settled: the next owner reads them again).
    /// Returns how many deliveries its lines held.
    pub fn revoke(&mut self, partition: PartitionId) -> usize {
        self.lines.retain(|k, _| k.partition != partition);
        self.tickets.retain(|_, k| k.partition != partition);
        let dropped = self.held.remove(&partition).unwrap_or(0);
        self.held_total = self.held_total.saturating_sub(dropped);
        dropped
    }

    /// Deliveries in lines across partitions (under way or waiting).
    pub fn held(&self) -> usize {
        self.held_total
    }

    /// Whether `partition`'s lines hold `limit` deliveries or more.
    pub fn is_full(&self, partition: PartitionId) -> bool {
        self.held_in(partition) >= self.limit
    }

    /// Whether `partition` is back below half its limit.
    pub fn has_room(&self, partition: PartitionId) -> bool {
        self.held_in(partition) < self.limit.div_ceil(2)
    }

    fn held_in(&self, partition: PartitionId) -> usize {
        self.held.get(&partition).copied().unwrap_or(0)
    }

    /// Deliveries in lines (under way or waiting), and lines.
    pub fn counts(&self) -> (usize, usize) {
        (self.held_total, self.lines.len())
    }
}

/// The event with its bytes its own: an entry of a deferral batch is a
/// slice of the batch's value (up to 256 KiB), which a waiting entry would
/// otherwise keep alive for as long as its device waits.
fn detached(event: Payload) -> Payload {
    let Payload::Entry(entry) = &event else {
        return event;
    };
    Payload::Entry(Arc::new(BatchEntry {
        topic: Arc::clone(&entry.topic),
        partition: entry.partition,
        offset: entry.offset,
        index: entry.index,
        tier: entry.tier,
        key: entry.key.as_deref().map(Bytes::copy_from_slice),
        body: Bytes::copy_from_slice(&entry.body),
        headers: entry.headers.clone(),
        id: entry.id.clone(),
        event_type: entry.event_type.clone(),
        meta: entry.meta.clone(),
        consumed_at: entry.consumed_at,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commit::AckTracker;

    /// Lines of `limit`, a tracker for their tokens, and where tickets report.
    fn lines_of(limit: usize) -> (DeviceLines, AckTracker, mpsc::UnboundedReceiver<LineReturn>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (DeviceLines::new(limit, tx), AckTracker::new(), rx)
    }

    fn key(partition: i32, device: &str) -> LineKey {
        LineKey {
            partition: PartitionId {
                topic: 1,
                partition,
            },
            endpoint: Arc::from("ep"),
            device: device.as_bytes().into(),
        }
    }

    fn delivery(tracker: &mut AckTracker, offset: i64) -> Delivery {
        let p = PartitionId {
            topic: 1,
            partition: 0,
        };
        let token = match tracker.register(p, offset, 1) {
            Some(token) => token,
            None => {
                tracker.assign(p);
                tracker.register(p, offset, 1).expect("token")
            }
        };
        Delivery {
            event: Payload::test_input(0, offset, "{}"),
            token,
            attempt: 0,
            first_ms: None,
            line: None,
        }
    }

    fn offset(d: &Delivery) -> i64 {
        match &d.event {
            Payload::Input(e) => e.record.offset,
            _ => unreachable!(),
        }
    }

    fn ticket(d: &mut Delivery) -> u64 {
        let t = d.line.as_ref().expect("a ticket").id();
        // Forget the ticket without its drop message.
        std::mem::forget(d.line.take());
        t
    }

    #[test]
    fn one_delivery_per_device_goes_and_the_rest_follow_in_order() {
        let (mut lines, mut tracker, _rx) = lines_of(10);
        let mut a0 = lines
            .admit(key(0, "a"), delivery(&mut tracker, 0))
            .expect("free");
        assert!(
            lines
                .admit(key(0, "a"), delivery(&mut tracker, 1))
                .is_none()
        );
        let mut b = lines
            .admit(key(0, "b"), delivery(&mut tracker, 2))
            .expect("another device goes");
        assert!(
            lines
                .admit(key(0, "a"), delivery(&mut tracker, 3))
                .is_none()
        );
        assert_eq!(lines.counts(), (4, 2));
        let t = ticket(&mut a0);
        let (endpoint, mut a1) = lines.done(t).expect("next of a");
        assert_eq!((&*endpoint, offset(&a1)), ("ep", 1));
        assert!(lines.done(t).is_none(), "a ticket ends once");
        let (_, mut a3) = lines.done(ticket(&mut a1)).expect("then 3");
        assert_eq!(offset(&a3), 3);
        assert!(lines.done(ticket(&mut a3)).is_none(), "a is empty");
        assert!(lines.done(ticket(&mut b)).is_none());
        assert_eq!(lines.counts(), (0, 0));
    }

    #[test]
    fn a_waiting_batch_entry_keeps_a_copy_of_its_bytes_not_the_batch() {
        let (mut lines, mut tracker, _rx) = lines_of(10);
        let batch_value = Bytes::from(vec![b'x'; 4096]);
        let mut entry = |offset: i64| {
            let mut d = delivery(&mut tracker, offset);
            d.event = Payload::Entry(Arc::new(BatchEntry {
                topic: Arc::from("hs.ordered"),
                partition: key(0, "a").partition,
                offset,
                index: 0,
                tier: 3,
                key: Some(batch_value.slice(0..5)),
                body: batch_value.slice(100..200),
                headers: Default::default(),
                id: format!("e{offset}"),
                event_type: "t".into(),
                meta: crate::core::RetryMeta {
                    endpoint: "ep".into(),
                    attempt: 0,
                    due_ms: 0,
                    first_ms: 0,
                    hop: Some(1),
                },
                consumed_at: std::time::Instant::now(),
            }));
            d
        };
        let mut head = lines.admit(key(0, "a"), entry(0)).expect("free");
        assert!(lines.admit(key(0, "a"), entry(1)).is_none());
        let (_, next) = lines.done(ticket(&mut head)).expect("the waiting one");
        let Payload::Entry(e) = &next.event else {
            panic!("an entry");
        };
        assert_eq!(&e.body[..], &batch_value[100..200]);
        let within = batch_value.as_ptr_range();
        assert!(
            !within.contains(&e.body.as_ptr()),
            "the waiting entry's body is its own"
        );
    }

    #[test]
    fn a_dropped_ticket_reports_done() {
        let (mut lines, mut tracker, mut rx) = lines_of(10);
        let a0 = lines
            .admit(key(0, "a"), delivery(&mut tracker, 0))
            .expect("free");
        drop(a0);
        match rx.try_recv() {
            Ok(LineReturn::Done(id)) => assert_eq!(id, 0),
            other => panic!("expected Done, got {other:?}"),
        }
    }

    #[test]
    fn a_revoked_partition_forgets_its_lines_and_their_tickets() {
        let (mut lines, mut tracker, _rx) = lines_of(3);
        let mut a0 = lines
            .admit(key(0, "a"), delivery(&mut tracker, 0))
            .expect("free");
        assert!(
            lines
                .admit(key(0, "a"), delivery(&mut tracker, 1))
                .is_none()
        );
        assert!(!lines.is_full(key(0, "a").partition));
        assert!(
            lines
                .admit(key(0, "a"), delivery(&mut tracker, 2))
                .is_none()
        );
        assert!(lines.is_full(key(0, "a").partition));
        let mut c = lines
            .admit(key(1, "c"), delivery(&mut tracker, 3))
            .expect("free");
        let t = ticket(&mut a0);
        assert_eq!(lines.revoke(key(0, "a").partition), 3);
        assert!(lines.endpoint_of(t).is_none());
        assert!(lines.done(t).is_none(), "stale ticket: nothing goes");
        assert!(lines.has_room(key(0, "a").partition));
        let tc = ticket(&mut c);
        assert!(
            lines.endpoint_of(tc).is_some(),
            "other partitions keep theirs"
        );
    }
}
