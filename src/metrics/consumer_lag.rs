//! `hookstream_consumer_lag{topic,partition}`: the lag librdkafka's
//! statistics report, for the partitions this process has assigned now.
//!
//! A gauge set through the `metrics` recorder would outlive its
//! partition's revocation for ever (the recorder cannot remove one series)
//! and show the lag the partition had when it left, beside the lag its new
//! owner reports. So the group members tell this table what they were
//! assigned and what was revoked (from their rebalance callbacks), the
//! statistics callback updates only assigned partitions, and `/metrics`
//! renders the table: a revoked partition's series disappears at the
//! revocation, a late statistics report cannot bring it back.
//!
//! One table per process, keyed by topic and partition: the input member
//! and the retry member of an instance never share a topic.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use rdkafka::TopicPartitionList;

use super::names;
use super::text::{family, sample};

/// Assigned partitions and their last reported lag (`None` until the
/// first report).
static LAG: Mutex<BTreeMap<(String, i32), Option<i64>>> = Mutex::new(BTreeMap::new());

fn table() -> MutexGuard<'static, BTreeMap<(String, i32), Option<i64>>> {
    crate::core::lock(&LAG)
}

/// The partitions of `tpl` were assigned to a member of this process.
pub fn assigned(tpl: &TopicPartitionList) {
    let mut t = table();
    for e in tpl.elements() {
        t.entry((e.topic().to_string(), e.partition()))
            .or_insert(None);
    }
}

/// The partitions of `tpl` were revoked (or lost): their series go.
pub fn revoked(tpl: &TopicPartitionList) {
    let mut t = table();
    for e in tpl.elements() {
        t.remove(&(e.topic().to_string(), e.partition()));
    }
}

/// librdkafka's statistics report `lag` for `topic`/`partition`; ignored
/// unless the partition is assigned and the lag known (not negative).
pub fn observe(topic: &str, partition: i32, lag: i64) {
    if lag < 0 {
        return;
    }
    if let Some(slot) = table().get_mut(&(topic.to_string(), partition)) {
        *slot = Some(lag);
    }
}

/// Appends the family (nothing while no assigned partition has a report).
pub fn render(out: &mut String) {
    let t = table();
    let mut known = t
        .iter()
        .filter_map(|(k, v)| v.map(|lag| (k, lag)))
        .peekable();
    if known.peek().is_none() {
        return;
    }
    family(
        out,
        names::CONSUMER_LAG,
        "gauge",
        "Records between the consumer's position and the high watermark, per assigned partition (librdkafka statistics)",
    );
    let mut number = String::new();
    for ((topic, partition), lag) in known {
        number.clear();
        number.push_str(&partition.to_string());
        let labels = [("topic", topic.as_str()), ("partition", number.as_str())];
        sample(out, names::CONSUMER_LAG, &labels, lag);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::Offset;

    fn tpl(topic: &str, partitions: &[i32]) -> TopicPartitionList {
        let mut tpl = TopicPartitionList::new();
        for p in partitions {
            tpl.add_partition_offset(topic, *p, Offset::Invalid)
                .unwrap();
        }
        tpl
    }

    #[test]
    fn only_assigned_partitions_are_exposed_and_a_revoked_one_goes_at_once() {
        // A topic name of its own: the table is shared by the process.
        let topic = "consumer-lag-unit-test";
        let rendered = || {
            let mut out = String::new();
            render(&mut out);
            out.lines()
                .filter(|l| l.contains(topic))
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        observe(topic, 0, 7);
        assert!(rendered().is_empty(), "not assigned: ignored");
        assigned(&tpl(topic, &[0, 1]));
        assert!(rendered().is_empty(), "no report yet");
        observe(topic, 0, 7);
        observe(topic, 1, 3);
        observe(topic, 1, -1);
        assert_eq!(
            rendered(),
            vec![
                format!("hookstream_consumer_lag{{topic=\"{topic}\",partition=\"0\"}} 7"),
                format!("hookstream_consumer_lag{{topic=\"{topic}\",partition=\"1\"}} 3"),
            ]
        );
        revoked(&tpl(topic, &[0]));
        observe(topic, 0, 9);
        assert_eq!(
            rendered(),
            vec![format!(
                "hookstream_consumer_lag{{topic=\"{topic}\",partition=\"1\"}} 3"
            )]
        );
        revoked(&tpl(topic, &[1]));
    }
}
