//! Why a delivery or a record was dead-lettered: the `hookstream-reason`
//! header, the `reason` label of `hookstream_dlq_total`, and what
//! `dlq list --reason` filters on.

use std::sync::LazyLock;

/// A dead-letter reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The record is not an event (not JSON, no type, too large, empty).
    InvalidEvent,
    /// The consumer could not read the record at all.
    UnreadableRecord,
    /// The endpoint was deleted while the delivery waited.
    EndpointDeleted,
    /// The endpoint is disabled.
    EndpointDisabled,
    /// The endpoint answered 410 Gone.
    Gone,
    /// `max_attempts` used up, `retry_window` passed, or a retry too large
    /// for its tier.
    Exhausted,
    /// The SSRF guard refused the destination address.
    DestinationRefused,
    /// A status that is not retried (`http_<code>`).
    Http(u16),
    /// A panic in the endpoint's sender.
    InternalError,
}

/// `http_100` … `http_599`, made once.
static HTTP: LazyLock<Vec<String>> =
    LazyLock::new(|| (100..600).map(|code| format!("http_{code}")).collect());

impl Reason {
    /// The text of the reason (`invalid_event`, `http_404`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::InvalidEvent => "invalid_event",
            Self::UnreadableRecord => "unreadable_record",
            Self::EndpointDeleted => "endpoint_deleted",
            Self::EndpointDisabled => "endpoint_disabled",
            Self::Gone => "gone",
            Self::Exhausted => "exhausted",
            Self::DestinationRefused => "destination_refused",
            Self::InternalError => "internal_error",
            Self::Http(code) => match code {
                100..=599 => HTTP[usize::from(*code) - 100].as_str(),
                _ => "http_other",
            },
        }
    }

    /// The reason named `text`, as [`as_str`](Self::as_str) writes it.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "invalid_event" => Self::InvalidEvent,
            "unreadable_record" => Self::UnreadableRecord,
            "endpoint_deleted" => Self::EndpointDeleted,
            "endpoint_disabled" => Self::EndpointDisabled,
            "gone" => Self::Gone,
            "exhausted" => Self::Exhausted,
            "destination_refused" => Self::DestinationRefused,
            "internal_error" => Self::InternalError,
            other => Self::Http(other.strip_prefix("http_")?.parse().ok()?),
        })
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_reads_back_as_itself() {
        for reason in [
            Reason::InvalidEvent,
            Reason::UnreadableRecord,
            Reason::EndpointDeleted,
            Reason::EndpointDisabled,
            Reason::Gone,
            Reason::Exhausted,
            Reason::DestinationRefused,
            Reason::InternalError,
            Reason::Http(400),
            Reason::Http(599),
        ] {
            assert_eq!(Reason::parse(reason.as_str()), Some(reason), "{reason}");
        }
        assert_eq!(Reason::Http(404).as_str(), "http_404");
        assert_eq!(Reason::Http(42).as_str(), "http_other");
        assert_eq!(Reason::parse("http_x"), None);
        assert_eq!(Reason::parse("nonsense"), None);
    }
}
