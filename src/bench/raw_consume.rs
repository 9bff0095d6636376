//! The raw consume baselines: a consumer with the pipeline's settings reads
//! every record of a topic and does nothing with them, in two ways: a
//! record per call (rust-rdkafka's `poll`), and batches of up to
//! [`BATCH`] from the consumer queue (librdkafka's batch call, the way the
//! pipeline's polling thread reads). The bench takes ratios to the faster
//! of the two; the batch reader's CPU per record is what consuming costs
//! the pipeline.
//!
//! Owns the unsafe code of the batch reader (the consumer queue, the batch
//! call, destroying the messages it returns). The measuring (clocks, CPU)
//! is the caller's.

use std::ptr::NonNull;
use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::bindings as rdsys;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaRespErr;
use serde::Serialize;

/// Records one batch call takes at most (as the pipeline's).
const BATCH: usize = 64;

/// How a raw consume baseline reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reads {
    /// One record per `poll`.
    OneByOne,
    /// Batches from the consumer queue.
    Batches,
}

/// One raw consume baseline's rate and CPU.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RawConsume {
    /// Records read per second.
    pub per_s: f64,
    /// CPU per record of the bench's process meanwhile (µs): the
    /// consumer's, librdkafka's threads included (the process does nothing
    /// else then).
    pub cpu_us_per_record: f64,
    /// The embedded broker process's CPU per record meanwhile (µs; none
    /// with `--brokers`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub broker_cpu_us_per_record: Option<f64>,
}

/// Reads up to `records` records with `consumer` until `deadline`, calling
/// `first` when the first one arrives and `each` with every record's value
/// (empty for a null one) until it returns `false`; returns how many it
/// read. The first record is always read with `poll`, which also serves
/// the group's assignment; with [`Reads::Batches`] the rest are read in
/// batches.
pub(super) fn read(
    consumer: &BaseConsumer,
    records: u64,
    reads: Reads,
    deadline: Instant,
    first: impl FnOnce(),
    mut each: impl FnMut(&[u8]) -> bool,
) -> u64 {
    let mut seen = 0u64;
    let mut going = true;
    let mut first = Some(first);
    while seen == 0 && Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            if let Some(first) = first.take() {
                first();
            }
            seen = 1;
            going = each(message.payload().unwrap_or_default());
        }
    }
    let batches = match reads {
        Reads::Batches => ConsumerQueue::of(consumer),
        Reads::OneByOne => None,
    };
    while going && seen > 0 && seen < records && Instant::now() < deadline {
        match &batches {
            Some(queue) => queue.take(Duration::from_millis(100), |value| {
                seen += 1;
                going = going && each(value);
            }),
            None => {
                if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
                    seen += 1;
                    going = each(message.payload().unwrap_or_default());
                }
            }
        }
    }
    seen
}

/// A reference on a consumer's queue, released when dropped.
struct ConsumerQueue(NonNull<rdsys::rd_kafka_queue_t>);

impl ConsumerQueue {
    fn of(consumer: &BaseConsumer) -> Option<Self> {
        // SAFETY: the client is alive (borrowed); the reference taken here
        // is released once, in `drop`, before the borrow ends.
        let queue = unsafe { rdsys::rd_kafka_queue_get_consumer(consumer.client().native_ptr()) };
        NonNull::new(queue).map(Self)
    }

    /// Takes a batch as the pipeline does: waits up to `wait` for one
    /// record (a batch call waits until its batch is full), then takes
    /// what else is there without waiting. Calls `each` with the value of
    /// every record (not error) and destroys the messages.
    fn take(&self, wait: Duration, mut each: impl FnMut(&[u8])) {
        let mut batch = [std::ptr::null_mut(); BATCH];
        let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
        let taken = match self.call(ms, &mut batch[..1]) {
            0 => 0,
            first => first + self.call(0, &mut batch[first..]),
        };
        for message in batch.into_iter().take(taken).filter(|m| !m.is_null()) {
            // SAFETY: a message the batch call returned, alive until it is
            // destroyed, once, at the end of this block; its value is not
            // used after that.
            unsafe {
                let m = &*message;
                if m.err == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
                    let value = match m.payload.is_null() {
                        true => &[][..],
                        false => std::slice::from_raw_parts(m.payload.cast::<u8>(), m.len),
                    };
                    each(value);
                }
                rdsys::rd_kafka_message_destroy(message);
            }
        }
    }

    /// One batch call filling `slots`, waiting up to `ms`; how many it
    /// filled. The caller owns and destroys the messages.
    fn call(&self, ms: i32, slots: &mut [*mut rdsys::rd_kafka_message_t]) -> usize {
        if slots.is_empty() {
            return 0;
        }
        // SAFETY: the queue is alive (`self`); librdkafka writes at most
        // `slots.len()` message pointers into `slots`.
        let taken = unsafe {
            rdsys::rd_kafka_consume_batch_queue(
                self.0.as_ptr(),
                ms,
                slots.as_mut_ptr(),
                slots.len(),
            )
        };
        usize::try_from(taken).unwrap_or(0).min(slots.len())
    }
}

impl Drop for ConsumerQueue {
    fn drop(&mut self) {
        // SAFETY: releases the reference taken in `of`, once.
        unsafe { rdsys::rd_kafka_queue_destroy(self.0.as_ptr()) }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

    use super::*;
    use crate::config::Config;
    use crate::kafka::EmbeddedBroker;

    /// A mock cluster with `topic` of `partitions`, holding `values`
    /// (keyed round-robin over seven keys), and its bootstrap servers.
    fn cluster_with(topic: &str, partitions: i32, values: &[String]) -> (EmbeddedBroker, String) {
        let broker = EmbeddedBroker::start(1).expect("mock cluster");
        let bootstrap = broker.bootstrap_servers().to_string();
        broker.create_topic(topic, partitions).expect("topic");
        let producer: BaseProducer = rdkafka::ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .create()
            .expect("producer");
        for (i, value) in values.iter().enumerate() {
            let key = format!("k{}", i % 7);
            producer
                .send(BaseRecord::to(topic).key(&key).payload(value))
                .expect("queued");
        }
        producer.flush(Duration::from_secs(30)).expect("produced");
        (broker, bootstrap)
    }

    /// A consumer with the pipeline's settings in `group`, subscribed to
    /// `topic`.
    fn consumer_of(bootstrap: &str, group: &str, topic: &str) -> BaseConsumer {
        let consumer: BaseConsumer =
            crate::kafka::consumer_config(&Config::default(), bootstrap, group)
                .create()
                .expect("consumer");
        consumer.subscribe(&[topic]).expect("subscribed");
        consumer
    }

    /// Given a topic of 3 000 records over 4 partitions, when each reader
    /// reads it with a group of its own, then each sees every record once,
    /// with its value, and calls `first` once.
    #[test]
    fn both_readers_see_every_record_once_with_its_value() {
        let values: Vec<String> = (0..3_000).map(|i| format!("{{\"n\":{i}}}")).collect();
        let (_broker, bootstrap) = cluster_with("raw", 4, &values);
        let records = values.len() as u64;
        for reads in [Reads::Batches, Reads::OneByOne] {
            let consumer = consumer_of(&bootstrap, &format!("{reads:?}"), "raw");
            let (mut firsts, mut seen) = (0, Vec::new());
            let deadline = Instant::now() + Duration::from_secs(60);
            let read = read(
                &consumer,
                records,
                reads,
                deadline,
                || firsts += 1,
                |v| {
                    seen.push(String::from_utf8_lossy(v).into_owned());
                    true
                },
            );
            assert_eq!(read, records, "{reads:?}");
            assert_eq!(firsts, 1, "{reads:?}");
            assert_eq!(seen.len(), values.len(), "{reads:?}");
            let distinct: BTreeSet<&String> = seen.iter().collect();
            assert_eq!(
                distinct,
                values.iter().collect(),
                "{reads:?}: every value once"
            );
        }
    }

    /// `each` returning `false` stops the reading at once.
    #[test]
    fn the_reader_stops_when_told() {
        let values: Vec<String> = (0..500).map(|i| i.to_string()).collect();
        let (_broker, bootstrap) = cluster_with("stop", 1, &values);
        let consumer = consumer_of(&bootstrap, "g", "stop");
        let mut calls = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        read(
            &consumer,
            500,
            Reads::Batches,
            deadline,
            || {},
            |_| {
                calls += 1;
                calls < 10
            },
        );
        assert_eq!(calls, 10, "no record is handed over after `false`");
    }
}
