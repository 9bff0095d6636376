//! One poll of a group member's queues: records, consumer errors *with* the
//! partition and offset they are about, and everything else (rebalances,
//! log lines, statistics), read through librdkafka's event API and handed
//! to the member's callbacks ([`super::hooks`]) as rust-rdkafka would.
//!
//! Why not `BaseConsumer::poll`: it reduces a consumer error to its code
//! (`KafkaError::MessageConsumption`) and drops the partition and offset
//! librdkafka attaches to the event (`rd_kafka_event_topic_partition`). A
//! record batch librdkafka cannot decode (an unknown codec, a failed
//! decompression, a failed CRC check) reaches the application only as such
//! an error, at the batch's base offset, and librdkafka fetches the batch
//! again and again: without the coordinates nothing can move the partition
//! past it ([`super::unreadable`] does, with them).
//!
//! Records are not read from the consumer queue one event at a time: each
//! assigned partition's queue is forwarded to a records queue of the
//! member's own, read with librdkafka's batch call. A pop from the consumer
//! queue reads the clock three times and takes its lock twice; the batch
//! call does that once per batch. The consumer queue is left with
//! rebalances, log lines, statistics and client errors (and any record of
//! a partition that was not forwarded, read as before), and is served
//! first: an event on it wakes a batch call waiting for records.
//!
//! Owns the unsafe code of the member's queues (events, batch calls,
//! forwards; reading one record is [`fetched`]'s); decides nothing about
//! records. Only the member's poll thread uses it.

use std::borrow::Cow;
use std::ffi::{CStr, c_char, c_void};
use std::ptr::NonNull;
use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::hooks::SourceContext;

mod fetched;

pub(super) use fetched::Fetched;

/// What one poll yielded.
pub(super) enum Next {
    /// Nothing within the timeout, or an event handled here (log line,
    /// statistics, an assignment).
    Nothing,
    /// A record.
    Record(Fetched),
    /// A consumer error.
    Error(ConsumerError),
    /// Partitions were revoked (`(topic, partition)`; all of them when the
    /// rebalance failed and librdkafka drops the whole assignment). The
    /// member's callbacks have already handled it.
    Revoked(Option<Vec<(String, i32)>>),
}

/// A consumer error as librdkafka reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ConsumerError {
    /// The error code.
    pub(super) code: RDKafkaErrorCode,
    /// librdkafka's text (for a batch it could not decode, what failed and
    /// at which offset).
    pub(super) text: String,
    /// librdkafka says the client cannot go on.
    pub(super) fatal: bool,
    /// The topic, partition and offset the error is about, when it names
    /// them (errors of one partition's fetches do).
    pub(super) at: Option<(String, i32, i64)>,
}

/// An event taken from the queue; destroyed (with any message it holds)
/// when dropped.
struct Event(NonNull<rdsys::rd_kafka_event_t>);

impl Event {
    fn ptr(&self) -> *mut rdsys::rd_kafka_event_t {
        self.0.as_ptr()
    }
}

impl Drop for Event {
    fn drop(&mut self) {
        // SAFETY: the event came from rd_kafka_queue_poll and is destroyed
        // once, here; nothing borrowed from it outlives `self`.
        unsafe { rdsys::rd_kafka_event_destroy(self.ptr()) }
    }
}

/// Text of a C string librdkafka owns; empty for a null pointer.
///
/// # Safety
/// `ptr` is null or a NUL-terminated string that lives as long as `'a`.
unsafe fn text<'a>(ptr: *const c_char) -> Cow<'a, str> {
    if ptr.is_null() {
        return Cow::Borrowed("");
    }
    // SAFETY: as the caller promises.
    unsafe { CStr::from_ptr(ptr) }.to_string_lossy()
}

/// Records one batch call takes at most.
const BATCH: usize = 64;

/// The queues of one member: its consumer queue (`rd_kafka_queue_get_consumer`:
/// the queue `BaseConsumer::poll` reads, where librdkafka also forwards log
/// lines, statistics and rebalances) and its records queue, with the
/// records of the last batch call not yet returned.
pub(super) struct ConsumerQueue<'c> {
    consumer: &'c BaseConsumer<SourceContext>,
    queue: NonNull<rdsys::rd_kafka_queue_t>,
    /// Where assigned partitions' records go; owned by `self`.
    records: NonNull<rdsys::rd_kafka_queue_t>,
    /// Messages of the last batch call: `batch[next..len]` are not
    /// returned yet and are owned by `self`.
    batch: [*mut rdsys::rd_kafka_message_t; BATCH],
    next: usize,
    len: usize,
    /// Batches taken so far.
    batches: u64,
}

impl Drop for ConsumerQueue<'_> {
    fn drop(&mut self) {
        // SAFETY: the wake-up callback is removed under the consumer
        // queue's lock, so none runs after this; then the messages not
        // returned are destroyed once, and both queue references taken in
        // `of` released once.
        unsafe {
            rdsys::rd_kafka_queue_cb_event_enable(self.queue.as_ptr(), None, std::ptr::null_mut());
            for message in &self.batch[self.next..self.len] {
                if !message.is_null() {
                    rdsys::rd_kafka_message_destroy(*message);
                }
            }
            rdsys::rd_kafka_queue_destroy(self.records.as_ptr());
            rdsys::rd_kafka_queue_destroy(self.queue.as_ptr());
        }
    }
}

/// Wakes a batch call waiting on the records queue (`opaque`) when an event
/// reaches the empty consumer queue. Runs on a librdkafka thread, under the
/// consumer queue's lock.
unsafe extern "C" fn wake_records(_rk: *mut rdsys::rd_kafka_t, opaque: *mut c_void) {
    // SAFETY: `opaque` is the records queue, alive while this callback is
    // set (`ConsumerQueue`'s drop removes it before destroying the queue).
    unsafe { rdsys::rd_kafka_queue_yield(opaque.cast()) }
}

impl<'c> ConsumerQueue<'c> {
    /// The queues of `consumer`; `None` when it has no consumer queue (not
    /// a group member).
    pub(super) fn of(consumer: &'c BaseConsumer<SourceContext>) -> Option<Self> {
        let rk = consumer.client().native_ptr();
        // SAFETY: the client lives for 'c, longer than this handle, which
        // holds its own reference on the consumer queue and owns the
        // records queue.
        let (queue, records) = unsafe {
            (
                rdsys::rd_kafka_queue_get_consumer(rk),
                rdsys::rd_kafka_queue_new(rk),
            )
        };
        let (Some(queue), Some(records)) = (NonNull::new(queue), NonNull::new(records)) else {
            // SAFETY: releases whichever reference was taken, once.
            unsafe {
                for q in [queue, records].into_iter().filter(|q| !q.is_null()) {
                    rdsys::rd_kafka_queue_destroy(q);
                }
            }
            return None;
        };
        // SAFETY: both queues are alive; the callback is removed before
        // the records queue goes (drop).
        unsafe {
            rdsys::rd_kafka_queue_cb_event_enable(
                queue.as_ptr(),
                Some(wake_records),
                records.as_ptr().cast(),
            );
        }
        Some(Self {
            consumer,
            queue,
            records,
            batch: [std::ptr::null_mut(); BATCH],
            next: 0,
            len: 0,
            batches: 0,
        })
    }

    /// Returns the next record of the last batch, else an event of the
    /// consumer queue, else the first record of a new batch, waiting up to
    /// `timeout` for one (an event on the consumer queue ends the wait).
    pub(super) fn poll(&mut self, mut timeout: Duration) -> Next {
        if let Some(fetched) = self.batched() {
            return fetched.into_next();
        }
        // SAFETY: the queue is alive (`self`).
        if unsafe { rdsys::rd_kafka_queue_length(self.queue.as_ptr()) } > 0 {
            match self.poll_event(Duration::ZERO) {
                Next::Nothing => {}
                next => return next,
            }
            // An event handled here (a log line, statistics) or none
            // returned: records are still read, so that nothing on the
            // consumer queue can hold them up, but without waiting, since
            // more events may follow it.
            timeout = Duration::ZERO;
        }
        // A batch call waits until it has all it asked for or the time is
        // up: wait for one record, then take what else is there.
        let first = if timeout.is_zero() {
            self.take(0, Duration::ZERO)
        } else {
            self.take(0, timeout)
                .map(|taken| taken + self.take(taken, Duration::ZERO).unwrap_or(0))
        };
        match first {
            Some(taken) => {
                (self.next, self.len) = (0, taken);
                self.batches += u64::from(taken > 0);
                self.batched().map_or(Next::Nothing, Fetched::into_next)
            }
            // The batch call refused: wait on the consumer queue instead,
            // as without a records queue.
            None => self.poll_event(timeout),
        }
    }

    /// Takes records from the records queue into `batch[from..]`, as many
    /// as there is room for, or one when `wait` is not zero (waiting up to
    /// `wait` for it); `None` when librdkafka refuses the call.
    fn take(&mut self, from: usize, wait: Duration) -> Option<usize> {
        let room = if wait.is_zero() {
            BATCH.saturating_sub(from)
        } else {
            1
        };
        let Some(slots) = self.batch.get_mut(from..from + room) else {
            return Some(0);
        };
        let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: the records queue is alive; librdkafka writes at most
        // `room` message pointers into `slots`, each owned by `self` from
        // here until returned or dropped.
        let taken = unsafe {
            rdsys::rd_kafka_consume_batch_queue(
                self.records.as_ptr(),
                ms,
                slots.as_mut_ptr(),
                slots.len(),
            )
        };
        usize::try_from(taken).ok().map(|taken| taken.min(room))
    }

    /// How many batches were taken so far. The records of one batch all
    /// left librdkafka's queues before the first of them is returned.
    pub(super) fn batches(&self) -> u64 {
        self.batches
    }

    /// Takes the next message of the last batch (passing over null
    /// pointers, which librdkafka does not return: a new batch call must
    /// find none of the last one's messages left).
    fn batched(&mut self) -> Option<Fetched> {
        while self.next < self.len {
            let message = NonNull::new(self.batch[self.next]);
            self.next += 1;
            if let Some(message) = message {
                return Some(Fetched {
                    message,
                    event: None,
                });
            }
        }
        None
    }

    /// Waits up to `timeout` for one event of the consumer queue and
    /// returns what it was.
    fn poll_event(&self, timeout: Duration) -> Next {
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: the queue is alive (`self`); the event is owned by the
        // returned guard.
        let polled = unsafe { rdsys::rd_kafka_queue_poll(self.queue.as_ptr(), ms) };
        let Some(event) = NonNull::new(polled).map(Event) else {
            return Next::Nothing;
        };
        // SAFETY: a live event.
        match unsafe { rdsys::rd_kafka_event_type(event.ptr()) } {
            rdsys::RD_KAFKA_EVENT_FETCH => record_of(event),
            rdsys::RD_KAFKA_EVENT_ERROR => Next::Error(error_of(&event)),
            rdsys::RD_KAFKA_EVENT_REBALANCE => self.rebalance(&event),
            rdsys::RD_KAFKA_EVENT_LOG => {
                self.log(&event);
                Next::Nothing
            }
            rdsys::RD_KAFKA_EVENT_STATS => {
                // SAFETY: a statistics event holds its JSON as a C string.
                let json = unsafe { CStr::from_ptr(rdsys::rd_kafka_event_stats(event.ptr())) };
                self.consumer.context().stats_raw(json.to_bytes());
                Next::Nothing
            }
            // Results of asynchronous commits: hookstream commits
            // synchronously and has no commit callback.
            rdsys::RD_KAFKA_EVENT_OFFSET_COMMIT => Next::Nothing,
            other => {
                tracing::debug!(event = other, "librdkafka event ignored on consumer poll");
                Next::Nothing
            }
        }
    }

    /// A rebalance: the member's callbacks run (and assign or unassign), as
    /// `BaseConsumer::poll` would have them. Partitions about to be
    /// assigned are forwarded to the records queue first, so none of their
    /// records reaches the consumer queue.
    fn rebalance(&self, event: &Event) -> Next {
        // SAFETY: a live rebalance event.
        let err = unsafe { rdsys::rd_kafka_event_error(event.ptr()) };
        let assign = err == RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS;
        if !assign && err != RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS {
            tracing::warn!(error = %RDKafkaErrorCode::from(err), "invalid rebalance event");
            return Next::Revoked(None);
        }
        // SAFETY: a rebalance event holds its partition list, alive with
        // the event; it is copied before the event goes.
        let native = unsafe { rdsys::rd_kafka_event_topic_partition_list(event.ptr()) };
        if assign {
            self.forward(native);
        }
        let mut list = copy_list(native);
        self.consumer
            .context()
            .rebalance(self.consumer, err, &mut list);
        if assign {
            return Next::Nothing;
        }
        let revoked = list
            .elements()
            .iter()
            .map(|e| (e.topic().to_string(), e.partition()))
            .collect();
        Next::Revoked(Some(revoked))
    }

    /// Forwards the queues of the partitions in `native` to the records
    /// queue. librdkafka keeps a forward the application set when it starts
    /// fetching, and drops it when it stops (a revoke).
    fn forward(&self, native: *const rdsys::rd_kafka_topic_partition_list_t) {
        let rk = self.consumer.client().native_ptr();
        for e in elements(native) {
            // SAFETY: the element's topic is a C string owned by the list;
            // the partition queue handle is released right here, the
            // forward stays on the partition.
            unsafe {
                let queue = rdsys::rd_kafka_queue_get_partition(rk, e.topic, e.partition);
                if !queue.is_null() {
                    rdsys::rd_kafka_queue_forward(queue, self.records.as_ptr());
                    rdsys::rd_kafka_queue_destroy(queue);
                }
            }
        }
    }

    fn log(&self, event: &Event) {
        let (mut fac, mut message, mut level) = (std::ptr::null(), std::ptr::null(), 0);
        // SAFETY: a live log event; the strings live as long as it.
        if unsafe { rdsys::rd_kafka_event_log(event.ptr(), &mut fac, &mut message, &mut level) }
            != 0
        {
            return;
        }
        // SAFETY: as above.
        let (fac, message) = unsafe { (text(fac), text(message)) };
        self.consumer
            .context()
            .log(log_level(level), fac.trim(), message.trim());
    }
}

/// The record of a fetch event, or its error.
fn record_of(event: Event) -> Next {
    // SAFETY: a live fetch event; its one message belongs to it.
    let message = unsafe { rdsys::rd_kafka_event_message_next(event.ptr()) };
    let Some(message) = NonNull::new(message.cast_mut()) else {
        return Next::Nothing;
    };
    Fetched {
        message,
        event: Some(event),
    }
    .into_next()
}

/// What an error event says, with its partition and offset when it has
/// them.
fn error_of(event: &Event) -> ConsumerError {
    // SAFETY: a live error event.
    let (code, fatal, message) = unsafe {
        (
            rdsys::rd_kafka_event_error(event.ptr()),
            rdsys::rd_kafka_event_error_is_fatal(event.ptr()) != 0,
            text(rdsys::rd_kafka_event_error_string(event.ptr())).into_owned(),
        )
    };
    // SAFETY: returns a new partition (or null), destroyed right here.
    let at = unsafe {
        let tp = rdsys::rd_kafka_event_topic_partition(event.ptr());
        tp.as_ref().map(|p| {
            let at = (text(p.topic).into_owned(), p.partition, p.offset);
            rdsys::rd_kafka_topic_partition_destroy(tp);
            at
        })
    };
    ConsumerError {
        code: code.into(),
        text: message,
        fatal,
        at,
    }
}

/// The elements of a partition list librdkafka owns (none for null).
fn elements<'a>(
    native: *const rdsys::rd_kafka_topic_partition_list_t,
) -> &'a [rdsys::rd_kafka_topic_partition_t] {
    // SAFETY: null or a live list whose `cnt` elements are initialised,
    // alive as long as the event that holds it (the callers' `'a`).
    unsafe {
        match native.as_ref() {
            Some(list) if !list.elems.is_null() && list.cnt > 0 => {
                std::slice::from_raw_parts(list.elems, list.cnt as usize)
            }
            _ => &[],
        }
    }
}

/// A copy of a partition list librdkafka owns (topics, partitions,
/// offsets).
fn copy_list(native: *const rdsys::rd_kafka_topic_partition_list_t) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for e in elements(native) {
        // SAFETY: each element's topic is a C string owned by the list.
        let topic = unsafe { text(e.topic) };
        if tpl
            .add_partition_offset(&topic, e.partition, Offset::from_raw(e.offset))
            .is_err()
        {
            tpl.add_partition(&topic, e.partition);
        }
    }
    tpl
}

/// librdkafka's syslog level as rust-rdkafka's enum.
fn log_level(level: i32) -> RDKafkaLogLevel {
    match level {
        i32::MIN..=0 => RDKafkaLogLevel::Emerg,
        1 => RDKafkaLogLevel::Alert,
        2 => RDKafkaLogLevel::Critical,
        3 => RDKafkaLogLevel::Error,
        4 => RDKafkaLogLevel::Warning,
        5 => RDKafkaLogLevel::Notice,
        6 => RDKafkaLogLevel::Info,
        _ => RDKafkaLogLevel::Debug,
    }
}
