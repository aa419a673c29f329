//! The cluster total over the last hour, one point per second, for the
//! dashboard's chart. It lives in memory only: a restarted node starts an
//! empty chart.
//!
//! One task owns the ring of points and samples [`Query::total`] every
//! second; readers get immutable snapshots through a `watch` channel, so a
//! dashboard never takes a lock the sampler holds.

use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::query::Query;

/// Time between two points.
pub const STEP: Duration = Duration::from_secs(1);
/// Points kept: one hour.
pub const POINTS: usize = 3600;

/// The chart at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct ChartSnapshot {
    /// Milliseconds between two points.
    pub step_ms: u64,
    /// Unix time in milliseconds of the newest point (0 when empty).
    pub end_ms: u64,
    /// Cluster totals, oldest first, at most [`POINTS`].
    pub totals: Vec<u64>,
}

impl ChartSnapshot {
    /// The newest point, if any.
    pub fn newest(&self) -> Option<u64> {
        self.totals.last().copied()
    }
}

/// The ring of points, owned by the sampling task.
#[derive(Debug, Default)]
struct Ring {
    totals: VecDeque<u64>,
}

impl Ring {
    fn record(&mut self, total: u64, now_ms: u64) -> ChartSnapshot {
        if self.totals.len() == POINTS {
            self.totals.pop_front();
        }
        self.totals.push_back(total);
        ChartSnapshot {
            step_ms: u64::try_from(STEP.as_millis()).unwrap_or(u64::MAX),
            end_ms: now_ms,
            totals: self.totals.iter().copied().collect(),
        }
    }
}

/// Samples the cluster total every [`STEP`] until `shutdown`, publishing
/// each new chart on `chart`.
pub async fn run(query: Query, chart: watch::Sender<Arc<ChartSnapshot>>, shutdown: CancellationToken) {
    let mut ring = Ring::default();
    every_step(shutdown, || {
        let now_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX));
        chart.send_replace(Arc::new(ring.record(query.total(), now_ms)));
    })
    .await;
}

/// Runs `sample` every [`STEP`] (at once first; a late tick is not caught
/// up) until `shutdown`: the clock of the node's per-second samplers.
pub(crate) async fn every_step(shutdown: CancellationToken, mut sample: impl FnMut()) {
    let mut tick = tokio::time::interval(STEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => sample(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ring_keeps_the_last_hour_oldest_first() {
        let mut ring = Ring::default();
        let mut last = ChartSnapshot::default();
        for second in 0..(POINTS as u64 + 10) {
            last = ring.record(second, 1_000 * second);
        }
        assert_eq!(last.totals.len(), POINTS);
        assert_eq!(last.totals.first(), Some(&10));
        assert_eq!(last.newest(), Some(POINTS as u64 + 9));
        assert_eq!((last.step_ms, last.end_ms), (1_000, 1_000 * (POINTS as u64 + 9)));
    }
}
