//! The HTTP API: handlers only parse and format; counts come from the query
//! layer and parameter rules from [`crate::params`].

use std::sync::Arc;

use axum::{
    Json,
    extract::{Query as Params, State, rejection::QueryRejection},
    http::{StatusCode, Uri, header::CONTENT_TYPE},
    response::{IntoResponse, Response},
};
use headcount_cluster::MemberState;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{
    app::AppState,
    error::ApiError,
    params::{ListRequest, MinLimit, topic_from_path},
    query::{Member, Members, TopicCount, TopicList},
};

pub(crate) async fn count(State(app): State<Arc<AppState>>, uri: Uri) -> Result<Json<TopicCount>, ApiError> {
    let topic = topic_from_path(&uri, "/count/")?;
    Ok(Json(app.query.count(&topic)))
}

/// `?prefix=…&limit=…` of a listing, before its rules are checked.
#[derive(Deserialize)]
pub(crate) struct ListParams {
    prefix: Option<String>,
    limit: Option<String>,
}

impl ListParams {
    /// Checks the parameters; an unparsable query string is a 400 too.
    pub(crate) fn parse(params: Result<Params<Self>, QueryRejection>, min: MinLimit) -> Result<ListRequest, ApiError> {
        let Params(params) = params.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
        Ok(ListRequest::from_http(params.prefix, params.limit.as_deref(), min)?)
    }
}

pub(crate) async fn counts(
    State(app): State<Arc<AppState>>,
    params: Result<Params<ListParams>, QueryRejection>,
) -> Result<Json<TopicList>, ApiError> {
    let request = ListParams::parse(params, MinLimit::One)?;
    Ok(Json(app.query.list(&request.prefix, request.limit)))
}

/// `/cluster` as JSON: member states spelled `alive`, `suspect`, `down`.
#[derive(Serialize)]
pub(crate) struct ClusterBody {
    #[serde(rename = "self")]
    self_name: String,
    members: Vec<MemberBody>,
}

#[derive(Serialize)]
struct MemberBody {
    #[serde(flatten)]
    member: Member,
    state: &'static str,
}

impl From<Members> for ClusterBody {
    fn from(members: Members) -> Self {
        Self {
            self_name: members.self_name,
            members: members
                .members
                .into_iter()
                .map(|member| MemberBody {
                    state: state_name(member.state),
                    member,
                })
                .collect(),
        }
    }
}

fn state_name(state: MemberState) -> &'static str {
    match state {
        MemberState::Alive => "alive",
        MemberState::Suspect => "suspect",
        MemberState::Down => "down",
    }
}

pub(crate) async fn cluster(State(app): State<Arc<AppState>>) -> Json<ClusterBody> {
    Json(app.query.members().into())
}

pub(crate) async fn metrics(State(app): State<Arc<AppState>>) -> Result<Response, ApiError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_states_are_spelled_for_http() {
        let members = Members {
            self_name: "a".into(),
            members: vec![Member {
                name: "a".into(),
                addr: "127.0.0.1:1".into(),
                state: MemberState::Suspect,
                connections: 2,
                topics: 1,
                last_update_ms: 0,
                stale: false,
            }],
        };
        let body = serde_json::to_value(ClusterBody::from(members)).expect("serializes");
        assert_eq!(body["self"], "a");
        assert_eq!(body["members"][0]["state"], "suspect");
        assert_eq!(body["members"][0]["connections"], 2);
    }
}
