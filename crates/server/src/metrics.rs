//! What the edges report in `/metrics`. Gauges of state owned elsewhere (the
//! counting table, the hub, the cluster view) are read at scrape time, so the
//! per-connection path updates nothing but its own counters.

use prometheus_client::{
    encoding::text::encode,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use headcount_counter::CounterTable;

use crate::{push::Hub, query::Query};

type Labels = [(&'static str, &'static str); 1];

/// The node's own metrics, next to those the cluster layer registers.
#[derive(Clone, Default)]
pub struct NodeMetrics {
    connections: Gauge,
    watchers: Gauge,
    topics: Gauge,
    watched_topics: Gauge,
    nodes: Gauge,
    pub(crate) sessions_opened: Family<Labels, Counter>,
    pub(crate) refused: Family<Labels, Counter>,
    pub(crate) tls_reloads: Family<Labels, Counter>,
}

impl NodeMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "headcount_connections",
            "Counted websocket connections on this node",
            metrics.connections.clone(),
        );
        registry.register(
            "headcount_watchers",
            "Open websocket watch sessions and gRPC watch streams",
            metrics.watchers.clone(),
        );
        registry.register(
            "headcount_topics",
            "Topics with live connections on this node",
            metrics.topics.clone(),
        );
        registry.register(
            "headcount_watched_topics",
            "Topics with at least one watcher",
            metrics.watched_topics.clone(),
        );
        registry.register(
            "headcount_cluster_nodes",
            "Live nodes whose counts are included, this one too",
            metrics.nodes.clone(),
        );
        registry.register(
            "headcount_sessions_opened",
            "Websocket sessions opened, by kind",
            metrics.sessions_opened.clone(),
        );
        registry.register(
            "headcount_connections_refused",
            "Websocket upgrades, live streams, gRPC watches and TCP connections refused, by reason",
            metrics.refused.clone(),
        );
        registry.register(
            "headcount_tls_reloads",
            "Changed TLS files loaded (ok) or kept out because they did not load (error)",
            metrics.tls_reloads.clone(),
        );
        metrics
    }

    /// Counts one watcher (websocket `?watch=1` session or gRPC watch
    /// stream) until the guard is dropped.
    pub(crate) fn watcher(&self) -> WatcherGuard {
        self.watchers.inc();
        WatcherGuard(self.watchers.clone())
    }

    /// Reads the gauges and encodes the whole registry.
    pub(crate) fn render(
        &self,
        registry: &Registry,
        table: &CounterTable,
        query: &Query,
        hub: &Hub,
    ) -> Result<String, std::fmt::Error> {
        self.connections
            .set(i64::try_from(table.connections()).unwrap_or(i64::MAX));
        self.topics.set(i64::try_from(table.topics()).unwrap_or(i64::MAX));
        self.watched_topics.set(i64::try_from(hub.topics()).unwrap_or(i64::MAX));
        self.nodes.set(i64::from(query.count_nodes()));
        let mut text = String::new();
        encode(&mut text, registry)?;
        Ok(text)
    }
}

/// Holds one place in the watchers gauge.
pub(crate) struct WatcherGuard(Gauge);

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
