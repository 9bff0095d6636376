//! Outcome classification: what an HTTP response or transport failure means
//! for the delivery (SPEC §5 table), and for the endpoint's circuit.
//!
//! Pure: status codes, `Retry-After` text and failure kinds in, a [`Verdict`]
//! out. Scheduling the retry or writing the dead letter is someone else's job.
//! A failure of this process (no descriptor, buffer or memory for a socket;
//! no client) is its own class, [`TransportFailure::Local`]: it says nothing
//! about the endpoint, so it uses no attempt and leaves the circuit alone.

use std::time::{Duration, SystemTime};

use crate::core::Reason;

/// How an attempt failed before any response arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportFailure {
    /// No response within the endpoint's timeout.
    Timeout,
    /// TCP/TLS connection could not be made.
    Connect,
    /// The connection broke during the exchange.
    Reset,
    /// The SSRF guard refused the destination address.
    Refused,
    /// The endpoint's OAuth2 token could not be fetched (the token
    /// endpoint failed or refused the client): nothing was sent.
    Auth,
    /// This process could not make the attempt: out of file descriptors
    /// (`EMFILE`, `ENFILE`), socket buffers (`ENOBUFS`) or memory
    /// (`ENOMEM`), or the request could not be built. Not the endpoint's
    /// fault.
    Local,
}

impl TransportFailure {
    /// The `hookstream-last-status` text.
    pub fn status_text(self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::Connect => "connect",
            Self::Reset => "reset",
            Self::Refused => "refused",
            Self::Auth => "auth",
            Self::Local => "local",
        }
    }
}

/// Whether `e` says this process ran out of something it needs to make a
/// connection (descriptors, socket buffers, memory), rather than that the
/// destination failed.
pub fn is_local_resource_error(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    ) || e.kind() == std::io::ErrorKind::OutOfMemory
}

/// What happened to one attempt.
#[derive(Debug, Clone, Copy)]
pub enum AttemptResult<'a> {
    /// A response arrived.
    Response {
        /// HTTP status.
        status: u16,
        /// Raw `Retry-After` header, if any.
        retry_after: Option<&'a str>,
    },
    /// No response.
    Transport(TransportFailure),
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx: done.
    Delivered,
    /// Try again later.
    Retry {
        /// Delay the receiver asked for (`Retry-After`), capped.
        after: Option<Duration>,
        /// Whether this attempt uses up one of `max_attempts`
        /// (429 and `Retry-After` do not).
        counts_attempt: bool,
    },
    /// 410 Gone: disable the endpoint and dead-letter (reason `gone`).
    Gone,
    /// Dead-letter at once with this reason.
    DeadLetter(Reason),
    /// The attempt was not made for a reason of this process's own
    /// ([`TransportFailure::Local`]): defer the delivery to a retry tier
    /// without using an attempt, as a circuit-open deferral does.
    Defer,
    /// No attempt was made: the endpoint is disabled and keeps its backlog
    /// (`[delivery.disabled_backlog]`): hold the delivery on a tier, or
    /// dead-letter it (`endpoint_disabled`) once it is older than the cap.
    Disabled,
}

/// What an attempt says about the endpoint, for its circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointHealth {
    /// It failed in a way that says the endpoint is unwell (transport
    /// failure, 408/425/429/5xx): counts towards opening the circuit.
    Failing,
    /// It answered (delivered, or refused for good): closes the circuit.
    Answering,
    /// Nothing reached it ([`Verdict::Defer`], [`Verdict::Disabled`]): the
    /// circuit is left as it is.
    Unknown,
}

impl Verdict {
    /// What this verdict says about the endpoint's health.
    pub fn endpoint_health(&self) -> EndpointHealth {
        match self {
            Self::Retry { .. } => EndpointHealth::Failing,
            Self::Defer | Self::Disabled => EndpointHealth::Unknown,
            Self::Delivered | Self::Gone | Self::DeadLetter(_) => EndpointHealth::Answering,
        }
    }
}

/// Classifies an attempt. `cap` bounds any `Retry-After`; `now` resolves
/// HTTP-date values.
pub fn classify(result: AttemptResult<'_>, cap: Duration, now: SystemTime) -> Verdict {
    match result {
        AttemptResult::Transport(TransportFailure::Refused) => {
            Verdict::DeadLetter(Reason::DestinationRefused)
        }
        AttemptResult::Transport(TransportFailure::Local) => Verdict::Defer,
        AttemptResult::Transport(_) => Verdict::Retry {
            after: None,
            counts_attempt: true,
        },
        AttemptResult::Response {
            status,
            retry_after,
        } => match status {
            200..=299 => Verdict::Delivered,
            410 => Verdict::Gone,
            408 | 425 | 429 | 500 | 502 | 503 | 504 => {
                let after = retry_after
                    .and_then(|v| parse_retry_after(v, now))
                    .map(|d| d.min(cap));
                Verdict::Retry {
                    after,
                    counts_attempt: status != 429 && after.is_none(),
                }
            }
            other => Verdict::DeadLetter(Reason::Http(other)),
        },
    }
}

/// `Retry-After` as delay-seconds or an HTTP-date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: Duration = Duration::from_secs(3600);

    fn status(code: u16, retry_after: Option<&str>) -> Verdict {
        classify(
            AttemptResult::Response {
                status: code,
                retry_after,
            },
            CAP,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000),
        )
    }

    #[test]
    fn success_codes_deliver() {
        for code in [200, 201, 202, 204, 299] {
            assert_eq!(status(code, None), Verdict::Delivered);
        }
    }

    #[test]
    fn transient_codes_retry_and_use_an_attempt() {
        for code in [408, 425, 500, 502, 503, 504] {
            assert_eq!(
                status(code, None),
                Verdict::Retry {
                    after: None,
                    counts_attempt: true
                },
                "{code}"
            );
        }
    }

    #[test]
    fn too_many_requests_and_retry_after_do_not_use_an_attempt() {
        assert_eq!(
            status(429, None),
            Verdict::Retry {
                after: None,
                counts_attempt: false
            }
        );
        assert_eq!(
            status(503, Some("120")),
            Verdict::Retry {
                after: Some(Duration::from_secs(120)),
                counts_attempt: false
            }
        );
    }

    #[test]
    fn retry_after_dates_and_caps() {
        // 1_000_000_000 = Sun, 09 Sep 2001 01:46:40 GMT
        assert_eq!(
            status(429, Some("Sun, 09 Sep 2001 01:47:40 GMT")),
            Verdict::Retry {
                after: Some(Duration::from_secs(60)),
                counts_attempt: false
            }
        );
        assert_eq!(
            status(429, Some("999999")),
            Verdict::Retry {
                after: Some(CAP),
                counts_attempt: false
            }
        );
        // A date in the past means "now"; garbage is ignored.
        assert_eq!(
            status(503, Some("Sat, 01 Jan 2000 00:00:00 GMT")),
            Verdict::Retry {
                after: Some(Duration::ZERO),
                counts_attempt: false
            }
        );
        assert_eq!(
            status(503, Some("soon")),
            Verdict::Retry {
                after: None,
                counts_attempt: true
            }
        );
    }

    #[test]
    fn gone_and_permanent_codes() {
        assert_eq!(status(410, None), Verdict::Gone);
        assert_eq!(status(400, None), Verdict::DeadLetter(Reason::Http(400)));
        assert_eq!(status(404, None), Verdict::DeadLetter(Reason::Http(404)));
        assert_eq!(status(301, None), Verdict::DeadLetter(Reason::Http(301)));
        assert_eq!(status(501, None), Verdict::DeadLetter(Reason::Http(501)));
    }

    #[test]
    fn transport_failures_retry_except_refusals() {
        for f in [
            TransportFailure::Timeout,
            TransportFailure::Connect,
            TransportFailure::Reset,
            TransportFailure::Auth,
        ] {
            assert!(matches!(
                classify(AttemptResult::Transport(f), CAP, SystemTime::now()),
                Verdict::Retry {
                    counts_attempt: true,
                    ..
                }
            ));
        }
        assert_eq!(
            classify(
                AttemptResult::Transport(TransportFailure::Refused),
                CAP,
                SystemTime::now()
            ),
            Verdict::DeadLetter(Reason::DestinationRefused)
        );
    }

    #[test]
    fn local_failures_defer_without_an_attempt_or_a_circuit_failure() {
        let verdict = classify(
            AttemptResult::Transport(TransportFailure::Local),
            CAP,
            SystemTime::now(),
        );
        assert_eq!(verdict, Verdict::Defer);
        assert_eq!(verdict.endpoint_health(), EndpointHealth::Unknown);
        assert_eq!(TransportFailure::Local.status_text(), "local");
        // What the endpoint's own failures and answers do, for contrast.
        assert_eq!(
            classify(
                AttemptResult::Transport(TransportFailure::Connect),
                CAP,
                SystemTime::now()
            )
            .endpoint_health(),
            EndpointHealth::Failing
        );
        assert_eq!(status(503, None).endpoint_health(), EndpointHealth::Failing);
        assert_eq!(
            status(400, None).endpoint_health(),
            EndpointHealth::Answering
        );
        assert_eq!(
            status(200, None).endpoint_health(),
            EndpointHealth::Answering
        );
    }

    #[test]
    fn running_out_of_descriptors_buffers_or_memory_is_local() {
        use std::io::{Error, ErrorKind};
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert!(
                is_local_resource_error(&Error::from_raw_os_error(errno)),
                "errno {errno}"
            );
        }
        assert!(is_local_resource_error(&Error::from(
            ErrorKind::OutOfMemory
        )));
        for errno in [
            libc::ECONNREFUSED,
            libc::ECONNRESET,
            libc::ETIMEDOUT,
            libc::EHOSTUNREACH,
            libc::ENETUNREACH,
            libc::EADDRNOTAVAIL,
        ] {
            assert!(
                !is_local_resource_error(&Error::from_raw_os_error(errno)),
                "errno {errno} is the destination's or the network's"
            );
        }
    }
}
