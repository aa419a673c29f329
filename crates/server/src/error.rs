//! The one error type at the HTTP edge: every failure becomes
//! `{"error":"…"}` with a 4xx or 5xx status.

use axum::{
    Json,
    http::{
        HeaderValue, StatusCode,
        header::{RETRY_AFTER, WWW_AUTHENTICATE},
    },
    response::{IntoResponse, Response},
};
use serde_json::json;

use headcount_history::StatsError;

use crate::{access::Unauthorized, admission::Refusal, params::ParamError};

/// What a node started with `--no-history` answers to history requests.
pub(crate) const NO_HISTORY: &str = "this node keeps no history (--no-history)";

/// Seconds a client is told to wait when the node is full.
const RETRY_AFTER_SECONDS: &str = "5";

/// An HTTP error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    retry_after: bool,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            retry_after: false,
        }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404.
    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not found")
    }

    /// 404 for a node that keeps no history (`--no-history`).
    pub fn no_history() -> Self {
        Self::new(StatusCode::NOT_FOUND, NO_HISTORY)
    }

    /// 426: a websocket endpoint called without a valid upgrade.
    pub fn upgrade_required(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UPGRADE_REQUIRED, message)
    }

    /// 503 with `Retry-After`.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self {
            retry_after: true,
            ..Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
        }
    }

    /// 500.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
}

impl From<Unauthorized> for ApiError {
    fn from(error: Unauthorized) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, error.to_string())
    }
}

impl From<ParamError> for ApiError {
    fn from(error: ParamError) -> Self {
        Self::bad_request(error.to_string())
    }
}

impl From<StatsError> for ApiError {
    fn from(error: StatsError) -> Self {
        match error {
            StatsError::Range(message) => Self::bad_request(message),
            StatsError::Store(_) => Self::internal("history store failed; see the node's log"),
            StatsError::Stopped => Self::unavailable(error.to_string()),
        }
    }
}

/// The gRPC status of a history request that failed.
pub(crate) fn stats_status(error: StatsError) -> tonic::Status {
    match error {
        StatsError::Range(message) => tonic::Status::invalid_argument(message),
        StatsError::Store(_) => tonic::Status::internal("history store failed; see the node's log"),
        StatsError::Stopped => tonic::Status::unavailable(error.to_string()),
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Origin => Self::new(StatusCode::FORBIDDEN, refusal.to_string()),
            Refusal::PerIp => Self::new(StatusCode::TOO_MANY_REQUESTS, refusal.to_string()),
            Refusal::NodeFull => Self::unavailable(refusal.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": self.message }))).into_response();
        if self.retry_after {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
