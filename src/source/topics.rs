//! Interned topic names and the partition lists librdkafka takes.
//!
//! Owns the mapping between a topic's name and the small number a record
//! carries ([`PartitionId::topic`]); builds no client and reads no record.

use std::sync::Arc;

use rdkafka::{Offset, TopicPartitionList};

use crate::core::PartitionId;

/// Interned topic names: a record's topic becomes a small number. Input
/// topics come first, then the retry tiers, shortest first.
#[derive(Debug, Clone, Default)]
pub struct TopicTable {
    names: Vec<Arc<str>>,
    inputs: usize,
}

impl TopicTable {
    /// A table of input topics followed by retry-tier topics.
    pub fn new(
        inputs: impl IntoIterator<Item = String>,
        tiers: impl IntoIterator<Item = String>,
    ) -> Self {
        let mut names: Vec<Arc<str>> = inputs.into_iter().map(Arc::from).collect();
        let inputs = names.len();
        names.extend(tiers.into_iter().map(Arc::from));
        Self { names, inputs }
    }

    /// The retry tier of topic `id`, if it is one.
    pub fn tier_of(&self, id: u16) -> Option<usize> {
        (id as usize).checked_sub(self.inputs)
    }

    /// The input topics, in id order.
    pub fn inputs(&self) -> &[Arc<str>] {
        &self.names[..self.inputs]
    }

    /// The id of `name`.
    pub fn id(&self, name: &str) -> Option<u16> {
        self.id_of_bytes(name.as_bytes())
    }

    /// The id of the topic named by `name`'s bytes.
    pub fn id_of_bytes(&self, name: &[u8]) -> Option<u16> {
        self.names
            .iter()
            .position(|n| n.as_bytes() == name)
            .map(|i| i as u16)
    }

    /// The name of `id`.
    pub fn name(&self, id: u16) -> &Arc<str> {
        &self.names[id as usize]
    }

    /// All names.
    pub fn names(&self) -> &[Arc<str>] {
        &self.names
    }
}

/// A topic partition list of `(partition, offset)` pairs.
pub fn offsets_list(topics: &TopicTable, offsets: &[(PartitionId, i64)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::with_capacity(offsets.len());
    for (p, offset) in offsets {
        // Adding an offset to a fresh list cannot fail for a valid offset.
        let _ =
            tpl.add_partition_offset(topics.name(p.topic), p.partition, Offset::Offset(*offset));
    }
    tpl
}

/// A partition list without offsets (for pause/resume).
pub fn partitions_list(topics: &TopicTable, partitions: &[PartitionId]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::with_capacity(partitions.len());
    for p in partitions {
        tpl.add_partition(topics.name(p.topic), p.partition);
    }
    tpl
}
