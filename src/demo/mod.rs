//! `hookstream demo`: everything embedded, end to end.

pub mod samples;
