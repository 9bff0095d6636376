//! Whether a delivery may go to its endpoint at all: not when the endpoint
//! was deleted or answered 410 Gone (refused: dead-lettered), nor while it
//! is disabled otherwise (held: the delivery waits on the backlog tier,
//! see [`crate::outcome::policy::DisabledPolicy`]). One rule for the
//! dispatcher (before it queues a delivery) and the sender (before each
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
    /// The endpoint answered 410 Gone.
    pub const GONE: Self = Self {
        reason: Reason::EndpointDisabled,
        why: "the endpoint was disabled after answering 410 Gone",
    };
}

/// What a delivery to an endpoint meets before any attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// It may be sent.
    Send,
    /// The endpoint is disabled and keeps its backlog: the delivery waits
    /// on a tier (or is dead-lettered beyond the backlog's cap), as the
    /// outcome policy decides for [`crate::outcome::classify::Verdict::Disabled`].
    Hold,
    /// It is dead-lettered at once.
    Refuse(Refusal),
}

impl Admission {
    /// What a delivery to `endpoint` (`None`: no such endpoint any more)
    /// meets, by the stored settings alone.
    pub fn of(endpoint: Option<&Endpoint>) -> Self {
        match endpoint {
            None => Self::Refuse(Refusal::DELETED),
            Some(e) if e.config.enabled => Self::Send,
            Some(e) if e.config.keeps_backlog() => Self::Hold,
            Some(_) => Self::Refuse(Refusal::GONE),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{DisableCause, DisabledBy, EndpointConfig};

    #[test]
    fn deleted_and_gone_endpoints_refuse_disabled_ones_hold_and_enabled_ones_take() {
        let mut config = EndpointConfig::new("ep", "https://x.example/in");
        let build = |c: EndpointConfig| {
            Endpoint::build(c, false, std::time::Duration::from_secs(1), &|_| None).unwrap()
        };
        assert_eq!(Admission::of(None), Admission::Refuse(Refusal::DELETED));
        assert_eq!(Admission::of(Some(&build(config.clone()))), Admission::Send);
        config.enabled = false;
        assert_eq!(
            Admission::of(Some(&build(config.clone()))),
            Admission::Hold,
            "disabled through the API or the file"
        );
        let by = |cause| {
            Some(Box::new(DisabledBy {
                reason: "r".into(),
                at: "2026-01-01T00:00:00Z".into(),
                cause,
            }))
        };
        config.disabled = by(DisableCause::Failing);
        assert_eq!(Admission::of(Some(&build(config.clone()))), Admission::Hold);
        config.disabled = by(DisableCause::Gone);
        assert_eq!(
            Admission::of(Some(&build(config))),
            Admission::Refuse(Refusal::GONE)
        );
        assert_eq!(Refusal::GONE.reason.as_str(), "endpoint_disabled");
        assert_eq!(Refusal::DELETED.reason.as_str(), "endpoint_deleted");
    }
}
