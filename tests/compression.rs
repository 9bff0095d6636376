//! Given events produced with every compression codec Kafka defines (none,
//! gzip, snappy, lz4, zstd), each by a producer of its own in batches, when
//! the pipeline runs, then a real receiver on 127.0.0.1 gets every one of
//! them and the committed offsets reach the end: no codec stalls a
//! partition.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::*;
use hookstream::demo::receiver::Behaviour;
use hookstream::source::extract::Preset;
use rdkafka::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

const TOPIC: &str = "device-events";
const CODECS: [&str; 5] = ["none", "gzip", "snappy", "lz4", "zstd"];
const PER_CODEC: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_every_compression_codec_are_delivered() {
    let cluster = Cluster::start(&[TOPIC], 2);
    let rx = receiver(Behaviour::Healthy).await;
    let mut config = config("compression-test", &[(TOPIC, Preset::Mender)]);
    config
        .endpoints
        .push(endpoint("all", rx.url("in"), &["*"], "none", ""));

    let mut expected = BTreeSet::new();
    for codec in CODECS {
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", cluster.bootstrap())
            .set("compression.type", codec)
            // Batches of several records, as a real producer sends them.
            .set("linger.ms", "20")
            .create()
            .unwrap_or_else(|e| panic!("a {codec} producer: {e}"));
        let sends: Vec<_> = (0..PER_CODEC)
            .map(|i| {
                let id = format!("{codec}-{i}");
                let body = format!(
                    r#"{{"id":"{id}","type":"device-provisioned","data":{{"id":"d{i}","pad":"{}"}}}}"#,
                    "compressible ".repeat(20)
                );
                expected.insert(id);
                let key = format!("d{i}");
                let record = FutureRecord::to(TOPIC).key(&key).payload(&body);
                let send = producer.send_result(record).map_err(|(e, _)| e);
                async move {
                    send.unwrap_or_else(|e| panic!("queueing a {codec} record: {e}"))
                        .await
                        .expect("a delivery report")
                        .unwrap_or_else(|(e, _)| panic!("producing a {codec} record: {e}"))
                }
            })
            .collect();
        futures::future::join_all(sends).await;
        producer.flush(Duration::from_secs(10)).unwrap();
    }

    let pipeline = start(config, &cluster).await;
    wait_for(
        "every event of every codec",
        Duration::from_secs(60),
        || rx.log().recorded().len() >= expected.len(),
    )
    .await;
    wait_for("offsets to reach the end", Duration::from_secs(30), || {
        cluster.offsets_at_end("compression-test", TOPIC)
    })
    .await;
    let received: BTreeSet<String> = bodies_by(&rx.log().recorded(), "/id").into_keys().collect();
    assert_eq!(received, expected, "every event of every codec, by id");
    assert!(
        cluster.read_all("hookstream.dlq").is_empty(),
        "nothing dead-lettered"
    );
    pipeline.shutdown().await.unwrap();
}
