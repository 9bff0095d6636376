//! The shared vocabulary of every stage: partitions and ack tokens, time,
//! record headers and the `hookstream-*` header names, the three shapes a
//! consumed record takes (an input event, a retry, a deferral batch
//! entry), dead-letter reasons, a lock helper, and the reusable JSON tape
//! parser.
//!
//! A leaf: it imports no other module of the crate, and holds no logic
//! beyond what describes these types. Every stage may use it.

pub mod event;
pub mod headers;
pub mod partition;
pub mod reason;
pub mod sync;
pub mod tape;
pub mod time;

pub use event::{
    BatchEntry, DeferralBatch, FieldTexts, Fields, InputEvent, InvalidEvent, InvalidRecord,
    Payload, Polled, RetryEvent, RetryMeta, SourceRecord, SourceRef, UnreadableRecord,
};
pub use headers::RecordHeaders;
pub use partition::{AckToken, PartitionId, Settled};
pub use reason::Reason;
pub use sync::lock;
pub use time::now_ms;
