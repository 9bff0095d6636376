//! Source stage: consuming records and extracting routing fields.
//!
//! [`consumer`] runs the group members and their poll threads, [`poll`]
//! reads a member's queue through librdkafka's event API, [`hooks`] is
//! what librdkafka calls on them (rebalances, commits, statistics),
//! [`inbound`] carries records and rebalances to the dispatcher in order,
//! [`reader`] turns polled records into the shapes of [`crate::core::event`] with
//! [`extract`], [`unreadable`] stands in for records librdkafka cannot
//! decode and moves their partition past them, [`topics`] interns
//! topic names, and [`types`] knows the event types each preset produces.

pub mod consumer;
mod early_pause;
pub mod extract;
pub mod hooks;
pub mod inbound;
mod poll;
pub mod reader;
pub mod topics;
pub mod types;
mod unreadable;
