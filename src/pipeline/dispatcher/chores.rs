//! When the dispatcher's periodic work is due: commits every
//! `commit_interval`, idle senders reaped, dead letters summarised, stalled
//! partitions looked for. Pure: the clock is passed in.

use std::time::{Duration, Instant};

use super::{DEAD_LETTER_SUMMARY, SENDER_IDLE, STALL_CHECK};

/// When the dispatcher's periodic work is next due. Deadlines, not timer
/// arms of its select loop: a loop whose acks and records are always ready
/// would never reach a timer arm placed after them (a backlog then
/// committed nothing until it was drained).
#[derive(Debug, Clone, Copy)]
pub(super) struct Chores {
    commit_interval: Duration,
    commit_at: Instant,
    reap_at: Instant,
    summary_at: Instant,
    stall_check_at: Instant,
}

/// The chores [`Chores::take_due`] found due.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct DueChores {
    pub(super) commit: bool,
    pub(super) reap: bool,
    pub(super) summary: bool,
    pub(super) stall_check: bool,
}

impl Chores {
    pub(super) fn new(now: Instant, commit_interval: Duration) -> Self {
        Self {
            commit_interval,
            commit_at: now + commit_interval,
            reap_at: now + SENDER_IDLE / 2,
            summary_at: now + DEAD_LETTER_SUMMARY,
            stall_check_at: now + STALL_CHECK,
        }
    }

    /// The earliest deadline.
    pub(super) fn next(&self) -> Instant {
        self.commit_at
            .min(self.reap_at)
            .min(self.summary_at)
            .min(self.stall_check_at)
    }

    /// Which chores are due at `now`; each one due is scheduled again a
    /// period after `now` (not after its old deadline: a dispatcher that
    /// was busy does not run a chore several times in a row to catch up).
    pub(super) fn take_due(&mut self, now: Instant) -> DueChores {
        let mut due = DueChores::default();
        if now < self.next() {
            return due;
        }
        if now >= self.commit_at {
            due.commit = true;
            self.commit_at = now + self.commit_interval;
        }
        if now >= self.reap_at {
            due.reap = true;
            self.reap_at = now + SENDER_IDLE / 2;
        }
        if now >= self.summary_at {
            due.summary = true;
            self.summary_at = now + DEAD_LETTER_SUMMARY;
        }
        if now >= self.stall_check_at {
            due.stall_check = true;
            self.stall_check_at = now + STALL_CHECK;
        }
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMIT: Duration = Duration::from_secs(1);

    #[test]
    fn nothing_is_due_before_the_first_deadline() {
        let start = Instant::now();
        let mut chores = Chores::new(start, COMMIT);
        assert_eq!(chores.take_due(start), DueChores::default());
        assert_eq!(
            chores.take_due(start + SENDER_IDLE / 2 - Duration::from_millis(1)),
            DueChores::default()
        );
        assert_eq!(chores.next(), start + SENDER_IDLE / 2);
    }

    #[test]
    fn each_chore_comes_due_on_its_own_period() {
        let start = Instant::now();
        let mut chores = Chores::new(start, COMMIT);
        let reap = chores.take_due(start + SENDER_IDLE / 2);
        assert_eq!(
            reap,
            DueChores {
                reap: true,
                ..DueChores::default()
            }
        );
        let all = chores.take_due(start + DEAD_LETTER_SUMMARY);
        assert_eq!(
            all,
            DueChores {
                commit: true,
                reap: true,
                summary: true,
                stall_check: true,
            },
            "all late: all due at once"
        );
        // Taken: not due again until their periods after now passed.
        let later = start + DEAD_LETTER_SUMMARY + Duration::from_millis(1);
        assert_eq!(chores.take_due(later), DueChores::default());
        assert_eq!(chores.next(), start + DEAD_LETTER_SUMMARY + SENDER_IDLE / 2);
    }

    #[test]
    fn a_dispatcher_busy_for_a_minute_commits_once_per_interval() {
        // The loop calls take_due after every record: with a record every
        // 3 ms for 60 s, commits come once per interval, never bunched up
        // and never starved.
        let start = Instant::now();
        let mut chores = Chores::new(start, COMMIT);
        let mut commits = Vec::new();
        let mut t = start;
        while t < start + Duration::from_secs(60) {
            t += Duration::from_millis(3);
            if chores.take_due(t).commit {
                commits.push(t);
            }
        }
        assert!((59..=60).contains(&commits.len()), "{}", commits.len());
        for pair in commits.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= COMMIT && gap < COMMIT + Duration::from_millis(4),
                "{gap:?}"
            );
        }
    }

    #[test]
    fn a_late_turn_runs_a_chore_once_not_to_catch_up() {
        let start = Instant::now();
        let mut chores = Chores::new(start, COMMIT);
        // Ten intervals without a turn (a long blocking call).
        let late = start + COMMIT * 10;
        assert!(chores.take_due(late).commit);
        assert!(!chores.take_due(late + Duration::from_millis(1)).commit);
        assert!(chores.take_due(late + COMMIT).commit);
    }
}
