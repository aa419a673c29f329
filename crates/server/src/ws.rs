//! `GET /ws/{topic}`: a websocket that counts once toward its topic while it
//! is open (unless `?watch=1`) and receives the topic's cluster-wide count.
//! A counted join is also a view in the visit history (an in-memory tally;
//! the disk is written later, off this path).
//!
//! Every refusal happens before the upgrade, as HTTP, in the order of the
//! contract: invalid topic 400, origin 403, per-IP cap 429, node full 503.
//! An admitted session owns its [`Presence`] and its admission permits, so
//! however it ends (close frame, reset, idle, oversized frame, shutdown, or a
//! panic) the count and the capacity come back.
//!
//! Buffers are kept small because idle connections are the common case: the
//! read buffer is 1 KiB (the largest frame a client may send) and writes go
//! out eagerly (server messages are a few dozen bytes), so an idle session
//! costs a few KiB instead of tungstenite's 128 KiB defaults.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    extract::{
        ConnectInfo, State,
        ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, rejection::WebSocketUpgradeRejection},
    },
    http::{
        HeaderMap, Uri,
        header::{ORIGIN, USER_AGENT},
    },
    response::{IntoResponse, Response},
};
use headcount_counter::{Presence, Topic};
use serde::Serialize;
use tokio::{sync::watch, time::Instant};
use tokio_util::task::task_tracker::TaskTrackerToken;
use tracing::{Instrument, debug_span};

use crate::{
    admission::{Admitted, Refusal},
    error::ApiError,
    metrics::WatcherGuard,
    params::{topic_from_path, watch_flag},
    state::AppState,
};

/// Largest data frame a client may send; a larger one closes with 1009.
pub const MAX_CLIENT_FRAME: usize = 1024;
const READ_BUFFER: usize = 1024;
/// A client that stops reading is disconnected once this much is queued.
const MAX_WRITE_BUFFER: usize = 64 * 1024;
/// How long a closing session waits for the client's close reply.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

const CLOSE_NORMAL: u16 = 1000;
const CLOSE_GOING_AWAY: u16 = 1001;
const CLOSE_TOO_BIG: u16 = 1009;

#[derive(Serialize)]
struct Push<'a> {
    topic: &'a str,
    count: u64,
}

/// The websocket endpoint.
pub(crate) async fn handler(
    State(app): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let topic = topic_from_path(&uri, "/ws/")?;
    let watch_only = watch_flag(uri.query())?;
    let origin = headers.get(ORIGIN).and_then(|value| value.to_str().ok());
    let refused = |refusal: Refusal| app.refuse(refusal);
    app.admission.check_origin(origin).map_err(refused)?;
    let upgrade = upgrade.map_err(|rejection| ApiError::upgrade_required(rejection.body_text()))?;
    let client = app.admission.client_ip(peer, &headers);
    let admitted = app.admission.admit(client).map_err(refused)?;
    let presence = if watch_only {
        None
    } else {
        let presence = app.table.join(&topic).map_err(|error| {
            app.metrics.refused.get_or_create(&[("reason", "max_topics")]).inc();
            ApiError::unavailable(error.to_string())
        })?;
        if let Some(history) = &app.history {
            let user_agent = headers.get(USER_AGENT).and_then(|value| value.to_str().ok());
            history.record_view(&topic, client, user_agent.unwrap_or_default());
        }
        Some(presence)
    };
    let kind = if watch_only { "watch" } else { "counted" };
    app.metrics.sessions_opened.get_or_create(&[("kind", kind)]).inc();
    // Never the peer's address: logs must not hold client IPs.
    let span = debug_span!("session", topic = %topic, kind);
    let session = Session {
        updates: app.hub.subscribe(&topic, app.query.count(&topic).count),
        topic,
        _watcher: watch_only.then(|| app.metrics.watcher()),
        _presence: presence,
        _admitted: admitted,
        _tracked: app.tracker.token(),
        app: Arc::clone(&app),
    };
    Ok(upgrade
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE_BUFFER)
        .max_message_size(MAX_CLIENT_FRAME)
        .max_frame_size(MAX_CLIENT_FRAME)
        .on_upgrade(move |socket| session.run(socket).instrument(span))
        .into_response())
}

/// One admitted websocket, with everything it holds until it ends.
///
/// Idle sessions are the common case, so the session future is kept small:
/// node-wide settings come through one `Arc`, shutdown arrives as the close
/// of the topic's channel (no per-session cancellation future), and the
/// rarely run send and close steps are boxed instead of being laid out in
/// every session's state.
struct Session {
    app: Arc<AppState>,
    topic: Topic,
    updates: watch::Receiver<u64>,
    _watcher: Option<WatcherGuard>,
    _presence: Option<Presence>,
    _admitted: Admitted,
    _tracked: TaskTrackerToken,
}

impl Session {
    async fn run(mut self, mut socket: WebSocket) {
        if let Some((code, reason)) = self.serve(&mut socket).await {
            Box::pin(close_gracefully(
                &mut socket,
                code,
                reason,
                self.app.timings.send_timeout,
            ))
            .await;
        }
    }

    /// Serves until the session must end; returns the close frame to send,
    /// if any.
    async fn serve(&mut self, socket: &mut WebSocket) -> Option<(u16, &'static str)> {
        let timings = self.app.timings;
        let mut last_sent = self.app.query.count(&self.topic).count;
        if send_count(socket, &self.topic, last_sent, timings.send_timeout)
            .await
            .is_err()
        {
            return None;
        }
        let mut last_heard = Instant::now();
        // Spread the first ping: clients that connected together (after a
        // restart, say) should not all be pinged in the same instant.
        let jitter = timings.ping_after.mul_f64(rand::random_range(0.0..0.25));
        let idle = tokio::time::sleep_until(last_heard + timings.ping_after + jitter);
        tokio::pin!(idle);
        loop {
            tokio::select! {
                biased;
                frame = socket.recv() => match frame {
                    None | Some(Ok(Message::Close(_))) => return None,
                    Some(Ok(_)) => {
                        last_heard = Instant::now();
                        idle.as_mut().reset(last_heard + timings.ping_after);
                    }
                    Some(Err(error)) => return is_too_big(&error).then_some((CLOSE_TOO_BIG, "frame too big")),
                },
                changed = self.updates.changed() => {
                    // The hub closes every channel when the node shuts down.
                    if changed.is_err() {
                        return Some((CLOSE_GOING_AWAY, "server shutting down"));
                    }
                    let count = *self.updates.borrow_and_update();
                    if count != last_sent {
                        last_sent = count;
                        if send_count(socket, &self.topic, count, timings.send_timeout).await.is_err() {
                            return None;
                        }
                    }
                }
                () = &mut idle => {
                    if last_heard.elapsed() >= timings.idle_timeout {
                        return Some((CLOSE_NORMAL, "idle timeout"));
                    }
                    let ping = send(socket, Message::Ping(Default::default()), timings.send_timeout);
                    if Box::pin(ping).await.is_err() {
                        return None;
                    }
                    let next = (Instant::now() + timings.ping_after).min(last_heard + timings.idle_timeout);
                    idle.as_mut().reset(next);
                }
            }
        }
    }
}

/// Sends `{"topic":…,"count":N}`; boxed, so its state is not part of every
/// idle session.
async fn send_count(socket: &mut WebSocket, topic: &Topic, count: u64, timeout: Duration) -> Result<(), ()> {
    let text = serde_json::to_string(&Push { topic, count }).unwrap_or_default();
    Box::pin(send(socket, Message::Text(text.into()), timeout)).await
}

/// Sends one message; a client that does not read it within `timeout`
/// (its buffers are full) ends the session.
async fn send(socket: &mut WebSocket, message: Message, timeout: Duration) -> Result<(), ()> {
    match tokio::time::timeout(timeout, socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) | Err(_) => Err(()),
    }
}

async fn close_gracefully(socket: &mut WebSocket, code: u16, reason: &'static str, send_timeout: Duration) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    if send(socket, Message::Close(Some(frame)), send_timeout).await.is_err() {
        return;
    }
    // Wait briefly for the client's close reply so the close handshake
    // completes; a client that never answers is dropped after the grace.
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        loop {
            match socket.recv().await {
                Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
                // The stream ended (after a read error, such as an oversized
                // frame whose rest is still unread). Closing now would make
                // the kernel reset the connection, and the reset can overtake
                // the close frame; hold the socket for the grace instead.
                Some(Err(_)) | None => std::future::pending::<()>().await,
            }
        }
    })
    .await;
}

fn is_too_big(error: &axum::Error) -> bool {
    std::error::Error::source(error)
        .and_then(|source| source.downcast_ref::<tungstenite::Error>())
        .is_some_and(|error| matches!(error, tungstenite::Error::Capacity(_)))
}
