//! Partitions and the token that proves a record was registered for
//! committing.

/// A partition of a topic, with the topic interned as a small number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PartitionId {
    /// Index of the topic in the pipeline's topic table.
    pub topic: u16,
    /// Kafka partition.
    pub partition: i32,
}

/// Proof of registration handed to the work for one record: it names the
/// partition, the offset and the assignment epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckToken {
    /// Partition of the record.
    pub partition: PartitionId,
    /// Offset of the record.
    pub offset: i64,
    /// Assignment epoch the record was registered under.
    pub epoch: u64,
}
