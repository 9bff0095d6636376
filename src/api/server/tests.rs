//! Unit tests of the connection state machine: phases, deadlines, grace and eviction.
use super::conn::Phase;
use super::*;

const LIMITS: ConnectionLimits = ConnectionLimits {
    max_connections: 4,
    header_timeout: Duration::from_secs(10),
    idle_timeout: Duration::from_secs(60),
};

fn notified(c: &Conn) -> bool {
    futures::FutureExt::now_or_never(c.evict.notified()).is_some()
}

#[test]
fn phases_decide_deadlines() {
    let conn = Arc::new(Conn::new(Instant::now(), 1_000));
    assert_eq!(
        conn.deadline_ms(&LIMITS),
        Some(11_000),
        "a new connection has header_timeout for its head"
    );
    conn.received(4_000);
    assert_eq!(
        conn.deadline_ms(&LIMITS),
        Some(11_000),
        "bytes of the first head do not extend it"
    );
    let request = conn.begin(5_000);
    assert_eq!(conn.deadline_ms(&LIMITS), None, "busy: no deadline");
    assert!(!conn.evictable());
    std::mem::forget(request);
    conn.finish(6_000);
    assert_eq!(conn.deadline_ms(&LIMITS), Some(66_000), "idle_timeout");
    assert!(conn.evictable());
    conn.received(9_000);
    assert_eq!(
        conn.deadline_ms(&LIMITS),
        Some(19_000),
        "the first byte after an idle period starts a head"
    );
    conn.received(12_000);
    assert_eq!(conn.deadline_ms(&LIMITS), Some(19_000));

    // Two requests at once (HTTP/2): busy until both ended.
    let (a, b) = (conn.begin(20_000), conn.begin(20_000));
    drop(a);
    assert_eq!(conn.deadline_ms(&LIMITS), None);
    drop(b);
    assert_eq!(conn.get().0, Phase::Idle, "the guard's drop ends it");
}

#[test]
fn the_longest_waiting_connection_without_a_request_makes_room() {
    let grace = Grace {
        read: Duration::from_millis(10),
        unread: Duration::from_millis(50),
    };
    let epoch = Instant::now();
    let held = Held::default();
    let busy = Arc::new(Conn::new(epoch, 0));
    let _request = busy.begin(5);
    let older = Arc::new(Conn::new(epoch, 10));
    let newer = Arc::new(Conn::new(epoch, 20));
    let idle = Arc::new(Conn::new(epoch, 1));
    std::mem::forget(idle.begin(2));
    idle.finish(30);
    for c in [&busy, &older, &newer, &idle] {
        c.polled();
    }
    for (id, c) in [(1, &busy), (2, &newer), (3, &older), (4, &idle)] {
        held.lock().insert(id, Arc::clone(c));
    }
    assert_eq!(
        held.evict_oldest(15, &grace),
        Eviction::TooYoung { at_ms: 20 },
        "within its grace"
    );
    assert!(!notified(&older));
    assert_eq!(held.evict_oldest(20, &grace), Eviction::Asked);
    assert!(notified(&older), "waiting for its head since 10");
    assert!(!notified(&newer) && !notified(&busy) && !notified(&idle));
    held.lock().remove(&3);
    assert_eq!(held.evict_oldest(100, &grace), Eviction::Asked);
    assert!(notified(&newer), "since 20, before the idle one (30)");
    held.lock().retain(|id, _| *id == 1);
    assert_eq!(
        held.evict_oldest(100, &grace),
        Eviction::AllBusy,
        "only a busy one left"
    );
    assert!(!notified(&busy));
}

#[test]
fn a_connection_not_read_yet_keeps_the_longer_grace() {
    let grace = Grace {
        read: Duration::from_millis(10),
        unread: Duration::from_millis(50),
    };
    let epoch = Instant::now();
    let held = Held::default();
    let unread = Arc::new(Conn::new(epoch, 0));
    let read = Arc::new(Conn::new(epoch, 5));
    read.polled();
    held.lock().insert(1, Arc::clone(&unread));
    held.lock().insert(2, Arc::clone(&read));
    assert_eq!(
        held.evict_oldest(20, &grace),
        Eviction::Asked,
        "the one read is free from 15"
    );
    assert!(notified(&read) && !notified(&unread));
    held.lock().remove(&2);
    assert_eq!(
        held.evict_oldest(20, &grace),
        Eviction::TooYoung { at_ms: 50 },
        "its task has not run yet"
    );
    assert_eq!(
        Grace::for_header_timeout(Duration::from_secs(10)),
        Grace {
            read: Duration::from_millis(50),
            unread: Duration::from_millis(250)
        }
    );
    assert_eq!(
        Grace::for_header_timeout(Duration::from_millis(100)).unread,
        Duration::from_millis(50),
        "at most half the header timeout"
    );
}
