//! Source stage: consuming records and extracting routing fields.

pub mod consumer;
pub mod event;
pub mod extract;
