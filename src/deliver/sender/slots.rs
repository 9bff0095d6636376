//! The worker's attempts in flight, each in a slot whose memory the slot's
//! next attempt reuses.
//!
//! An attempt's future is ~2.7 KB. Boxing one per attempt and handing it to
//! a `FuturesUnordered` cost an allocation above mimalloc's small sizes, a
//! task record, and the links and shared counts to add and remove it:
//! about 5 % of the pipeline's CPU in bench (a). A slot keeps its box: a
//! finished attempt's future is replaced in place by the next one
//! (`Pin::set`), and the slot's waker, made once, puts the slot on the
//! ready list the worker polls.
//!
//! Owns polling only: what an attempt does is its future's
//! ([`super::attempt`]); what the worker takes, and when, is
//! [`super::worker`]'s.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;

use crate::core::lock;

/// Attempts in flight, each an `F` in a slot of its own.
pub(super) struct AttemptSlots<F> {
    slots: Vec<Slot<F>>,
    /// Slots whose attempt has ended, for the next.
    free: Vec<usize>,
    ready: Arc<ReadyList>,
    /// The ready list's indices being polled (its memory kept).
    polling: Vec<usize>,
}

struct Slot<F> {
    future: Pin<Box<F>>,
    /// Whether `future` is still running (an ended one is not polled).
    running: bool,
    waker: Waker,
    wake: Arc<SlotWake>,
}

/// Slots woken since they were last polled, and the worker to wake.
#[derive(Default)]
struct ReadyList {
    indices: Mutex<Vec<usize>>,
    worker: AtomicWaker,
}

/// A slot's waker.
struct SlotWake {
    index: usize,
    /// On the ready list already (once is enough).
    queued: AtomicBool,
    ready: Arc<ReadyList>,
}

impl Wake for SlotWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            lock(&self.ready.indices).push(self.index);
            self.ready.worker.wake();
        }
    }
}

impl<F: Future<Output = ()>> AttemptSlots<F> {
    /// No slots yet: they are made as attempts overlap, and kept.
    pub(super) fn new() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            ready: Arc::default(),
            polling: Vec::new(),
        }
    }

    /// Whether no attempt is running.
    pub(super) fn is_idle(&self) -> bool {
        self.free.len() == self.slots.len()
    }

    /// Starts `attempt` in a free slot (a new one when none is) and polls
    /// it at once, so its request goes out before the worker takes the
    /// next; then polls the attempts woken meanwhile, as the worker would
    /// when it next waits.
    pub(super) fn start(&mut self, attempt: F) {
        let index = match self.free.pop() {
            Some(index) => {
                let slot = &mut self.slots[index];
                slot.future.as_mut().set(attempt);
                slot.running = true;
                index
            }
            None => {
                let index = self.slots.len();
                let wake = Arc::new(SlotWake {
                    index,
                    queued: AtomicBool::new(false),
                    ready: Arc::clone(&self.ready),
                });
                self.slots.push(Slot {
                    future: Box::pin(attempt),
                    running: true,
                    waker: Waker::from(Arc::clone(&wake)),
                    wake,
                });
                index
            }
        };
        self.poll_slot(index);
        self.poll_woken();
    }

    /// Polls the attempts woken since they were last polled; ready with
    /// how many ended, once one has. Registers `cx` to be woken when an
    /// attempt is.
    pub(super) fn poll_ended(&mut self, cx: &mut Context<'_>) -> Poll<usize> {
        self.ready.worker.register(cx.waker());
        match self.poll_woken() {
            0 => Poll::Pending,
            ended => Poll::Ready(ended),
        }
    }

    /// One round over the ready list (slots woken during it wait for the
    /// next: their wake-up has woken the worker); how many ended.
    fn poll_woken(&mut self) -> usize {
        std::mem::swap(&mut self.polling, &mut *lock(&self.ready.indices));
        let mut polling = std::mem::take(&mut self.polling);
        let ended = polling.drain(..).filter(|&i| self.poll_slot(i)).count();
        self.polling = polling;
        ended
    }

    /// Polls slot `index` if its attempt runs; whether it ended now.
    fn poll_slot(&mut self, index: usize) -> bool {
        let Some(slot) = self.slots.get_mut(index) else {
            return false;
        };
        if !slot.running {
            return false;
        }
        // Cleared first: a wake-up during the poll lists the slot again.
        slot.wake.queued.store(false, Ordering::Release);
        let mut cx = Context::from_waker(&slot.waker);
        if slot.future.as_mut().poll(&mut cx).is_pending() {
            return false;
        }
        slot.running = false;
        self.free.push(index);
        true
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    /// An attempt that waits `ms` and counts itself done.
    fn attempt(ms: u64, done: &Arc<AtomicUsize>) -> impl Future<Output = ()> + use<> {
        let done = Arc::clone(done);
        async move {
            if ms > 0 {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            done.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Waits until an attempt ends; how many did.
    async fn ended<F: Future<Output = ()>>(slots: &mut AttemptSlots<F>) -> usize {
        std::future::poll_fn(|cx| slots.poll_ended(cx)).await
    }

    #[tokio::test]
    async fn slots_are_reused_and_every_attempt_runs_to_its_end() {
        let done = Arc::new(AtomicUsize::new(0));
        let mut slots = AttemptSlots::new();
        assert!(slots.is_idle());
        // An attempt that ends at its first poll frees its slot at once.
        slots.start(attempt(0, &done));
        assert!(slots.is_idle());
        assert_eq!(slots.slots.len(), 1);
        // Eight overlapping attempts take eight slots...
        for i in 0..8 {
            slots.start(attempt(5 + i, &done));
        }
        assert!(!slots.is_idle());
        assert_eq!(slots.slots.len(), 8);
        let mut seen = 0;
        while !slots.is_idle() {
            seen += ended(&mut slots).await;
        }
        assert_eq!((seen, done.load(Ordering::SeqCst)), (8, 9));
        // ...and the next eight reuse them.
        for i in 0..8 {
            slots.start(attempt(1 + i % 3, &done));
        }
        while !slots.is_idle() {
            ended(&mut slots).await;
        }
        assert_eq!(slots.slots.len(), 8, "no slot added");
        assert_eq!(done.load(Ordering::SeqCst), 17);
    }

    #[tokio::test]
    async fn a_stale_wake_up_polls_no_ended_attempt() {
        let done = Arc::new(AtomicUsize::new(0));
        let mut slots = AttemptSlots::new();
        slots.start(attempt(1, &done));
        ended(&mut slots).await;
        // The ended slot's waker fires again (a timer late, say): nothing
        // is polled, and nothing counts as ended.
        slots.slots[0].waker.wake_by_ref();
        assert_eq!(slots.poll_woken(), 0);
        assert_eq!(done.load(Ordering::SeqCst), 1);
        assert!(slots.is_idle());
    }
}
