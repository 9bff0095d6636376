//! Whether a delivery may go to its endpoint at all: not when the endpoint
//! was deleted, is disabled, or answered 410 Gone. One rule for the
//! dispatcher (before it queues a retry) and the sender (before each
//! attempt). Pure.

use crate::core::Reason;
use crate::index::Endpoint;

/// Why a delivery is dead-lettered instead of sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refusal {
    /// The dead-letter reason.
    pub reason: Reason,
    /// The dead letter's `hookstream-last-error`.
    pub why: &'static str,
}

impl Refusal {
    /// The endpoint was deleted.
    pub const DELETED: Self = Self {
        reason: Reason::EndpointDeleted,
        why: "the endpoint was deleted",
    };
    /// The endpoint is disabled.
    pub const DISABLED: Self = Self {
        reason: Reason::EndpointDisabled,
        why: "the endpoint is disabled",
    };
    /// The endpoint answered 410 Gone.
    pub const GONE: Self = Self {
        reason: Reason::EndpointDisabled,
        why: "the endpoint was disabled after answering 410 Gone",
    };

    /// Why a delivery to `endpoint` (`None`: no such endpoint any more) is
    /// refused, if it is.
    pub fn of(endpoint: Option<&Endpoint>) -> Option<Self> {
        match endpoint {
            None => Some(Self::DELETED),
            Some(e) if !e.config.enabled => Some(Self::DISABLED),
            Some(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deleted_and_disabled_endpoints_refuse_and_enabled_ones_take() {
        let mut config = crate::config::EndpointConfig::new("ep", "https://x.example/in");
        let build = |c: crate::config::EndpointConfig| {
            Endpoint::build(c, false, std::time::Duration::from_secs(1), &|_| None).unwrap()
        };
        assert_eq!(Refusal::of(None), Some(Refusal::DELETED));
        assert_eq!(Refusal::of(Some(&build(config.clone()))), None);
        config.enabled = false;
        assert_eq!(Refusal::of(Some(&build(config))), Some(Refusal::DISABLED));
        assert_eq!(Refusal::DISABLED.reason.as_str(), "endpoint_disabled");
        assert_eq!(Refusal::DELETED.reason.as_str(), "endpoint_deleted");
    }
}
