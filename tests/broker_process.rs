//! Given the embedded broker in a child process (how `hookstream bench` runs
//! it, so the broker's data is not counted as the pipeline's memory), when a
//! topic is created through it and records are produced, then a consumer
//! reads them back; a bad request is refused with the reason, and dropping
//! the handle ends the process.

use std::path::Path;
use std::time::{Duration, Instant};

use hookstream::kafka::embedded::EmbeddedBroker;
use rdkafka::ClientConfig;
use rdkafka::Message;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

#[test]
fn a_broker_in_a_child_process_serves_topics_and_ends_with_its_handle() {
    let broker = EmbeddedBroker::spawn_process(Path::new(env!("CARGO_BIN_EXE_hookstream")))
        .expect("broker process starts");
    let pid = broker.process_id().expect("runs in a child process");
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    assert!(broker.bootstrap_servers().starts_with("127.0.0.1:"));

    broker.create_topic("story", 3).expect("topic created");
    broker
        .create_topic("story", 3)
        .expect("creating it again is fine");
    let err = broker.create_topic("two words", 1).unwrap_err().to_string();
    assert!(err.contains("white space"), "{err}");
    let err = broker.broker_down(1).unwrap_err().to_string();
    assert!(err.contains("child process"), "{err}");

    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .create()
        .unwrap();
    for i in 0..30 {
        let body = format!("record-{i}");
        producer
            .send(BaseRecord::to("story").key(&body).payload(&body))
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .set("group.id", "story-readers")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["story"]).unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 30 && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
            let partitions_ok = (0..3).contains(&m.partition());
            assert!(partitions_ok, "partition {}", m.partition());
            seen.insert(String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned());
        }
    }
    assert_eq!(seen.len(), 30, "read back {seen:?}");
    assert!(seen.contains("record-0") && seen.contains("record-29"));

    drop(consumer);
    drop(producer);
    drop(broker);
    // Reaped: the pid no longer names a running process of ours.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    assert!(
        !status.contains("hookstream") || status.contains("State:\tZ"),
        "broker process still running: {status}"
    );
}
