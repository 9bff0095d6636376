//! Unit tests of extraction: the presets against the shared sample events, pointers and their errors.
use super::*;

const COORDS: Coordinates<'static> = Coordinates {
    topic: "device-events",
    partition: 3,
    offset: 42,
};

fn no_headers(_: &str) -> Option<&'static [u8]> {
    None
}

fn run(preset: Preset, body: &str) -> Fields {
    Extractor::preset(preset)
        .extract(body.as_bytes(), &no_headers, &COORDS, 1 << 20)
        .unwrap()
}

fn sample(name: &str) -> &'static str {
    crate::samples::SAMPLES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, body)| *body)
        .unwrap()
}

#[test]
fn mender_samples() {
    let e = run(Preset::Mender, sample("mender-device-provisioned.json"));
    assert_eq!(e.id(), "5a0c6a0e-7d2b-4a53-9a6e-1d2f8c9b0a11");
    assert_eq!(e.event_type(), "device-provisioned");
    assert_eq!(e.device(), Some("769e5a83-259c-4506-ab05-9c2564f196fd"));
    assert_eq!(e.time_ms, Some(1_663_063_427_746));
    let e = run(
        Preset::Mender,
        sample("mender-devices-inventory-changed.json"),
    );
    assert_eq!(e.event_type(), "devices-inventory-changed");
    assert_eq!(e.device(), Some("1c251e63-ca93-41e2-ae39-97f402d93dd3"));
    assert_eq!(e.tenant(), Some("66ff8a4650829de3d99a25f1"));
    let e = run(Preset::Mender, sample("mender-device-decommissioned.json"));
    assert_eq!(e.event_type(), "device-decommissioned");
    assert_eq!(e.tenant(), None);
    let e = run(Preset::Mender, sample("mender-device-status-changed.json"));
    assert_eq!(e.id(), "e57adf60-5d8c-4c66-802a-e0c5f643102a");
}

#[test]
fn openmdm_samples() {
    let e = run(Preset::Openmdm, sample("openmdm-device-enrolled.json"));
    assert_eq!(e.id(), "7f3e9c20-9a8f-4e2a-8e29-4b5f0a3c0d10");
    assert_eq!(e.event_type(), "device.enrolled");
    assert_eq!(e.device(), Some("dev_123"));
    assert_eq!(e.time_ms, Some(1_776_254_400_000));
    let e = run(Preset::Openmdm, sample("openmdm-security-tamper.json"));
    assert_eq!(e.event_type(), "security.tamper");
    let e = run(
        Preset::Openmdm,
        r#"{"id":"x","event":"a.b","data":{"deviceId":"d9"}}"#,
    );
    assert_eq!(e.device(), Some("d9"));
}

#[test]
fn magistrala_sample_uses_subtopic_and_coordinate_id() {
    let e = run(Preset::Magistrala, sample("magistrala-message.json"));
    assert_eq!(e.event_type(), "temperature");
    assert_eq!(e.device(), Some("a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"));
    assert_eq!(e.id(), coordinates_id(&COORDS));
    assert_eq!(e.time_ms, Some(1_776_254_400_000));
    let e = run(Preset::Magistrala, r#"{"publisher":"p","created":1}"#);
    assert_eq!(e.event_type(), "message.published");
}

#[test]
fn cmdb_sample_prefixes_the_event() {
    let e = run(Preset::Cmdb, sample("cmdb-object-updated.json"));
    assert_eq!(e.event_type(), "update");
    assert_eq!(e.device(), Some("4711"));
    assert_eq!(e.id(), coordinates_id(&COORDS));
    assert_eq!(e.time_ms, Some(1_776_255_000_000));
}

#[test]
fn cloudevents_headers_win_over_body() {
    let body =
        r#"{"id":"body-id","type":"body.type","subject":"s1","time":"2026-01-01T00:00:00Z"}"#;
    let e = run(Preset::Cloudevents, body);
    assert_eq!((e.id(), e.event_type()), ("body-id", "body.type"));
    assert_eq!(e.device(), Some("s1"));
    fn headers(name: &str) -> Option<&'static [u8]> {
        match name {
            "ce_id" => Some(b"hdr-id"),
            "ce_type" => Some(b"com.fleet.device.enrolled"),
            "ce_subject" => Some(b"dev-7"),
            _ => None,
        }
    }
    let e = Extractor::preset(Preset::Cloudevents)
        .extract(body.as_bytes(), &headers, &COORDS, 1 << 20)
        .unwrap();
    assert_eq!(e.id(), "hdr-id");
    assert_eq!(e.event_type(), "com.fleet.device.enrolled");
    assert_eq!(e.device(), Some("dev-7"));
}

#[test]
fn custom_pointers_and_headers() {
    let source = SourceConfig {
        topic: "t".into(),
        preset: Preset::Custom,
        id: Some("/meta/uuid".into()),
        event_type: Some("header:kind".into()),
        device: Some("/devices/0/sn".into()),
        group: Some("/a~1b".into()),
        tenant: None,
        time: Some("/ts".into()),
    };
    let mut ex = Extractor::from_config(&source).unwrap();
    fn headers(name: &str) -> Option<&'static [u8]> {
        (name == "kind").then_some(b"custom.kind")
    }
    let body = r#"{"meta":{"uuid":"u1"},"devices":[{"sn":"SN1"}],"a/b":"g1","ts":1700000000}"#;
    let e = ex
        .extract(body.as_bytes(), &headers, &COORDS, 1 << 20)
        .unwrap();
    assert_eq!(e.id(), "u1");
    assert_eq!(e.event_type(), "custom.kind");
    assert_eq!(e.device(), Some("SN1"));
    assert_eq!(e.group(), Some("g1"));
    assert_eq!(e.time_ms, Some(1_700_000_000_000));
}

#[test]
fn group_comes_from_the_record_header_by_default() {
    fn headers(name: &str) -> Option<&'static [u8]> {
        (name == "group").then_some(b"fleet-eu")
    }
    let e = Extractor::preset(Preset::Mender)
        .extract(br#"{"type":"x"}"#, &headers, &COORDS, 1 << 20)
        .unwrap();
    assert_eq!(e.group(), Some("fleet-eu"));
}

#[test]
fn custom_without_type_is_a_config_error() {
    let source = SourceConfig::for_preset("t", Preset::Custom);
    assert_eq!(Extractor::from_config(&source).unwrap_err().0, "type");
    let bad = SourceConfig {
        event_type: Some("type".into()),
        ..source
    };
    assert_eq!(Extractor::from_config(&bad).unwrap_err().0, "type");
}

#[test]
fn invalid_events_say_why() {
    let mut ex = Extractor::preset(Preset::Mender);
    let go = |ex: &mut Extractor, b: &[u8]| ex.extract(b, &no_headers, &COORDS, 64).unwrap_err();
    assert_eq!(go(&mut ex, b""), InvalidEvent::Empty);
    assert!(matches!(
        go(&mut ex, b"{not json"),
        InvalidEvent::NotJson(_)
    ));
    assert_eq!(
        go(&mut ex, br#"{"id":"1"}"#),
        InvalidEvent::NoType("/type".into())
    );
    assert!(matches!(
        go(&mut ex, &[b' '; 65]),
        InvalidEvent::TooLarge { size: 65, max: 64 }
    ));
}

#[test]
fn a_type_that_is_not_a_string_is_invalid() {
    let mut ex = Extractor::preset(Preset::Mender);
    let go = |ex: &mut Extractor, b: &str| ex.extract(b.as_bytes(), &no_headers, &COORDS, 1 << 20);
    for (body, found) in [
        (r#"{"id":"1","type":42}"#, "a number"),
        (r#"{"id":"1","type":4.5}"#, "a number"),
        (r#"{"id":"1","type":true}"#, "a boolean"),
        (r#"{"id":"1","type":["a"]}"#, "an array"),
        (r#"{"id":"1","type":{"a":"b"}}"#, "an object"),
    ] {
        let invalid = go(&mut ex, body).unwrap_err();
        assert_eq!(
            invalid,
            InvalidEvent::TypeNotString {
                at: "/type".into(),
                found
            },
            "{body}"
        );
        assert_eq!(
            invalid.to_string(),
            format!("the event type at /type is {found}, not a string")
        );
    }
    // Absent, null or empty: no type.
    for body in [
        r#"{"id":"1"}"#,
        r#"{"id":"1","type":null}"#,
        r#"{"id":"1","type":""}"#,
    ] {
        assert_eq!(
            go(&mut ex, body).unwrap_err(),
            InvalidEvent::NoType("/type".into()),
            "{body}"
        );
    }
    // A string type is what the platforms send: kept as it is.
    assert_eq!(go(&mut ex, r#"{"type":"42"}"#).unwrap().event_type(), "42");
    // Every preset: OpenMDM's `event`, CloudEvents' body `type`, CMDB's
    // `event`, Magistrala's `subtopic` (a null one falls back to its
    // default type).
    for (preset, body, at) in [
        (Preset::Openmdm, r#"{"event":7}"#, "/event"),
        (Preset::Cloudevents, r#"{"type":false}"#, "/type"),
        (Preset::Cmdb, r#"{"event":1}"#, "/event"),
        (Preset::Magistrala, r#"{"subtopic":1}"#, "/subtopic"),
    ] {
        let invalid = Extractor::preset(preset)
            .extract(body.as_bytes(), &no_headers, &COORDS, 1 << 20)
            .unwrap_err();
        assert!(
            matches!(&invalid, InvalidEvent::TypeNotString { at: a, .. } if a == at),
            "{preset:?}: {invalid:?}"
        );
    }
    let e = run(Preset::Magistrala, r#"{"subtopic":null,"publisher":"p"}"#);
    assert_eq!(e.event_type(), "message.published");
}

#[test]
fn the_original_bytes_are_untouched() {
    let body = br#"{"type":"a\"b","id":"x\u0041"}"#.to_vec();
    let copy = body.clone();
    let e = Extractor::preset(Preset::Mender)
        .extract(&body, &no_headers, &COORDS, 1 << 20)
        .unwrap();
    assert_eq!(e.event_type(), "a\"b");
    assert_eq!(e.id(), "xA");
    assert_eq!(body, copy);
}

/// Every file in the shared sample folder extracts with the preset its
/// name starts with (runs when `../shared` is beside the checkout), and the
/// copies built into the binary are identical to it.
#[test]
fn every_shared_sample_extracts() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/sample-events");
    let mut files: Vec<(String, String)> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(Result::ok)
            .map(|e| {
                let name = e.file_name().to_string_lossy().to_string();
                (name, std::fs::read_to_string(e.path()).unwrap())
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    for (name, body) in &files {
        let embedded = sample(name);
        assert_eq!(
            embedded.trim(),
            body.trim(),
            "{name} differs from the built-in copy"
        );
    }
    if files.is_empty() {
        files = crate::samples::SAMPLES
            .iter()
            .map(|(n, b)| (n.to_string(), b.to_string()))
            .collect();
    }
    assert_eq!(files.len(), 8);
    for (name, body) in files {
        let preset = match name.split('-').next().unwrap() {
            "mender" => Preset::Mender,
            "openmdm" => Preset::Openmdm,
            "magistrala" => Preset::Magistrala,
            "cmdb" => Preset::Cmdb,
            other => panic!("no preset for {other}"),
        };
        let e = run(preset, &body);
        assert!(!e.event_type().is_empty() && !e.id().is_empty(), "{name}");
        assert!(e.device().is_some(), "{name} has a device");
        assert!(e.time_ms.is_some(), "{name} has a time");
    }
}
