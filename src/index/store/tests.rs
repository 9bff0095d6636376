//! Unit tests of the endpoint store: the end of secret-rotation grace periods.

use super::*;
use std::time::SystemTime;

use super::follower::end_grace_periods;
use crate::sign::SignatureScheme;

fn settings() -> BuildSettings {
    BuildSettings {
        allow_private: false,
        default_timeout: Duration::from_secs(1),
    }
}

/// When the previous secret of endpoint `rot` stops signing.
fn previous_until(registry: &EndpointRegistry) -> Option<SystemTime> {
    registry
        .snapshot()
        .get("rot")
        .and_then(|e| e.previous_secret_until())
}

#[test]
fn grace_periods_end_by_rebuilding_with_one_key() {
    let mut c = EndpointConfig::new("rot", "https://hooks.example.com/");
    c.signature = SignatureScheme::Standard;
    c.secret = Some("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into());
    c.previous_secret = Some("whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAA".into());
    let until = SystemTime::now() + Duration::from_secs(1);
    c.previous_secret_expires_at = Some(humantime::format_rfc3339_millis(until).to_string().into());
    let registry = EndpointRegistry::new(vec![Arc::new(settings().build(c).unwrap())]);
    assert!(previous_until(&registry).is_some());
    end_grace_periods(&registry, settings(), SystemTime::now());
    assert!(previous_until(&registry).is_some(), "not over yet");
    std::thread::sleep(Duration::from_millis(1100));
    end_grace_periods(&registry, settings(), SystemTime::now());
    assert!(previous_until(&registry).is_none());
}
