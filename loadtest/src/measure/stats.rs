//! Latency histograms and the summaries every report carries: HdrHistogram (microseconds, 3 significant digits, up
//! to 10 minutes), so a p99.9 over 100k samples costs a few KiB and merging per-task histograms is exact; summaries
//! are in milliseconds, the unit of every target.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

const MAX_MICROS: u64 = 600_000_000;

/// A latency histogram in microseconds.
#[derive(Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        // Constant bounds that HdrHistogram accepts (low ≥ 1, high ≥ 2·low, 3 digits): cannot fail.
        Self(Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("constant histogram bounds are valid"))
    }
}

impl Latency {
    /// Records one sample; longer than the bound records as the bound.
    pub fn record(&mut self, elapsed: Duration) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(MAX_MICROS);
        self.0.saturating_record(micros.clamp(1, MAX_MICROS));
    }

    /// Adds every sample of `other` (same bounds on both sides, so it cannot fail).
    pub fn merge(&mut self, other: &Latency) {
        let _ = self.0.add(&other.0);
    }

    /// Number of samples.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// Percentiles in milliseconds (all zero without samples).
    pub fn summary(&self) -> LatencySummary {
        let (h, ms, mut s) = (&self.0, |micros: u64| micros as f64 / 1000.0, LatencySummary::default());
        if !h.is_empty() {
            (s.count, s.min_ms, s.max_ms, s.mean_ms) = (h.len(), ms(h.min()), ms(h.max()), h.mean() / 1000.0);
            let quantiles = [0.5, 0.9, 0.99, 0.999].map(|q| ms(h.value_at_quantile(q)));
            [s.p50_ms, s.p90_ms, s.p99_ms, s.p999_ms] = quantiles;
        }
        s
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
