//! Unit tests of the index: matching by type, restriction and pattern.

use super::*;
use crate::config::EndpointConfig;
use std::time::Duration;

fn ep(id: &str, events: &[&str], f: impl FnOnce(&mut EndpointConfig)) -> Arc<Endpoint> {
    let mut c = EndpointConfig::new(id, "https://hooks.example.com/");
    c.events = events.iter().map(|s| s.to_string()).collect();
    f(&mut c);
    Arc::new(Endpoint::build(c, false, Duration::from_secs(1), &|_| None).unwrap())
}

fn ids(index: &EndpointIndex, key: RouteKey<'_>) -> Vec<String> {
    let mut out = Vec::new();
    index.matches(&key, &mut out);
    let mut ids: Vec<String> = out
        .iter()
        .map(|s| index.endpoint(*s).id().to_string())
        .collect();
    ids.sort();
    ids
}

fn key(t: &str) -> RouteKey<'_> {
    RouteKey {
        event_type: t,
        ..RouteKey::default()
    }
}

#[test]
fn a_device_bucket_matches_the_same_whether_its_patterns_are_scanned_or_hashed() {
    // One device; its endpoints' patterns grow past SCAN_PATTERNS one
    // at a time, so the bucket goes from a scanned slice to hash maps.
    // After every step every endpoint matches exactly what it should.
    let device = |c: &mut EndpointConfig| c.devices = vec!["dev-1".into()];
    let mut endpoints = Vec::new();
    for i in 0..(SCAN_PATTERNS + 4) {
        // Exact `type-i` and the glob `type-i*`: the same text, two
        // patterns.
        endpoints.push(ep(
            &format!("exact-{i:02}"),
            &[&format!("type-{i}")],
            device,
        ));
        endpoints.push(ep(
            &format!("glob-{i:02}"),
            &[&format!("type-{i}*")],
            device,
        ));
        let index = EndpointIndex::new(endpoints.clone());
        for j in 0..=i {
            let at = |t: &str| {
                ids(
                    &index,
                    RouteKey {
                        event_type: t,
                        device: Some("dev-1"),
                        ..RouteKey::default()
                    },
                )
            };
            let exact = format!("type-{j}");
            // `type-1` is also a prefix of `type-10`, `type-11`: every
            // glob whose text starts the type matches.
            let mut expected = vec![format!("exact-{j:02}")];
            expected.extend(
                (0..=i)
                    .filter(|g| exact.starts_with(&format!("type-{g}")))
                    .map(|g| format!("glob-{g:02}")),
            );
            expected.sort();
            assert_eq!(
                at(&exact),
                expected,
                "{exact} with {} endpoints",
                2 * (i + 1)
            );
            let longer = format!("type-{j}-x");
            let globs: Vec<String> = (0..=i)
                .filter(|g| longer.starts_with(&format!("type-{g}")))
                .map(|g| format!("glob-{g:02}"))
                .collect();
            assert_eq!(at(&longer), globs, "{longer}: globs only");
        }
        let other = RouteKey {
            event_type: "type-0",
            device: Some("dev-2"),
            ..RouteKey::default()
        };
        assert!(
            ids(&index, other).is_empty(),
            "another device matches nothing"
        );
    }
}

#[test]
fn exact_prefix_and_wildcard() {
    let index = EndpointIndex::new(vec![
        ep("exact", &["device-provisioned"], |_| {}),
        ep("prefix", &["device-*"], |_| {}),
        ep("dot", &["object.*"], |_| {}),
        ep("all", &["*"], |_| {}),
        ep("both", &["device-provisioned", "device-*"], |_| {}),
    ]);
    assert_eq!(
        ids(&index, key("device-provisioned")),
        ["all", "both", "exact", "prefix"]
    );
    assert_eq!(
        ids(&index, key("device-decommissioned")),
        ["all", "both", "prefix"]
    );
    assert_eq!(ids(&index, key("object.update")), ["all", "dot"]);
    assert_eq!(ids(&index, key("devices-inventory-changed")), ["all"]);
    assert_eq!(ids(&index, key("dev")), ["all"]);
}

#[test]
fn endpoints_gone_never_match_but_are_found_by_id_and_disabled_ones_keep_matching() {
    let index = EndpointIndex::new(vec![
        ep("gone", &["*"], |c| {
            c.enabled = false;
            c.disabled = Some(Box::new(crate::config::DisabledBy {
                reason: "the endpoint answered 410 Gone".into(),
                at: "2026-01-01T00:00:00Z".into(),
                cause: crate::config::DisableCause::Gone,
            }));
        }),
        ep("paused", &["*"], |c| c.enabled = false),
    ]);
    assert_eq!(
        ids(&index, key("x")),
        ["paused"],
        "its deliveries wait for it on a tier"
    );
    assert!(index.get("gone").is_some());
    assert!(index.get("nope").is_none());
}

#[test]
fn device_group_and_tenant_restrictions() {
    let index = EndpointIndex::new(vec![
        ep("dev", &["*"], |c| {
            c.devices = vec!["d1".into(), "d2".into()]
        }),
        ep("grp", &["device-*"], |c| c.groups = vec!["g1".into()]),
        ep("ten", &["*"], |c| c.tenant = "t1".into()),
        ep("dev-and-tenant", &["*"], |c| {
            c.devices = vec!["d1".into()];
            c.tenant = "t2".into();
        }),
    ]);
    let k = |device, group, tenant| RouteKey {
        event_type: "device-x",
        device,
        group,
        tenant,
    };
    assert_eq!(ids(&index, k(Some("d1"), None, None)), ["dev"]);
    assert_eq!(
        ids(&index, k(Some("d2"), Some("g1"), Some("t1"))),
        ["dev", "grp", "ten"]
    );
    assert_eq!(
        ids(&index, k(Some("d1"), None, Some("t2"))),
        ["dev", "dev-and-tenant"]
    );
    assert!(ids(&index, k(Some("d9"), Some("g9"), Some("t9"))).is_empty());
}

#[test]
fn agrees_with_a_full_scan() {
    let types = [
        "device-provisioned",
        "device-decommissioned",
        "object.update",
        "temperature",
        "security.tamper",
    ];
    let mut endpoints = Vec::new();
    for i in 0..300 {
        let pattern = match i % 5 {
            0 => "*".to_string(),
            1 => types[i % types.len()].to_string(),
            2 => "device-*".to_string(),
            3 => format!("{}*", &types[i % types.len()][..3]),
            _ => "object.*".to_string(),
        };
        let device = format!("d{}", i % 7);
        endpoints.push(ep(&format!("e{i}"), &[pattern.as_str()], |c| {
            if i % 3 == 0 {
                c.devices = vec![device];
            }
            if i % 4 == 0 {
                c.groups = vec!["g1".into()];
            }
            if i % 5 == 1 {
                c.tenant = "t1".into();
            }
        }));
    }
    let index = EndpointIndex::new(endpoints.clone());
    for t in types {
        for d in ["d0", "d3", "none"] {
            for (g, tenant) in [
                (Some("g1"), None),
                (None, Some("t1")),
                (Some("g1"), Some("t1")),
            ] {
                let key = RouteKey {
                    event_type: t,
                    device: Some(d),
                    group: g,
                    tenant,
                };
                let mut expected: Vec<String> = endpoints
                    .iter()
                    .filter(|e| e.matches_type(t) && e.admits(&key))
                    .map(|e| e.id().to_string())
                    .collect();
                expected.sort();
                assert_eq!(ids(&index, key), expected, "{t} {d} {g:?}");
            }
        }
    }
}
