//! Retry stage: storing what did not succeed, durably.
//!
//! [`records`] assembles retry, deferral-batch and dead-letter records
//! (pure; their formats are [`crate::wire`]), [`writer`] stores them and
//! runs their completions, [`copies`] recognises a delivery written to a
//! tier twice (pure), [`dlq`], [`dlq_scan`] and [`replay`] back
//! `hookstream dlq list|show|replay`. When to retry is decided in
//! [`crate::outcome`]; retry records are read back by the source and gated
//! by due time
//! ([`crate::pipeline::gate`]).

pub mod copies;
pub mod dlq;
pub mod dlq_scan;
pub(crate) mod records;
pub mod replay;
pub mod writer;
