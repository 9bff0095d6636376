//! Delivery stage: per-endpoint senders that rate-limit, sign, POST and
//! classify the outcome of each attempt.

pub mod activity;
pub mod circuit;
pub mod classify;
pub mod client;
pub mod faults;
pub mod host;
pub mod refusal;
pub mod request;
pub mod sender;
pub mod sign;
pub mod ssrf;
