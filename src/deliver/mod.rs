//! Delivery stage: per-endpoint senders that rate-limit, sign, POST and
//! classify the outcome of each attempt (with the endpoint's credentials,
//! TLS material and proxy: `client`, `oauth`).

pub mod adaptive;
pub mod client;
pub mod faults;
pub mod head;
pub mod host;
pub mod oauth;
pub mod plain;
pub mod refusal;
pub mod request;
pub mod sender;
pub mod shape;
pub mod trace;
