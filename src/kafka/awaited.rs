//! A producer whose writes are awaited: each send resolves with where the
//! broker put the record. What rust-rdkafka's `FutureProducer` does, with
//! its delivery reports served by a [`ReportThread`] instead of the
//! `FutureProducer`'s own polling thread, which spins about 1 % of a core
//! for as long as the producer lives (see [`super::reports`]).
//!
//! Owns the send and its wait; what is written, and to which topic, is the
//! caller's.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::FutureExt;
use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::Message;
use rdkafka::message::ToBytes;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, FutureRecord, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use tokio::sync::oneshot;

use super::ReportThread;

/// How long a send waits before trying again when librdkafka's queue is
/// full (as `FutureProducer` does).
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(100);

/// Where the broker put a record: (partition, offset).
pub type Placed = (i32, i64);

/// Hands each delivery report to the send waiting for it.
pub struct Awaiting;

impl ClientContext for Awaiting {}

impl ProducerContext for Awaiting {
    type DeliveryOpaque = Box<oneshot::Sender<KafkaResult<Placed>>>;

    fn delivery(&self, result: &DeliveryResult<'_>, waiting: Self::DeliveryOpaque) {
        let outcome = match result {
            Ok(message) => Ok((message.partition(), message.offset())),
            Err((e, _)) => Err(e.clone()),
        };
        // The send may have been given up on (its future dropped).
        let _ = waiting.send(outcome);
    }
}

/// A producer whose sends are awaited.
pub struct AwaitedProducer {
    producer: Arc<BaseProducer<Awaiting>>,
    /// Serves the delivery reports; stopped (and joined) when dropped,
    /// after which the producer closes.
    _reports: ReportThread,
}

impl std::fmt::Debug for AwaitedProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwaitedProducer").finish_non_exhaustive()
    }
}

/// The broker's answer to one enqueued record, to await (or drop).
pub type Report = futures::future::Map<
    oneshot::Receiver<KafkaResult<Placed>>,
    fn(Result<KafkaResult<Placed>, oneshot::error::RecvError>) -> KafkaResult<Placed>,
>;

impl AwaitedProducer {
    /// A producer with `config`'s settings, its reports served on a thread
    /// named `name`.
    pub fn create(config: &ClientConfig, name: &str) -> Result<Self> {
        let producer: Arc<BaseProducer<Awaiting>> = Arc::new(
            config
                .create_with_context(Awaiting)
                .with_context(|| format!("creating the {name} producer"))?,
        );
        let reports = ReportThread::spawn(name, Arc::clone(&producer))?;
        Ok(Self {
            producer,
            _reports: reports,
        })
    }

    /// Hands `record` to librdkafka without waiting: the broker's answer
    /// comes through the returned [`Report`]. Fails when librdkafka refuses
    /// the record (its queue full, say).
    pub fn enqueue<K, P>(&self, record: FutureRecord<'_, K, P>) -> KafkaResult<Report>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let (record, report) = with_report(record);
        self.producer.send(record).map_err(|(e, _)| e)?;
        Ok(report)
    }

    /// Writes `record` and waits for the broker's answer. While
    /// librdkafka's queue is full it tries again for up to `queue_timeout`
    /// (as `FutureProducer::send` does).
    pub async fn send<K, P>(
        &self,
        record: FutureRecord<'_, K, P>,
        queue_timeout: Duration,
    ) -> KafkaResult<Placed>
    where
        K: ToBytes + ?Sized,
        P: ToBytes + ?Sized,
    {
        let started = Instant::now();
        let (mut record, report) = with_report(record);
        loop {
            match self.producer.send(record) {
                Ok(()) => return report.await,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                    if started.elapsed() < queue_timeout =>
                {
                    record = back;
                    tokio::time::sleep(QUEUE_FULL_PAUSE).await;
                }
                Err((e, _)) => return Err(e),
            }
        }
    }
}

/// `record` as librdkafka takes it, carrying the sender of its report,
/// and that report.
fn with_report<'a, K, P>(
    record: FutureRecord<'a, K, P>,
) -> (
    BaseRecord<'a, K, P, <Awaiting as ProducerContext>::DeliveryOpaque>,
    Report,
)
where
    K: ToBytes + ?Sized,
    P: ToBytes + ?Sized,
{
    let (tx, rx) = oneshot::channel();
    let record = BaseRecord {
        topic: record.topic,
        partition: record.partition,
        payload: record.payload,
        key: record.key,
        timestamp: record.timestamp,
        headers: record.headers,
        delivery_opaque: Box::new(tx),
    };
    (record, rx.map(answer as fn(_) -> _))
}

/// A report's outcome; a report whose sender went away (the producer
/// closed before the broker answered) is `Canceled`.
fn answer(received: Result<KafkaResult<Placed>, oneshot::error::RecvError>) -> KafkaResult<Placed> {
    received.unwrap_or(Err(KafkaError::Canceled))
}

#[cfg(test)]
mod tests {
    use rdkafka::mocking::MockCluster;

    use super::*;

    #[tokio::test]
    async fn sends_resolve_with_their_offsets_and_tombstones_are_written() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("awaited", 2, 1).unwrap();
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", cluster.bootstrap_servers());
        let producer = AwaitedProducer::create(&config, "test-awaited").unwrap();
        let timeout = Duration::from_secs(5);
        let to = |key| {
            FutureRecord::<str, [u8]>::to("awaited")
                .partition(1)
                .key(key)
        };
        let first = producer
            .send(to("a").payload(b"one"), timeout)
            .await
            .unwrap();
        let keys: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
        let sends = keys
            .iter()
            .map(|key| producer.send(to(key).payload(b"x"), timeout));
        let offsets: Vec<i64> = futures::future::join_all(sends)
            .await
            .into_iter()
            .map(|r| r.unwrap().1)
            .collect();
        let tombstone = producer.send(to("a"), timeout).await.unwrap();
        let unawaited = producer.enqueue(to("b").payload(b"y")).unwrap();
        assert_eq!(first, (1, 0));
        let mut sorted = offsets.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (1..=10).collect::<Vec<i64>>());
        assert_eq!(tombstone, (1, 11));
        assert_eq!(unawaited.await.unwrap(), (1, 12));
    }

    #[tokio::test]
    async fn a_send_to_a_missing_partition_fails_instead_of_waiting() {
        let cluster = MockCluster::new(1).unwrap();
        cluster.create_topic("awaited", 1, 1).unwrap();
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", cluster.bootstrap_servers())
            .set("message.timeout.ms", "2000");
        let producer = AwaitedProducer::create(&config, "test-awaited").unwrap();
        let sent = tokio::time::timeout(
            Duration::from_secs(10),
            producer.send(
                FutureRecord::<str, [u8]>::to("awaited")
                    .partition(7)
                    .key("a")
                    .payload(b"x"),
                Duration::from_secs(1),
            ),
        )
        .await
        .expect("the send answered");
        assert!(sent.is_err(), "{sent:?}");
    }
}
