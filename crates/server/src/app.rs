//! The HTTP application: what every handler and websocket session shares,
//! and the router that maps paths to the edges: the API (`http`),
//! websockets (`ws`), live streams (`live`) and browser files (`assets`).

use std::{sync::Arc, time::Duration};

use axum::{Router, routing::get};
use headcount_counter::CounterTable;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    admission::{Admission, Refusal},
    assets,
    chart::ChartSnapshot,
    error::ApiError,
    http, live,
    metrics::NodeMetrics,
    push::Hub,
    query::Query,
    ws,
    ws::SessionTimings,
};

/// What HTTP handlers and websocket sessions share. Every field is either
/// immutable, an atomic-backed table, or a channel: no lock is held across
/// an `.await`.
pub(crate) struct AppState {
    /// Counts, read-only.
    pub(crate) query: Query,
    /// The local counting table, where counted sessions join.
    pub(crate) table: CounterTable,
    /// Per-topic change channels for watchers.
    pub(crate) hub: Arc<Hub>,
    /// Connection limits.
    pub(crate) admission: Admission,
    /// Edge metrics.
    pub(crate) metrics: NodeMetrics,
    /// Every metric of the node, for `/metrics`.
    pub(crate) registry: Arc<Registry>,
    /// Whether readiness waits for joining a cluster (seeds were given).
    pub(crate) needs_join: bool,
    /// Websocket ping and idle timings.
    pub(crate) timings: SessionTimings,
    /// The most often a live stream is sent a change.
    pub(crate) push_interval: Duration,
    /// The last hour of the cluster total.
    pub(crate) chart: watch::Receiver<Arc<ChartSnapshot>>,
    /// Cancelled when the node shuts down.
    pub(crate) shutdown: CancellationToken,
    /// Tracks websocket sessions so shutdown waits for their close.
    pub(crate) tracker: TaskTracker,
}

impl AppState {
    /// Counts a refusal in `/metrics` and turns it into its HTTP answer.
    pub(crate) fn refuse(&self, refusal: Refusal) -> ApiError {
        self.metrics.refused.get_or_create(&[("reason", refusal.label())]).inc();
        ApiError::from(refusal)
    }
}

/// The node's HTTP router.
pub(crate) fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/", get(assets::dashboard))
        .route("/dashboard.css", get(assets::dashboard_css))
        .route("/dashboard.js", get(assets::dashboard_js))
        .route("/hc.js", get(assets::embed_script))
        .route("/live/counts", get(live::counts))
        .route("/live/cluster", get(live::cluster))
        .route("/live/total", get(live::total))
        .route("/count/", get(http::count))
        .route("/count/{*topic}", get(http::count))
        .route("/counts", get(http::counts))
        .route("/cluster", get(http::cluster))
        .route("/metrics", get(http::metrics))
        .route("/healthz", get(http::healthz))
        .route("/readyz", get(http::readyz))
        .route("/ws/", get(ws::handler))
        .route("/ws/{*topic}", get(ws::handler))
        .fallback(|| async { ApiError::not_found() })
        .with_state(state)
}
