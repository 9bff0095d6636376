//! Retry stage: what happens to deliveries that did not succeed.
//!
//! [`backoff`] decides when (pure), [`record`] shapes retry and dead-letter
//! records (pure), [`batch`] packs a burst of deferrals into one record
//! (pure), [`copies`] recognises a delivery written to a tier twice (pure),
//! [`writer`] stores them durably, [`dlq`], [`dlq_scan`] and [`replay`] back
//! `hookstream dlq list|show|replay`. Retry records are read
//! back by the pipeline's consumer and gated by due time
//! ([`crate::pipeline::gate`]).

pub mod copies;
pub mod dlq;
pub mod dlq_scan;
pub mod replay;
pub mod writer;
