//! `GET /stats/{topic}` and `GET /stats`: visit history over HTTP. Handlers
//! only parse and format; the answers come from [`headcount_history`].
//! Stats follow the listing rule of access: open under a public prefix,
//! the admin token otherwise.

use std::sync::Arc;

use axum::{
    Json,
    extract::{Query as Params, State, rejection::QueryRejection},
    http::{HeaderMap, Uri},
};
use headcount_history::{StatsList, TopicStats};

use crate::{
    access::authorization,
    error::ApiError,
    params::{DayListParams, RangeParams, topic_from_path},
    state::AppState,
};

pub(crate) async fn topic(
    State(app): State<Arc<AppState>>,
    uri: Uri,
    headers: HeaderMap,
    params: Result<Params<RangeParams>, QueryRejection>,
) -> Result<Json<TopicStats>, ApiError> {
    let topic = topic_from_path(&uri, "/stats/")?;
    let (from, to) = RangeParams::parse(params)?;
    app.access.listing(authorization(&headers), &topic)?;
    let history = app.history.as_ref().ok_or_else(ApiError::no_history)?;
    Ok(Json(history.topic_stats(topic, from, to).await?))
}

pub(crate) async fn list(
    State(app): State<Arc<AppState>>,
    headers: HeaderMap,
    params: Result<Params<DayListParams>, QueryRejection>,
) -> Result<Json<StatsList>, ApiError> {
    let (day, request) = DayListParams::parse(params)?;
    app.access.listing(authorization(&headers), &request.prefix)?;
    let history = app.history.as_ref().ok_or_else(ApiError::no_history)?;
    Ok(Json(history.list_stats(day, request.prefix, request.limit).await?))
}
