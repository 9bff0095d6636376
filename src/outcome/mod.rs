//! What happens after an attempt, decided without I/O: what a response or a
//! transport failure means ([`classify`]), when to try again
//! ([`backoff`]), what an endpoint's retry policy retries ([`policy`]),
//! when an endpoint is left alone for a while ([`circuit`]).

pub mod backoff;
pub mod circuit;
pub mod classify;
pub mod policy;
