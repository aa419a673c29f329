//! Request parameters shared by every edge: the topic named by a URL path,
//! a listing's prefix and limit, a day of history, a watch flag. Each rule is written here once;
//! [`ParamError`] becomes HTTP 400 at the HTTP edge and `INVALID_ARGUMENT`
//! at the gRPC edge.

use axum::{extract::rejection::QueryRejection, http::Uri};
use headcount_counter::{MAX_TOPIC_BYTES, Topic, TopicError};
use headcount_history::Day;
use serde::Deserialize;

/// Default number of topics a listing returns.
pub const DEFAULT_LIST_LIMIT: usize = 100;
/// Largest number of topics a listing returns.
pub const MAX_LIST_LIMIT: usize = 10_000;

/// A parameter that breaks its rule; the message says which and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParamError(String);

impl From<TopicError> for ParamError {
    fn from(error: TopicError) -> Self {
        Self(format!("invalid topic: {error}"))
    }
}

impl From<ParamError> for tonic::Status {
    fn from(error: ParamError) -> Self {
        Self::invalid_argument(error.0)
    }
}

/// The topic named by the rest of the raw (still percent-encoded) path
/// after `prefix`.
pub fn topic_from_path(uri: &Uri, prefix: &str) -> Result<Topic, ParamError> {
    let raw = uri.path().strip_prefix(prefix).unwrap_or_default();
    Ok(Topic::from_url_path(raw)?)
}

/// A topic given as is (gRPC: no percent-decoding).
pub fn topic(name: &str) -> Result<Topic, ParamError> {
    Ok(Topic::new(name)?)
}

/// Which topics a listing covers and how many it returns.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListRequest {
    /// Topics starting with this; empty: all.
    pub prefix: String,
    /// Most topics returned; the total covers every match either way.
    pub limit: usize,
}

/// The smallest `limit` a listing accepts over HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinLimit {
    /// At least one topic (`/counts`).
    One,
    /// Zero allowed: the total alone (the live listing of a site total).
    Zero,
}

impl ListRequest {
    /// From HTTP query parameters; an absent limit is the default.
    pub fn from_http(prefix: Option<String>, limit: Option<&str>, min: MinLimit) -> Result<Self, ParamError> {
        let prefix = prefix.unwrap_or_default();
        validate_prefix(&prefix)?;
        let low = match min {
            MinLimit::One => 1,
            MinLimit::Zero => 0,
        };
        let limit = match limit.map(str::parse::<usize>) {
            None => DEFAULT_LIST_LIMIT,
            Some(Ok(limit)) if (low..=MAX_LIST_LIMIT).contains(&limit) => limit,
            Some(_) => {
                return Err(ParamError(format!(
                    "limit must be a whole number from {low} to {MAX_LIST_LIMIT}"
                )));
            }
        };
        Ok(Self { prefix, limit })
    }

    /// From a gRPC request, where 0 (unset) means the default.
    pub fn from_grpc(prefix: String, limit: u32) -> Result<Self, ParamError> {
        validate_prefix(&prefix)?;
        let limit = match usize::try_from(limit).unwrap_or(usize::MAX) {
            0 => DEFAULT_LIST_LIMIT,
            limit @ 1..=MAX_LIST_LIMIT => limit,
            _ => return Err(ParamError(format!("limit must be at most {MAX_LIST_LIMIT}"))),
        };
        Ok(Self { prefix, limit })
    }
}

/// `?prefix=…&limit=…` of a listing, before its rules are checked.
#[derive(Deserialize)]
pub(crate) struct ListParams {
    prefix: Option<String>,
    limit: Option<String>,
}

impl ListParams {
    /// Checks the parameters; an unparsable query string breaks the rules too.
    pub(crate) fn parse(
        params: Result<axum::extract::Query<Self>, QueryRejection>,
        min: MinLimit,
    ) -> Result<ListRequest, ParamError> {
        let axum::extract::Query(params) = params.map_err(|rejection| ParamError(rejection.body_text()))?;
        ListRequest::from_http(params.prefix, params.limit.as_deref(), min)
    }
}

/// `?from=…&to=…` of `/stats/{topic}`.
#[derive(Deserialize)]
pub(crate) struct RangeParams {
    from: Option<String>,
    to: Option<String>,
}

/// `?prefix=…&date=…&limit=…` of `/stats`.
#[derive(Deserialize)]
pub(crate) struct DayListParams {
    prefix: Option<String>,
    date: Option<String>,
    limit: Option<String>,
}

/// A range of days asked for; none: the default end.
pub type DayRange = (Option<Day>, Option<Day>);

impl RangeParams {
    /// Checks the dates; an unparsable query string breaks the rules too.
    pub(crate) fn parse(params: Result<axum::extract::Query<Self>, QueryRejection>) -> Result<DayRange, ParamError> {
        let axum::extract::Query(params) = params.map_err(|rejection| ParamError(rejection.body_text()))?;
        Ok((day(params.from.as_deref(), "from")?, day(params.to.as_deref(), "to")?))
    }
}

impl DayListParams {
    /// Checks the day, prefix and limit.
    pub(crate) fn parse(
        params: Result<axum::extract::Query<Self>, QueryRejection>,
    ) -> Result<(Option<Day>, ListRequest), ParamError> {
        let axum::extract::Query(params) = params.map_err(|rejection| ParamError(rejection.body_text()))?;
        let list = ListRequest::from_http(params.prefix, params.limit.as_deref(), MinLimit::One)?;
        Ok((day(params.date.as_deref(), "date")?, list))
    }
}

/// A `YYYY-MM-DD` parameter named `name`; absent or empty: none.
pub fn day(text: Option<&str>, name: &str) -> Result<Option<Day>, ParamError> {
    match text {
        None | Some("") => Ok(None),
        Some(text) => Day::parse(text)
            .map(Some)
            .map_err(|invalid| ParamError(format!("{name}: {invalid}"))),
    }
}

/// A prefix follows the topic rules, except that it may be empty.
fn validate_prefix(prefix: &str) -> Result<(), ParamError> {
    if prefix.len() > MAX_TOPIC_BYTES || prefix.chars().any(char::is_control) {
        return Err(ParamError(
            "invalid prefix: at most 256 bytes, no control characters".into(),
        ));
    }
    Ok(())
}

/// `watch=1|true|0|false` in a raw query string; absent: not watching.
pub fn watch_flag(query: Option<&str>) -> Result<bool, ParamError> {
    let mut watch = false;
    for pair in query.unwrap_or_default().split('&').filter(|pair| !pair.is_empty()) {
        match pair.split_once('=').unwrap_or((pair, "")) {
            ("watch", "1" | "true") => watch = true,
            ("watch", "0" | "false") => watch = false,
            ("watch", _) => return Err(ParamError("watch must be 1, true, 0 or false".into())),
            _ => {}
        }
    }
    Ok(watch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http_limit(limit: Option<&str>) -> Result<usize, ParamError> {
        ListRequest::from_http(None, limit, MinLimit::One).map(|request| request.limit)
    }

    #[test]
    fn limit_bounds() {
        assert_eq!(http_limit(None), Ok(100));
        assert_eq!(http_limit(Some("1")), Ok(1));
        assert_eq!(http_limit(Some("10000")), Ok(10_000));
        for bad in ["0", "10001", "-1", "ten", ""] {
            assert!(http_limit(Some(bad)).is_err(), "{bad}");
        }
        let total_only = ListRequest::from_http(None, Some("0"), MinLimit::Zero).map(|request| request.limit);
        assert_eq!(total_only, Ok(0));
        assert_eq!(ListRequest::from_grpc(String::new(), 0).map(|r| r.limit), Ok(100));
        assert!(ListRequest::from_grpc(String::new(), 10_001).is_err());
    }

    #[test]
    fn prefixes_follow_the_topic_rules_but_may_be_empty() {
        assert!(ListRequest::from_http(Some(String::new()), None, MinLimit::One).is_ok());
        assert!(ListRequest::from_http(Some("x".repeat(257)), None, MinLimit::One).is_err());
        assert!(ListRequest::from_grpc("a\u{7}".into(), 1).is_err());
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

    #[test]
    fn watch_parameter_forms() {
        assert_eq!(watch_flag(None).ok(), Some(false));
        assert_eq!(watch_flag(Some("watch=1")).ok(), Some(true));
        assert_eq!(watch_flag(Some("a=b&watch=true")).ok(), Some(true));
        assert_eq!(watch_flag(Some("watch=0")).ok(), Some(false));
        assert!(watch_flag(Some("watch=yes")).is_err());
    }
}
