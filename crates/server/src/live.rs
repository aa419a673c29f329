//! Server-Sent Events for pages: `/live/counts` (a listing, as `/counts`
//! answers it), `/live/cluster` (the members, as `/cluster`) and
//! `/live/total` (the last hour of the cluster total, then each new point).
//!
//! Each stream sends its value at once, then only when it changed, at most
//! once per `--push-interval`. A stream is a watcher: it passes the origin
//! check and holds the same per-IP and node-wide permits as a `?watch=1`
//! websocket until the client goes away, and it ends when the node shuts
//! down. Listings are shared through the push hub, so many pages showing one
//! site's total cost one listing a round. With `--admin-token`, a listing
//! outside the public prefixes, the cluster and the chart need the token.

use std::{convert::Infallible, net::SocketAddr, sync::Arc};

use axum::{
    extract::{ConnectInfo, Query as Params, State, rejection::QueryRejection},
    http::{
        HeaderMap, HeaderValue,
        header::{ACCESS_CONTROL_ALLOW_ORIGIN, ORIGIN, VARY},
    },
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures_util::{Stream, StreamExt, stream};
use serde::Serialize;
use tokio_stream::wrappers::{IntervalStream, WatchStream};

use crate::{
    access::authorization,
    admission::Admitted,
    error::ApiError,
    json::ClusterBody,
    metrics::WatcherGuard,
    params::{ListParams, MinLimit},
    state::AppState,
};

/// What a live stream holds until its client goes away.
struct Held {
    _admitted: Admitted,
    _watcher: WatcherGuard,
}

/// Admits a watcher: origin (403), per-IP cap (429), node full (503).
fn admit(app: &AppState, peer: SocketAddr, headers: &HeaderMap) -> Result<Held, ApiError> {
    let origin = headers.get(ORIGIN).and_then(|value| value.to_str().ok());
    app.admission
        .check_origin(origin)
        .map_err(|refusal| app.refuse(refusal))?;
    let client = app.admission.client_ip(peer, headers);
    let admitted = app.admission.admit(client).map_err(|refusal| app.refuse(refusal))?;
    app.metrics.sessions_opened.get_or_create(&[("kind", "live")]).inc();
    Ok(Held {
        _admitted: admitted,
        _watcher: app.metrics.watcher(),
    })
}

/// Admits a watcher of an admin-only stream: the token first (401).
fn admit_admin(app: &AppState, peer: SocketAddr, headers: &HeaderMap) -> Result<Held, ApiError> {
    app.access.admin(authorization(headers))?;
    admit(app, peer, headers)
}

/// Wraps events as an SSE response that ends on shutdown and releases what
/// it holds when the client goes away. A page of another origin may read it
/// (the origin check already passed).
fn respond<S>(app: &AppState, headers: &HeaderMap, held: Held, events: S) -> Response
where
    S: Stream<Item = Event> + Send + 'static,
{
    let events = events
        .map(move |event| {
            let _held = &held;
            Ok::<_, Infallible>(event)
        })
        .take_until(app.shutdown.clone().cancelled_owned());
    let mut response = Sse::new(events).keep_alive(KeepAlive::default()).into_response();
    if let Some(origin) = headers.get(ORIGIN) {
        let allowed = if app.admission.any_origin() {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        };
        response.headers_mut().insert(ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        response.headers_mut().insert(VARY, HeaderValue::from_static("Origin"));
    }
    response
}

fn json_event<T: Serialize>(value: &T) -> Event {
    Event::default().data(serde_json::to_string(value).unwrap_or_default())
}

/// `GET /live/counts?prefix=…&limit=…` (limit 0: the total alone).
pub(crate) async fn counts(
    State(app): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    params: Result<Params<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let request = ListParams::parse(params, MinLimit::Zero)?;
    app.access.listing(authorization(&headers), &request.prefix)?;
    let held = admit(&app, peer, &headers)?;
    let listing = app
        .hub
        .subscribe_listing(&request, &app.query)
        .ok_or_else(|| ApiError::unavailable("too many distinct live listings; try again"))?;
    let listings = WatchStream::new(listing);
    let events = listings.map(|list| json_event(&*list));
    Ok(respond(&app, &headers, held, events))
}

/// `GET /live/cluster`: the `/cluster` answer whenever it changed.
pub(crate) async fn cluster(
    State(app): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let held = admit_admin(&app, peer, &headers)?;
    let mut tick = tokio::time::interval(app.push_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let query = app.query.clone();
    let mut last = String::new();
    let events = IntervalStream::new(tick).filter_map(move |_| {
        let body = serde_json::to_string(&ClusterBody::from(query.members())).unwrap_or_default();
        let changed = body != last;
        if changed {
            last.clone_from(&body);
        }
        std::future::ready(changed.then(|| Event::default().data(body)))
    });
    Ok(respond(&app, &headers, held, events))
}

#[derive(Serialize)]
struct Point {
    t: u64,
    total: u64,
}

/// `GET /live/total`: an `event: history` with the last hour, then each new
/// point as `{"t":unix_ms,"total":N}`.
pub(crate) async fn total(
    State(app): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let held = admit_admin(&app, peer, &headers)?;
    let mut chart = app.chart.clone();
    let history = chart.borrow_and_update().clone();
    let first = json_event(&*history).event("history");
    let points = WatchStream::from_changes(chart).filter_map(|snapshot| {
        let point = snapshot.newest().map(|total| Point {
            t: snapshot.end_ms,
            total,
        });
        std::future::ready(point.map(|point| json_event(&point)))
    });
    Ok(respond(
        &app,
        &headers,
        held,
        stream::once(async { first }).chain(points),
    ))
}
