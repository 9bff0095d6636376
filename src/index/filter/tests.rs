//! Unit tests of the payload filter: operators, compilation errors naming the field, header and body clauses.
use super::*;
use serde_json::json;

const EVENT: &str = r#"{"type":"device.status","data":{"status":"accepted","battery":17,
        "model":"rpi4-b","tags":["a","b"],"ok":true,"none":null}}"#;

fn check(spec: serde_json::Value, headers: &[(&str, &str)]) -> bool {
    let filter = Filter::compile(&spec).expect("compiles");
    let mut parser = FilterParser::default();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_bytes())
    };
    parser.with_body(EVENT.as_bytes(), |root| {
        filter.matches(root.expect("json"), &header)
    })
}

#[test]
fn every_operator_on_body_and_headers_decides_as_documented() {
    #[rustfmt::skip]
        let table: Vec<(serde_json::Value, bool)> = vec![
            (json!({"body": {"data.status": "accepted"}}), true),
            (json!({"body": {"data.status": "rejected"}}), false),
            (json!({"body": {"data.status": {"$neq": "rejected"}}}), true),
            (json!({"body": {"data.battery": {"$lt": 20}}}), true),
            (json!({"body": {"data.battery": {"$gte": 17, "$lte": 17}}}), true),
            (json!({"body": {"data.battery": {"$gt": 17}}}), false),
            (json!({"body": {"data.battery": 17.0}}), true),
            (json!({"body": {"data.status": {"$in": ["accepted", "pending"]}}}), true),
            (json!({"body": {"data.status": {"$nin": ["accepted"]}}}), false),
            (json!({"body": {"data.missing": {"$exists": false}}}), true),
            (json!({"body": {"data.missing": {"$neq": 1}}}), true),
            (json!({"body": {"data.missing": {"$eq": null}}}), false),
            (json!({"body": {"data.none": null}}), true),
            (json!({"body": {"data.ok": true}}), true),
            (json!({"body": {"data.tags.1": "b"}}), true),
            (json!({"body": {"data.tags": "a"}}), false),
            (json!({"body": {"data.model": {"$regex": "^rpi[0-9]"}}}), true),
            (json!({"body": {"data.battery": {"$regex": "1"}}}), false),
            (json!({"body": {"data.status": {"$gt": "a"}}}), true),
            (json!({"body": {"$or": [{"data.status": "x"}, {"data.battery": {"$lt": 50}}]}}), true),
            (json!({"body": {"$and": [{"data.status": "accepted"}, {"data.ok": false}]}}), false),
            (json!({"headers": {"source": "mender"}}), true),
            (json!({"headers": {"source": {"$in": ["openmdm"]}}}), false),
            (json!({"headers": {"priority": {"$gt": 3}}}), true),
            (json!({"headers": {"absent": {"$exists": true}}}), false),
            (json!({"body": {"data.status": "accepted"}, "headers": {"source": "cmdb"}}), false),
        ];
    for (spec, want) in table {
        let got = check(spec.clone(), &[("source", "mender"), ("priority", "5")]);
        assert_eq!(got, want, "{spec}");
    }
}

#[test]
fn mistakes_are_refused_naming_the_key() {
    let cases = [
        (json!("x"), "filter"),
        (json!({"payload": {}}), "filter.payload"),
        (json!({"body": {"a": {"$like": 1}}}), "filter.body.a.$like"),
        (
            json!({"body": {"a": {"$regex": "("}}}),
            "filter.body.a.$regex",
        ),
        (json!({"body": {"a": {"$in": 3}}}), "filter.body.a.$in"),
        (json!({"body": {"a": {"$gt": true}}}), "filter.body.a.$gt"),
        (
            json!({"body": {"a": {"$exists": 1}}}),
            "filter.body.a.$exists",
        ),
        (json!({"body": {"a..b": 1}}), "filter.body.a..b"),
        (json!({"body": {"$or": []}}), "filter.body.$or"),
        (
            json!({"body": {"$or": [{"a": {"$nope": 1}}]}}),
            "filter.body.$or[0].a.$nope",
        ),
        (json!({"body": {"a": {}}}), "filter.body.a"),
        (json!({"body": {"a": [1]}}), "filter.body.a"),
    ];
    for (spec, key) in cases {
        let err = Filter::compile(&spec).expect_err(&spec.to_string());
        assert_eq!(err.field, key, "{spec}: {}", err.message);
    }
    let many: serde_json::Map<String, serde_json::Value> = (0..=MAX_CLAUSES)
        .map(|i| (format!("f{i}"), json!(1)))
        .collect();
    let err = Filter::compile(&json!({ "body": many })).unwrap_err();
    assert_eq!(err.field, "filter");
    let mut deep = json!({"a": 1});
    for _ in 0..=MAX_DEPTH {
        deep = json!({ "$and": [deep] });
    }
    assert!(Filter::compile(&json!({ "body": deep })).is_err());
}

#[test]
fn a_body_that_is_not_json_fails_body_clauses_only() {
    let filter = Filter::compile(&json!({"body": {"a": {"$exists": false}}})).unwrap();
    let mut parser = FilterParser::default();
    let passes = parser.with_body(b"not json", |root| match root {
        Some(r) => filter.matches(r, &|_| None),
        None => empty_root(|r| filter.matches(r, &|_| None)),
    });
    assert!(passes, "a missing field does not exist");
    assert!(!filter.reads_body() || passes);
}
