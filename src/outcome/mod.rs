//! What happens after an attempt, decided without I/O: what a response or a
//! transport failure means ([`classify`]), when to try again
//! ([`backoff`]), when an endpoint is left alone for a while
//! ([`circuit`]), and what an endpoint's retry policy retries and the one
//! decision that combines them all ([`policy`]).

pub mod backoff;
pub mod circuit;
pub mod classify;
pub mod policy;
