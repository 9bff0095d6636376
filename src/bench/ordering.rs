//! Scenario (k): per-device ordering with one device failing. One endpoint
//! with `ordering = "per_device"`, events from [`ORDERED_DEVICES`] devices,
//! run three ways in each of [`ROUNDS`] interleaved rounds: without
//! ordering, ordered with every device healthy, and ordered while the
//! receiver answers 503 to one device's every request. Reports the other
//! devices' deliveries/s during the failure ÷ the ordered healthy rate (the
//! issue's bar: ≥ 0.9), and ordered ÷ unordered (what the lane costs).

use anyhow::Result;
use std::sync::atomic::Ordering;

use super::receiver::NO_DEVICE;
use super::{Baselines, Bench, Measured, Run, Scenario, ScenarioReport, median};
use crate::config::DeliveryOrder;

/// Rounds of scenario (k).
const ROUNDS: usize = 5;

/// Devices (k)'s events come from (`dev-<i % 1000>`, keyed by device).
const ORDERED_DEVICES: u64 = 1_000;

/// The device the receiver fails in the failing run.
const FAILING_DEVICE: u64 = 7;

/// The three runs of a round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    Unordered,
    Ordered,
    OrderedFailing,
}

impl Way {
    fn tag(self) -> &'static str {
        match self {
            Self::Unordered => "unordered",
            Self::Ordered => "ordered",
            Self::OrderedFailing => "failing",
        }
    }
}

impl Bench {
    /// Scenario (k); `events` from [`ORDERED_DEVICES`] devices.
    ///
    /// Long on purpose: the rounds' loop and the medians of its series.
    pub(super) async fn ordered_with_failing_device(
        &self,
        events: u64,
        baselines: &Baselines,
    ) -> Result<ScenarioReport> {
        let scenario = Scenario::OrderedFailingDevice;
        let base = format!("bench-{}-ordered", self.run_id);
        let ways = [Way::Unordered, Way::Ordered, Way::OrderedFailing];
        for way in ways {
            let topic = format!("{base}-{}", way.tag());
            self.create_topic(&topic).await?;
            self.preload_devices(&topic, 0, events, ORDERED_DEVICES)
                .await?;
        }
        eprintln!(
            "{}: preloaded {events} events from {ORDERED_DEVICES} devices three times",
            scenario.label()
        );
        let failing_events = (0..events)
            .filter(|i| i % ORDERED_DEVICES == FAILING_DEVICE)
            .count() as u64;
        let others = events - failing_events;
        let url = self.receiver.url();
        let (mut failing_ratios, mut cost_ratios) = (Vec::new(), Vec::new());
        let (mut rates, mut cpu) = (Vec::new(), Vec::new());
        let mut last: Option<Measured> = None;
        for round in 0..ROUNDS {
            let mut order = ways;
            order.rotate_left(round % ways.len());
            let mut measured: Vec<(Way, f64, f64)> = Vec::new();
            for way in order {
                let topic = format!("{base}-{}", way.tag());
                let mut c = self.config(&topic, &format!("{topic}-r{round}"));
                c.topics.prefix = format!("bench{}{}{round}", self.run_id, way.tag());
                let mut e = self.endpoint("bench", url.clone());
                if way != Way::Unordered {
                    e.ordering = DeliveryOrder::PerDevice;
                }
                c.endpoints.push(e);
                let expected = match way {
                    Way::OrderedFailing => others,
                    _ => events,
                };
                let counts = std::sync::Arc::clone(self.receiver.counts());
                let (m, pipeline) = self
                    .measure_with(c, expected, || {
                        if way == Way::OrderedFailing {
                            counts
                                .failing_device
                                .store(FAILING_DEVICE, Ordering::SeqCst);
                        }
                    })
                    .await?;
                let failed = counts.failed.load(Ordering::Relaxed);
                counts.failing_device.store(NO_DEVICE, Ordering::SeqCst);
                pipeline.shutdown().await?;
                let rate = expected as f64 / m.secs.max(1e-9);
                let per_event = m.cpu_secs * 1e6 / expected.max(1) as f64;
                if way == Way::OrderedFailing {
                    eprintln!(
                        "    dev-{FAILING_DEVICE} answered 503 {failed} times meanwhile ({failing_events} of its events waiting)"
                    );
                }
                measured.push((way, rate, per_event));
                if way == Way::OrderedFailing {
                    last = Some(m);
                }
            }
            let of = |way: Way| {
                measured
                    .iter()
                    .find(|(w, _, _)| *w == way)
                    .map_or((0.0, 0.0), |(_, r, c)| (*r, *c))
            };
            let (unordered, ordered, failing) = (
                of(Way::Unordered),
                of(Way::Ordered),
                of(Way::OrderedFailing),
            );
            eprintln!(
                "  round {}: unordered {:.0} events/s ({:.1} µs CPU/event), ordered {:.0} events/s ({:.1} µs), ordered with dev-{FAILING_DEVICE} failing: the others {:.0} events/s ({:.1} µs) (×{:.2} of ordered healthy; ordered ×{:.2} of unordered)",
                round + 1,
                unordered.0,
                unordered.1,
                ordered.0,
                ordered.1,
                failing.0,
                failing.1,
                failing.0 / ordered.0.max(1e-9),
                ordered.0 / unordered.0.max(1e-9),
            );
            failing_ratios.push(failing.0 / ordered.0.max(1e-9));
            cost_ratios.push(ordered.0 / unordered.0.max(1e-9));
            rates.push(failing.0);
            cpu.push(failing.1);
        }
        eprintln!(
            "  others while one device fails ÷ ordered healthy (median of rounds) ×{:.2}, ratios {failing_ratios:.2?}; ordered ÷ unordered ×{:.2}, ratios {cost_ratios:.2?}",
            median(&failing_ratios),
            median(&cost_ratios),
        );
        let Some(mut measured) = last else {
            anyhow::bail!("scenario (k) ran no round");
        };
        measured.secs = others as f64 / median(&rates).max(1e-9);
        measured.cpu_secs = median(&cpu) * others as f64 / 1e6;
        let run = Run {
            events: others,
            deliveries: others,
            measured,
            latency_ms: (0.0, 0.0),
        };
        Ok(ScenarioReport {
            ordered_others_ratio_with_failing_device: Some(median(&failing_ratios)),
            ordered_to_unordered_ratio: Some(median(&cost_ratios)),
            ..ScenarioReport::of(scenario, run, baselines)
        })
    }
}
