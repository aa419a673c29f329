//! The HTTP API: routes, parameters and JSON answers. Handlers only parse and
//! format; counts come from the query layer.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{Query as Params, State, rejection::QueryRejection},
    http::{StatusCode, Uri, header::CONTENT_TYPE},
    response::{IntoResponse, Response},
    routing::get,
};
use headcount_counter::{MAX_TOPIC_BYTES, Topic};
use serde::Deserialize;
use serde_json::json;

use crate::{
    AppState,
    error::ApiError,
    query::{DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT, Members, TopicCount, TopicList},
    ws,
};

/// The node's HTTP router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/count/", get(count))
        .route("/count/{*topic}", get(count))
        .route("/counts", get(counts))
        .route("/cluster", get(cluster))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/ws/", get(ws::handler))
        .route("/ws/{*topic}", get(ws::handler))
        .fallback(|| async { ApiError::not_found() })
        .with_state(state)
}

/// The topic named by the rest of the raw (still percent-encoded) path.
pub(crate) fn topic_from_path(uri: &Uri, prefix: &str) -> Result<Topic, ApiError> {
    let raw = uri.path().strip_prefix(prefix).unwrap_or_default();
    Ok(Topic::from_url_path(raw)?)
}

async fn count(State(app): State<Arc<AppState>>, uri: Uri) -> Result<Json<TopicCount>, ApiError> {
    let topic = topic_from_path(&uri, "/count/")?;
    Ok(Json(app.query.count(&topic)))
}

#[derive(Deserialize)]
struct ListParams {
    prefix: Option<String>,
    limit: Option<String>,
}

async fn counts(
    State(app): State<Arc<AppState>>,
    params: Result<Params<ListParams>, QueryRejection>,
) -> Result<Json<TopicList>, ApiError> {
    let Params(params) = params.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    let prefix = params.prefix.unwrap_or_default();
    validate_prefix(&prefix)?;
    let limit = parse_limit(params.limit.as_deref())?;
    Ok(Json(app.query.list(&prefix, limit)))
}

/// A prefix follows the topic rules, except that it may be empty.
pub(crate) fn validate_prefix(prefix: &str) -> Result<(), ApiError> {
    if prefix.len() > MAX_TOPIC_BYTES || prefix.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid prefix: at most 256 bytes, no control characters",
        ));
    }
    Ok(())
}

fn parse_limit(limit: Option<&str>) -> Result<usize, ApiError> {
    let Some(limit) = limit else {
        return Ok(DEFAULT_LIST_LIMIT);
    };
    match limit.parse::<usize>() {
        Ok(limit @ 1..=MAX_LIST_LIMIT) => Ok(limit),
        _ => Err(ApiError::bad_request(format!(
            "limit must be a whole number from 1 to {MAX_LIST_LIMIT}"
        ))),
    }
}

async fn cluster(State(app): State<Arc<AppState>>) -> Json<Members> {
    Json(app.query.members())
}

async fn metrics(State(app): State<Arc<AppState>>) -> Result<Response, ApiError> {
    let text = app
        .metrics
        .render(&app.registry, &app.query, &app.hub)
        .map_err(|_| ApiError::internal("metrics could not be encoded"))?;
    Ok((
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    if app.shutdown.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "shutting down" })),
        )
            .into_response();
    }
    if app.needs_join && !app.query.joined() {
        return (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "joining" }))).into_response();
    }
    Json(json!({ "status": "ready" })).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limit_bounds() {
        assert_eq!(parse_limit(None), Ok(100));
        assert_eq!(parse_limit(Some("1")), Ok(1));
        assert_eq!(parse_limit(Some("10000")), Ok(10_000));
        for bad in ["0", "10001", "-1", "ten", ""] {
            assert_eq!(
                parse_limit(Some(bad)).map_err(|e| e.status()),
                Err(StatusCode::BAD_REQUEST),
                "{bad}"
            );
        }
    }

    #[test]
    fn topics_come_from_the_raw_path() {
        let uri: Uri = "/count/%2Fblog%2Fpost-1".parse().expect("uri");
        assert_eq!(
            topic_from_path(&uri, "/count/").map(|t| t.to_string()),
            Ok("/blog/post-1".to_owned())
        );
        let uri: Uri = "/count/".parse().expect("uri");
        assert!(topic_from_path(&uri, "/count/").is_err());
    }
}
