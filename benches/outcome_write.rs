//! What one deferral costs: 200 000 events of a dead endpoint deferred to a
//! retry tier of the embedded broker (in this process), each completion
//! counted, as a dead endpoint's backlog is written; once through
//! `OutcomeWriter::defer` (deferral batches) and once through
//! `OutcomeWriter::retry` (one record each). Prints the CPU of the whole
//! process (writer, its report thread, the broker) per deferral and the
//! rate, for five rounds.
//!
//! `cargo bench --bench outcome_write`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hookstream::config::Config;
use hookstream::core::{
    FieldTexts, Fields, InputEvent, PartitionId, Payload, RecordHeaders, SourceRecord,
};
use hookstream::kafka::embedded::EmbeddedBroker;
use hookstream::outcome::backoff::RetryTiers;
use hookstream::retry::writer::{Completion, DeferralOf, OutcomeWriter};
use hookstream::wire::headers::History;

/// Records per round, unless `OUTCOME_WRITE_RECORDS` says otherwise.
const RECORDS: u64 = 200_000;

/// Rounds, unless `OUTCOME_WRITE_ROUNDS` says otherwise (under valgrind:
/// `OUTCOME_WRITE_ROUNDS=1`, and the difference of two record counts).
const ROUNDS: u64 = 5;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn cpu_secs() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn event(i: u64, topic: &Arc<str>) -> Payload {
    let body = format!(
        r#"{{"id":"bench-{i}","type":"device-status-changed","data":{{"id":"dev-{}","status":"accepted"}},"time":"2026-04-15T12:00:00Z"}}"#,
        i % 100_000
    );
    Payload::Input(Arc::new(InputEvent {
        record: SourceRecord {
            topic: Arc::clone(topic),
            partition: PartitionId {
                topic: 0,
                partition: (i % 16) as i32,
            },
            offset: i as i64,
            key: Some(Bytes::from(format!("dev-{}", i % 100_000))),
            body: Bytes::from(body),
            headers: RecordHeaders::default(),
            consumed_at: Instant::now(),
        },
        fields: Fields::new(
            FieldTexts {
                id: &format!("bench-{i}"),
                event_type: "device-status-changed",
                device: Some(&format!("dev-{}", i % 100_000)),
                group: None,
                tenant: None,
            },
            None,
            None,
        ),
    }))
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let broker = EmbeddedBroker::start(1)?;
        let config = Config::default();
        let tiers = RetryTiers::new(&config.topics.retry_tiers, |t| {
            config.topics.retry_topic(t)
        });
        for topic in tiers.topics() {
            broker.create_topic(topic, 16)?;
        }
        let writer = OutcomeWriter::start(
            &config,
            broker.bootstrap_servers(),
            config.topics.dlq_topic(),
            tiers,
        )
        .await?;
        let topic: Arc<str> = Arc::from("fleet.events");
        let records = setting("OUTCOME_WRITE_RECORDS", RECORDS);
        let events: Vec<Payload> = (0..records).map(|i| event(i, &topic)).collect();
        for round in 1..=setting("OUTCOME_WRITE_ROUNDS", ROUNDS) {
            for batched in [true, false] {
                // Completions hand a token to a task, as the pipeline's
                // settle hands ack tokens to its commit task.
                let stored = Arc::new(AtomicU64::new(0));
                let (acks, mut settled) = tokio::sync::mpsc::unbounded_channel::<u64>();
                let counter = Arc::clone(&stored);
                tokio::spawn(async move {
                    while settled.recv().await.is_some() {
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                });
                let (cpu, started) = (cpu_secs(), Instant::now());
                for (i, event) in events.iter().enumerate() {
                    let acks = acks.clone();
                    let token = i as u64;
                    let done: Completion = Box::new(move |_| {
                        let _ = acks.send(token);
                    });
                    if batched {
                        let deferral = DeferralOf {
                            endpoint: "dead",
                            attempt: 0,
                            first_ms: 1_776_254_400_000,
                            delay: Duration::from_secs(5),
                            due_ms: None,
                            why: "circuit open",
                        };
                        writer.defer(event, deferral, done);
                    } else {
                        let history = History {
                            endpoint: "dead",
                            attempt: 0,
                            first_ms: 1_776_254_400_000,
                            last_status: "deferred",
                            last_error: "circuit open",
                        };
                        writer.retry(event, &history, Duration::from_secs(5), done);
                    }
                }
                writer.flush_deferrals();
                while stored.load(Ordering::Relaxed) < records {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                let (cpu, secs) = (cpu_secs() - cpu, started.elapsed().as_secs_f64());
                println!(
                    "round {round}, {}: {records} deferrals stored in {secs:.2} s ({:.0}/s), {:.2} µs CPU per deferral (writer, reports, broker)",
                    if batched {
                        "batched (defer)"
                    } else {
                        "one record each (retry)"
                    },
                    records as f64 / secs,
                    cpu * 1e6 / records.max(1) as f64
                );
            }
        }
        anyhow::Ok(())
    })
}
