//! Payload filters: a 3-clause filter (equality, a number range, a header
//! set) evaluated on an event's tape, and the same with the parse included
//! (what the dispatcher pays when the extractor's tape is not at hand).

use criterion::{Criterion, criterion_group, criterion_main};
use hookstream::index::filter::{Filter, FilterParser};
use hookstream::samples::SAMPLES;

fn bench(c: &mut Criterion) {
    let body = SAMPLES
        .iter()
        .find(|(n, _)| *n == "mender-device-status-changed.json")
        .map(|(_, b)| b.trim().as_bytes())
        .expect("sample");
    let filter = Filter::compile(&serde_json::json!({
        "body": { "type": "device-status-changed", "data.status": { "$in": ["accepted", "pending"] } },
        "headers": { "origin": { "$in": ["edge-1", "edge-2"] } }
    }))
    .expect("compiles");
    let header = |name: &str| (name == "origin").then_some(&b"edge-2"[..]);
    let mut parser = FilterParser::default();
    let mut group = c.benchmark_group("filter");
    group.bench_function("3 clauses on a parsed tape", |b| {
        parser.with_body(body, |root| {
            let root = root.expect("json");
            b.iter(|| filter.matches(root, &header))
        })
    });
    group.bench_function("parse + 3 clauses", |b| {
        b.iter(|| {
            parser.with_body(body, |root| {
                root.is_some_and(|r| filter.matches(r, &header))
            })
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
