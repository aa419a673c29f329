//! Latency histograms and the summaries every report carries.
//!
//! Percentiles come from HdrHistogram (microsecond resolution, 3 significant
//! digits, up to 10 minutes), so a p99.9 over 100k samples costs a few KiB and
//! merging per-task histograms is exact. Summaries are in milliseconds because
//! every target in BENCHMARKS.md is written in milliseconds.

use std::{collections::BTreeMap, time::Duration};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

const MAX_MICROS: u64 = 600_000_000;

/// A latency histogram in microseconds.
#[derive(Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        // The bounds are constants that HdrHistogram accepts (low >= 1,
        // high >= 2 * low, 3 significant digits), so this cannot fail.
        Self(Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("constant histogram bounds are valid"))
    }
}

impl Latency {
    /// Records one sample; longer than the bound records as the bound.
    pub fn record(&mut self, elapsed: Duration) {
        self.0.saturating_record(
            u64::try_from(elapsed.as_micros())
                .unwrap_or(MAX_MICROS)
                .clamp(1, MAX_MICROS),
        );
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides, so adding never fails; ignore defensively.
        let _ = self.0.add(&other.0);
    }

    /// Number of samples.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// Percentiles in milliseconds.
    pub fn summary(&self) -> LatencySummary {
        if self.0.is_empty() {
            return LatencySummary::default();
        }
        let ms = |micros: u64| micros as f64 / 1000.0;
        LatencySummary {
            count: self.0.len(),
            min_ms: ms(self.0.min()),
            p50_ms: ms(self.0.value_at_quantile(0.50)),
            p90_ms: ms(self.0.value_at_quantile(0.90)),
            p99_ms: ms(self.0.value_at_quantile(0.99)),
            p999_ms: ms(self.0.value_at_quantile(0.999)),
            max_ms: ms(self.0.max()),
            mean_ms: self.0.mean() / 1000.0,
        }
    }
}

/// Adds every count of `from` to the same key of `into` (error tallies).
pub fn add_counts(into: &mut BTreeMap<String, u64>, from: BTreeMap<String, u64>) {
    for (kind, n) in from {
        *into.entry(kind).or_default() += n;
    }
}

/// Sample count and percentiles of a latency histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl LatencySummary {
    /// `p50/p99 ms` for summary lines.
    pub fn short(&self) -> String {
        format!("p50 {:.2} ms, p99 {:.2} ms", self.p50_ms, self.p99_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_spread() {
        let mut latency = Latency::default();
        for micros in 1..=1000 {
            latency.record(Duration::from_micros(micros));
        }
        let summary = latency.summary();
        assert_eq!(summary.count, 1000);
        assert!((summary.p50_ms - 0.5).abs() < 0.01, "{summary:?}");
        assert!((summary.p99_ms - 0.99).abs() < 0.01, "{summary:?}");
    }

    #[test]
    fn merge_adds_samples_and_empty_is_zero() {
        let mut a = Latency::default();
        let mut b = Latency::default();
        a.record(Duration::from_millis(1));
        b.record(Duration::from_millis(3));
        a.merge(&b);
        assert_eq!(a.len(), 2);
        assert_eq!(Latency::default().summary().count, 0);
    }
}
