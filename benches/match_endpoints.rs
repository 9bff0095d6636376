//! Endpoint matching time per event at 10, 10 000 and 100 000 endpoints:
//! a realistic mix of exact types, prefix globs, wildcards and device/group
//! restrictions, with about 1% of endpoints matching each event.

use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use hookstream::config::EndpointConfig;
use hookstream::index::{Endpoint, EndpointIndex, RouteKey};

const TYPES: [&str; 10] = [
    "device-provisioned",
    "device-decommissioned",
    "device-status-changed",
    "devices-inventory-changed",
    "device.enrolled",
    "security.tamper",
    "object.update",
    "object.create",
    "temperature",
    "humidity",
];

fn endpoints(n: usize) -> Vec<Arc<Endpoint>> {
    (0..n)
        .map(|i| {
            let mut c = EndpointConfig::new(format!("ep-{i}"), "https://hooks.example.com/");
            c.events = vec![match i % 4 {
                0 => TYPES[i % TYPES.len()].to_string(),
                1 => "device-*".to_string(),
                2 => "*".to_string(),
                _ => "object.*".to_string(),
            }];
            // Most endpoints watch specific devices or groups (as in a fleet),
            // so about 1% of them match any one event.
            if i % 100 != 0 {
                if i % 2 == 0 {
                    c.devices = vec![format!("dev-{}", i % 5000)];
                } else {
                    c.groups = vec![format!("group-{}", i % 700)];
                }
            }
            Arc::new(
                Endpoint::build(c, false, Duration::from_secs(1), &|_| None).expect("endpoint"),
            )
        })
        .collect()
}

/// The `i`-th event type for device `d` in group `g`.
fn route_key<'a>(i: usize, d: &'a str, g: &'a str) -> RouteKey<'a> {
    RouteKey {
        event_type: TYPES[i % TYPES.len()],
        device: Some(d),
        group: Some(g),
        tenant: None,
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("match");
    for n in [10usize, 10_000, 100_000] {
        let index = EndpointIndex::new(endpoints(n));
        let keys: Vec<(String, String)> = (0..1024)
            .map(|i| {
                (
                    format!("dev-{}", i * 7 % 5000),
                    format!("group-{}", i * 3 % 700),
                )
            })
            .collect();
        let mut out = Vec::new();
        let mut matched = 0usize;
        for (i, (d, g)) in keys.iter().enumerate() {
            index.matches(&route_key(i, d, g), &mut out);
            matched += out.len();
        }
        eprintln!(
            "{n} endpoints: {:.2} matches per event on average",
            matched as f64 / keys.len() as f64
        );
        let mut i = 0usize;
        group.bench_with_input(BenchmarkId::from_parameter(n), &index, |b, index| {
            b.iter(|| {
                i = (i + 1) % keys.len();
                let (d, g) = &keys[i];
                index.matches(&route_key(i, d, g), &mut out);
                out.len()
            })
        });
    }
    group.finish();
}

/// SPEC scenario (d): 100 000 endpoints, 1 % of them (1 000) matching every
/// event; the rest watch other devices.
fn bench_one_percent(c: &mut Criterion) {
    let endpoints: Vec<Arc<Endpoint>> = (0..100_000)
        .map(|i| {
            let mut c = EndpointConfig::new(format!("ep-{i}"), "https://hooks.example.com/");
            c.events = vec![if i % 2 == 0 {
                "device-*".into()
            } else {
                "*".into()
            }];
            if i % 100 != 0 {
                c.devices = vec![format!("other-{i}")];
            }
            Arc::new(
                Endpoint::build(c, false, Duration::from_secs(1), &|_| None).expect("endpoint"),
            )
        })
        .collect();
    let index = EndpointIndex::new(endpoints);
    let key = RouteKey {
        event_type: "device-provisioned",
        device: Some("dev-1"),
        group: None,
        tenant: None,
    };
    let mut out = Vec::new();
    index.matches(&key, &mut out);
    assert_eq!(out.len(), 1_000);
    c.bench_function("match/100000 endpoints, 1% matching", |b| {
        b.iter(|| {
            index.matches(&key, &mut out);
            out.len()
        })
    });
}

criterion_group!(benches, bench, bench_one_percent);
criterion_main!(benches);
