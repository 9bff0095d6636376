//! Delivery stage: per-endpoint senders that rate-limit, sign, POST and
//! classify the outcome of each attempt.

pub mod client;
pub mod faults;
pub mod host;
pub mod plain;
pub mod refusal;
pub mod request;
pub mod sender;
pub mod shape;
pub mod trace;
