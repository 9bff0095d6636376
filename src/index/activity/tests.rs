//! Unit tests of an endpoint's activity: the record's JSON, the ring and its
//! shared budget, the latency histogram.

use super::*;

fn rec(i: usize, latency_ms: f64) -> AttemptRecord {
    AttemptRecord {
        time_ms: i as i64,
        endpoint: "ep".into(),
        event_id: format!("e{i}"),
        event_type: "t".into(),
        webhook_id: format!("msg_{i}"),
        attempt: 1,
        status: Some(200),
        outcome: Outcome::Delivered,
        reason: None,
        latency_ms,
        error: String::new(),
        source: String::new(),
    }
}

#[test]
fn the_log_line_is_the_records_json() {
    let mut with_all = rec(7, 12.5);
    with_all.reason = Some("exhausted".into());
    with_all.source = "device-events/3/42".into();
    with_all.error = "HTTP 503 \"busy\"\n".into();
    for record in [rec(1, 0.25), with_all] {
        let line = serde_json::to_string(&AttemptLine::from(&record)).unwrap();
        assert_eq!(line, serde_json::to_string(&record).unwrap());
        let back: AttemptRecord = serde_json::from_str(&line).unwrap();
        assert_eq!(back, record);
    }
}

#[test]
fn the_ring_is_bounded_and_newest_first() {
    let a = EndpointActivity::default();
    for i in 0..RING_CAPACITY + 50 {
        a.record_attempt(&AttemptLine::from(&rec(i, 1.0)));
    }
    let recent = a.recent(1000);
    assert_eq!(recent.len(), RING_CAPACITY);
    assert_eq!(recent[0].event_id, format!("e{}", RING_CAPACITY + 49));
    assert_eq!(a.recent(3).len(), 3);
    assert_eq!(a.stats().attempts, (RING_CAPACITY + 50) as u64);
}

#[test]
fn a_full_ring_writes_over_its_oldest_record_exactly() {
    let a = EndpointActivity::default();
    let mut wide = rec(0, 1.0);
    wide.reason = Some("exhausted".into());
    wide.error = "e".repeat(2_000);
    wide.source = "device-events/3/42".into();
    wide.status = None;
    for _ in 0..RING_CAPACITY {
        a.record_attempt(&AttemptLine::from(&wide));
    }
    // Each later shape replaces a field's text, takes one away or adds
    // one: the ring holds each exactly as given.
    let mut later = Vec::new();
    for i in 0..RING_CAPACITY {
        let mut r = rec(i + 1, i as f64);
        match i % 3 {
            0 => {}
            1 => r.reason = Some(format!("http_{i}")),
            _ => r.error = format!("HTTP 503 #{i}"),
        }
        a.record_attempt(&AttemptLine::from(&r));
        later.push(r);
    }
    later.reverse();
    assert_eq!(a.recent(RING_CAPACITY), later);
    // The 2 000-byte error's memory did not stay with the records
    // written over it.
    let ring = crate::core::lock(&a.ring);
    assert!(ring.iter().all(|r| r.error.capacity() < 1_000));
}

#[test]
fn many_endpoints_share_one_budget_and_each_keeps_its_newest() {
    let budget = RecordBudget::new(30);
    let endpoints: Vec<EndpointActivity> = (0..4)
        .map(|_| EndpointActivity::new(Arc::clone(&budget)))
        .collect();
    for i in 0..100 {
        for a in &endpoints {
            a.record_attempt(&AttemptLine::from(&rec(i, 1.0)));
        }
    }
    let kept: Vec<usize> = endpoints.iter().map(|a| a.recent(1000).len()).collect();
    assert_eq!(kept.iter().sum::<usize>(), 30, "kept {kept:?}");
    assert!(kept.iter().all(|&k| k >= RING_FLOOR), "kept {kept:?}");
    assert_eq!(budget.retained(), 30);
    for a in &endpoints {
        assert_eq!(a.recent(1)[0].event_id, "e99", "newest first");
        assert_eq!(a.stats().attempts, 100, "counts are not budgeted");
    }
    // Past the budget, a new endpoint still keeps its floor.
    let late = EndpointActivity::new(Arc::clone(&budget));
    for i in 0..20 {
        late.record_attempt(&AttemptLine::from(&rec(i, 1.0)));
    }
    assert_eq!(late.recent(1000).len(), RING_FLOOR);
    drop(endpoints);
    assert_eq!(
        budget.retained(),
        RING_FLOOR,
        "dropped rings give their room back"
    );
}

#[test]
fn latency_counts_near_overflow_halve_and_keep_percentiles() {
    let a = EndpointActivity::default();
    // Bucket "≤ 5 ms" nine times as full as "≤ 150 ms", at the brink.
    a.latency[3].store(HALVE_AT - 1, Ordering::Relaxed);
    a.latency[12].store(HALVE_AT / 9, Ordering::Relaxed);
    a.record_attempt(&AttemptLine::from(&rec(0, 4.0)));
    a.record_attempt(&AttemptLine::from(&rec(1, 4.0)));
    let after = a.latency[3].load(Ordering::Relaxed);
    assert!(after <= HALVE_AT / 2 + 1, "halved: {after}");
    let s = a.stats();
    assert_eq!((s.latency_p50_ms, s.latency_p90_ms), (5.0, 5.0));
    assert_eq!(s.latency_p99_ms, 150.0);
}

#[test]
fn percentiles_come_from_the_histogram() {
    let a = EndpointActivity::default();
    for _ in 0..90 {
        a.record_attempt(&AttemptLine::from(&rec(0, 4.0)));
    }
    for _ in 0..9 {
        a.record_attempt(&AttemptLine::from(&rec(0, 120.0)));
    }
    a.record_attempt(&AttemptLine::from(&rec(0, 4_000.0)));
    let s = a.stats();
    assert_eq!(s.latency_p50_ms, 5.0);
    assert_eq!(s.latency_p90_ms, 5.0);
    assert_eq!(s.latency_p99_ms, 150.0);
    a.count(Outcome::Delivered, 3);
    a.count(Outcome::Deferred, 1);
    assert_eq!((a.stats().delivered, a.stats().deferred), (3, 1));
}
