//! hookstream: a Kafka-native webhook delivery engine for device fleets.
//!
//! The data path reads top to bottom through the modules:
//! [`source`] consumes and extracts, [`index`] matches endpoints,
//! [`deliver`] signs and POSTs, [`retry`] dead-letters (and schedules retries),
//! [`commit`] tracks outcomes and commits offsets. [`pipeline`] wires them;
//! [`config`] and [`kafka`] are shared plumbing; [`demo`] and [`verify`] back
//! the CLI commands of the same names.

pub mod commit;
pub mod config;
pub mod deliver;
pub mod demo;
pub mod index;
pub mod source;
