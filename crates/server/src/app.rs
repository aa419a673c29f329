//! The HTTP application: what every handler and websocket session shares,
//! and the router that maps paths to the edges ([`crate::http`], [`crate::ws`]).

use std::sync::Arc;

use axum::{Router, routing::get};
use headcount_counter::CounterTable;
use prometheus_client::registry::Registry;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    admission::Admission, error::ApiError, http, metrics::NodeMetrics, push::Hub, query::Query, ws, ws::SessionTimings,
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
    /// Cancelled when the node shuts down.
    pub(crate) shutdown: CancellationToken,
    /// Tracks websocket sessions so shutdown waits for their close.
    pub(crate) tracker: TaskTracker,
}

/// The node's HTTP router.
pub(crate) fn app(state: Arc<AppState>) -> Router {
    Router::new()
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
