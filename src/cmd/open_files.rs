//! The process's open-files limit (`RLIMIT_NOFILE`): `hookstream run`
//! raises its soft limit to the hard limit at start-up, so that the API's
//! connections (bounded by `api.max_connections`), the delivery
//! connections (`delivery.max_connections_per_host` per destination host)
//! and the Kafka clients' sockets fit beside each other.
//!
//! Owns that one system call pair; sizing advice is in the README.

use std::fmt;
use std::io;

/// The open-files limit after [`raise_to_hard_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFilesLimit {
    /// The soft limit before.
    pub before: libc::rlim_t,
    /// The soft limit now: what the process may open.
    pub soft: libc::rlim_t,
    /// The hard limit (the most an unprivileged process may raise to).
    pub hard: libc::rlim_t,
}

impl fmt::Display for OpenFilesLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let show = |n: libc::rlim_t| {
            if n == libc::RLIM_INFINITY {
                "unlimited".to_string()
            } else {
                n.to_string()
            }
        };
        write!(
            f,
            "{} (was {}, hard limit {})",
            show(self.soft),
            show(self.before),
            show(self.hard)
        )
    }
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit (a no-op
/// when they are equal) and returns the result.
pub fn raise_to_hard_limit() -> io::Result<OpenFilesLimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let before = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(io::Error::last_os_error());
        }
        limit = raised;
    }
    Ok(OpenFilesLimit {
        before,
        soft: limit.rlim_cur,
        hard: limit.rlim_max,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let limit = raise_to_hard_limit().expect("getrlimit and setrlimit");
        assert_eq!(limit.soft, limit.hard);
        assert!(limit.soft >= limit.before);
        let again = raise_to_hard_limit().expect("a second time");
        assert_eq!((again.before, again.soft), (limit.soft, limit.soft));
        assert!(limit.to_string().contains("hard limit"));
    }
}
