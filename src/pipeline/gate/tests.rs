//! The gates' unit tests: holding, due times, pauses, blocked partitions.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rec {
    p: i32,
    offset: i64,
    due: Option<i64>,
}

impl Gated for Rec {
    fn partition(&self) -> PartitionId {
        PartitionId {
            topic: 0,
            partition: self.p,
        }
    }
    fn due_ms(&self) -> Option<i64> {
        self.due
    }
}

fn rec(p: i32, offset: i64, due: Option<i64>) -> Rec {
    Rec { p, offset, due }
}

#[test]
fn a_partition_paused_early_is_resumed_even_when_its_record_is_due_by_now() {
    let mut g = PartitionGates::new();
    g.assign(pid(0), 0);
    let _ = g.pause_changes(0);
    // Not due when polled (the poll thread paused), due when offered.
    let r = rec(0, 1, Some(150));
    g.paused_by_consumer(pid(0));
    assert_eq!(g.offer(r, 200), Some(r), "due now: dispatched at once");
    let changes = g.pause_changes(0);
    assert_eq!(changes.resume, vec![pid(0)], "Kafka still has it paused");
    assert!(changes.pause.is_empty());
}

#[test]
fn a_partition_paused_early_stays_paused_until_its_record_is_due() {
    let mut g = PartitionGates::new();
    g.assign(pid(0), 0);
    let _ = g.pause_changes(0);
    let r = rec(0, 1, Some(300));
    g.paused_by_consumer(pid(0));
    assert_eq!(g.offer(r, 200), None, "held until due");
    assert_eq!(
        g.pause_changes(0),
        PauseChanges::default(),
        "already paused"
    );
    assert_eq!(g.next_due(), Some(300));
    assert_eq!(g.pop_ready(300), Some(r));
    assert_eq!(g.pause_changes(0).resume, vec![pid(0)]);
}

#[test]
fn a_blocked_partition_holds_and_pauses_alone_until_unblocked() {
    let mut g = PartitionGates::new();
    g.assign(pid(0), 0);
    g.assign(pid(1), 0);
    let _ = g.pause_changes(0);
    g.set_blocked(pid(0), true);
    let changes = g.pause_changes(0);
    assert_eq!((changes.pause, changes.resume), (vec![pid(0)], vec![]));
    let (r0, r1) = (rec(0, 1, None), rec(1, 1, None));
    assert_eq!(g.offer(r0, 0), None, "held while blocked");
    assert_eq!(g.offer(r1, 0), Some(r1), "other partitions flow");
    assert_eq!(g.pop_ready(0), None);
    assert!(g.expected_to_fetch(10_000, 0).iter().all(|p| *p != pid(0)));
    g.set_blocked(pid(0), false);
    assert_eq!(g.pop_ready(0), Some(r0));
    assert_eq!(g.pause_changes(0).resume, vec![pid(0)]);
}

fn pid(p: i32) -> PartitionId {
    PartitionId {
        topic: 0,
        partition: p,
    }
}

#[test]
fn open_gates_pass_records_straight_through() {
    let mut g = PartitionGates::new();
    g.assign(pid(0), 0);
    assert_eq!(g.offer(rec(0, 1, None), 100), Some(rec(0, 1, None)));
    assert_eq!(
        g.offer(rec(0, 2, Some(100)), 100),
        Some(rec(0, 2, Some(100))),
        "due now"
    );
    assert!(g.pause_changes(0).is_empty());
}

#[test]
fn a_retry_not_yet_due_pauses_only_its_partition_until_due() {
    let mut g = PartitionGates::new();
    g.assign(pid(0), 0);
    g.assign(pid(1), 0);
    assert_eq!(g.offer(rec(0, 5, Some(1_000)), 0), None);
    assert_eq!(
        g.offer(rec(0, 6, Some(900)), 0),
        None,
        "behind the head: held in order"
    );
    assert_eq!(
        g.offer(rec(1, 1, Some(0)), 0),
        Some(rec(1, 1, Some(0))),
        "other partition unaffected"
    );
    assert_eq!(
        g.pause_changes(0),
        PauseChanges {
            pause: vec![pid(0)],
            resume: vec![]
        }
    );
    assert_eq!(g.next_due(), Some(1_000));
    assert_eq!(g.pop_ready(999), None);
    assert_eq!(g.pop_ready(1_000), Some(rec(0, 5, Some(1_000))));
    assert_eq!(g.pop_ready(1_000), Some(rec(0, 6, Some(900))));
    assert_eq!(g.pop_ready(1_000), None);
    assert_eq!(
        g.pause_changes(0),
        PauseChanges {
            pause: vec![],
            resume: vec![pid(0)]
        }
    );
    assert_eq!(g.held(), 0);
}

#[test]
fn a_later_head_keeps_the_partition_waiting() {
    let mut g = PartitionGates::new();
    g.assign(pid(0), 0);
    g.offer(rec(0, 1, Some(1_000)), 0);
    g.offer(rec(0, 2, Some(5_000)), 0);
    assert_eq!(g.pause_changes(0).pause, vec![pid(0)]);
    assert_eq!(g.pop_ready(2_000), Some(rec(0, 1, Some(1_000))));
    assert_eq!(g.pop_ready(2_000), None);
    assert_eq!(g.next_due(), Some(5_000));
    assert!(g.pause_changes(2_000).is_empty(), "still paused");
}

#[test]
fn a_waiting_partition_is_resumed_ahead_of_its_last_held_record() {
    let mut g = PartitionGates::new();
    g.assign(pid(0), 0);
    g.offer(rec(0, 1, Some(1_000)), 0);
    g.offer(rec(0, 2, Some(2_000)), 0);
    assert_eq!(g.pause_changes(0).pause, vec![pid(0)]);
    let resume_at = 2_000 - RESUME_AHEAD_MS;
    assert_eq!(
        g.next_resume(),
        Some(resume_at),
        "ahead of the last, not the head"
    );
    assert_eq!(g.pop_ready(1_000), Some(rec(0, 1, Some(1_000))));
    assert_eq!(g.pop_ready(1_000), None);
    assert!(g.pause_changes(1_000).is_empty(), "the next still waits");
    assert!(g.pause_changes(resume_at - 1).is_empty());
    assert_eq!(
        g.pause_changes(resume_at).resume,
        vec![pid(0)],
        "fetching again while the held record waits"
    );
    assert_eq!(g.next_resume(), None);
    assert_eq!(g.pop_ready(resume_at), None, "still held until due");
    // What is fetched meanwhile queues behind it; a record due later than
    // the resume-ahead pauses the partition again.
    assert_eq!(g.offer(rec(0, 3, Some(2_000)), resume_at), None);
    assert!(g.pause_changes(resume_at).is_empty());
    assert_eq!(g.offer(rec(0, 4, Some(9_000)), resume_at), None);
    assert_eq!(g.pause_changes(resume_at).pause, vec![pid(0)]);
    assert_eq!(g.next_resume(), Some(9_000 - RESUME_AHEAD_MS));
    assert_eq!(g.pop_ready(2_000), Some(rec(0, 2, Some(2_000))));
    assert_eq!(g.pop_ready(2_000), Some(rec(0, 3, Some(2_000))));
    assert_eq!(g.pop_ready(2_000), None);
    assert_eq!(g.held(), 1);
}

#[test]
fn a_retry_due_within_the_resume_ahead_is_held_without_a_pause() {
    let mut g = PartitionGates::new();
    g.assign(pid(0), 0);
    let due = RESUME_AHEAD_MS - 1;
    assert_eq!(g.offer(rec(0, 1, Some(due)), 0), None, "held until due");
    assert!(g.pause_changes(0).is_empty(), "not worth a pause");
    assert_eq!(g.next_resume(), None);
    assert_eq!(g.next_due(), Some(due));
    assert_eq!(g.pop_ready(due), Some(rec(0, 1, Some(due))));
}

#[test]
fn a_blocked_or_flow_paused_partition_is_not_resumed_ahead() {
    let mut g = PartitionGates::new();
    g.assign(pid(0), 0);
    g.offer(rec(0, 1, Some(1_000)), 0);
    g.set_blocked(pid(0), true);
    assert_eq!(g.pause_changes(0).pause, vec![pid(0)]);
    assert_eq!(g.next_resume(), None);
    assert!(g.pause_changes(1_000).is_empty(), "blocked: stays paused");
}

#[test]
fn back_pressure_holds_everything_and_releases_in_order() {
    let mut g = PartitionGates::new();
    g.assign(pid(0), 0);
    g.assign(pid(1), 0);
    g.set_flow_paused(true);
    assert!(
        g.pause_changes(0).is_empty(),
        "a short spell holds, Kafka keeps fetching"
    );
    assert!(g.pause_changes(FLOW_PAUSE_AFTER_MS - 1).is_empty());
    assert_eq!(
        g.pause_changes(FLOW_PAUSE_AFTER_MS),
        PauseChanges {
            pause: vec![pid(0), pid(1)],
            resume: vec![]
        }
    );
    assert!(g.pause_changes(FLOW_PAUSE_AFTER_MS + 1).is_empty());
    assert_eq!(g.offer(rec(0, 1, None), 0), None);
    assert_eq!(g.offer(rec(0, 2, None), 0), None);
    assert_eq!(g.pop_ready(0), None, "flow paused");
    g.set_flow_paused(false);
    assert_eq!(g.pop_ready(0), Some(rec(0, 1, None)));
    assert_eq!(
        g.offer(rec(0, 3, None), 0),
        None,
        "queued behind held records"
    );
    assert_eq!(g.pop_ready(0), Some(rec(0, 2, None)));
    assert_eq!(g.pop_ready(0), Some(rec(0, 3, None)));
    assert_eq!(
        g.pause_changes(0),
        PauseChanges {
            pause: vec![],
            resume: vec![pid(0), pid(1)]
        }
    );
}

#[test]
fn back_pressure_shorter_than_the_pause_delay_never_reaches_kafka() {
    let mut g = PartitionGates::new();
    g.assign(pid(0), 0);
    let _ = g.pause_changes(0);
    for spell in 0..10 {
        let t = spell * 100;
        g.set_flow_paused(true);
        assert!(g.pause_changes(t).is_empty());
        assert_eq!(g.offer(rec(0, spell, None), t), None, "held");
        assert!(g.pause_changes(t + FLOW_PAUSE_AFTER_MS / 2).is_empty());
        g.set_flow_paused(false);
        assert_eq!(g.pop_ready(t + 60), Some(rec(0, spell, None)));
        assert!(g.pause_changes(t + 60).is_empty());
    }
}

#[test]
fn a_due_partition_stays_paused_while_the_flow_is() {
    let mut g = PartitionGates::new();
    g.assign(pid(0), 0);
    g.offer(rec(0, 1, Some(1_000)), 0);
    g.set_flow_paused(true);
    assert_eq!(g.pause_changes(0).pause, vec![pid(0)], "waiting");
    assert_eq!(g.pop_ready(1_000), None);
    assert!(g.pause_changes(1_000).is_empty(), "the flow holds it now");
    g.set_flow_paused(false);
    assert_eq!(g.pop_ready(1_000), Some(rec(0, 1, Some(1_000))));
    assert_eq!(g.pause_changes(1_000).resume, vec![pid(0)]);
}

#[test]
fn records_of_unassigned_partitions_are_dropped() {
    let mut g = PartitionGates::new();
    g.assign(pid(0), 0);
    assert_eq!(g.offer(rec(1, 1, None), 0), None);
    assert_eq!(g.held(), 0);
    g.revoke(pid(0));
    assert_eq!(g.offer(rec(0, 2, None), 0), None);
    assert_eq!(g.held(), 0);
    assert!(g.pause_changes(0).is_empty(), "nothing to pause or resume");
}

#[test]
fn only_partitions_resumed_a_while_ago_with_nothing_held_are_expected_to_fetch() {
    let mut g = PartitionGates::new();
    g.assign(pid(0), 0);
    g.assign(pid(1), 0);
    g.assign(pid(2), 900);
    g.offer(rec(1, 1, Some(5_000)), 0);
    let _ = g.pause_changes(0);
    assert_eq!(
        g.expected_to_fetch(1_000, 500),
        vec![pid(0)],
        "1 waits for a retry, 2 was assigned 100 ms ago"
    );
    assert_eq!(g.pop_ready(5_000), Some(rec(1, 1, Some(5_000))));
    let _ = g.pause_changes(5_000);
    let mut expected = g.expected_to_fetch(5_400, 500);
    expected.sort_unstable();
    assert_eq!(expected, vec![pid(0), pid(2)], "1 resumed 400 ms ago");
    g.set_flow_paused(true);
    let _ = g.pause_changes(6_000);
    assert!(g.expected_to_fetch(9_000, 500).is_empty(), "back-pressure");
}

#[test]
fn revoke_drops_held_records() {
    let mut g = PartitionGates::new();
    g.assign(pid(0), 0);
    g.offer(rec(0, 1, Some(10)), 0);
    g.offer(rec(0, 2, None), 0);
    assert_eq!(g.revoke(pid(0)), 2);
    assert_eq!(g.held(), 0);
    assert_eq!(g.next_due(), None);
}
