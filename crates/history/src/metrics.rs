//! What history reports in `/metrics`.

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

type Labels = [(&'static str, &'static str); 1];

/// Counters of flushing and replication.
#[derive(Clone, Default)]
pub(crate) struct HistoryMetrics {
    pub(crate) views: Counter,
    pub(crate) pending_views: Gauge,
    pub(crate) flushes: Counter,
    pub(crate) flushed_rows: Counter,
    pub(crate) store_errors: Counter,
    pub(crate) replicated: Family<Labels, Counter>,
    pub(crate) peer_errors: Family<Labels, Counter>,
    pub(crate) dropped: Family<Labels, Counter>,
}

impl HistoryMetrics {
    pub(crate) fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "headcount_history_views",
            "Views counted by this node",
            metrics.views.clone(),
        );
        registry.register(
            "headcount_history_pending_views",
            "Views counted but not written yet (0 after each flush)",
            metrics.pending_views.clone(),
        );
        registry.register("headcount_history_flushes", "Flushes written", metrics.flushes.clone());
        registry.register(
            "headcount_history_flushed_rows",
            "(day, topic) rows written by flushes",
            metrics.flushed_rows.clone(),
        );
        registry.register(
            "headcount_history_store_errors",
            "Failed reads and writes of the history store",
            metrics.store_errors.clone(),
        );
        registry.register(
            "headcount_history_replicated_rows",
            "History rows received from peers, by how (push, pull)",
            metrics.replicated.clone(),
        );
        registry.register(
            "headcount_history_peer_errors",
            "History pushes and pulls that failed, by operation",
            metrics.peer_errors.clone(),
        );
        registry.register(
            "headcount_history_dropped",
            "History messages from peers refused, by reason",
            metrics.dropped.clone(),
        );
        metrics
    }
}
