//! The HTTP application: the router that maps paths to the edges: the API
//! (`http`), history (`stats`), websockets (`ws`), live streams (`live`) and browser files
//! (`assets`). It is the only module that knows them all.

use std::sync::Arc;

use axum::{Router, routing::get};

use crate::{assets, error::ApiError, http, live, state::AppState, stats, ws};

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
        .route("/stats", get(stats::list))
        .route("/stats/", get(stats::topic))
        .route("/stats/{*topic}", get(stats::topic))
        .route("/cluster", get(http::cluster))
        .route("/metrics", get(http::metrics))
        .route("/healthz", get(http::healthz))
        .route("/readyz", get(http::readyz))
        .route("/ws/", get(ws::handler))
        .route("/ws/{*topic}", get(ws::handler))
        .fallback(|| async { ApiError::not_found() })
        .with_state(state)
}
