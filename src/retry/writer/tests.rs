//! State transitions of the outcome writer's delivery reports: stored,
//! refused for size, unknown partition, resend pauses.

use super::report::{resend_delay, with_note};
use super::*;
use crate::wire::headers::header;
use rdkafka::message::{Header, Headers};

#[test]
fn a_note_joins_the_last_error_and_keeps_every_other_header() {
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "hookstream-endpoint",
            value: Some("ep"),
        })
        .insert(Header {
            key: header::LAST_ERROR,
            value: Some("HTTP 503"),
        });
    let noted = with_note(&headers, "value omitted");
    let pairs: Vec<(String, Vec<u8>)> = noted
        .iter()
        .map(|h| (h.key.to_string(), h.value.unwrap_or_default().to_vec()))
        .collect();
    assert_eq!(
        pairs,
        vec![
            ("hookstream-endpoint".to_string(), b"ep".to_vec()),
            (
                header::LAST_ERROR.to_string(),
                b"HTTP 503; value omitted".to_vec()
            ),
        ]
    );
    let bare = with_note(&OwnedHeaders::new(), "value omitted");
    assert_eq!(bare.get(0).value, Some(&b"value omitted"[..]));
}

use std::sync::Arc;

use crate::wire::headers::History;

use super::super::records::Deferral;

/// A delivery-report context whose resends land in the returned channel.
fn context() -> (WriteContext, mpsc::UnboundedReceiver<Resend>) {
    let (resend, resent) = mpsc::unbounded_channel();
    let context = WriteContext {
        resend,
        dead_since_summary: Arc::new(Mutex::new(BTreeMap::new())),
        last_warning: Mutex::new(None),
    };
    (context, resent)
}

fn event(offset: i64) -> Payload {
    Payload::test_input(1, offset, "{\"id\":\"e\"}")
}

/// A completion that records what it was told.
fn recorder() -> (Completion, Arc<Mutex<Vec<Stored>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let into = seen.clone();
    let done: Completion = Box::new(move |stored| into.lock().unwrap().push(stored));
    (done, seen)
}

fn retry_write(tier: usize, done: Completion) -> (OwnedHeaders, Write) {
    let history = History {
        endpoint: "ep",
        attempt: 2,
        first_ms: 1_000,
        last_status: "503",
        last_error: "HTTP 503",
    };
    super::super::records::single_retry(tier, event(7), &history, 9_000, done)
}

fn header_of(headers: &OwnedHeaders, key: &str) -> Option<String> {
    headers
        .iter()
        .find(|h| h.key == key)
        .map(|h| String::from_utf8_lossy(h.value.unwrap_or_default()).into_owned())
}

fn too_large() -> KafkaError {
    KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge)
}

#[test]
fn a_stored_write_tells_its_completion_where_it_is() {
    let (context, _) = context();
    let (done, seen) = recorder();
    context.stored(retry_write(1, done).1);
    let (done, dead) = recorder();
    let mut dlq = retry_write(0, done).1;
    dlq.target = Target::Dlq;
    dlq.reason = Some(Reason::Exhausted);
    context.stored(dlq);
    assert!(matches!(
        seen.lock().unwrap()[..],
        [Stored::Retry { tier: 1 }]
    ));
    assert!(matches!(dead.lock().unwrap()[..], [Stored::DeadLetter]));
    assert_eq!(
        context.dead_since_summary.lock().unwrap().get("exhausted"),
        Some(&1),
        "dead letters are counted for the summary by reason"
    );
}

#[test]
fn a_stored_deferral_batch_settles_every_entry() {
    let (context, _) = context();
    let mut batch = DeferralBatch::new(0, Arc::from("ep"));
    let mut seen = Vec::new();
    for offset in 0..3 {
        let (done, s) = recorder();
        seen.push(s);
        batch.add(Deferral {
            event: event(offset),
            attempt: 1,
            first_ms: 1_000,
            due_ms: 6_000,
            why: "circuit open",
            done,
        });
    }
    context.stored(Write {
        target: Target::Tier(0),
        payload: Body::Deferrals(Box::new(batch)),
        reason: None,
        failures: 0,
        partition: Some(0),
    });
    for s in seen {
        assert!(matches!(s.lock().unwrap()[..], [Stored::Retry { tier: 0 }]));
    }
}

#[test]
fn a_retry_too_large_for_its_tier_is_dead_lettered_as_exhausted_at_once() {
    let (context, mut resent) = context();
    let (done, seen) = recorder();
    let (headers, write) = retry_write(2, done);
    context.failed(Box::new(write), Some(headers), &too_large(), "t.retry.5m");
    let r = resent.try_recv().expect("resent");
    assert_eq!(r.delay, Duration::ZERO);
    assert_eq!(r.write.target, Target::Dlq);
    assert_eq!(r.write.reason, Some(Reason::Exhausted));
    let headers = r.headers.expect("headers kept");
    assert_eq!(
        header_of(&headers, header::REASON).as_deref(),
        Some("exhausted")
    );
    assert!(header_of(&headers, header::DEAD_MS).is_some());
    assert_eq!(header_of(&headers, header::ENDPOINT).as_deref(), Some("ep"));
    assert!(seen.lock().unwrap().is_empty(), "not settled before stored");
}

#[test]
fn a_dead_letter_too_large_for_the_dlq_goes_without_its_value() {
    let (context, mut resent) = context();
    let (done, _) = recorder();
    let (headers, mut write) = retry_write(0, done);
    write.target = Target::Dlq;
    context.failed(Box::new(write), Some(headers), &too_large(), "t.dlq");
    let r = resent.try_recv().expect("resent");
    assert_eq!(r.write.target, Target::Dlq);
    assert!(matches!(
        r.write.payload,
        Body::One {
            with_value: false,
            ..
        }
    ));
    let error = header_of(&r.headers.expect("headers"), header::LAST_ERROR).unwrap();
    assert!(error.contains("too large for the DLQ topic"), "{error}");
    // Refused again without a value: an ordinary failure, paused.
    let (headers, write) = (OwnedHeaders::new(), r.write);
    context.failed(write, Some(headers), &too_large(), "t.dlq");
    let again = resent.try_recv().expect("resent again");
    assert_eq!(again.write.failures, 1);
    assert_eq!(again.delay, resend_delay(1));
}

#[test]
fn a_deferral_batch_too_large_for_its_tier_goes_as_single_records() {
    let (context, mut resent) = context();
    let mut batch = DeferralBatch::new(1, Arc::from("ep"));
    for offset in 0..3 {
        batch.add(Deferral {
            event: event(offset),
            attempt: 1,
            first_ms: 1_000,
            due_ms: 6_000 + offset,
            why: "circuit open",
            done: Box::new(|_| {}),
        });
    }
    let write = Write {
        target: Target::Tier(1),
        payload: Body::Deferrals(Box::new(batch)),
        reason: None,
        failures: 0,
        partition: Some(4),
    };
    context.failed(Box::new(write), None, &too_large(), "t.retry.1m");
    let mut dues = Vec::new();
    while let Ok(r) = resent.try_recv() {
        assert_eq!(r.write.target, Target::Tier(1));
        assert_eq!(
            r.write.partition,
            Some(4),
            "on the endpoint's partition still"
        );
        assert!(matches!(
            r.write.payload,
            Body::One {
                with_value: true,
                ..
            }
        ));
        dues.push(header_of(&r.headers.expect("headers"), header::DUE_MS).unwrap());
    }
    assert_eq!(dues, ["6000", "6001", "6002"]);
}

#[test]
fn an_unknown_partition_is_placed_by_key_once_then_paused() {
    let (context, mut resent) = context();
    let (done, _) = recorder();
    let (headers, mut write) = retry_write(0, done);
    write.partition = Some(9);
    let unknown = KafkaError::MessageProduction(RDKafkaErrorCode::UnknownPartition);
    context.failed(Box::new(write), Some(headers), &unknown, "t.retry.5s");
    let r = resent.try_recv().expect("resent");
    assert_eq!((r.write.partition, r.delay), (None, Duration::ZERO));
    context.failed(r.write, r.headers, &unknown, "t.retry.5s");
    let r = resent.try_recv().expect("resent");
    assert_eq!((r.write.failures, r.delay), (1, resend_delay(1)));
    let timeout = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
    context.failed(r.write, r.headers, &timeout, "t.retry.5s");
    let r = resent.try_recv().expect("resent");
    assert_eq!((r.write.failures, r.delay), (2, resend_delay(2)));
    assert_eq!(
        r.write.target,
        Target::Tier(0),
        "an ordinary failure changes nothing else"
    );
}

#[test]
fn resend_pauses_double_up_to_ten_seconds() {
    assert_eq!(resend_delay(1), Duration::from_millis(100));
    assert_eq!(resend_delay(2), Duration::from_millis(200));
    assert_eq!(resend_delay(5), Duration::from_millis(1600));
    assert_eq!(resend_delay(8), Duration::from_secs(10));
    assert_eq!(resend_delay(100), Duration::from_secs(10));
}

/// A writer closed with [`OutcomeWriter::closed`] and then dropped closes
/// its producer at once: no thread of it keeps talking to a broker that the
/// caller may stop next (the bench and the tests stop theirs right after a
/// pipeline's shutdown, which logged "all brokers down" from a producer
/// that outlived its pipeline).
#[tokio::test]
async fn a_closed_writer_lets_go_of_its_producer_when_dropped() {
    let broker = crate::kafka::EmbeddedBroker::start(1).unwrap();
    let config = Config::default();
    let tiers = RetryTiers::new(&config.topics.retry_tiers, |t| config.topics.retry_topic(t));
    for topic in tiers.topics() {
        broker.create_topic(topic, 2).unwrap();
    }
    let writer = OutcomeWriter::start(
        &config,
        broker.bootstrap_servers(),
        config.topics.dlq_topic(),
        tiers,
    )
    .await
    .unwrap();
    assert!(
        writer
            .inner
            .tier_partitions
            .iter()
            .all(|c| c.load(Ordering::Relaxed) == 2),
        "the tiers' partitions are learnt before start returns"
    );
    let producer = Arc::downgrade(&writer.inner.producer);
    writer.closed().await;
    drop(writer);
    assert!(
        producer.upgrade().is_none(),
        "the producer is closed when the last writer is dropped"
    );
}
