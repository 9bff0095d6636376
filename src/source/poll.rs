//! One poll of a group member's consumer queue, through librdkafka's event
//! API: records, consumer errors *with* the partition and offset they are
//! about, and everything else (rebalances, log lines, statistics) handed to
//! the member's callbacks ([`super::hooks`]) as rust-rdkafka would.
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
//! Owns the unsafe code of consuming (events, messages, headers); decides
//! nothing about records. Only the member's poll thread uses it.

use std::borrow::Cow;
use std::ffi::{CStr, c_char};
use std::ptr::NonNull;
use std::time::Duration;

use rdkafka::bindings as rdsys;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::types::{RDKafkaErrorCode, RDKafkaRespErr};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use super::hooks::SourceContext;
use crate::core::RecordHeaders;

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

/// A polled record, read in place from the event that holds it.
pub(super) struct Fetched {
    message: NonNull<rdsys::rd_kafka_message_t>,
    /// Owns the message.
    _event: Event,
}

impl Fetched {
    fn message(&self) -> &rdsys::rd_kafka_message_t {
        // SAFETY: the message belongs to `_event`, alive as long as `self`.
        unsafe { self.message.as_ref() }
    }

    /// The record's topic.
    pub(super) fn topic(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(self.topic_bytes())
    }

    /// The record's topic as librdkafka holds it, without a UTF-8 check
    /// (empty when it has none): the poll loop finds its id with it.
    pub(super) fn topic_bytes(&self) -> &[u8] {
        let rkt = self.message().rkt;
        if rkt.is_null() {
            return &[];
        }
        // SAFETY: a consumed message keeps a reference on its topic, whose
        // name lives as long as the topic.
        let name = unsafe { rdsys::rd_kafka_topic_name(rkt) };
        if name.is_null() {
            return &[];
        }
        // SAFETY: a NUL-terminated name that lives as long as `self`.
        unsafe { CStr::from_ptr(name) }.to_bytes()
    }

    /// The record's partition.
    pub(super) fn partition(&self) -> i32 {
        self.message().partition
    }

    /// The record's offset.
    pub(super) fn offset(&self) -> i64 {
        self.message().offset
    }

    /// The record's key (`None` for a null key).
    pub(super) fn key(&self) -> Option<&[u8]> {
        let m = self.message();
        // SAFETY: key/key_len describe bytes owned by the message.
        (!m.key.is_null()).then(|| unsafe { std::slice::from_raw_parts(m.key.cast(), m.key_len) })
    }

    /// The record's value (empty for a null value).
    pub(super) fn payload(&self) -> &[u8] {
        let m = self.message();
        if m.payload.is_null() {
            return &[];
        }
        // SAFETY: payload/len describe bytes owned by the message.
        unsafe { std::slice::from_raw_parts(m.payload.cast(), m.len) }
    }

    /// The record's headers, copied out.
    pub(super) fn headers(&self) -> RecordHeaders {
        let mut native = std::ptr::null_mut();
        // SAFETY: the message is a consumed one, alive with `self`; the
        // header list belongs to it.
        let err = unsafe { rdsys::rd_kafka_message_headers(self.message.as_ptr(), &mut native) };
        if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR || native.is_null() {
            return RecordHeaders::default();
        }
        let mut pairs: Vec<(Cow<'_, str>, &[u8])> = Vec::new();
        for idx in 0.. {
            let (mut name, mut value, mut size) = (std::ptr::null(), std::ptr::null(), 0usize);
            // SAFETY: `native` is the message's header list; the out
            // pointers point at locals; name and value stay valid while
            // the message lives.
            let err = unsafe {
                rdsys::rd_kafka_header_get_all(native, idx, &mut name, &mut value, &mut size)
            };
            if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
                break;
            }
            // SAFETY: as above.
            let key = unsafe { text(name) };
            let value: &[u8] = if value.is_null() {
                &[]
            } else {
                // SAFETY: value/size describe the header's bytes.
                unsafe { std::slice::from_raw_parts(value.cast(), size) }
            };
            pairs.push((key, value));
        }
        RecordHeaders::from_pairs(pairs.iter().map(|(k, v)| (k.as_ref(), *v)))
    }
}

/// The consumer queue of one member (`rd_kafka_queue_get_consumer`: the
/// queue `BaseConsumer::poll` reads, where librdkafka also forwards log
/// lines, statistics and rebalances).
pub(super) struct ConsumerQueue<'c> {
    consumer: &'c BaseConsumer<SourceContext>,
    queue: NonNull<rdsys::rd_kafka_queue_t>,
}

impl Drop for ConsumerQueue<'_> {
    fn drop(&mut self) {
        // SAFETY: releases the reference taken in `of`, once.
        unsafe { rdsys::rd_kafka_queue_destroy(self.queue.as_ptr()) }
    }
}

impl<'c> ConsumerQueue<'c> {
    /// The consumer queue of `consumer`; `None` when it has none (not a
    /// group member).
    pub(super) fn of(consumer: &'c BaseConsumer<SourceContext>) -> Option<Self> {
        // SAFETY: the client lives for 'c, longer than this handle, which
        // holds its own reference on the queue.
        let queue = unsafe { rdsys::rd_kafka_queue_get_consumer(consumer.client().native_ptr()) };
        NonNull::new(queue).map(|queue| Self { consumer, queue })
    }

    /// Waits up to `timeout` for one event and returns what it was.
    pub(super) fn poll(&self, timeout: Duration) -> Next {
        let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: the queue is alive (`self`); the event is owned by the
        // returned guard.
        let polled = unsafe { rdsys::rd_kafka_queue_poll(self.queue.as_ptr(), ms) };
        let Some(event) = NonNull::new(polled).map(Event) else {
            return Next::Nothing;
        };
        // SAFETY: a live event.
        match unsafe { rdsys::rd_kafka_event_type(event.ptr()) } {
            rdsys::RD_KAFKA_EVENT_FETCH => fetched(event),
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
    /// `BaseConsumer::poll` would have them.
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
        let mut list =
            copy_list(unsafe { rdsys::rd_kafka_event_topic_partition_list(event.ptr()) });
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
fn fetched(event: Event) -> Next {
    // SAFETY: a live fetch event; its one message belongs to it.
    let message = unsafe { rdsys::rd_kafka_event_message_next(event.ptr()) };
    let Some(message) = NonNull::new(message.cast_mut()) else {
        return Next::Nothing;
    };
    let fetched = Fetched {
        message,
        _event: event,
    };
    let err = fetched.message().err;
    if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
        return Next::Record(fetched);
    }
    // SAFETY: the message is alive with `fetched`.
    let text = unsafe { text(rdsys::rd_kafka_message_errstr(fetched.message.as_ptr())) };
    Next::Error(ConsumerError {
        code: err.into(),
        text: text.into_owned(),
        fatal: false,
        at: Some((
            fetched.topic().into_owned(),
            fetched.partition(),
            fetched.offset(),
        )),
    })
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

/// A copy of a partition list librdkafka owns (topics, partitions,
/// offsets).
fn copy_list(native: *const rdsys::rd_kafka_topic_partition_list_t) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    // SAFETY: null or a live list whose `cnt` elements are initialised.
    let elements = unsafe {
        match native.as_ref() {
            Some(list) if !list.elems.is_null() && list.cnt > 0 => {
                std::slice::from_raw_parts(list.elems, list.cnt as usize)
            }
            _ => &[],
        }
    };
    for e in elements {
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
