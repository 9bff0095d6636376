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

/// Ack tokens on their way to the dispatcher in one message: a single
/// delivery's, or every delivered event of one attempt (a batch of 100
/// events is one channel send, not 100).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    /// One token.
    One(AckToken),
    /// Several, in the order they settled.
    Many(Vec<AckToken>),
}

impl From<AckToken> for Settled {
    fn from(token: AckToken) -> Self {
        Self::One(token)
    }
}

impl Settled {
    /// `tokens` as one message (`None` when there are none).
    pub fn of(mut tokens: Vec<AckToken>) -> Option<Self> {
        match tokens.len() {
            0 => None,
            1 => tokens.pop().map(Self::One),
            _ => Some(Self::Many(tokens)),
        }
    }

    /// Calls `f` with each token, in order.
    pub fn for_each(self, mut f: impl FnMut(AckToken)) {
        match self {
            Self::One(token) => f(token),
            Self::Many(tokens) => tokens.into_iter().for_each(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(offset: i64) -> AckToken {
        AckToken {
            partition: PartitionId {
                topic: 0,
                partition: 3,
            },
            offset,
            epoch: 1,
        }
    }

    #[test]
    fn settled_tokens_come_out_as_they_went_in() {
        assert_eq!(Settled::of(Vec::new()), None);
        assert_eq!(Settled::of(vec![token(7)]), Some(Settled::One(token(7))));
        let mut out = Vec::new();
        Settled::of(vec![token(9), token(4), token(5)])
            .expect("three tokens")
            .for_each(|t| out.push(t.offset));
        assert_eq!(out, [9, 4, 5]);
    }
}
