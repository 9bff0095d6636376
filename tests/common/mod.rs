//! Shared test fixtures: an embedded (librdkafka mock) broker, real HTTP
//! receivers on 127.0.0.1, a producer, DLQ and offset readers, and an
//! HMAC verifier that does not use hookstream's signing code.
#![allow(dead_code)]

pub mod process;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use hookstream::config::{Config, EndpointConfig, HumanDuration, SourceConfig};
use hookstream::demo::receiver::{Behaviour, ReceivedRequest, Receiver, ReceiverSpec};
use hookstream::kafka::EmbeddedBroker;
use hookstream::source::extract::Preset;
use hookstream::{BrokerTarget, Pipeline};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use sha2::Sha256;

/// A record to produce: key and value.
pub type Keyed = (String, Vec<u8>);

/// A running embedded broker shared by a test.
pub struct Cluster {
    pub broker: Arc<EmbeddedBroker>,
    producer: FutureProducer,
}

impl Cluster {
    /// Starts a broker and creates `topics` with `partitions` each.
    pub fn start(topics: &[&str], partitions: i32) -> Self {
        let broker = Arc::new(EmbeddedBroker::start(1).expect("embedded broker"));
        for t in topics {
            broker.create_topic(t, partitions).expect("create topic");
        }
        let producer = ClientConfig::new()
            .set("bootstrap.servers", broker.bootstrap_servers())
            .set("linger.ms", "2")
            .create()
            .expect("producer");
        Self { broker, producer }
    }

    /// Like [`start`](Self::start), but the broker runs in a child process
    /// (`hookstream embedded-broker`), so that `hookstream run` processes
    /// can share it and the test can kill them without touching it.
    pub fn in_child_process(topics: &[&str], partitions: i32) -> Self {
        let exe = std::path::Path::new(env!("CARGO_BIN_EXE_hookstream"));
        let broker = Arc::new(EmbeddedBroker::spawn_process(exe).expect("broker process"));
        for t in topics {
            broker.create_topic(t, partitions).expect("create topic");
        }
        let producer = ClientConfig::new()
            .set("bootstrap.servers", broker.bootstrap_servers())
            .set("linger.ms", "2")
            .create()
            .expect("producer");
        Self { broker, producer }
    }

    /// Creates the topics `config` owns (the mock cluster answers no
    /// CreateTopics request: they are made through the broker).
    pub fn create_owned_topics(&self, config: &Config) {
        for spec in hookstream::kafka::owned_topics(config) {
            self.broker
                .create_topic(&spec.name, spec.partitions)
                .expect("create an owned topic");
        }
    }

    /// Produces `events(from, from + chunk)` to `topic` chunk after chunk
    /// for `range`, spread evenly over `over`, on the current runtime.
    pub fn stream(
        self: &Arc<Self>,
        topic: &'static str,
        range: std::ops::Range<usize>,
        chunk: usize,
        over: Duration,
        events: fn(usize, usize) -> Vec<Keyed>,
    ) -> tokio::task::JoinHandle<()> {
        let cluster = Arc::clone(self);
        tokio::spawn(async move {
            let pause = over / (range.len() / chunk.max(1)).max(1) as u32;
            for from in range.clone().step_by(chunk.max(1)) {
                let to = (from + chunk).min(range.end);
                cluster.produce_many(topic, &events(from, to)).await;
                tokio::time::sleep(pause).await;
            }
        })
    }

    pub fn bootstrap(&self) -> &str {
        self.broker.bootstrap_servers()
    }

    /// (low, high) watermarks of every partition of `topic`. A low mark
    /// above 0 means the mock cluster dropped records (it keeps about
    /// 5 MiB per partition).
    pub fn watermarks(&self, topic: &str) -> Vec<(i32, i64, i64)> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .create()
            .expect("watermark reader");
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        md.topics()
            .iter()
            .flat_map(|t| t.partitions().iter().map(|p| p.id()))
            .map(|p| {
                let (low, high) = consumer
                    .fetch_watermarks(topic, p, Duration::from_secs(10))
                    .expect("watermarks");
                (p, low, high)
            })
            .collect()
    }

    pub fn target(&self) -> BrokerTarget {
        BrokerTarget::Embedded(Arc::clone(&self.broker))
    }

    /// Produces one record and returns (partition, offset).
    pub async fn produce(
        &self,
        topic: &str,
        key: &str,
        body: &[u8],
        headers: &[(&str, &str)],
    ) -> (i32, i64) {
        let mut h = OwnedHeaders::new();
        for (k, v) in headers {
            h = h.insert(Header {
                key: k,
                value: Some(*v),
            });
        }
        let record = FutureRecord::to(topic).key(key).payload(body).headers(h);
        let d = self
            .producer
            .send(record, Duration::from_secs(10))
            .await
            .map_err(|(e, _)| e)
            .expect("produce");
        (d.partition, d.offset)
    }

    /// Produces many records concurrently (order within a key is kept by
    /// librdkafka's queue).
    pub async fn produce_many(&self, topic: &str, records: &[(String, Vec<u8>)]) {
        let futures: Vec<_> = records
            .iter()
            .map(|(key, body)| {
                let record = FutureRecord::to(topic)
                    .key(key.as_str())
                    .payload(body.as_slice());
                self.producer.send(record, Duration::from_secs(30))
            })
            .collect();
        for r in futures::future::join_all(futures).await {
            r.map_err(|(e, _)| e).expect("produce");
        }
    }

    /// Every record of `topic` from the beginning (reads until quiet).
    pub fn read_all(&self, topic: &str) -> Vec<DlqRecord> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("group.id", format!("reader-{}", rand::random::<u64>()))
            .set("enable.auto.commit", "false")
            .create()
            .expect("reader");
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        let mut tpl = TopicPartitionList::new();
        let mut expected = 0i64;
        for t in md.topics() {
            for p in t.partitions() {
                let (low, high) = consumer
                    .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
                    .expect("watermarks");
                expected += high - low;
                tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                    .unwrap();
            }
        }
        consumer.assign(&tpl).expect("assign");
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while (out.len() as i64) < expected && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
                let headers = m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| {
                                (
                                    h.key.to_string(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(DlqRecord {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    value: m.payload().unwrap_or_default().to_vec(),
                    headers,
                });
            }
        }
        out
    }

    /// (committed, end) offset per partition of `topic` for the instances
    /// whose `kafka.group_id` is `group` (retry tiers are read in the group
    /// `<group>.retry`).
    pub fn committed_vs_end(&self, group: &str, topic: &str) -> Vec<(i32, i64, i64)> {
        let group = if topic.contains(".retry.") {
            hookstream::source::consumer::retry_group(group)
        } else {
            group.to_string()
        };
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", self.bootstrap())
            .set("group.id", &group)
            .create()
            .expect("offset reader");
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        let mut tpl = TopicPartitionList::new();
        for t in md.topics() {
            for p in t.partitions() {
                tpl.add_partition(topic, p.id());
            }
        }
        let committed = consumer
            .committed_offsets(tpl, Duration::from_secs(10))
            .expect("committed offsets");
        committed
            .elements()
            .iter()
            .map(|e| {
                let (_, high) = consumer
                    .fetch_watermarks(topic, e.partition(), Duration::from_secs(10))
                    .expect("watermarks");
                let c = match e.offset() {
                    Offset::Offset(o) => o,
                    _ => -1,
                };
                (e.partition(), c, high)
            })
            .collect()
    }
}

impl Cluster {
    /// Whether `group` committed the end offset of every non-empty partition
    /// of `topic`.
    pub fn offsets_at_end(&self, group: &str, topic: &str) -> bool {
        self.committed_vs_end(group, topic)
            .iter()
            .all(|(_, committed, end)| *end == 0 || committed == end)
    }
}

/// A record read back from a topic.
#[derive(Debug, Clone)]
pub struct DlqRecord {
    pub partition: i32,
    /// Its offset (a deferral batch's entries share the batch's).
    pub offset: i64,
    pub key: Option<String>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

impl DlqRecord {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The retries a retry-tier record holds: itself, or the entries of a
    /// deferral batch (each as the single record it stands for, on the
    /// batch's partition).
    pub fn retries(&self) -> Vec<DlqRecord> {
        if self.header("hookstream-batch").is_none() {
            return vec![self.clone()];
        }
        let entries = hookstream::wire::batch::decode(&self.value).expect("a readable batch");
        entries
            .into_iter()
            .map(|e| DlqRecord {
                partition: self.partition,
                offset: self.offset,
                key: e.key.map(|k| String::from_utf8_lossy(k).into_owned()),
                value: self.value[e.value].to_vec(),
                headers: e
                    .headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v).into_owned()))
                    .collect(),
            })
            .collect()
    }
}

impl Cluster {
    /// Every retry on retry tier `topic`, deferral batches read entry by
    /// entry.
    pub fn read_retries(&self, topic: &str) -> Vec<DlqRecord> {
        self.read_all(topic)
            .iter()
            .flat_map(DlqRecord::retries)
            .collect()
    }
}

/// `n` Mender status events `evt-<from..to>` for 13 devices, keyed by device.
pub fn status_events(from: usize, to: usize) -> Vec<(String, Vec<u8>)> {
    (from..to)
        .map(|i| {
            (
                format!("dev-{}", i % 13),
                format!(
                    r#"{{"id":"evt-{i}","type":"device-status-changed","data":{{"id":"dev-{}"}}}}"#,
                    i % 13
                )
                .into_bytes(),
            )
        })
        .collect()
}

/// `n` Mender provisioning events `<prefix>-<i>` for devices `d<i>`.
pub fn provisioned_events(prefix: &str, n: usize) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            (
                format!("d{i}"),
                format!(
                    r#"{{"id":"{prefix}-{i}","type":"device-provisioned","data":{{"id":"d{i}"}}}}"#
                )
                .into_bytes(),
            )
        })
        .collect()
}

/// A recording receiver.
pub async fn receiver(behaviour: Behaviour) -> Receiver {
    Receiver::start(ReceiverSpec {
        behaviour,
        verify_with: None,
        record: true,
    })
    .await
    .expect("receiver")
}

/// A test configuration against the embedded broker.
pub fn config(group: &str, topics: &[(&str, Preset)]) -> Config {
    let mut c = Config::default();
    c.kafka.brokers = hookstream::config::EMBEDDED_BROKERS.into();
    c.kafka.group_id = group.into();
    c.kafka.topics = topics.iter().map(|(t, _)| t.to_string()).collect();
    c.kafka.commit_interval = HumanDuration::from_millis(200);
    c.kafka.embedded_partitions = 4;
    c.topics.partitions = 2;
    c.delivery.allow_private_destinations = true;
    c.delivery.timeout = HumanDuration::from_secs(5);
    c.delivery.drain_timeout = HumanDuration::from_secs(5);
    // Short tiers and backoff so retries happen within a test.
    c.topics.retry_tiers = vec![
        HumanDuration::from_millis(100),
        HumanDuration::from_millis(500),
        HumanDuration::from_secs(2),
    ];
    c.delivery.backoff.initial = HumanDuration::from_millis(100);
    c.delivery.backoff.max = HumanDuration::from_secs(2);
    c.delivery.max_attempts = 3;
    c.metrics.listen = String::new();
    // The mock cluster waits a session timeout less a second for members
    // to rejoin at every rebalance round (a cooperative rebalance has
    // two): short sessions keep tests with several members quick.
    for (key, value) in [
        ("session.timeout.ms", "3000"),
        ("heartbeat.interval.ms", "500"),
    ] {
        c.kafka.consumer.insert(
            key.into(),
            hookstream::config::PropertyValue::Text(value.into()),
        );
    }
    c.sources = topics
        .iter()
        .map(|(t, p)| SourceConfig::for_preset(*t, *p))
        .collect();
    c
}

/// An endpoint to `url` for `events`, signed with `scheme`/`secret`.
pub fn endpoint(
    id: &str,
    url: String,
    events: &[&str],
    scheme: &str,
    secret: &str,
) -> EndpointConfig {
    let mut e = EndpointConfig::new(id, url);
    e.events = events.iter().map(|s| s.to_string()).collect();
    e.signature = hookstream::sign::SignatureScheme::parse(scheme).expect("scheme");
    e.secret = (scheme != "none").then(|| secret.into());
    e.allow_http = true;
    e
}

/// A URL on 127.0.0.1 where nothing listens: every connection is refused.
pub fn refused_url(path: &str) -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("an ephemeral port")
        .port();
    format!("http://127.0.0.1:{port}/{path}")
}

/// Settings for a test with an endpoint on a dead host: its circuit
/// half-opens every 300 ms, and the probes (which use attempts) never
/// exhaust an event while the test looks at the tiers.
pub fn probe_a_dead_host_often(config: &mut Config) {
    config.delivery.max_attempts = 1_000;
    config.delivery.backoff.max = HumanDuration::from_millis(300);
}

pub async fn start(config: Config, cluster: &Cluster) -> Pipeline {
    log_if_asked();
    Pipeline::start(config, cluster.target())
        .await
        .expect("pipeline starts")
}

/// Logs to stderr when `TEST_LOG` is set (a `RUST_LOG`-style filter), for
/// looking into a failing test.
pub fn log_if_asked() {
    if let Ok(filter) = std::env::var("TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// Waits until `done()` or panics after `timeout` with `what`.
pub async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Verifies a recorded request with an HMAC computed here, independently of
/// hookstream's signer.
pub fn independently_verified(scheme: &str, secret: &str, req: &ReceivedRequest) -> bool {
    type H = Hmac<Sha256>;
    let mac_hex = |key: &[u8], body: &[u8]| {
        let mut m = <H as KeyInit>::new_from_slice(key).unwrap();
        m.update(body);
        hex::encode(m.finalize().into_bytes())
    };
    match scheme {
        "standard" => {
            let key = base64::engine::general_purpose::STANDARD
                .decode(secret.trim_start_matches("whsec_"))
                .unwrap();
            let (Some(id), Some(ts), Some(sig)) = (
                req.header("webhook-id"),
                req.header("webhook-timestamp"),
                req.header("webhook-signature"),
            ) else {
                return false;
            };
            let mut m = <H as KeyInit>::new_from_slice(&key).unwrap();
            m.update(format!("{id}.{ts}.").as_bytes());
            m.update(&req.body);
            let expected = format!(
                "v1,{}",
                base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
            );
            sig.split(' ').any(|s| s == expected)
        }
        "mender" => {
            req.header("x-men-algorithm") == Some("MEN-HMAC-SHA256-Payload")
                && req.header("x-men-signature")
                    == Some(mac_hex(&hex::decode(secret).unwrap(), &req.body).as_str())
        }
        "openmdm" => {
            req.header("x-openmdm-signature")
                == Some(format!("sha256={}", mac_hex(secret.as_bytes(), &req.body)).as_str())
                && req.header("x-openmdm-delivery") == openmdm_delivery_id(req).as_deref()
        }
        "github" => {
            req.header("x-hub-signature-256")
                == Some(format!("sha256={}", mac_hex(secret.as_bytes(), &req.body)).as_str())
                && req.header("x-github-delivery") == req.header("webhook-id")
        }
        "none" => req.header("webhook-signature").is_none(),
        _ => false,
    }
}

/// What OpenMDM's `X-OpenMDM-Delivery` should be: the event's `id` (a
/// single event), else the `webhook-id` (a batch, or an event without one).
fn openmdm_delivery_id(req: &ReceivedRequest) -> Option<String> {
    serde_json::from_slice::<serde_json::Value>(&req.body)
        .ok()
        .and_then(|v| v.get("id").and_then(|id| id.as_str()).map(str::to_string))
        .or_else(|| req.header("webhook-id").map(str::to_string))
}

/// Counts of requests per value of a JSON field in the bodies.
pub fn bodies_by(reqs: &[ReceivedRequest], pointer: &str) -> HashMap<String, usize> {
    let mut out = HashMap::new();
    for r in reqs {
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON body");
        let key = match v.pointer(pointer) {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        };
        *out.entry(key).or_default() += 1;
    }
    out
}

/// A Kafka record batch (v2) as written to a ProduceRequest, built here
/// from the public protocol, not with librdkafka: `records` are encoded
/// plainly, and `codec` (attributes bits 0–2) says how they are
/// compressed, whatever they are. A codec that does not match the bytes
/// makes a batch no consumer can read, which the broker stores anyway (it
/// does not decompress what it is given).
pub fn record_batch(codec: i16, records: &[(&str, &[u8])]) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, v: i64) {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        while z >= 0x80 {
            out.push((z as u8) | 0x80);
            z >>= 7;
        }
        out.push(z as u8);
    }
    let mut body = Vec::new();
    for (i, (key, value)) in records.iter().enumerate() {
        let mut r = vec![0u8]; // attributes
        varint(&mut r, 0); // timestamp delta
        varint(&mut r, i as i64); // offset delta
        varint(&mut r, key.len() as i64);
        r.extend_from_slice(key.as_bytes());
        varint(&mut r, value.len() as i64);
        r.extend_from_slice(value);
        varint(&mut r, 0); // headers
        varint(&mut body, r.len() as i64);
        body.extend_from_slice(&r);
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    // From attributes to the end: what the CRC covers.
    let mut tail = Vec::new();
    tail.extend_from_slice(&codec.to_be_bytes());
    tail.extend_from_slice(&(records.len() as i32 - 1).to_be_bytes()); // last offset delta
    tail.extend_from_slice(&now.to_be_bytes()); // base timestamp
    tail.extend_from_slice(&now.to_be_bytes()); // max timestamp
    tail.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    tail.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    tail.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    tail.extend_from_slice(&(records.len() as i32).to_be_bytes());
    tail.extend_from_slice(&body);
    let mut batch = Vec::new();
    batch.extend_from_slice(&0i64.to_be_bytes()); // base offset (the broker assigns it)
    batch.extend_from_slice(&((4 + 1 + 4 + tail.len()) as i32).to_be_bytes()); // batch length
    batch.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    batch.push(2); // magic
    batch.extend_from_slice(&crc32c(&tail).to_be_bytes());
    batch.extend_from_slice(&tail);
    batch
}

/// CRC-32C (Castagnoli), as record batches use.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

impl Cluster {
    /// Writes `batch` to `topic`/`partition` with a ProduceRequest (v3,
    /// `acks=-1`) sent over TCP to the (single) broker, and returns the
    /// base offset the broker gave it.
    pub fn produce_raw(&self, topic: &str, partition: i32, batch: &[u8]) -> i64 {
        use std::io::{Read, Write};
        let addr = self.bootstrap().split(',').next().unwrap().to_string();
        let mut body = Vec::new();
        body.extend_from_slice(&0i16.to_be_bytes()); // api key: Produce
        body.extend_from_slice(&3i16.to_be_bytes()); // api version
        body.extend_from_slice(&7i32.to_be_bytes()); // correlation id
        let client = b"hookstream-test";
        body.extend_from_slice(&(client.len() as i16).to_be_bytes());
        body.extend_from_slice(client);
        body.extend_from_slice(&(-1i16).to_be_bytes()); // transactional id: null
        body.extend_from_slice(&(-1i16).to_be_bytes()); // acks: all
        body.extend_from_slice(&10_000i32.to_be_bytes()); // timeout ms
        body.extend_from_slice(&1i32.to_be_bytes()); // one topic
        body.extend_from_slice(&(topic.len() as i16).to_be_bytes());
        body.extend_from_slice(topic.as_bytes());
        body.extend_from_slice(&1i32.to_be_bytes()); // one partition
        body.extend_from_slice(&partition.to_be_bytes());
        body.extend_from_slice(&(batch.len() as i32).to_be_bytes());
        body.extend_from_slice(batch);
        let mut stream = std::net::TcpStream::connect(&addr).expect("connect to the broker");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
            .write_all(&(body.len() as i32).to_be_bytes())
            .unwrap();
        stream.write_all(&body).unwrap();
        let mut size = [0u8; 4];
        stream.read_exact(&mut size).expect("a produce response");
        let mut response = vec![0u8; i32::from_be_bytes(size) as usize];
        stream.read_exact(&mut response).unwrap();
        // correlation id, #topics, topic name, #partitions, partition,
        // error code, base offset.
        let mut at = 4 + 4;
        let name_len = i16::from_be_bytes([response[at], response[at + 1]]) as usize;
        at += 2 + name_len + 4 + 4;
        let error = i16::from_be_bytes([response[at], response[at + 1]]);
        assert_eq!(error, 0, "the broker refused the batch");
        at += 2;
        i64::from_be_bytes(response[at..at + 8].try_into().unwrap())
    }
}

/// Asserts that `shown` (an endpoint as the API answers it) was disabled by
/// hookstream itself: `enabled` false, `disabled.cause` = `cause`, a reason
/// mentioning `reason_has`, and the time in RFC 3339 UTC.
#[allow(dead_code)]
pub fn assert_disabled_by_hookstream(shown: &serde_json::Value, cause: &str, reason_has: &str) {
    assert_eq!(shown["enabled"], false, "{shown}");
    assert_eq!(shown["disabled"]["cause"], cause, "{shown}");
    assert!(
        shown["disabled"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains(reason_has)),
        "the reason mentions {reason_has:?}: {shown}"
    );
    assert!(
        shown["disabled"]["at"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{shown}"
    );
}
