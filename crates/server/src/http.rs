//! The HTTP API: handlers only parse and format; counts come from the query
//! layer and parameter rules from [`crate::params`].

use std::sync::Arc;

use axum::{
    Json,
    extract::{Query as Params, State, rejection::QueryRejection},
    http::{HeaderMap, StatusCode, Uri, header::CONTENT_TYPE},
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::{
    access::authorization,
    error::ApiError,
    json::ClusterBody,
    params::{ListParams, MinLimit, topic_from_path},
    query::{TopicCount, TopicList},
    state::AppState,
};

pub(crate) async fn count(State(app): State<Arc<AppState>>, uri: Uri) -> Result<Json<TopicCount>, ApiError> {
    let topic = topic_from_path(&uri, "/count/")?;
    Ok(Json(app.query.count(&topic)))
}

pub(crate) async fn counts(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    params: Result<Params<ListParams>, QueryRejection>,
) -> Result<Json<TopicList>, ApiError> {
    let request = ListParams::parse(params, MinLimit::One)?;
    app.access.listing(authorization(&headers), &request.prefix)?;
    let list = app
        .query
        .list_for_request(&request.prefix, request.limit)
        .await
        .map_err(|busy| ApiError::unavailable(busy.to_string()))?;
    Ok(Json(list))
}

pub(crate) async fn cluster(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
) -> Result<Json<ClusterBody>, ApiError> {
    app.access.admin(authorization(&headers))?;
    Ok(Json(app.query.members().into()))
}

pub(crate) async fn metrics(State(app): State<Arc<AppState>>, headers: HeaderMap) -> Result<Response, ApiError> {
    app.access.admin(authorization(&headers))?;
    let text = app
        .metrics
        .render(&app.registry, &app.table, &app.query, &app.hub)
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

pub(crate) async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

pub(crate) async fn readyz(State(app): State<Arc<AppState>>) -> Response {
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
