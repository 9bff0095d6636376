//! Streaming the dead-letter topic: which offsets a selection can be in
//! (seeking by time), and one pass over them that hands each selected
//! letter to a callback without keeping any.
//!
//! Owns reading the DLQ for `dlq list|show|replay`. Reads with a group-less
//! consumer (nothing is committed), one partition after the other in
//! partition order, each from its start offset to the end offset fixed when
//! the scan was planned: two passes of one plan select the same letters.
//!
//! `--since`/`--until` become offsets with the broker's time index
//! (ListOffsets by timestamp, `offsets_for_times`): a letter's record
//! timestamp is set when it is produced, after its `hookstream-dead-ms`, so
//! every letter dead at or after `since` lies at or after the first offset
//! whose timestamp is `since` − [`CLOCK_MARGIN`] (the margin covers a topic
//! with broker-set timestamps and a broker clock behind). The exact
//! comparison is then made on `hookstream-dead-ms`. A broker that answers
//! no time lookups (librdkafka's mock cluster answers "none" to all of
//! them) is caught by looking at the partition's last record, and the
//! partition is read from its beginning instead.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use super::dlq::{DeadLetter, DlqFilter};

/// How far a time seek reaches beyond the asked time, for clocks that
/// disagree.
pub const CLOCK_MARGIN: Duration = Duration::from_secs(300);

/// How long a partition's read waits for a record before it gives up on
/// the rest of its range (a broker that lost them, retention).
const QUIET: Duration = Duration::from_secs(3);

/// How long a metadata or offset request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// The offsets of one partition a scan reads: `start..end`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionRange {
    /// DLQ partition.
    pub partition: i32,
    /// First offset read.
    pub start: i64,
    /// One past the last offset read.
    pub end: i64,
}

impl PartitionRange {
    /// Records in the range.
    pub fn len(&self) -> u64 {
        u64::try_from(self.end - self.start).unwrap_or(0)
    }

    /// Whether the range holds no record.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What the broker told about one partition when a scan was planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PartitionBounds {
    /// Log start offset.
    pub low: i64,
    /// High watermark.
    pub high: i64,
    /// First offset at or after `since` − margin; `None` when the broker
    /// has no record that late (or answered no lookup at all: see
    /// [`ScanPlan::plan`]).
    pub since: Option<i64>,
    /// First offset at or after `until` + margin; `None` when none is.
    pub until: Option<i64>,
}

/// The range of a partition given its bounds (pure). `since_is_trusted`
/// says whether a `since: None` means "no record that late" (true) or
/// "no `since` was asked, or the broker did not say" (false: read from the
/// start).
pub fn range_of(partition: i32, b: PartitionBounds, since_is_trusted: bool) -> PartitionRange {
    let start = match b.since {
        Some(offset) => offset.clamp(b.low, b.high),
        None if since_is_trusted => b.high,
        None => b.low,
    };
    let end = b.until.map_or(b.high, |offset| offset.clamp(b.low, b.high));
    PartitionRange {
        partition,
        start,
        end: end.max(start),
    }
}

/// A planned scan of the DLQ: its topic and the range of each partition.
pub struct ScanPlan {
    consumer: BaseConsumer,
    topic: String,
    ranges: Vec<PartitionRange>,
}

impl ScanPlan {
    /// Looks up the ranges `filter`'s times allow in every partition of
    /// `topic`.
    pub fn plan(client: &ClientConfig, topic: &str, filter: &DlqFilter) -> Result<Self> {
        let consumer: BaseConsumer = client
            .clone()
            .set("group.id", "hookstream-dlq-reader")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("auto.offset.reset", "earliest")
            // Ranges end at known offsets: a fetch need not wait for more
            // (the mock cluster holds every fetch this long).
            .set("fetch.wait.max.ms", "10")
            .create()
            .context("creating the DLQ reader")?;
        let metadata = consumer
            .fetch_metadata(Some(topic), REQUEST_TIMEOUT)
            .with_context(|| format!("reading metadata of {topic}"))?;
        let mut partitions = Vec::new();
        for t in metadata.topics() {
            if let Some(err) = t.error() {
                anyhow::bail!("topic {topic}: {err:?}");
            }
            partitions.extend(t.partitions().iter().map(|p| p.id()));
        }
        partitions.sort_unstable();
        let margin = CLOCK_MARGIN.as_millis() as i64;
        let since = lookup(
            &consumer,
            topic,
            &partitions,
            filter.since_ms.map(|s| s.saturating_sub(margin)),
        )?;
        let until = lookup(
            &consumer,
            topic,
            &partitions,
            filter.until_ms.map(|u| u.saturating_add(margin)),
        )?;
        let mut ranges = Vec::with_capacity(partitions.len());
        for (i, &partition) in partitions.iter().enumerate() {
            let (low, high) = consumer
                .fetch_watermarks(topic, partition, REQUEST_TIMEOUT)
                .with_context(|| format!("reading the offsets of {topic}/{partition}"))?;
            let bounds = PartitionBounds {
                low,
                high,
                since: since[i],
                until: until[i],
            };
            let trusted = match (filter.since_ms, bounds.since) {
                // No `since`: from the start.
                (None, _) => false,
                (Some(since_ms), None) if high > low => {
                    // "None that late": true if the last record is older.
                    let last = timestamp_at(&consumer, topic, partition, high - 1)?;
                    last.is_some_and(|ts| ts < since_ms.saturating_sub(margin))
                }
                (Some(_), _) => true,
            };
            ranges.push(range_of(partition, bounds, trusted));
        }
        Ok(Self {
            consumer,
            topic: topic.to_string(),
            ranges,
        })
    }

    /// The ranges, in partition order.
    pub fn ranges(&self) -> &[PartitionRange] {
        &self.ranges
    }

    /// Records in all ranges: an upper bound of what a scan selects.
    pub fn records(&self) -> u64 {
        self.ranges.iter().map(PartitionRange::len).sum()
    }

    /// Reads every range and calls `each` with the letters `filter`
    /// selects, partition by partition, up to `filter.limit`; `each`
    /// returns false to stop. Returns how many were selected.
    pub fn scan(&self, filter: &DlqFilter, each: impl FnMut(DeadLetter) -> bool) -> Result<u64> {
        self.scan_as(filter, DeadLetter::from_message, each)
    }

    /// As [`Self::scan`], with only each letter's facts
    /// ([`DeadLetter::facts_of`]: no key, value or header list copied).
    pub fn scan_facts(
        &self,
        filter: &DlqFilter,
        each: impl FnMut(DeadLetter) -> bool,
    ) -> Result<u64> {
        self.scan_as(filter, DeadLetter::facts_of, each)
    }

    fn scan_as(
        &self,
        filter: &DlqFilter,
        read: fn(&BorrowedMessage<'_>) -> DeadLetter,
        mut each: impl FnMut(DeadLetter) -> bool,
    ) -> Result<u64> {
        let mut selected = 0u64;
        let limit = filter.limit.map_or(u64::MAX, |l| l as u64);
        for range in self.ranges.iter().filter(|r| !r.is_empty()) {
            if selected >= limit {
                break;
            }
            let mut go_on = true;
            self.read_range(*range, |m| {
                let letter = read(m);
                if filter.admits(&letter) {
                    selected += 1;
                    go_on = each(letter);
                }
                go_on && selected < limit
            })?;
            if !go_on {
                break;
            }
        }
        Ok(selected)
    }

    /// Reads one range; `each` returns false to stop.
    fn read_range(
        &self,
        range: PartitionRange,
        mut each: impl FnMut(&BorrowedMessage<'_>) -> bool,
    ) -> Result<()> {
        assign(&self.consumer, &self.topic, range.partition, range.start)?;
        let mut last = Instant::now();
        while last.elapsed() < QUIET {
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    last = Instant::now();
                    if m.offset() >= range.end || !each(&m) || m.offset() + 1 >= range.end {
                        return Ok(());
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, partition = range.partition, "DLQ read error")
                }
                None => {}
            }
        }
        tracing::warn!(
            partition = range.partition,
            end = range.end,
            "the DLQ partition went quiet before its end offset"
        );
        Ok(())
    }

    /// The letter at `partition`/`offset`, if the topic still has it.
    pub fn fetch(&self, partition: i32, offset: i64) -> Result<Option<DeadLetter>> {
        let mut found = None;
        let range = PartitionRange {
            partition,
            start: offset,
            end: offset + 1,
        };
        self.read_range(range, |m| {
            if m.offset() == offset {
                found = Some(DeadLetter::from_message(m));
            }
            false
        })?;
        Ok(found)
    }
}

/// Reads `topic`/`partition` from `offset`.
fn assign(consumer: &BaseConsumer, topic: &str, partition: i32, offset: i64) -> Result<()> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(offset))
        .context("building the assignment")?;
    consumer
        .assign(&tpl)
        .with_context(|| format!("reading {topic}/{partition}"))
}

/// The timestamp of the record at `offset`, if it is there.
fn timestamp_at(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<Option<i64>> {
    assign(consumer, topic, partition, offset)?;
    let deadline = Instant::now() + QUIET;
    while Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            return Ok(m.timestamp().to_millis());
        }
    }
    Ok(None)
}

/// For each of `partitions`, the first offset whose timestamp is at or
/// after `at_ms` (none when there is none, or no time was asked).
fn lookup(
    consumer: &BaseConsumer,
    topic: &str,
    partitions: &[i32],
    at_ms: Option<i64>,
) -> Result<Vec<Option<i64>>> {
    let Some(at_ms) = at_ms else {
        return Ok(vec![None; partitions.len()]);
    };
    let mut tpl = TopicPartitionList::new();
    for &p in partitions {
        tpl.add_partition_offset(topic, p, Offset::Offset(at_ms.max(0)))
            .context("building the time lookup")?;
    }
    let answer = consumer
        .offsets_for_times(tpl, REQUEST_TIMEOUT)
        .with_context(|| format!("looking up offsets by time in {topic}"))?;
    Ok(partitions
        .iter()
        .map(
            |&p| match answer.find_partition(topic, p).map(|e| e.offset()) {
                Some(Offset::Offset(o)) if o >= 0 => Some(o),
                _ => None,
            },
        )
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds(since: Option<i64>, until: Option<i64>) -> PartitionBounds {
        PartitionBounds {
            low: 10,
            high: 100,
            since,
            until,
        }
    }

    #[test]
    fn ranges_follow_the_time_lookups() {
        let r = |b, trusted| {
            let r = range_of(0, b, trusted);
            (r.start, r.end)
        };
        assert_eq!(r(bounds(None, None), false), (10, 100), "no times: all");
        assert_eq!(r(bounds(Some(40), None), true), (40, 100));
        assert_eq!(r(bounds(Some(40), Some(60)), true), (40, 60));
        assert_eq!(
            r(bounds(None, Some(60)), true),
            (100, 100),
            "none that late"
        );
        assert_eq!(r(bounds(None, Some(60)), false), (10, 60), "no answer");
        assert_eq!(r(bounds(Some(5), Some(500)), true), (10, 100), "clamped");
        assert_eq!(
            r(bounds(Some(70), Some(60)), true),
            (70, 70),
            "never negative"
        );
        assert!(range_of(0, bounds(Some(70), Some(60)), true).is_empty());
    }
}
