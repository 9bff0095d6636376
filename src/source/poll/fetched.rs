//! A record polled from a member's queues, read in place from the event
//! or batch call that holds it, and destroyed with it.
//!
//! Owns the unsafe code of reading one message (its coordinates, key,
//! value and headers); decides nothing about records.

use std::borrow::Cow;
use std::ffi::CStr;
use std::ptr::NonNull;

use rdkafka::bindings as rdsys;
use rdkafka::types::RDKafkaRespErr;

use super::{ConsumerError, Event, Next, text};
use crate::core::RecordHeaders;

/// A polled record, read in place from the event or batch that holds it.
pub(in crate::source) struct Fetched {
    pub(super) message: NonNull<rdsys::rd_kafka_message_t>,
    /// The event that owns the message; `None` for a message of a batch,
    /// which `self` owns.
    pub(super) event: Option<Event>,
}

impl Drop for Fetched {
    fn drop(&mut self) {
        if self.event.is_none() {
            // SAFETY: a message of a batch call, owned by `self` alone and
            // destroyed once, here.
            unsafe { rdsys::rd_kafka_message_destroy(self.message.as_ptr()) }
        }
    }
}

impl Fetched {
    /// The record, or the consumer error librdkafka returned in its place.
    pub(super) fn into_next(self) -> Next {
        let err = self.message().err;
        if err == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Next::Record(self);
        }
        // SAFETY: the message is alive with `self`.
        let text = unsafe { text(rdsys::rd_kafka_message_errstr(self.message.as_ptr())) };
        Next::Error(ConsumerError {
            code: err.into(),
            text: text.into_owned(),
            fatal: false,
            at: Some((self.topic().into_owned(), self.partition(), self.offset())),
        })
    }

    fn message(&self) -> &rdsys::rd_kafka_message_t {
        // SAFETY: the message belongs to `_event`, alive as long as `self`.
        unsafe { self.message.as_ref() }
    }

    /// The record's topic.
    pub(in crate::source) fn topic(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(self.topic_bytes())
    }

    /// The record's topic as librdkafka holds it, without a UTF-8 check
    /// (empty when it has none): the poll loop finds its id with it.
    pub(in crate::source) fn topic_bytes(&self) -> &[u8] {
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
    pub(in crate::source) fn partition(&self) -> i32 {
        self.message().partition
    }

    /// The record's offset.
    pub(in crate::source) fn offset(&self) -> i64 {
        self.message().offset
    }

    /// The record's key (`None` for a null key).
    pub(in crate::source) fn key(&self) -> Option<&[u8]> {
        let m = self.message();
        // SAFETY: key/key_len describe bytes owned by the message.
        (!m.key.is_null()).then(|| unsafe { std::slice::from_raw_parts(m.key.cast(), m.key_len) })
    }

    /// The record's value (empty for a null value).
    pub(in crate::source) fn payload(&self) -> &[u8] {
        let m = self.message();
        if m.payload.is_null() {
            return &[];
        }
        // SAFETY: payload/len describe bytes owned by the message.
        unsafe { std::slice::from_raw_parts(m.payload.cast(), m.len) }
    }

    /// The record's headers, copied out.
    pub(in crate::source) fn headers(&self) -> RecordHeaders {
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
