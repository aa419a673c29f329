//! How the tools talk to a node. A websocket client the way a browser tab is one: join a topic (TCP connect from a
//! chosen source address, HTTP upgrade, first count frame), stay, and leave with a close frame; buffers are small
//! (4 KiB reads, eager writes) so one load process can hold ~19k connections. And the few HTTP calls to the node's
//! API, parsed leniently (only the fields used). Nothing read from the network is trusted: a bad status, a missing
//! or malformed answer or an early close is an error value (a kind the reports count), never a panic.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde_json::Value;
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

/// Joins `topic` on `target` from `source`; a failure is a short label for tallies (`connect:ConnectionRefused`).
pub async fn join(target: SocketAddr, source: Option<IpAddr>, topic: &str, wait: Duration) -> Result<Joined, String> {
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
    let joined = tokio::time::timeout(wait, joining).await;
    joined.unwrap_or_else(|_| Err("timeout".into()))
}

/// Sends a close frame; whether the server finished the close within `timeout`.
pub async fn leave(mut ws: Ws, timeout: Duration) -> bool {
    let closed = async {
        if ws.close(None).await.is_ok() {
            while let Some(Ok(_)) = ws.next().await {}
        }
    };
    tokio::time::timeout(timeout, closed).await.is_ok()
}

/// The next count push (`None` once closed); held connections loop on it, which also answers pings.
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

/// A small HTTP client for the node API.
#[derive(Clone)]
pub struct Api(reqwest::Client);

impl Api {
    /// A client with a per-request timeout, at most `idle` keep-alive sockets per node, connecting from `source`.
    pub fn new(timeout: Duration, idle: usize, source: Option<IpAddr>) -> anyhow::Result<Self> {
        let builder = reqwest::Client::builder().no_proxy().timeout(timeout).tcp_nodelay(true);
        let builder = builder.pool_max_idle_per_host(idle).local_address(source);
        Ok(Self(builder.build()?))
    }

    /// The body of `GET {path}`, an error unless the answer is 200.
    pub async fn text(&self, node: SocketAddr, path: &str) -> anyhow::Result<String> {
        let url = format!("http://{node}{path}");
        let response = self.0.get(&url).send().await.with_context(|| format!("GET {url}"))?;
        let status = response.status();
        let body = response.text().await.with_context(|| format!("GET {url}: body"))?;
        if !status.is_success() {
            bail!("GET {url}: HTTP {status}: {body}");
        }
        Ok(body)
    }

    async fn get<T: DeserializeOwned>(&self, node: SocketAddr, path: &str) -> anyhow::Result<T> {
        let body = self.text(node, path).await?;
        serde_json::from_str(&body).with_context(|| format!("{path} on {node}: {body}"))
    }

    /// `GET /count/{topic}`: its cluster-wide `count`, the node's own (`local`), the live `nodes` included.
    pub async fn count(&self, node: SocketAddr, topic: &str) -> anyhow::Result<Value> {
        self.get(node, &format!("/count/{topic}")).await
    }

    /// The topics listed by `GET /counts?prefix=…&limit=…`, with their counts.
    pub async fn counts(&self, node: SocketAddr, prefix: &str, limit: usize) -> anyhow::Result<Vec<(String, u64)>> {
        let path = format!("/counts?prefix={prefix}&limit={limit}");
        let counts: Value = self.get(node, &path).await?;
        let topic = |t: &Value| Some((t["topic"].as_str()?.to_owned(), t["count"].as_u64()?));
        let listed = counts["topics"].as_array().into_iter().flatten();
        Ok(listed.filter_map(topic).collect())
    }

    /// Cluster-wide total of every topic (`/counts`).
    pub async fn total(&self, node: SocketAddr) -> anyhow::Result<u64> {
        let counts: Value = self.get(node, "/counts?limit=1").await?;
        counts["total"].as_u64().context("/counts without a total")
    }

    /// Members the node sees as alive, itself included.
    pub async fn alive_members(&self, node: SocketAddr) -> anyhow::Result<usize> {
        let cluster: Value = self.get(node, "/cluster").await?;
        let members = cluster["members"].as_array().context("/cluster without members")?;
        Ok(members.iter().filter(|member| member["state"] == "alive").count())
    }

    /// The state (`alive`, `suspect`, `down`) in which the node's `/cluster` lists member `name`; `None` if absent.
    pub async fn member_state(&self, node: SocketAddr, name: &str) -> anyhow::Result<Option<String>> {
        let cluster: Value = self.get(node, "/cluster").await?;
        let members = cluster["members"].as_array().context("/cluster without members")?;
        let member = members.iter().find(|member| member["name"] == name);
        Ok(member.and_then(|member| Some(member["state"].as_str()?.to_owned())))
    }

    /// The sum over every label set of each of `names` in `/metrics`; 0 for a name that is absent.
    pub async fn metrics<const N: usize>(&self, node: SocketAddr, names: [&str; N]) -> anyhow::Result<[f64; N]> {
        let all = samples(&self.text(node, "/metrics").await?);
        let named = |name, (series, _): &&(String, f64)| series.split('{').next() == Some(name);
        Ok(names.map(|name| all.iter().filter(|s| named(name, s)).map(|(_, value)| value).sum()))
    }
}

/// Every sample of a `/metrics` text: series (`name{label="…"}`) and value.
pub fn samples(metrics: &str) -> Vec<(String, f64)> {
    let sample = |line: &str| {
        let (series, value) = line.rsplit_once(' ')?;
        Some((series.trim().to_owned(), value.trim().parse().ok()?))
    };
    let lines = metrics.lines().filter(|line| !line.starts_with('#'));
    lines.filter_map(sample).collect()
}
