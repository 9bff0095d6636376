//! hookstream: a Kafka-native webhook delivery engine for device fleets.
//!
//! The data path reads top to bottom through the modules:
//! [`source`] consumes and extracts, [`index`] matches endpoints,
//! [`deliver`] signs and POSTs, [`retry`] dead-letters (and schedules retries),
//! [`commit`] tracks outcomes for offset commits. [`pipeline`] wires them;
//! [`config`], [`kafka`], [`logging`], [`metrics`] and [`allocator`] are shared plumbing; [`api`] is
//! the management API over the endpoint store ([`index::store`]); [`demo`]
//! and [`cmd`] back the CLI commands.

pub mod allocator;
pub mod api;
#[cfg(feature = "dev-tools")]
pub mod bench;
pub mod cmd;
pub mod commit;
pub mod config;
pub mod core;
pub mod deliver;
#[cfg(feature = "dev-tools")]
pub mod demo;
pub mod guard;
pub mod index;
pub mod kafka;
pub mod logging;
pub mod metrics;
pub mod outcome;
pub mod pipeline;
pub mod retry;
pub mod samples;
pub mod sign;
pub mod source;
pub mod wire;

pub use config::Config;
pub use pipeline::{BrokerTarget, Pipeline};
