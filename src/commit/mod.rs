//! Commit stage: which offsets are committable (out-of-order acknowledgement
//! tracking, [`AckTracker`]) and committing them: periodically in the
//! background, on revoke and at shutdown ([`Committer`], [`commit_revoked`]).
//! Knows no Kafka client; the source commits through [`OffsetCommit`].

pub mod ack_tracker;
pub mod committer;

pub use ack_tracker::AckTracker;
pub use committer::{
    CommitRefused, Committer, FailedCommits, OffsetCommit, Offsets, commit_revoked,
};
