//! `hookstream demo`: everything embedded, end to end.
//!
//! Starts the embedded broker, four sample receivers (healthy, flaky, one
//! that answers 400, a slow one) with endpoints of different signature
//! schemes, a generator of fleet events, and the real pipeline. Shows
//! progress, then accounts for every event per endpoint: delivered (a
//! receiver verified its signature and answered 2xx) or dead-lettered (read
//! back from the DLQ topic).

pub mod generator;
pub mod receiver;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::cmd::CommandError;
use crate::config::{Config, EndpointConfig, HumanDuration, SourceConfig};
use crate::deliver::request::webhook_id;
use crate::index::endpoint::pattern_matches;
use crate::kafka::EmbeddedBroker;
use crate::pipeline::{BrokerTarget, Pipeline};
use crate::sign::SignatureScheme;
use crate::source::extract::coordinates_id;
use crate::wire::headers::header;
use generator::{FleetGenerator, TOPICS};
use receiver::{Behaviour, Receiver, ReceiverSpec};

/// A demo endpoint and the receiver behind it.
struct DemoEndpoint {
    id: &'static str,
    scheme: SignatureScheme,
    secret: &'static str,
    events: &'static [&'static str],
    behaviour: Behaviour,
    label: &'static str,
}

const ENDPOINTS: [DemoEndpoint; 4] = [
    DemoEndpoint {
        id: "analytics",
        scheme: SignatureScheme::Standard,
        secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        events: &["*"],
        behaviour: Behaviour::Healthy,
        label: "healthy",
    },
    DemoEndpoint {
        id: "mender-iot",
        scheme: SignatureScheme::Mender,
        secret: "a3f1c2d4e5f60718293a4b5c6d7e8f90",
        events: &["device-*", "devices-*"],
        behaviour: Behaviour::Flaky(0.05),
        label: "flaky (503 on 5%)",
    },
    DemoEndpoint {
        id: "soc-alerts",
        scheme: SignatureScheme::Openmdm,
        secret: "openmdm-demo-secret",
        events: &["security.*", "device-decommissioned"],
        behaviour: Behaviour::Status(400),
        label: "rejects (400)",
    },
    DemoEndpoint {
        id: "ticketing",
        scheme: SignatureScheme::Github,
        secret: "It's a Secret to Everybody",
        events: &[
            "create",
            "update",
            "delete",
            "device.enrolled",
            "temperature",
        ],
        behaviour: Behaviour::Slow(Duration::from_millis(150)),
        label: "slow (150 ms)",
    },
];

/// What the demo expects and what it observed, per endpoint.
#[derive(Default)]
struct Ledger {
    expected: HashMap<&'static str, HashSet<String>>,
    dead: HashMap<String, HashSet<String>>,
    dead_invalid: usize,
    reasons: HashMap<String, usize>,
}

/// Runs the demo: `events` events at `rate` per second (0 = unthrottled).
pub async fn run(events: u64, rate: f64) -> Result<(), CommandError> {
    if !(rate >= 0.0 && rate.is_finite()) {
        return Err(CommandError::Usage("--rate: must be a number >= 0".into()));
    }
    run_demo(events, rate).await.map_err(CommandError::Runtime)
}

fn free_port() -> Option<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .ok()
        .and_then(|l| l.local_addr().ok())
        .map(|a| a.port())
}

async fn run_demo(events: u64, rate: f64) -> Result<()> {
    let broker = Arc::new(EmbeddedBroker::start(1)?);
    println!("hookstream demo");
    println!("  embedded broker   {}", broker.bootstrap_servers());
    let mut receivers = Vec::new();
    for ep in &ENDPOINTS {
        let r = Receiver::start(ReceiverSpec {
            behaviour: ep.behaviour,
            verify_with: Some((ep.scheme, ep.secret.to_string())),
            record: false,
        })
        .await?;
        println!(
            "  receiver {:<11} {} — {}, {} signatures",
            ep.id,
            r.url("hooks"),
            ep.label,
            ep.scheme
        );
        receivers.push(r);
    }
    let mut config = Config::default();
    config.kafka.brokers = crate::config::EMBEDDED_BROKERS.into();
    config.kafka.group_id = "hookstream-demo".into();
    config.kafka.topics = TOPICS.iter().map(|t| t.name.to_string()).collect();
    config.kafka.commit_interval = HumanDuration::from_millis(500);
    config.kafka.embedded_partitions = 4;
    config.topics.partitions = 2;
    config.delivery.allow_private_destinations = true;
    config.delivery.timeout = HumanDuration::from_secs(5);
    config.delivery.drain_timeout = HumanDuration::from_secs(10);
    config.sources = TOPICS
        .iter()
        .map(|t| SourceConfig::for_preset(t.name, t.preset))
        .collect();
    config.endpoints = ENDPOINTS
        .iter()
        .zip(&receivers)
        .map(|(ep, r)| {
            let mut c = EndpointConfig::new(ep.id, r.url("hooks"));
            c.events = ep.events.iter().map(|s| s.to_string()).collect();
            c.signature = ep.scheme;
            c.secret = Some(ep.secret.into());
            c.allow_http = true;
            c
        })
        .collect();
    if let Some(port) = free_port() {
        let listen = format!("127.0.0.1:{port}");
        crate::metrics::install_exporter(&listen)?;
        println!("  metrics           http://{listen}/metrics");
    }
    let group = config.kafka.group_id.clone();
    let input_topics = config.kafka.topics.clone();
    let dlq_topic = config.topics.dlq_topic();
    let api_token = format!("demo-{}", hex::encode(rand::random::<[u8; 12]>()));
    if let Some(port) = free_port() {
        config.api.listen = format!("127.0.0.1:{port}");
        config.api.tokens = vec![crate::config::TokenConfig {
            token_file: None,
            token_env: None,
            token: Some(api_token.clone()),
            role: crate::config::Role::Admin,
        }];
    } else {
        config.api.listen = String::new();
    }
    let service =
        crate::cmd::run::Service::start(config, BrokerTarget::Embedded(Arc::clone(&broker)))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    if let Some(addr) = service.api_addr() {
        println!(
            "  API               http://{addr}/v1/endpoints  (Authorization: Bearer {api_token})"
        );
    }
    let pipeline = service.pipeline();

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop_reader = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = spawn_dlq_reader(
        broker.bootstrap_servers(),
        &dlq_topic,
        Arc::clone(&ledger),
        Arc::clone(&stop_reader),
    )?;

    // Produce.
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap_servers())
        .set("linger.ms", "5")
        .create()
        .context("creating the demo producer")?;
    let mut generator = FleetGenerator::new(200);
    generator.malformed_every = 500;
    let started = Instant::now();
    let mut invalid_produced = 0usize;
    let mut last_report = Instant::now();
    let mut table = ProgressTable::new();
    println!(
        "\nproducing {events} fleet events{}…",
        if rate > 0.0 {
            format!(" at {rate}/s")
        } else {
            String::new()
        }
    );
    // Sends are awaited in groups so the producer can batch; the ledger
    // learns each event's id (coordinates for Magistrala/CMDB) on delivery.
    let mut in_flight = Vec::new();
    for i in 0..events {
        if rate > 0.0 {
            let due = started + Duration::from_secs_f64(i as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let ev = generator.next_event();
        let record = FutureRecord::to(TOPICS[ev.topic].name)
            .key(&ev.key)
            .payload(&ev.body);
        let delivery = producer
            .send_result(record)
            .map_err(|(e, _)| anyhow::anyhow!("producing a demo event: {e}"))?;
        in_flight.push((ev, delivery));
        if in_flight.len() >= 64 || i + 1 == events {
            for (ev, delivery) in in_flight.drain(..) {
                let (partition, offset) = match delivery.await {
                    Ok(Ok(d)) => (d.partition, d.offset),
                    Ok(Err((e, _))) => anyhow::bail!("producing a demo event: {e}"),
                    Err(_) => anyhow::bail!("producing a demo event: the producer went away"),
                };
                match &ev.event_type {
                    None => invalid_produced += 1,
                    Some(t) => expect(&ledger, &ev, t, partition, offset),
                }
            }
        }
        if last_report.elapsed() >= Duration::from_millis(500) {
            last_report = Instant::now();
            table.draw(started, pipeline, &ledger, false);
        }
    }
    println!(
        "produced {events} events ({invalid_produced} malformed) in {:.1}s; waiting for every event to be accounted for…",
        started.elapsed().as_secs_f64()
    );
    table.forget_drawn();

    let deadline = Instant::now() + Duration::from_secs(60);
    let accounted = loop {
        let done = all_accounted(&receivers, &ledger, invalid_produced);
        if done || Instant::now() > deadline {
            break done;
        }
        if last_report.elapsed() >= Duration::from_millis(500) {
            last_report = Instant::now();
            table.draw(started, pipeline, &ledger, false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    table.draw(started, pipeline, &ledger, true);
    let stats = Arc::clone(pipeline.stats());
    service.shutdown().await?;
    stop_reader.store(true, Ordering::SeqCst);
    let _ = reader.await;
    let offsets_ok = committed_at_end(broker.bootstrap_servers(), &group, &input_topics)?;

    println!("\nsummary ({:.1}s)", started.elapsed().as_secs_f64());
    println!(
        "  {:<11} {:<9} {:>8} {:>10} {:>13} {:>10} {:>14}",
        "endpoint",
        "scheme",
        "expected",
        "delivered",
        "dead-lettered",
        "accounted",
        "signatures ok"
    );
    let mut bad_signatures = 0;
    let l = ledger
        .lock()
        .map_err(|_| anyhow::anyhow!("ledger poisoned"))?;
    for (ep, r) in ENDPOINTS.iter().zip(&receivers) {
        let empty = HashSet::new();
        let expected = l.expected.get(ep.id).unwrap_or(&empty);
        let accepted = r
            .log()
            .accepted
            .lock()
            .map(|a| a.clone())
            .unwrap_or_default();
        let dead = l.dead.get(ep.id).cloned().unwrap_or_default();
        let delivered = expected.iter().filter(|id| accepted.contains(*id)).count();
        let dead_n = expected
            .iter()
            .filter(|id| dead.contains(*id) && !accepted.contains(*id))
            .count();
        bad_signatures += r.log().bad_signatures.load(Ordering::Relaxed);
        println!(
            "  {:<11} {:<9} {:>8} {:>10} {:>13} {:>10} {:>14}",
            ep.id,
            ep.scheme.name(),
            expected.len(),
            delivered,
            dead_n,
            format!("{}/{}", delivered + dead_n, expected.len()),
            format!(
                "{}/{}",
                r.log().verified.load(Ordering::Relaxed),
                r.log().requests.load(Ordering::Relaxed)
            ),
        );
    }
    println!(
        "  invalid events dead-lettered: {}/{invalid_produced}",
        l.dead_invalid
    );
    let mut reasons: Vec<_> = l.reasons.iter().collect();
    reasons.sort();
    println!(
        "  dead letters by reason: {}",
        reasons
            .iter()
            .map(|(r, n)| format!("{r}={n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "  consumed {} records, {} offset commits; committed offsets at the end of every input partition: {}",
        stats.consumed.load(Ordering::Relaxed),
        stats.commits.load(Ordering::Relaxed),
        if offsets_ok { "yes" } else { "NO" }
    );
    if accounted && bad_signatures == 0 && offsets_ok {
        println!("every event accounted for.");
        Ok(())
    } else {
        anyhow::bail!(
            "not every event was accounted for (accounted: {accounted}, bad signatures: {bad_signatures}, offsets at end: {offsets_ok})"
        )
    }
}

/// Records which endpoints expect `ev` (by webhook-id).
fn expect(
    ledger: &Mutex<Ledger>,
    ev: &generator::GeneratedEvent,
    event_type: &str,
    partition: i32,
    offset: i64,
) {
    let topic = TOPICS[ev.topic];
    let event_id = match topic.preset {
        crate::source::extract::Preset::Magistrala | crate::source::extract::Preset::Cmdb => {
            coordinates_id(&crate::source::extract::Coordinates {
                topic: topic.name,
                partition,
                offset,
            })
        }
        _ => serde_json::from_slice::<serde_json::Value>(&ev.body)
            .ok()
            .and_then(|v| v["id"].as_str().map(str::to_string))
            .unwrap_or_default(),
    };
    if let Ok(mut l) = ledger.lock() {
        for ep in &ENDPOINTS {
            if ep.events.iter().any(|p| pattern_matches(p, event_type)) {
                l.expected
                    .entry(ep.id)
                    .or_default()
                    .insert(webhook_id(&event_id, ep.id));
            }
        }
    }
}

fn all_accounted(receivers: &[Receiver], ledger: &Mutex<Ledger>, invalid: usize) -> bool {
    let Ok(l) = ledger.lock() else {
        return false;
    };
    if l.dead_invalid < invalid {
        return false;
    }
    ENDPOINTS.iter().zip(receivers).all(|(ep, r)| {
        let Some(expected) = l.expected.get(ep.id) else {
            return true;
        };
        let accepted = match r.log().accepted.lock() {
            Ok(a) => a,
            Err(_) => return false,
        };
        let dead = l.dead.get(ep.id);
        expected
            .iter()
            .all(|id| accepted.contains(id) || dead.is_some_and(|d| d.contains(id)))
    })
}

/// The live per-endpoint table: redrawn in place on a terminal, printed as
/// periodic lines otherwise.
struct ProgressTable {
    terminal: bool,
    drawn_lines: usize,
    last_delivered: Vec<u64>,
    last_at: Instant,
    last_line: Instant,
}

impl ProgressTable {
    fn new() -> Self {
        use std::io::IsTerminal;
        Self {
            terminal: std::io::stdout().is_terminal(),
            drawn_lines: 0,
            last_delivered: vec![0; ENDPOINTS.len()],
            last_at: Instant::now(),
            last_line: Instant::now(),
        }
    }

    /// Other output was printed below the table: draw a fresh one next.
    fn forget_drawn(&mut self) {
        self.drawn_lines = 0;
    }

    fn draw(&mut self, started: Instant, pipeline: &Pipeline, ledger: &Mutex<Ledger>, force: bool) {
        if !self.terminal && !force && self.last_line.elapsed() < Duration::from_secs(3) {
            return;
        }
        self.last_line = Instant::now();
        let elapsed = self.last_at.elapsed().as_secs_f64().max(0.001);
        self.last_at = Instant::now();
        let stats = pipeline.stats();
        let mut lines = vec![
            format!(
                "[{:>5.1}s] consumed {} events ({} retries read back, {} invalid)",
                started.elapsed().as_secs_f64(),
                stats.consumed.load(Ordering::Relaxed),
                stats.retries_consumed.load(Ordering::Relaxed),
                stats.invalid.load(Ordering::Relaxed)
            ),
            format!(
                "  {:<11} {:>9} {:>9} {:>13} {:>9} {:>9}",
                "endpoint", "delivered", "retrying", "dead-lettered", "p99 ms", "rate/s"
            ),
        ];
        let l = ledger.lock().ok();
        for (i, ep) in ENDPOINTS.iter().enumerate() {
            let s = pipeline.registry().activity(ep.id).stats();
            let expected = l
                .as_ref()
                .and_then(|l| l.expected.get(ep.id).map(HashSet::len))
                .unwrap_or(0) as u64;
            let dead = l
                .as_ref()
                .and_then(|l| l.dead.get(ep.id).map(HashSet::len))
                .unwrap_or(0) as u64;
            let retrying =
                (s.retry_scheduled + s.deferred).min(expected.saturating_sub(s.delivered + dead));
            let rate = (s.delivered - self.last_delivered[i].min(s.delivered)) as f64 / elapsed;
            self.last_delivered[i] = s.delivered;
            lines.push(format!(
                "  {:<11} {:>9} {:>9} {:>13} {:>9.0} {:>9.0}",
                ep.id, s.delivered, retrying, dead, s.latency_p99_ms, rate
            ));
        }
        let mut out = String::new();
        if self.terminal && self.drawn_lines > 0 {
            out.push_str(&format!("\x1b[{}A", self.drawn_lines));
        }
        for line in &lines {
            if self.terminal {
                out.push_str("\x1b[2K");
            }
            out.push_str(line);
            out.push('\n');
        }
        self.drawn_lines = lines.len();
        print!("{out}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
    }
}

fn spawn_dlq_reader(
    bootstrap: &str,
    topic: &str,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Result<tokio::task::JoinHandle<()>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "hookstream-demo-dlq-reader")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .context("creating the DLQ reader")?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .context("reading DLQ metadata")?;
    let mut tpl = TopicPartitionList::new();
    for t in metadata.topics() {
        for p in t.partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .context("assigning the DLQ")?;
        }
    }
    consumer.assign(&tpl).context("assigning the DLQ")?;
    Ok(tokio::task::spawn_blocking(move || {
        while !stop.load(Ordering::Relaxed) {
            let Some(Ok(msg)) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let mut endpoint = None;
            let mut event_id = None;
            let mut reason = String::new();
            if let Some(headers) = msg.headers() {
                for h in headers.iter() {
                    let v = String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned();
                    match h.key {
                        header::ENDPOINT => endpoint = Some(v),
                        header::EVENT_ID => event_id = Some(v),
                        header::REASON => reason = v,
                        _ => {}
                    }
                }
            }
            let Ok(mut l) = ledger.lock() else {
                return;
            };
            *l.reasons.entry(reason.clone()).or_default() += 1;
            match (endpoint, event_id) {
                (Some(ep), Some(id)) => {
                    let wid = webhook_id(&id, &ep);
                    l.dead.entry(ep).or_default().insert(wid);
                }
                _ if reason == "invalid_event" => l.dead_invalid += 1,
                _ => {}
            }
        }
    }))
}

/// Whether the group's committed offsets equal the end of every partition.
fn committed_at_end(bootstrap: &str, group: &str, topics: &[String]) -> Result<bool> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .context("creating the offset checker")?;
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        for t in metadata.topics() {
            for p in t.partitions() {
                tpl.add_partition(topic, p.id());
            }
        }
    }
    let committed = consumer.committed_offsets(tpl, Duration::from_secs(10))?;
    for e in committed.elements() {
        let (_, high) =
            consumer.fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(10))?;
        let at = match e.offset() {
            Offset::Offset(o) => o,
            _ => 0,
        };
        if at != high {
            tracing::warn!(
                topic = e.topic(),
                partition = e.partition(),
                committed = at,
                end = high,
                "committed offset is not at the end"
            );
            return Ok(false);
        }
    }
    Ok(true)
}
