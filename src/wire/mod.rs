//! The bytes hookstream writes to Kafka besides the events themselves: the
//! headers of retry and dead-letter records (and reading them back), the
//! deferral batch format, and which tier partition an endpoint's retries
//! go to. Pure: builds and parses, never produces or consumes.

pub mod batch;
pub mod headers;
