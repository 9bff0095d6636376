//! Commit stage: out-of-order acknowledgement tracking and offset commits.

pub mod ack_tracker;

pub use ack_tracker::AckTracker;
