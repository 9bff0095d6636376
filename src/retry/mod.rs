//! Retry stage: what happens to deliveries that did not succeed. For now
//! every such delivery is dead-lettered durably.

pub mod dlq;
