//! One websocket client the way a browser tab is one: join a topic (TCP
//! connect from a chosen source address, HTTP upgrade, first count frame),
//! stay, and leave with a close frame.
//!
//! Client buffers are kept small (4 KiB reads, eager writes) so one load
//! process can hold ~19k connections without the load generator's own memory
//! becoming the limit. Nothing read from the network is trusted: a bad status,
//! a missing or malformed first frame, or an early close is an error kind that
//! the reports count, never a panic.

use std::{
    net::{IpAddr, SocketAddr},
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{self, Message, protocol::WebSocketConfig},
};

/// An open websocket.
pub type Ws = WebSocketStream<TcpStream>;

/// A joined client.
pub struct Joined {
    /// The open socket.
    pub ws: Ws,
    /// From the start of the TCP connect to the end of the HTTP upgrade.
    pub handshake: Duration,
    /// From the start of the TCP connect to the first count frame.
    pub first_frame: Duration,
    /// The count in the first frame.
    pub count: u64,
}

/// Why a join failed.
#[derive(Debug)]
pub enum JoinError {
    /// The source address could not be bound (ports exhausted?).
    Bind(std::io::ErrorKind),
    /// The TCP connect failed.
    Connect(std::io::ErrorKind),
    /// The server refused the upgrade with this HTTP status.
    Status(u16),
    /// The upgrade failed otherwise.
    Handshake,
    /// No well-formed count frame came first.
    FirstFrame,
    /// The whole join took longer than allowed.
    Timeout,
}

impl JoinError {
    /// A short, stable label for error tallies.
    pub fn kind(&self) -> String {
        match self {
            Self::Bind(kind) => format!("bind:{kind:?}"),
            Self::Connect(kind) => format!("connect:{kind:?}"),
            Self::Status(status) => format!("http:{status}"),
            Self::Handshake => "handshake".into(),
            Self::FirstFrame => "first_frame".into(),
            Self::Timeout => "timeout".into(),
        }
    }
}

#[derive(Deserialize)]
struct Push {
    count: u64,
}

fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_message_size(Some(64 * 1024))
}

/// Joins `topic` on the node at `target`, from `source` if given.
pub async fn join(
    target: SocketAddr,
    source: Option<IpAddr>,
    topic: &str,
    timeout: Duration,
) -> Result<Joined, JoinError> {
    tokio::time::timeout(timeout, join_inner(target, source, topic))
        .await
        .unwrap_or(Err(JoinError::Timeout))
}

async fn join_inner(target: SocketAddr, source: Option<IpAddr>, topic: &str) -> Result<Joined, JoinError> {
    let started = Instant::now();
    let socket = match target {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(|error| JoinError::Bind(error.kind()))?;
    if let Some(source) = source {
        socket
            .bind(SocketAddr::new(source, 0))
            .map_err(|error| JoinError::Bind(error.kind()))?;
    }
    let stream = socket
        .connect(target)
        .await
        .map_err(|error| JoinError::Connect(error.kind()))?;
    stream
        .set_nodelay(true)
        .map_err(|error| JoinError::Connect(error.kind()))?;
    let url = format!("ws://{target}/ws/{topic}");
    let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config()))
        .await
        .map_err(|error| match error {
            tungstenite::Error::Http(response) => JoinError::Status(response.status().as_u16()),
            _ => JoinError::Handshake,
        })?;
    let handshake = started.elapsed();
    let count = loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => {
                break serde_json::from_str::<Push>(text.as_str())
                    .map_err(|_| JoinError::FirstFrame)?
                    .count;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            _ => return Err(JoinError::FirstFrame),
        }
    };
    Ok(Joined {
        ws,
        handshake,
        first_frame: started.elapsed(),
        count,
    })
}

/// Leaves: sends a close frame and waits (at most `timeout`) for the server
/// to finish the close. Returns whether the server completed it in time.
pub async fn leave(mut ws: Ws, timeout: Duration) -> bool {
    let closed = async {
        if ws.close(None).await.is_err() {
            return;
        }
        while let Some(Ok(_)) = ws.next().await {}
    };
    tokio::time::timeout(timeout, closed).await.is_ok()
}

/// Waits for the next data frame (a count push); `None` once the connection
/// has ended. Held connections loop on it, which also answers server pings.
pub async fn next_data_frame(ws: &mut Ws) -> Option<()> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(_) | Message::Binary(_))) => return Some(()),
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
            Some(Ok(_)) => {
                // Pings are answered by tungstenite on the next write or
                // flush; flush now so an idle server sees the pong.
                if ws.flush().await.is_err() {
                    return None;
                }
            }
        }
    }
}
