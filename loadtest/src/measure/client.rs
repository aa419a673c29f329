//! One websocket client the way a browser tab is one: join a topic (TCP connect from a chosen source address, HTTP
//! upgrade, first count frame), stay, and leave with a close frame. Buffers are small (4 KiB reads, eager writes)
//! so one load process can hold ~19k connections, and nothing read from the network is trusted: a bad status, a
//! missing or malformed first frame or an early close is an error kind that the reports count.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Error, Message, protocol::WebSocketConfig};

/// An open websocket.
pub type Ws = WebSocketStream<TcpStream>;

/// A joined client.
pub struct Joined {
    pub ws: Ws,
    /// From the start of the TCP connect to the end of the HTTP upgrade.
    pub handshake: Duration,
    /// From the start of the TCP connect to the first count frame.
    pub first_frame: Duration,
    /// The count in the first frame.
    pub count: u64,
}

/// A TCP connection to `target` from `source` (the kernel's choice if none).
pub async fn connect(target: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = match target {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(source) = source {
        socket.bind(SocketAddr::new(source, 0))?;
    }
    let stream = socket.connect(target).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Joins `topic` on the node at `target`, from `source` if given; a failure is a short, stable label for error
/// tallies (`connect:ConnectionRefused`).
pub async fn join(
    target: SocketAddr,
    source: Option<IpAddr>,
    topic: &str,
    timeout: Duration,
) -> Result<Joined, String> {
    let joining = async {
        let started = Instant::now();
        let connected = connect(target, source).await;
        let stream = connected.map_err(|error| format!("connect:{:?}", error.kind()))?;
        let config = WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0);
        let config = config.max_message_size(Some(64 * 1024));
        let url = format!("ws://{target}/ws/{topic}");
        let upgrade = tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await;
        let (mut ws, _) = upgrade.map_err(|error| match error {
            Error::Http(response) => format!("http:{}", response.status().as_u16()),
            _ => "handshake".to_owned(),
        })?;
        let handshake = started.elapsed();
        let count = loop {
            match ws.next().await {
                Some(Ok(Message::Text(text))) => break serde_json::from_str::<serde_json::Value>(text.as_str()).ok(),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                _ => break None,
            }
        };
        let count = count.and_then(|push| push["count"].as_u64()).ok_or("first_frame")?;
        let first_frame = started.elapsed();
        Ok(Joined {
            ws,
            handshake,
            first_frame,
            count,
        })
    };
    let joined = tokio::time::timeout(timeout, joining).await;
    joined.unwrap_or_else(|_| Err("timeout".into()))
}

/// Leaves: sends a close frame and waits (at most `timeout`) for the server to finish the close. Returns whether
/// the server completed it in time.
pub async fn leave(mut ws: Ws, timeout: Duration) -> bool {
    let closed = async {
        if ws.close(None).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    };
    tokio::time::timeout(timeout, closed).await.is_ok()
}

/// Waits for the next data frame (a count push); `None` once the connection has ended. Held connections loop on it,
/// which also answers server pings.
pub async fn next_data_frame(ws: &mut Ws) -> Option<()> {
    loop {
        match ws.next().await? {
            Ok(Message::Text(_) | Message::Binary(_)) => return Some(()),
            Ok(Message::Close(_)) | Err(_) => return None,
            // Pings are answered by tungstenite on the next write or flush; flush now so an idle server sees the
            // pong.
            Ok(_) => ws.flush().await.ok()?,
        }
    }
}
