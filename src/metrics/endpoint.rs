//! Per-endpoint series, kept in hookstream's own table rather than in the
//! `metrics` recorder, so that they can be bounded and removed.
//!
//! Owns the families labelled by `endpoint`: `hookstream_deliveries_total`,
//! `hookstream_http_responses_total`, `hookstream_delivery_duration_seconds`,
//! `hookstream_rate_limited_total`, `hookstream_sender_panics_total` and
//! `hookstream_endpoint_auto_disabled_total`.
//! `hookstream_endpoint_concurrency_limit` (only for labels that an
//! endpoint with adaptive concurrency used).
//! The first `max_endpoint_series` endpoints to deliver get series of their
//! own; later ones share the `endpoint="_other"` series, so 100 000
//! endpoints cost at most `max_endpoint_series + 1` sets of series. A
//! deleted endpoint's series are removed ([`EndpointSeriesTable::forget`]),
//! which frees its place for another endpoint. (The recorder of
//! `metrics-exporter-prometheus` cannot remove one series, and would keep
//! every endpoint ever seen.)
//!
//! Recording stays an atomic add on a handle built once per sender; the
//! table's lock is taken only when a sender is made, when endpoints are
//! deleted and when `/metrics` is scraped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use metrics::HistogramFn;

use super::names;
use super::text::{family, sample};

/// The `endpoint` label of the series shared by endpoints beyond the cap.
pub const OTHER: &str = "_other";

/// `outcome` label values of `hookstream_deliveries_total`, in the order of
/// [`EndpointSeries::outcomes`].
pub const OUTCOMES: [&str; 4] = ["delivered", "retry_scheduled", "dead_lettered", "deferred"];

/// `class` label values of `hookstream_http_responses_total` (`error`: no
/// response at all), in the order of [`EndpointSeries::classes`].
pub const CLASSES: [&str; 6] = ["1xx", "2xx", "3xx", "4xx", "5xx", "error"];

/// A histogram with fixed buckets, rendered as a Prometheus histogram.
#[derive(Debug)]
pub struct BucketHistogram {
    bounds: &'static [f64],
    /// Observations per bucket (not cumulative); the last one is above
    /// every bound.
    counts: Box<[AtomicU64]>,
    /// Sum of observations, as `f64` bits.
    sum: AtomicU64,
}

impl BucketHistogram {
    /// An empty histogram with upper bounds `bounds` (ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// Cumulative counts per bound, then the total count, then the sum.
    pub fn snapshot(&self) -> (Vec<u64>, u64, f64) {
        let mut cumulative = Vec::with_capacity(self.bounds.len());
        let mut total = 0u64;
        for (i, count) in self.counts.iter().enumerate() {
            total += count.load(Ordering::Relaxed);
            if i < self.bounds.len() {
                cumulative.push(total);
            }
        }
        (
            cumulative,
            total,
            f64::from_bits(self.sum.load(Ordering::Relaxed)),
        )
    }
}

impl HistogramFn for BucketHistogram {
    fn record(&self, value: f64) {
        let i = self.bounds.partition_point(|bound| *bound < value);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
    }
}

/// The series of one `endpoint` label value.
#[derive(Debug)]
pub struct EndpointSeries {
    /// `hookstream_deliveries_total` by [`OUTCOMES`].
    pub outcomes: [Arc<AtomicU64>; 4],
    /// `hookstream_http_responses_total` by [`CLASSES`].
    pub classes: [Arc<AtomicU64>; 6],
    /// `hookstream_rate_limited_total`.
    pub rate_limited: Arc<AtomicU64>,
    /// `hookstream_sender_panics_total`.
    pub panics: Arc<AtomicU64>,
    /// `hookstream_endpoint_auto_disabled_total`.
    pub auto_disabled: Arc<AtomicU64>,
    /// `hookstream_delivery_duration_seconds`.
    pub duration: Arc<BucketHistogram>,
    /// `hookstream_endpoint_concurrency_limit`, as `f64` bits (a gauge).
    pub concurrency_limit: Arc<AtomicU64>,
    /// Whether an endpoint with adaptive concurrency uses this label: only
    /// then is `concurrency_limit` rendered.
    pub adaptive: Arc<AtomicBool>,
}

impl EndpointSeries {
    fn new() -> Self {
        let zero = || Arc::new(AtomicU64::new(0));
        Self {
            outcomes: std::array::from_fn(|_| zero()),
            classes: std::array::from_fn(|_| zero()),
            rate_limited: zero(),
            panics: zero(),
            auto_disabled: zero(),
            duration: Arc::new(BucketHistogram::new(&super::SECONDS_BUCKETS)),
            concurrency_limit: Arc::new(AtomicU64::new(0f64.to_bits())),
            adaptive: Arc::new(AtomicBool::new(false)),
        }
    }
}

#[derive(Debug, Default)]
struct Table {
    own: HashMap<Box<str>, Arc<EndpointSeries>>,
    other: Option<Arc<EndpointSeries>>,
}

/// Every endpoint's series, at most `cap` label values of their own plus
/// [`OTHER`].
#[derive(Debug)]
pub struct EndpointSeriesTable {
    cap: usize,
    table: Mutex<Table>,
}

impl EndpointSeriesTable {
    /// An empty table giving series of their own to at most `cap` labels.
    pub fn new(cap: usize) -> Self {
        Self {
            cap,
            table: Mutex::new(Table::default()),
        }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        crate::core::lock(&self.table)
    }

    /// The series labelled `label` (made on first use), or the shared
    /// [`OTHER`] series when `cap` labels have series already. The same
    /// label always gets the same series while it has them.
    pub fn series(&self, label: &str) -> Arc<EndpointSeries> {
        let mut t = self.table();
        if let Some(s) = t.own.get(label) {
            return Arc::clone(s);
        }
        if t.own.len() < self.cap {
            let s = Arc::new(EndpointSeries::new());
            t.own.insert(label.into(), Arc::clone(&s));
            return s;
        }
        Arc::clone(
            t.other
                .get_or_insert_with(|| Arc::new(EndpointSeries::new())),
        )
    }

    /// Removes the series of `labels` (deleted endpoints): they leave the
    /// exposition and their places go to the next endpoints. A sender still
    /// finishing a deleted endpoint's queue records into handles nobody
    /// renders any more.
    pub fn forget(&self, labels: &[&str]) {
        let mut t = self.table();
        for label in labels {
            t.own.remove(*label);
        }
    }

    /// How many labels have series of their own.
    pub fn len(&self) -> usize {
        self.table().own.len()
    }

    /// Whether no label has series of its own.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends every family of the table in the text format.
    ///
    /// Long on purpose: one family after another, in exposition order.
    pub fn render(&self, out: &mut String) {
        let mut all: Vec<(String, Arc<EndpointSeries>)> = {
            let t = self.table();
            t.own
                .iter()
                .map(|(label, s)| (label.to_string(), Arc::clone(s)))
                .chain(t.other.iter().map(|s| (OTHER.to_string(), Arc::clone(s))))
                .collect()
        };
        if all.is_empty() {
            return;
        }
        all.sort_by(|a, b| a.0.cmp(&b.0));
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);

        family(
            out,
            names::DELIVERIES,
            "counter",
            "Deliveries by endpoint and outcome (delivered, retry_scheduled, dead_lettered, deferred)",
        );
        for (label, s) in &all {
            for (outcome, c) in OUTCOMES.iter().zip(&s.outcomes) {
                let labels = [("endpoint", label.as_str()), ("outcome", outcome)];
                sample(out, names::DELIVERIES, &labels, load(c));
            }
        }
        family(
            out,
            names::HTTP_RESPONSES,
            "counter",
            "HTTP responses by endpoint and status class (error: no response)",
        );
        for (label, s) in &all {
            for (class, c) in CLASSES.iter().zip(&s.classes) {
                let labels = [("endpoint", label.as_str()), ("class", class)];
                sample(out, names::HTTP_RESPONSES, &labels, load(c));
            }
        }
        family(
            out,
            names::DELIVERY_DURATION,
            "histogram",
            "Duration of the HTTP exchange of one attempt, in seconds",
        );
        let bucket = format!("{}_bucket", names::DELIVERY_DURATION);
        let sum = format!("{}_sum", names::DELIVERY_DURATION);
        let count = format!("{}_count", names::DELIVERY_DURATION);
        let bounds: Vec<String> = super::SECONDS_BUCKETS
            .iter()
            .map(|b| b.to_string())
            .collect();
        for (label, s) in &all {
            let (cumulative, total, total_sum) = s.duration.snapshot();
            for (le, n) in bounds.iter().zip(cumulative) {
                let labels = [("endpoint", label.as_str()), ("le", le.as_str())];
                sample(out, &bucket, &labels, n);
            }
            let labels = [("endpoint", label.as_str()), ("le", "+Inf")];
            sample(out, &bucket, &labels, total);
            sample(out, &sum, &[("endpoint", label.as_str())], total_sum);
            sample(out, &count, &[("endpoint", label.as_str())], total);
        }
        family(
            out,
            names::RATE_LIMITED,
            "counter",
            "Requests delayed by the endpoint's rate limit",
        );
        for (label, s) in &all {
            let labels = [("endpoint", label.as_str())];
            sample(out, names::RATE_LIMITED, &labels, load(&s.rate_limited));
        }
        family(
            out,
            names::SENDER_PANICS,
            "counter",
            "Panics in an endpoint's sender; the deliveries it held are dead-lettered as internal_error",
        );
        for (label, s) in &all {
            let labels = [("endpoint", label.as_str())];
            sample(out, names::SENDER_PANICS, &labels, load(&s.panics));
        }
        family(
            out,
            names::AUTO_DISABLED,
            "counter",
            "Times this instance disabled the endpoint after it failed every attempt for delivery.auto_disable.after",
        );
        for (label, s) in &all {
            let labels = [("endpoint", label.as_str())];
            sample(out, names::AUTO_DISABLED, &labels, load(&s.auto_disabled));
        }
        let adaptive: Vec<&(String, Arc<EndpointSeries>)> = all
            .iter()
            .filter(|(_, s)| s.adaptive.load(Ordering::Relaxed))
            .collect();
        if adaptive.is_empty() {
            return;
        }
        family(
            out,
            names::ENDPOINT_CONCURRENCY_LIMIT,
            "gauge",
            "Requests an endpoint with adaptive_concurrency may have in flight now (summed over the endpoints sharing a series)",
        );
        for (label, s) in adaptive {
            let labels = [("endpoint", label.as_str())];
            let limit = f64::from_bits(load(&s.concurrency_limit));
            sample(out, names::ENDPOINT_CONCURRENCY_LIMIT, &labels, limit);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_beyond_the_cap_share_the_other_series() {
        let table = EndpointSeriesTable::new(2);
        let a = table.series("a");
        let b = table.series("b");
        let c = table.series("c");
        let d = table.series("d");
        assert!(
            Arc::ptr_eq(&a, &table.series("a")),
            "same label, same series"
        );
        assert!(!Arc::ptr_eq(&a, &b));
        assert!(Arc::ptr_eq(&c, &d), "c and d share _other");
        assert_eq!(table.len(), 2);
        c.outcomes[0].fetch_add(2, Ordering::Relaxed);
        d.outcomes[0].fetch_add(3, Ordering::Relaxed);
        let mut text = String::new();
        table.render(&mut text);
        assert!(
            text.contains(
                "hookstream_deliveries_total{endpoint=\"_other\",outcome=\"delivered\"} 5\n"
            ),
            "{text}"
        );
        assert!(!text.contains("endpoint=\"c\""));
    }

    #[test]
    fn a_forgotten_endpoint_leaves_the_exposition_and_frees_its_place() {
        let table = EndpointSeriesTable::new(1);
        table.series("gone").panics.fetch_add(1, Ordering::Relaxed);
        let mut text = String::new();
        table.render(&mut text);
        assert!(text.contains("endpoint=\"gone\""));
        table.forget(&["gone"]);
        let mut text = String::new();
        table.render(&mut text);
        assert!(text.is_empty(), "no series, no family: {text}");
        let next = table.series("next");
        assert!(
            !Arc::ptr_eq(&next, &table.series("third")),
            "third is _other"
        );
        let mut text = String::new();
        table.render(&mut text);
        assert!(text.contains("endpoint=\"next\"") && !text.contains("gone"));
    }

    #[test]
    fn the_concurrency_limit_is_shown_only_for_adaptive_endpoints() {
        let table = EndpointSeriesTable::new(10);
        let fixed = table.series("fixed");
        let adaptive = table.series("adaptive");
        fixed.panics.fetch_add(0, Ordering::Relaxed);
        let mut text = String::new();
        table.render(&mut text);
        assert!(!text.contains(names::ENDPOINT_CONCURRENCY_LIMIT), "{text}");
        adaptive.adaptive.store(true, Ordering::Relaxed);
        adaptive
            .concurrency_limit
            .store(7f64.to_bits(), Ordering::Relaxed);
        let mut text = String::new();
        table.render(&mut text);
        assert!(
            text.contains("hookstream_endpoint_concurrency_limit{endpoint=\"adaptive\"} 7\n"),
            "{text}"
        );
        assert!(!text.contains("hookstream_endpoint_concurrency_limit{endpoint=\"fixed\"}"));
    }

    #[test]
    fn histograms_are_cumulative_and_count_what_their_buckets_hold() {
        let h = BucketHistogram::new(&[0.1, 1.0]);
        for v in [0.05, 0.1, 0.5, 3.0] {
            h.record(v);
        }
        let (cumulative, total, sum) = h.snapshot();
        assert_eq!(cumulative, vec![2, 3], "le is inclusive");
        assert_eq!(total, 4);
        assert!((sum - 3.65).abs() < 1e-9);
    }
}
