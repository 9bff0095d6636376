//! Source stage: consuming records and extracting routing fields.

pub mod extract;
