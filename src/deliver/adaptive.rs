//! Adaptive concurrency of one endpoint: how many requests may be in
//! flight now, between 1 and the endpoint's `max_concurrency`, learned from
//! what the endpoint answers (AIMD, in the spirit of Vector's adaptive
//! request concurrency).
//!
//! Time is cut into windows of about one round trip (the moving average of
//! healthy latencies). When a window closes, the limit moves once:
//! - down, multiplied by `decrease_ratio`, when the endpoint pushed back in
//!   it (429, 502, 503, 504, a timeout, a refused or broken connection) or
//!   its mean latency rose more than `rtt_deviation_scale` standard
//!   deviations above the moving average;
//! - up by one when it was healthy, its mean latency no higher than the
//!   moving average, and the limit was reached in it (a limit nothing used
//!   is no evidence that more would be taken);
//! - else not at all (latency above the average but within the deviation:
//!   hold, as a receiver that starts queueing shows it first).
//!
//! So a burst of failures costs one decrease per window, not one per
//! failure. Other answers (2xx aside) say nothing about capacity: a 400 or
//! a 500 is the receiver's verdict on the request, and a failure of this
//! process ([`TransportFailure::Local`]) or the SSRF guard's refusal never
//! reached it.
//!
//! Pure: no I/O, no clock; the caller passes `now` and the latency it
//! measured. `deliver::sender` holds one [`AimdController`] per adaptive
//! endpoint and asks it before starting each attempt.

use std::time::{Duration, Instant};

use crate::config::AdaptiveConcurrencyConfig;
use crate::outcome::classify::TransportFailure;

/// The shortest window: with sub-millisecond loopback latencies, a window
/// per response would let scheduling noise move the limit.
pub const MIN_WINDOW: Duration = Duration::from_millis(1);

/// What one attempt says about the endpoint's capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Answered 2xx: its latency is a sample of the endpoint's round trip.
    Healthy,
    /// It pushed back: 429, 502, 503, 504, a timeout, or a connection that
    /// could not be made or broke.
    BackPressure,
    /// Nothing about capacity: any other answer, or no attempt reached it.
    Neutral,
}

impl Signal {
    /// The signal of an attempt that got `status`, or failed with
    /// `failure` before any answer.
    pub fn of(status: Option<u16>, failure: Option<TransportFailure>) -> Self {
        match (status, failure) {
            (Some(200..=299), _) => Self::Healthy,
            (Some(429 | 502 | 503 | 504), _) => Self::BackPressure,
            (Some(_), _) => Self::Neutral,
            (
                None,
                Some(
                    TransportFailure::Timeout | TransportFailure::Connect | TransportFailure::Reset,
                ),
            ) => Self::BackPressure,
            // The token endpoint failing says nothing of the receiver.
            (
                None,
                Some(TransportFailure::Refused | TransportFailure::Local | TransportFailure::Auth)
                | None,
            ) => Self::Neutral,
        }
    }
}

/// How the limit moved when a window closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Up by one: a healthy window that used the whole limit.
    Increased,
    /// Down: the endpoint pushed back.
    DecreasedOnBackPressure,
    /// Down: latency rose above its moving average by more than the
    /// allowed deviation.
    DecreasedOnLatency,
    /// Unchanged.
    Held,
}

/// The moving average and variance of window latencies (seconds).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Baseline {
    mean: f64,
    variance: f64,
}

impl Baseline {
    /// Moves the average towards `sample` by `alpha`.
    fn update(&mut self, sample: f64, alpha: f64) {
        let diff = sample - self.mean;
        self.mean += alpha * diff;
        self.variance = (1.0 - alpha) * (self.variance + alpha * diff * diff);
    }
}

/// What the current window saw so far.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    /// When it closes (`None` before the first answer).
    ends: Option<Instant>,
    /// Sum (seconds) and count of healthy latencies.
    rtt_sum: f64,
    rtt_count: u32,
    back_pressure: bool,
    /// The limit was reached (as many in flight as it allows).
    reached_limit: bool,
}

impl Window {
    /// Mean healthy latency, rounded to the microsecond (the sum of equal
    /// samples divided by their count is not always that sample, and a
    /// rounding error must not read as a rise).
    fn mean_rtt(&self) -> Option<f64> {
        (self.rtt_count > 0).then(|| (self.rtt_sum / f64::from(self.rtt_count) * 1e6).round() / 1e6)
    }
}

/// The settings of one endpoint's controller.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AimdSettings {
    /// The limit it starts with (1..=ceiling).
    pub initial: u32,
    /// The highest limit: the endpoint's `max_concurrency`.
    pub ceiling: u32,
    /// What a decrease multiplies the limit by (below 1).
    pub decrease_ratio: f64,
    /// Weight of a window in the moving average.
    pub ewma_alpha: f64,
    /// Standard deviations of latency rise tolerated.
    pub rtt_deviation_scale: f64,
}

impl AimdSettings {
    /// The settings of `config` under the ceiling `max_concurrency`
    /// (validated by `config::limits`; clamped here whatever comes).
    pub fn new(config: &AdaptiveConcurrencyConfig, max_concurrency: u32) -> Self {
        let ceiling = max_concurrency.max(1);
        Self {
            initial: config.initial.clamp(1, ceiling),
            ceiling,
            decrease_ratio: clamp_or(config.decrease_ratio, 0.0, 0.99, 0.9),
            ewma_alpha: clamp_or(config.ewma_alpha, 0.01, 1.0, 0.4),
            rtt_deviation_scale: clamp_or(config.rtt_deviation_scale, 0.0, 100.0, 2.5),
        }
    }
}

/// `value` within `min..=max`, or `default` when it is NaN.
fn clamp_or(value: f64, min: f64, max: f64, default: f64) -> f64 {
    if value.is_nan() {
        default
    } else {
        value.clamp(min, max)
    }
}

/// One endpoint's adaptive limit and the requests it admitted.
#[derive(Debug, Clone)]
pub struct AimdController {
    settings: AimdSettings,
    limit: u32,
    in_flight: u32,
    baseline: Option<Baseline>,
    window: Window,
}

impl AimdController {
    /// A controller at `settings.initial`, nothing in flight, no latency
    /// known yet.
    pub fn new(settings: AimdSettings) -> Self {
        Self {
            limit: settings.initial,
            settings,
            in_flight: 0,
            baseline: None,
            window: Window::default(),
        }
    }

    /// Requests allowed in flight now.
    pub fn limit(&self) -> u32 {
        self.limit
    }

    /// Requests admitted and not finished.
    pub fn in_flight(&self) -> u32 {
        self.in_flight
    }

    /// The moving average of healthy latencies, once one window closed.
    pub fn smoothed_rtt(&self) -> Option<Duration> {
        self.baseline
            .map(|b| Duration::from_secs_f64(b.mean.max(0.0)))
    }

    /// Admits one request if fewer than the limit are in flight.
    pub fn try_start(&mut self) -> bool {
        if self.in_flight >= self.limit {
            return false;
        }
        self.in_flight += 1;
        if self.in_flight >= self.limit {
            self.window.reached_limit = true;
        }
        true
    }

    /// A request admitted by [`try_start`](Self::try_start) finished at
    /// `now` after `rtt`, saying `signal`. Closes the window when it is
    /// over, and says how the limit moved then (`None`: the window goes on).
    pub fn finish(&mut self, now: Instant, rtt: Duration, signal: Signal) -> Option<Change> {
        self.in_flight = self.in_flight.saturating_sub(1);
        match signal {
            Signal::Healthy => {
                self.window.rtt_sum += rtt.as_secs_f64();
                self.window.rtt_count += 1;
            }
            Signal::BackPressure => self.window.back_pressure = true,
            Signal::Neutral => {}
        }
        match self.window.ends {
            // The first answer opens the first window, a round trip long
            // (this one's, as no average is known yet).
            None if signal != Signal::Neutral => {
                self.window.ends = Some(now + rtt.max(MIN_WINDOW));
                None
            }
            None => None,
            Some(ends) if now < ends => None,
            Some(_) => Some(self.close_window(now, rtt)),
        }
    }

    /// Moves the limit once for the window that ends now, folds its mean
    /// latency into the moving average and opens the next one.
    fn close_window(&mut self, now: Instant, rtt: Duration) -> Change {
        let window = std::mem::take(&mut self.window);
        let current = window.mean_rtt();
        // (above the allowed deviation, not above the average)
        let (rising, not_slower) = match (self.baseline, current) {
            (Some(b), Some(current)) => (
                current > b.mean + b.variance.sqrt() * self.settings.rtt_deviation_scale,
                current <= b.mean,
            ),
            _ => (false, false),
        };
        let change = if window.back_pressure || rising {
            let lower = (f64::from(self.limit) * self.settings.decrease_ratio) as u32;
            let lower = lower.clamp(1, self.limit);
            if lower < self.limit {
                self.limit = lower;
                if window.back_pressure {
                    Change::DecreasedOnBackPressure
                } else {
                    Change::DecreasedOnLatency
                }
            } else {
                Change::Held
            }
        } else if window.reached_limit && not_slower && self.limit < self.settings.ceiling {
            self.limit += 1;
            Change::Increased
        } else {
            Change::Held
        };
        if let Some(current) = current {
            match &mut self.baseline {
                Some(b) => b.update(current, self.settings.ewma_alpha),
                None => {
                    self.baseline = Some(Baseline {
                        mean: current,
                        variance: 0.0,
                    })
                }
            }
        }
        let length = self.smoothed_rtt().unwrap_or(rtt).max(MIN_WINDOW);
        self.window.ends = Some(now + length);
        // Requests still in flight at the limit keep it reached.
        self.window.reached_limit = self.in_flight >= self.limit;
        change
    }
}

#[cfg(test)]
mod tests;
