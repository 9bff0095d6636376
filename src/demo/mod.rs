//! `hookstream demo`: everything embedded, end to end.
//!
//! Starts the embedded broker, four sample receivers (healthy, flaky, one
//! that answers 400, a slow one) with endpoints of different signature
//! schemes, a generator of fleet events, and the real pipeline. Shows
//! progress, then accounts for every event per endpoint: delivered (a
//! receiver verified its signature and answered 2xx) or dead-lettered (read
//! back from the DLQ topic).

pub mod generator;
mod ledger;
mod progress;
pub mod receiver;

use ledger::{Ledger, all_accounted, committed_at_end, expect, spawn_dlq_reader};
use progress::ProgressTable;

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::ClientConfig;

use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::cmd::CommandError;
use crate::config::{Config, EndpointConfig, HumanDuration, SourceConfig};
use crate::kafka::EmbeddedBroker;
use crate::pipeline::BrokerTarget;
use crate::sign::SignatureScheme;
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

/// The demo from start to verdict: receivers, the service, the events,
/// then the accounting.
async fn run_demo(events: u64, rate: f64) -> Result<()> {
    let broker = Arc::new(EmbeddedBroker::start(1)?);
    println!("hookstream demo");
    println!("  embedded broker   {}", broker.bootstrap_servers());
    let receivers = start_receivers().await?;
    let mut config = demo_config(&receivers);
    let api_token = expose(&mut config)?;
    let group = config.kafka.group_id.clone();
    let input_topics = config.kafka.topics.clone();
    let dlq_topic = config.topics.dlq_topic();
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

    let started = Instant::now();
    let mut table = ProgressTable::new();
    let invalid_produced = produce(
        broker.bootstrap_servers(),
        events,
        rate,
        &ledger,
        |ledger: &Mutex<Ledger>| table.draw(started, pipeline, ledger, false),
    )
    .await?;
    println!(
        "produced {events} events ({invalid_produced} malformed) in {:.1}s; waiting for every event to be accounted for…",
        started.elapsed().as_secs_f64()
    );
    table.forget_drawn();

    let accounted = wait_accounted(
        &receivers,
        &ledger,
        invalid_produced,
        &mut table,
        started,
        pipeline,
    )
    .await;
    let stats = Arc::clone(pipeline.stats());
    service.shutdown().await?;
    stop_reader.store(true, Ordering::SeqCst);
    let _ = reader.await;
    let offsets_ok = committed_at_end(broker.bootstrap_servers(), &group, &input_topics)?;

    println!("\nsummary ({:.1}s)", started.elapsed().as_secs_f64());
    let bad_signatures = print_summary(&receivers, &ledger, invalid_produced)?;
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

/// Waits (at most a minute, drawing progress) until every event is
/// accounted for; says whether it is.
async fn wait_accounted(
    receivers: &[Receiver],
    ledger: &Mutex<Ledger>,
    invalid_produced: usize,
    table: &mut ProgressTable,
    started: Instant,
    pipeline: &crate::pipeline::Pipeline,
) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut last_report = Instant::now();
    let accounted = loop {
        let done = all_accounted(receivers, ledger, invalid_produced);
        if done || Instant::now() > deadline {
            break done;
        }
        if last_report.elapsed() >= Duration::from_millis(500) {
            last_report = Instant::now();
            table.draw(started, pipeline, ledger, false);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    table.draw(started, pipeline, ledger, true);
    accounted
}

/// Starts one verifying receiver per demo endpoint and prints where.
async fn start_receivers() -> Result<Vec<Receiver>> {
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
    Ok(receivers)
}

/// The service's configuration: the embedded broker, the sample topics
/// with their presets, and the demo endpoints on `receivers`.
fn demo_config(receivers: &[Receiver]) -> Config {
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
        .zip(receivers)
        .map(|(ep, r)| {
            let mut c = EndpointConfig::new(ep.id, r.url("hooks"));
            c.events = ep.events.iter().map(|s| s.to_string()).collect();
            c.signature = ep.scheme;
            c.secret = Some(ep.secret.into());
            c.allow_http = true;
            c
        })
        .collect();
    config
}

/// Puts `/metrics` and the management API on free loopback ports (prints
/// the metrics address) and returns the API's admin token.
fn expose(config: &mut Config) -> Result<String> {
    if let Some(port) = free_port() {
        let listen = format!("127.0.0.1:{port}");
        crate::metrics::install_exporter(&listen)?;
        println!("  metrics           http://{listen}/metrics");
    }
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
    Ok(api_token)
}

/// Produces `events` fleet events at `rate` per second (0: unthrottled),
/// telling the ledger which endpoints expect each, and calls `progress`
/// every half second. Returns how many malformed events it produced.
async fn produce(
    bootstrap: &str,
    events: u64,
    rate: f64,
    ledger: &Mutex<Ledger>,
    mut progress: impl FnMut(&Mutex<Ledger>),
) -> Result<usize> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .create()
        .context("creating the demo producer")?;
    let mut generator = FleetGenerator::new(200);
    generator.malformed_every = 500;
    let started = Instant::now();
    let mut invalid_produced = 0usize;
    let mut last_report = Instant::now();
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
                    Some(t) => expect(ledger, &ev, t, partition, offset),
                }
            }
        }
        if last_report.elapsed() >= Duration::from_millis(500) {
            last_report = Instant::now();
            progress(ledger);
        }
    }
    Ok(invalid_produced)
}

/// Prints, per endpoint, what was expected, delivered and dead-lettered,
/// and the dead letters by reason. Returns how many requests failed their
/// signature check at the receivers.
fn print_summary(receivers: &[Receiver], ledger: &Mutex<Ledger>, invalid: usize) -> Result<u64> {
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
    for (ep, r) in ENDPOINTS.iter().zip(receivers) {
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
        "  invalid events dead-lettered: {}/{invalid}",
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
    Ok(bad_signatures)
}
