//! One endpoint's queue of deliveries and whether a worker takes from it:
//! the state a sender's enqueue and its worker agree on under one lock.
//!
//! Pure: no tasks, no clock, no I/O. The sender holds it in a mutex, starts
//! a worker when [`Queue::push`] says so, and wakes waiters after
//! [`Queue::take`] moved something.

use std::collections::VecDeque;

/// Why a queue refused an item.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refused<T> {
    /// At capacity.
    Full(T),
    /// Closed (the pipeline stopped).
    Closed(T),
}

/// The items waiting for one endpoint, and whether a worker is taking from
/// them.
#[derive(Debug)]
pub(super) struct Queue<T> {
    items: VecDeque<T>,
    /// A worker task is running; it ends when it finds the queue empty.
    worker: bool,
    /// The pipeline stopped: nothing more is queued.
    closed: bool,
}

impl<T> Default for Queue<T> {
    fn default() -> Self {
        Self {
            items: VecDeque::new(),
            worker: false,
            closed: false,
        }
    }
}

/// What [`Queue::take`] found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Taken {
    /// This many items moved into the batch (at least one).
    Some(usize),
    /// Nothing queued; the worker goes on waiting.
    Nothing,
    /// Nothing queued and the worker is marked gone: the next push starts
    /// a new one.
    WorkerEnded,
}

impl<T> Queue<T> {
    /// Queues `item` unless the queue is closed or holds `capacity` items
    /// already; `Ok(true)` when no worker runs and one must be started
    /// (it is marked running from now on).
    pub(super) fn push(&mut self, item: T, capacity: usize) -> Result<bool, Refused<T>> {
        if self.closed {
            return Err(Refused::Closed(item));
        }
        if self.items.len() >= capacity {
            return Err(Refused::Full(item));
        }
        if self.items.capacity() == 0 {
            // Most endpoints of a large index see one delivery at a time;
            // a VecDeque would start with room for four.
            self.items.reserve_exact(1);
        }
        self.items.push_back(item);
        Ok(!std::mem::replace(&mut self.worker, true))
    }

    /// Moves queued items into `batch` until it holds `max`. With nothing
    /// queued and `end_if_empty`, the worker is marked gone (under the same
    /// lock a push checks, so an item is never left without a worker) and
    /// the queue's memory is given back.
    pub(super) fn take(&mut self, batch: &mut Vec<T>, max: usize, end_if_empty: bool) -> Taken {
        if self.items.is_empty() {
            if !end_if_empty {
                return Taken::Nothing;
            }
            self.worker = false;
            // An idle endpoint keeps no queue memory.
            self.items = VecDeque::new();
            return Taken::WorkerEnded;
        }
        let n = max.saturating_sub(batch.len()).min(self.items.len());
        batch.extend(self.items.drain(..n));
        Taken::Some(n)
    }

    /// Refuses every later push and drops what is queued.
    pub(super) fn close(&mut self) {
        self.closed = true;
        self.items.clear();
    }

    /// After the worker panicked (its flag still set): whether another
    /// worker must start for what is queued; otherwise the worker is
    /// marked gone.
    pub(super) fn restart_after_panic(&mut self) -> bool {
        if self.items.is_empty() || self.closed {
            self.worker = false;
            false
        } else {
            true
        }
    }

    /// Nothing queued, no worker, not closed.
    pub(super) fn is_idle(&self) -> bool {
        self.items.is_empty() && !self.worker && !self.closed
    }

    /// Items queued.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether a worker is marked running.
    #[cfg(test)]
    pub(super) fn has_worker(&self) -> bool {
        self.worker
    }

    /// Whether the queue holds memory for items (an idle one holds none).
    #[cfg(test)]
    pub(super) fn holds_memory(&self) -> bool {
        self.items.capacity() > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_push_starts_a_worker_and_later_ones_do_not() {
        let mut q = Queue::default();
        assert_eq!(q.push(1, 4), Ok(true));
        assert_eq!(q.push(2, 4), Ok(false));
        assert!(q.has_worker());
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn a_full_queue_gives_the_item_back() {
        let mut q = Queue::default();
        q.push(1, 2).unwrap();
        q.push(2, 2).unwrap();
        assert_eq!(q.push(3, 2), Err(Refused::Full(3)));
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn take_fills_the_batch_up_to_max_in_order() {
        let mut q = Queue::default();
        for i in 0..5 {
            q.push(i, 10).unwrap();
        }
        let mut batch = vec![100];
        assert_eq!(q.take(&mut batch, 3, true), Taken::Some(2));
        assert_eq!(batch, vec![100, 0, 1]);
        // A full batch takes nothing, whatever is queued.
        assert_eq!(q.take(&mut batch, 3, true), Taken::Some(0));
        batch.clear();
        assert_eq!(q.take(&mut batch, 10, true), Taken::Some(3));
        assert_eq!(batch, vec![2, 3, 4]);
    }

    #[test]
    fn an_empty_queue_ends_the_worker_only_when_asked_and_then_a_push_starts_one() {
        let mut q = Queue::default();
        q.push(1, 4).unwrap();
        let mut batch = Vec::new();
        q.take(&mut batch, 4, true);
        // Lingering: the worker waits for more.
        assert_eq!(q.take(&mut batch, 4, false), Taken::Nothing);
        assert!(q.has_worker());
        assert_eq!(q.take(&mut batch, 4, true), Taken::WorkerEnded);
        assert!(!q.has_worker());
        assert!(!q.holds_memory(), "an idle queue gives its memory back");
        assert_eq!(q.push(2, 4), Ok(true), "the next push starts a worker");
    }

    #[test]
    fn a_closed_queue_drops_what_it_held_and_refuses_more() {
        let mut q = Queue::default();
        q.push(1, 4).unwrap();
        q.close();
        assert_eq!(q.len(), 0);
        assert_eq!(q.push(2, 4), Err(Refused::Closed(2)));
    }

    #[test]
    fn a_panicked_worker_is_replaced_only_while_something_waits() {
        let mut q = Queue::default();
        q.push(1, 4).unwrap();
        assert!(q.restart_after_panic(), "a delivery waits: another worker");
        assert!(q.has_worker());
        let mut batch = Vec::new();
        q.take(&mut batch, 4, false);
        assert!(!q.restart_after_panic(), "nothing waits: no worker");
        assert!(q.is_idle());
    }

    #[test]
    fn a_zero_capacity_queue_refuses_everything_without_panicking() {
        let mut q = Queue::default();
        assert_eq!(q.push(1, 0), Err(Refused::Full(1)));
        let mut batch = Vec::new();
        assert_eq!(q.take(&mut batch, 0, true), Taken::WorkerEnded);
    }
}
