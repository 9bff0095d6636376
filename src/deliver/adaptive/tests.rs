//! Unit tests of the adaptive concurrency controller: windows, decreases on back pressure and latency, increases.

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn settings(initial: u32, ceiling: u32) -> AimdSettings {
    AimdSettings::new(
        &AdaptiveConcurrencyConfig {
            initial,
            ..AdaptiveConcurrencyConfig::default()
        },
        ceiling,
    )
}

/// Drives a controller one window at a time: every window, fill the
/// limit, then finish all but one request with `rtt`/`signal`, then the
/// last one after the window's end.
struct Driver {
    c: AimdController,
    now: Instant,
}

impl Driver {
    fn new(initial: u32, ceiling: u32) -> Self {
        Self {
            c: AimdController::new(settings(initial, ceiling)),
            now: Instant::now(),
        }
    }

    /// One window in which every admitted request answered `signal`
    /// after `rtt`; the window's last answer closes it.
    fn window(&mut self, rtt: Duration, signal: Signal) -> Change {
        while self.c.try_start() {}
        let n = self.c.in_flight();
        let mut change = None;
        for i in 0..n {
            // The answers but the last at once; the last one after the
            // window's end (a window lasts the moving average, which
            // may be longer than this window's `rtt`), so it closes it.
            self.now += if i + 1 == n {
                rtt.max(self.c.smoothed_rtt().unwrap_or_default()) + ms(1)
            } else {
                ms(0)
            };
            if let Some(c) = self.c.finish(self.now, rtt, signal) {
                change = Some(c);
            }
        }
        change.unwrap_or(Change::Held)
    }

    /// Healthy windows of `rtt` until a moving average is known (the
    /// first answer opens the first window; closing it only learns).
    fn warm_up(&mut self, rtt: Duration) {
        while self.c.smoothed_rtt().is_none() {
            assert_eq!(self.window(rtt, Signal::Healthy), Change::Held);
        }
    }
}

#[test]
fn signals_of_answers_and_failures() {
    use TransportFailure::*;
    let table: [(Option<u16>, Option<TransportFailure>, Signal); 14] = [
        (Some(200), None, Signal::Healthy),
        (Some(204), None, Signal::Healthy),
        (Some(429), None, Signal::BackPressure),
        (Some(503), None, Signal::BackPressure),
        (Some(502), None, Signal::BackPressure),
        (Some(504), None, Signal::BackPressure),
        (Some(400), None, Signal::Neutral),
        (Some(404), None, Signal::Neutral),
        (Some(500), None, Signal::Neutral),
        (None, Some(Timeout), Signal::BackPressure),
        (None, Some(Connect), Signal::BackPressure),
        (None, Some(Reset), Signal::BackPressure),
        (None, Some(Local), Signal::Neutral),
        (None, Some(Refused), Signal::Neutral),
    ];
    for (status, failure, want) in table {
        assert_eq!(Signal::of(status, failure), want, "{status:?} {failure:?}");
    }
}

#[test]
fn healthy_windows_add_one_up_to_the_ceiling() {
    let mut d = Driver::new(1, 4);
    d.warm_up(ms(10));
    let table = [
        (2, Change::Increased),
        (3, Change::Increased),
        (4, Change::Increased),
        (4, Change::Held),
        (4, Change::Held),
    ];
    for (limit, change) in table {
        assert_eq!(d.window(ms(10), Signal::Healthy), change);
        assert_eq!(d.c.limit(), limit);
    }
}

#[test]
fn back_pressure_multiplies_the_limit_down_to_the_floor() {
    let mut d = Driver::new(20, 20);
    d.warm_up(ms(10));
    // 20 × 0.9 = 18, × 0.9 = 16.2 → 16, ... rounded down, so each step
    // is a decrease until the floor of 1.
    let down = Change::DecreasedOnBackPressure;
    let table = [
        (18, down),
        (16, down),
        (14, down),
        (12, down),
        (10, down),
        (9, down),
        (8, down),
        (7, down),
        (6, down),
        (5, down),
        (4, down),
        (3, down),
        (2, down),
        (1, down),
        (1, Change::Held),
        (1, Change::Held),
    ];
    for (limit, change) in table {
        assert_eq!(d.window(ms(10), Signal::BackPressure), change, "to {limit}");
        assert_eq!(d.c.limit(), limit);
    }
}

#[test]
fn many_failures_in_one_window_decrease_once() {
    let mut c = AimdController::new(settings(10, 10));
    let t0 = Instant::now();
    // The first healthy answer opens a 10 ms window.
    assert!(c.try_start());
    assert_eq!(c.finish(t0, ms(10), Signal::Healthy), None);
    for _ in 0..10 {
        assert!(c.try_start());
    }
    assert!(!c.try_start(), "the limit admits 10");
    // Nine 503s inside the window: no change yet.
    for i in 0..9 {
        assert_eq!(c.finish(t0 + ms(i), ms(1), Signal::BackPressure), None);
    }
    assert_eq!(c.limit(), 10);
    // The window closes on the next answer: one decrease for all nine.
    assert_eq!(
        c.finish(t0 + ms(11), ms(10), Signal::Healthy),
        Some(Change::DecreasedOnBackPressure)
    );
    assert_eq!(c.limit(), 9);
}

#[test]
fn latency_rising_above_the_moving_average_decreases() {
    let mut d = Driver::new(8, 100);
    d.warm_up(ms(10));
    // Round trips of 10-12 ms build the average and its deviation
    // (the early ones may move the limit either way).
    for rtt in [12, 10, 12, 10, 12, 10, 12, 10, 11] {
        d.window(ms(rtt), Signal::Healthy);
    }
    let limit = d.c.limit();
    // (window latency, what happens, limit after)
    let table = [
        // Not above the average: room for one more.
        (10, Change::Increased, limit + 1),
        // Above the average, within the deviation: hold.
        (12, Change::Held, limit + 1),
        // Far above: queueing at the receiver.
        (40, Change::DecreasedOnLatency, (limit + 1) * 9 / 10),
    ];
    for (rtt, change, after) in table {
        assert_eq!(d.window(ms(rtt), Signal::Healthy), change, "{rtt} ms");
        assert_eq!(d.c.limit(), after, "{rtt} ms");
    }
}

#[test]
fn a_limit_not_reached_is_not_raised() {
    let mut c = AimdController::new(settings(4, 10));
    let t0 = Instant::now();
    // One request at a time, never four: healthy, but no evidence that
    // more would be taken.
    for i in 0..20u64 {
        assert!(c.try_start());
        let change = c.finish(t0 + ms(11 * i), ms(10), Signal::Healthy);
        assert_ne!(change, Some(Change::Increased), "answer {i}");
    }
    assert_eq!(c.limit(), 4);
}

#[test]
fn other_4xx_and_500_are_not_a_capacity_signal() {
    for status in [400, 401, 404, 422, 500] {
        let mut d = Driver::new(5, 5);
        d.warm_up(ms(10));
        let signal = Signal::of(Some(status), None);
        for _ in 0..5 {
            d.window(ms(10), signal);
        }
        assert_eq!(d.c.limit(), 5, "{status} leaves the limit alone");
    }
}

#[test]
fn follows_a_capacity_that_drops_then_rises() {
    // A receiver taking `capacity` at once answers 503 beyond it; each
    // window the controller fills its limit. (capacity, windows).
    let mut d = Driver::new(1, 32);
    let now = &mut d.now;
    let c = &mut d.c;
    let mut limits = Vec::new();
    for (capacity, windows) in [(16u32, 60), (4, 40), (16, 60)] {
        for _ in 0..windows {
            while c.try_start() {}
            let n = c.in_flight();
            for i in 0..n {
                *now += if i + 1 == n { ms(11) } else { ms(0) };
                let signal = if i < capacity {
                    Signal::Healthy
                } else {
                    Signal::BackPressure
                };
                c.finish(*now, ms(10), signal);
            }
        }
        limits.push(c.limit());
    }
    // At the end of each phase the limit is near the capacity: at most
    // one above it (the probe that finds the edge), at least the
    // decrease below it.
    for (limit, capacity) in limits.iter().zip([16, 4, 16]) {
        assert!(
            *limit <= capacity + 1 && *limit >= capacity * 8 / 10,
            "limit {limit} for capacity {capacity}: {limits:?}"
        );
    }
}

#[test]
fn neutral_answers_before_any_other_do_not_open_a_window() {
    let mut c = AimdController::new(settings(2, 2));
    let t0 = Instant::now();
    assert!(c.try_start());
    assert_eq!(c.finish(t0, ms(5), Signal::Neutral), None);
    assert_eq!(c.in_flight(), 0);
    assert!(c.smoothed_rtt().is_none());
    // Back pressure before any healthy answer still decreases, one
    // window (its own round trip) later.
    assert!(c.try_start() && c.try_start());
    assert_eq!(c.finish(t0, ms(5), Signal::BackPressure), None);
    assert_eq!(
        c.finish(t0 + ms(6), ms(5), Signal::BackPressure),
        Some(Change::DecreasedOnBackPressure)
    );
    assert_eq!(c.limit(), 1);
}

#[test]
fn settings_are_clamped_to_the_ceiling_whatever_comes() {
    let s = AimdSettings::new(
        &AdaptiveConcurrencyConfig {
            initial: 50,
            decrease_ratio: f64::NAN,
            ewma_alpha: 7.0,
            rtt_deviation_scale: -1.0,
        },
        8,
    );
    assert_eq!(s.initial, 8);
    assert_eq!(s.ceiling, 8);
    assert_eq!(s.decrease_ratio, 0.9);
    assert_eq!(s.ewma_alpha, 1.0);
    assert_eq!(s.rtt_deviation_scale, 0.0);
    let zero = AimdSettings::new(&AdaptiveConcurrencyConfig::default(), 0);
    assert_eq!((zero.initial, zero.ceiling), (1, 1));
}
