//! Unit tests of a prepared endpoint: matching restrictions, headers, its size.

use super::*;

#[test]
fn an_endpoint_fits_one_448_byte_allocation_with_its_arc_counts() {
    // 100 000 endpoints: 512 bytes each instead of 448 would be 6 MiB.
    let size = std::mem::size_of::<Endpoint>();
    assert!(size + 16 <= 448, "Endpoint is {size} bytes");
    let plain = Endpoint::build(base(), false, Duration::from_secs(5), &|_| None).unwrap();
    assert!(plain.uncommon.is_none(), "a plain endpoint needs no box");
    assert_eq!(plain.timeout(), Duration::from_secs(5));
}

fn base() -> EndpointConfig {
    let mut c = EndpointConfig::new("ep", "https://hooks.example.com/in");
    c.signature = SignatureScheme::Standard;
    c.secret = Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into());
    c
}

fn err(c: EndpointConfig) -> FieldError {
    validate(&c, false, &|_| None).unwrap_err()
}

#[test]
fn a_scope_files_the_endpoint_under_its_event_types() {
    let mut c = base();
    c.scope = Some(crate::config::Scope::Deviceauth);
    let e = Endpoint::build(c, false, Duration::from_secs(5), &|_| None).unwrap();
    assert_eq!(
        e.patterns(),
        [
            "device-provisioned",
            "device-decommissioned",
            "device-status-changed"
        ]
    );
    assert!(!e.matches_type("devices-inventory-changed"));
    let mut c = base();
    c.scope = Some(crate::config::Scope::Deviceauth);
    c.events = vec!["device-status-*".into()];
    let e = Endpoint::build(c, false, Duration::from_secs(5), &|_| None).unwrap();
    assert_eq!(e.patterns(), ["device-status-changed"]);
}

#[test]
fn a_good_endpoint_passes() {
    validate(&base(), false, &|_| None).unwrap();
}

#[test]
fn urls_are_checked() {
    let mut c = base();
    c.url = "ftp://x/".into();
    assert_eq!(err(c).field, "url");
    let mut c = base();
    c.url = "http://hooks.example.com/".into();
    assert!(err(c).message.contains("allow_http"));
    let mut c = base();
    c.url = "https://127.0.0.1/".into();
    assert!(err(c).message.contains("loopback"));
    let mut c = base();
    c.url = "https://2130706433/".into();
    assert!(err(c).message.contains("loopback"));
    let mut c = base();
    c.url = "https://[::ffff:127.0.0.1]/".into();
    assert!(err(c).message.contains("loopback"));
    let mut c = base();
    c.url = "https://localhost:8443/".into();
    assert!(err(c).message.contains("localhost"));
    let mut c = base();
    c.url = "https://u:p@hooks.example.com/".into();
    assert_eq!(err(c).field, "url");
}

#[test]
fn patterns_headers_and_limits_are_checked() {
    let mut c = base();
    c.events = vec!["dev*ice".into()];
    assert_eq!(err(c).field, "events[0]");
    let mut c = base();
    c.headers.insert("Content-Type".into(), "text/plain".into());
    validate(&c, false, &|_| None).expect("Content-Type may be set");
    for reserved in ["Connection", "Transfer-Encoding", "Host", "Content-Length"] {
        let mut c = base();
        c.headers.insert(reserved.into(), "x".into());
        assert!(err(c).message.contains("hop-by-hop"), "{reserved}");
    }
    for signature in [
        "X-OpenMDM-Delivery",
        "X-Men-Signature",
        "X-Hub-Signature-256",
        "webhook-id",
        "ce-id",
    ] {
        let mut c = base();
        c.headers.insert(signature.into(), "x".into());
        assert_eq!(err(c).field, format!("headers.{signature}"));
    }
    let mut c = base();
    c.payload = Some(Box::new(crate::config::PayloadConfig {
        pointer: Some("payload".into()),
        envelope: crate::config::Envelope::Raw,
    }));
    assert_eq!(err(c).field, "payload.pointer");
    let mut c = base();
    c.payload = Some(Box::new(crate::config::PayloadConfig {
        pointer: None,
        envelope: crate::config::Envelope::CloudeventsBinary,
    }));
    c.batch.max_events = 10;
    assert_eq!(err(c).field, "payload");
    let mut c = base();
    c.retry = Some(Box::new(crate::config::RetryConfig {
        retry_on: Some(vec!["teapot".into()]),
        ..Default::default()
    }));
    assert_eq!(err(c).field, "retry.retry_on[0]");
    let mut c = base();
    c.retry = Some(Box::new(crate::config::RetryConfig {
        max_attempts: Some(0),
        ..Default::default()
    }));
    assert_eq!(err(c).field, "retry.max_attempts");
    let mut c = base();
    c.scope = Some(crate::config::Scope::Inventory);
    c.events = vec!["device-*".into()];
    assert_eq!(err(c).field, "scope");
    let mut c = base();
    c.headers.insert("bad header".into(), "x".into());
    assert_eq!(err(c).field, "headers.bad header");
    let mut c = base();
    c.rate_limit = Some(Box::new(crate::config::RateLimitConfig {
        per_second: 0.0,
        burst: 1,
    }));
    assert_eq!(err(c).field, "rate_limit.per_second");
    let mut c = base();
    c.max_concurrency = 0;
    assert_eq!(err(c).field, "max_concurrency");
}

#[test]
fn secrets_are_checked_without_being_echoed() {
    let mut c = base();
    c.secret = None;
    assert_eq!(err(c).field, "secret");
    let mut c = base();
    c.signature = SignatureScheme::Mender;
    c.secret = Some("not-hex-secret".into());
    let e = err(c);
    assert_eq!(e.field, "secret");
    assert!(!e.message.contains("not-hex-secret"));
    let mut c = base();
    c.secret = None;
    c.secret_env = Some(Box::new("HS_SECRET".into()));
    assert_eq!(err(c.clone()).field, "secret_env");
    validate(&c, false, &|_| {
        Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into())
    })
    .unwrap();
}

#[test]
fn localhost_names_are_refused_with_or_without_the_root_dot() {
    for url in [
        "https://localhost./",
        "https://LOCALHOST/",
        "https://api.localhost/",
        "https://api.localhost./",
    ] {
        let mut c = base();
        c.url = url.into();
        assert!(err(c).message.contains("localhost"), "{url}");
    }
    assert!(!is_localhost_name("localhost.example.com"));
}

#[test]
fn a_previous_secret_signs_only_within_its_grace_period() {
    let mut c = base();
    c.previous_secret = Some("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAA".into());
    assert_eq!(err(c.clone()).field, "previous_secret_expires_at");
    c.previous_secret_expires_at = Some("2999-01-01T00:00:00Z".into());
    let e = Endpoint::build(c.clone(), false, Duration::from_secs(1), &|_| None).unwrap();
    assert!(e.previous_secret_until().is_some());
    assert!(format!("{:?}", e.signer).contains("keys: 2"));
    c.previous_secret_expires_at = Some("2000-01-01T00:00:00Z".into());
    let e = Endpoint::build(c.clone(), false, Duration::from_secs(1), &|_| None).unwrap();
    assert!(e.previous_secret_until().is_none());
    assert!(format!("{:?}", e.signer).contains("keys: 1"));
    c.previous_secret_expires_at = Some("tomorrow".into());
    assert_eq!(err(c.clone()).field, "previous_secret_expires_at");
    c.previous_secret_expires_at = Some("2999-01-01T00:00:00Z".into());
    c.previous_secret = Some("whsec_!!".into());
    assert_eq!(err(c).field, "previous_secret");
}

#[test]
fn restrictions_admit_only_matching_events() {
    let mut c = base();
    c.devices = vec!["d1".into()];
    c.tenant = "t1".into();
    let e = Endpoint::build(c, false, Duration::from_secs(1), &|_| None).unwrap();
    let key = |device, tenant| RouteKey {
        event_type: "x",
        device,
        group: None,
        tenant,
    };
    assert!(e.admits(&key(Some("d1"), Some("t1"))));
    assert!(!e.admits(&key(Some("d2"), Some("t1"))));
    assert!(!e.admits(&key(Some("d1"), None)));
    assert!(format!("{e:?}").contains("ep") && !format!("{e:?}").contains("whsec"));
}

#[test]
fn long_restriction_lists_admit_the_same_as_short_ones() {
    for n in [1, SCAN_UP_TO, SCAN_UP_TO + 1, 500] {
        let mut c = base();
        c.groups = (0..n).map(|i| format!("g{i}")).collect();
        let e = Endpoint::build(c, false, Duration::from_secs(1), &|_| None).unwrap();
        let key = |group| RouteKey {
            event_type: "x",
            device: None,
            group,
            tenant: None,
        };
        assert!(e.admits(&key(Some("g0"))), "{n}");
        let (last, beyond) = (format!("g{}", n - 1), format!("g{n}"));
        assert!(e.admits(&key(Some(&last))), "{n}");
        assert!(!e.admits(&key(Some(&beyond))), "{n}");
        assert!(!e.admits(&key(None)), "{n}");
    }
}
