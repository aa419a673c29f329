//! Latency histograms and the summaries every report carries: HdrHistogram
//! (microsecond resolution, 3 significant digits, up to 10 minutes), so a
//! p99.9 over 100k samples costs a few KiB and merging per-task histograms is
//! exact; summaries are in milliseconds, the unit of every target.

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
        self.0.saturating_record(u64::try_from(elapsed.as_micros()).unwrap_or(MAX_MICROS).clamp(1, MAX_MICROS));
    }

    /// Adds every sample of `other` (same bounds on both sides, so it cannot fail).
    pub fn merge(&mut self, other: &Latency) {
        let _ = self.0.add(&other.0);
    }

    /// Number of samples.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// Percentiles in milliseconds.
    pub fn summary(&self) -> LatencySummary {
        let (h, ms) = (&self.0, |micros: u64| micros as f64 / 1000.0);
        if h.is_empty() {
            return LatencySummary::default();
        }
        let [p50_ms, p90_ms, p99_ms, p999_ms] = [0.5, 0.9, 0.99, 0.999].map(|q| ms(h.value_at_quantile(q)));
        let (min_ms, max_ms, mean_ms) = (ms(h.min()), ms(h.max()), h.mean() / 1000.0);
        LatencySummary { count: h.len(), min_ms, p50_ms, p90_ms, p99_ms, p999_ms, max_ms, mean_ms }
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

/// Adds every count of `from` to the same key of `into` (error tallies).
pub fn add_counts(into: &mut BTreeMap<String, u64>, from: BTreeMap<String, u64>) {
    for (kind, n) in from {
        *into.entry(kind).or_default() += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_merge_and_empty() {
        let (mut a, mut b) = (Latency::default(), Latency::default());
        (1..=500).for_each(|micros| a.record(Duration::from_micros(micros)));
        (501..=1000).for_each(|micros| b.record(Duration::from_micros(micros)));
        a.merge(&b);
        let summary = a.summary();
        assert_eq!(summary.count, 1000);
        assert!((summary.p50_ms - 0.5).abs() < 0.01 && (summary.p99_ms - 0.99).abs() < 0.01, "{summary:?}");
        assert_eq!(Latency::default().summary().count, 0);
    }
}
