//! Test harness: real headcount nodes on loopback with real sockets, and the
//! clients a user would point at them.
//!
//! Each [`TestNode`] runs in its own tokio runtime on its own thread, so a
//! test can stop it gracefully ([`TestNode::stop`]) or crash it
//! ([`TestNode::kill`]: the runtime is dropped, every socket closes, nothing
//! is said to the cluster). Every port is ephemeral. [`GossipLink`] puts a
//! UDP forwarder in front of a node's gossip socket so a test can cut and
//! heal the network between chosen nodes. Tests wait for conditions with
//! [`eventually`], which polls until a deadline; they never sleep a fixed time.

use std::{
    collections::HashSet,
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use futures_util::{SinkExt, StreamExt};
use headcount_server::{HistoryConfig, Listeners, Node, NodeConfig, NodeName};
use tempfile::TempDir;
use tokio::{
    net::{TcpListener, TcpStream, UdpSocket},
    sync::oneshot,
    time::Instant,
};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};
use tokio_util::sync::CancellationToken;

/// A websocket client connection.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Gossip interval used by cluster tests (X).
pub const TEST_GOSSIP_INTERVAL: Duration = Duration::from_millis(100);

/// How often test nodes flush their visit history.
pub const TEST_FLUSH_INTERVAL: Duration = Duration::from_millis(200);

/// A node configuration with short timings for tests. Its history lives in
/// a temporary directory that the [`TestNode`] makes and removes; a test
/// that restarts a node on the same disk sets [`history_in`] instead.
pub fn test_config(name: &str) -> NodeConfig {
    let mut config = NodeConfig::new(NodeName::new(name).expect("valid node name"));
    config.timings.gossip_interval = TEST_GOSSIP_INTERVAL;
    config.push_interval = Duration::from_millis(100);
    config.timings.suspect_timeout = Duration::from_millis(1500);
    config.shards = 2;
    config.history = None;
    config
}

/// History kept in `dir`, flushed every [`TEST_FLUSH_INTERVAL`].
pub fn history_in(dir: &Path) -> Option<HistoryConfig> {
    Some(HistoryConfig {
        data_dir: dir.to_path_buf(),
        flush_interval: TEST_FLUSH_INTERVAL,
        ..HistoryConfig::default()
    })
}

/// A running node.
pub struct TestNode {
    /// Its name.
    pub name: String,
    /// HTTP + websocket address.
    pub http: SocketAddr,
    /// gRPC address.
    pub grpc: SocketAddr,
    /// The address its gossip socket is bound to.
    pub gossip: SocketAddr,
    shutdown: CancellationToken,
    kill: CancellationToken,
    thread: Option<std::thread::JoinHandle<()>>,
    _data_dir: Option<TempDir>,
}

impl TestNode {
    /// Starts a node with `config` on ephemeral ports.
    pub async fn start(config: NodeConfig) -> Self {
        Self::start_on(config, "127.0.0.1:0".parse().expect("addr")).await
    }

    /// Starts a node that keeps no history (`--no-history`).
    pub async fn start_without_history(mut config: NodeConfig) -> Self {
        config.history = None;
        Self::launch(config, "127.0.0.1:0".parse().expect("addr"), None).await
    }

    /// Starts a node whose gossip socket binds `gossip` (to restart a node
    /// on the same address).
    pub async fn start_on(mut config: NodeConfig, gossip: SocketAddr) -> Self {
        let data_dir = config
            .history
            .is_none()
            .then(|| TempDir::new().expect("temporary data dir"));
        if let Some(dir) = &data_dir {
            config.history = history_in(dir.path());
        }
        Self::launch(config, gossip, data_dir).await
    }

    async fn launch(config: NodeConfig, gossip: SocketAddr, data_dir: Option<TempDir>) -> Self {
        let name = config.node_name.to_string();
        let shutdown = CancellationToken::new();
        let kill = CancellationToken::new();
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop, crash) = (shutdown.clone(), kill.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listeners = Listeners {
                    http: TcpListener::bind("127.0.0.1:0").await.expect("bind http"),
                    grpc: TcpListener::bind("127.0.0.1:0").await.expect("bind grpc"),
                    gossip: UdpSocket::bind(gossip).await.expect("bind gossip"),
                };
                let node = Node::start(config, listeners, stop.clone()).await.expect("node starts");
                let _ = ready_tx.send((node.http_addr, node.grpc_addr, node.gossip_addr));
                tokio::select! {
                    () = crash.cancelled() => {}
                    () = async { stop.cancelled().await; node.stopped().await } => {}
                }
            });
            // Drop every task now (a crash runs no shutdown code), but wait
            // for the workers, so the sockets are closed when `kill` returns
            // and a restart can bind the same address.
            runtime.shutdown_timeout(Duration::from_secs(2));
        });
        let (http, grpc, gossip) = ready_rx.await.expect("node reports its addresses");
        Self {
            name,
            http,
            grpc,
            gossip,
            shutdown,
            kill,
            thread: Some(thread),
            _data_dir: data_dir,
        }
    }

    /// Graceful shutdown (as on SIGTERM); returns once every task ended.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        self.join().await;
    }

    /// Starts a graceful shutdown without waiting for it.
    pub fn begin_stop(&self) {
        self.shutdown.cancel();
    }

    /// Crash: every task is dropped and every socket closed, with no word
    /// to the cluster or to clients.
    pub async fn kill(mut self) {
        self.kill.cancel();
        self.join().await;
    }

    async fn join(&mut self) {
        if let Some(thread) = self.thread.take() {
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .expect("join")
                .expect("node thread");
        }
    }

    /// `GET path` on this node: status and JSON body.
    pub async fn get(&self, path: &str) -> (u16, serde_json::Value) {
        get_json(self.http, path).await
    }

    /// The cluster-wide count of `topic` (already percent-encoded as needed).
    pub async fn count(&self, topic: &str) -> u64 {
        let (status, body) = self.get(&format!("/count/{topic}")).await;
        assert_eq!(status, 200, "GET /count/{topic}: {body}");
        body["count"].as_u64().expect("count")
    }

    /// The sum of the `/metrics` samples named `sample`: with labels
    /// (`name{reason="x"}`) that sample, without them every sample of the
    /// family; 0 when there is none.
    pub async fn metric(&self, sample: &str) -> f64 {
        let text = reqwest::get(format!("http://{}/metrics", self.http))
            .await
            .expect("GET /metrics")
            .text()
            .await
            .expect("metrics body");
        text.lines()
            .filter_map(|line| line.strip_prefix(sample))
            .filter(|rest| rest.starts_with([' ', '{']))
            .filter_map(|rest| rest.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Opens `n` counted websockets on `topic` (already percent-encoded).
    pub async fn connect_n(&self, topic: &str, n: usize) -> Vec<Ws> {
        let mut sockets = Vec::with_capacity(n);
        for _ in 0..n {
            sockets.push(self.connect(topic).await);
        }
        sockets
    }

    /// Opens a counted websocket on `topic` (a future that borrows nothing
    /// of the topic, for opening many at once).
    pub fn connect_owned(&self, topic: String) -> impl Future<Output = Ws> + 'static {
        let http = self.http;
        async move {
            ws_connect(http, &format!("/ws/{topic}"))
                .await
                .expect("websocket upgrade")
        }
    }

    /// Opens a counted websocket on `topic`.
    pub async fn connect(&self, topic: &str) -> Ws {
        ws_connect(self.http, &format!("/ws/{topic}"))
            .await
            .expect("websocket upgrade")
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill.cancel();
    }
}

/// `GET path` on `addr`: status and JSON body (`null` when not JSON).
pub async fn get_json(addr: SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let response = reqwest::get(format!("http://{addr}{path}"))
        .await
        .expect("http request");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
}

/// Opens a websocket on `addr` at `path` (which may carry a query).
pub async fn ws_connect(addr: SocketAddr, path: &str) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let (socket, _) = tokio_tungstenite::connect_async(format!("ws://{addr}{path}")).await?;
    Ok(socket)
}

/// The next count pushed on `socket` (`{"topic":…,"count":N}`), skipping
/// control frames; `None` when the socket closes first or `within` passes.
pub async fn next_count(socket: &mut Ws, within: Duration) -> Option<u64> {
    let deadline = Instant::now() + within;
    loop {
        let frame = tokio::time::timeout_at(deadline, socket.next()).await.ok()??.ok()?;
        if let Message::Text(text) = frame {
            let value: serde_json::Value = serde_json::from_str(&text).ok()?;
            return value["count"].as_u64();
        }
    }
}

/// Reads pushes until one equals `expected`; panics after `within`.
pub async fn wait_for_push(socket: &mut Ws, expected: u64, within: Duration) {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        match next_count(socket, deadline - Instant::now()).await {
            Some(count) if count == expected => return,
            Some(count) => seen.push(count),
            None => break,
        }
    }
    panic!("no push of {expected} within {within:?}; saw {seen:?}");
}

/// Closes a websocket politely (close frame).
pub async fn close(mut socket: Ws) {
    let _ = socket.close(None).await;
    while let Some(Ok(_)) = socket.next().await {}
}

/// Polls `check` until it returns true; panics with `what` after `within`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(Instant::now() < deadline, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until every node reports `expected` for `topic`; returns how long it took.
pub async fn converge(nodes: &[&TestNode], topic: &str, expected: u64, within: Duration) -> Duration {
    let started = Instant::now();
    eventually(within, &format!("every node counts {expected} on {topic}"), || async {
        for node in nodes {
            if node.count(topic).await != expected {
                return false;
            }
        }
        true
    })
    .await;
    started.elapsed()
}

/// Waits until every node sees `expected` live nodes in `/count`'s `nodes`.
pub async fn wait_for_members(nodes: &[&TestNode], expected: u64, within: Duration) {
    eventually(within, &format!("every node sees {expected} live nodes"), || async {
        for node in nodes {
            let (_, body) = node.get("/count/_").await;
            if body["nodes"].as_u64() != Some(expected) {
                return false;
            }
        }
        true
    })
    .await;
}

/// A UDP forwarder in front of one node's gossip socket: peers send to
/// [`GossipLink::front`], the link forwards to the node unless the sender
/// is cut off. Cutting both directions between two nodes partitions them.
pub struct GossipLink {
    /// The address peers send to: use it as the node's `advertise` and in
    /// other nodes' seeds.
    pub front: SocketAddr,
    target: Arc<Mutex<Option<SocketAddr>>>,
    blocked: Arc<Mutex<HashSet<SocketAddr>>>,
    stop: CancellationToken,
}

impl GossipLink {
    /// Binds the front address and starts forwarding (to nothing until
    /// [`GossipLink::forward_to`]).
    pub async fn new() -> Self {
        let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind link");
        let front = socket.local_addr().expect("addr");
        let target = Arc::new(Mutex::new(None));
        let blocked: Arc<Mutex<HashSet<SocketAddr>>> = Arc::default();
        let stop = CancellationToken::new();
        let (to, cut, done) = (Arc::clone(&target), Arc::clone(&blocked), stop.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            loop {
                let received = tokio::select! {
                    () = done.cancelled() => return,
                    received = socket.recv_from(&mut buf) => received,
                };
                let Ok((len, from)) = received else { continue };
                let target = *to.lock().unwrap_or_else(PoisonError::into_inner);
                let dropped = cut.lock().unwrap_or_else(PoisonError::into_inner).contains(&from);
                if let (Some(target), false) = (target, dropped) {
                    let _ = socket.send_to(&buf[..len], target).await;
                }
            }
        });
        Self {
            front,
            target,
            blocked,
            stop,
        }
    }

    /// Forwards to the node's real gossip socket.
    pub fn forward_to(&self, gossip: SocketAddr) {
        *self.target.lock().unwrap_or_else(PoisonError::into_inner) = Some(gossip);
    }

    /// Drops datagrams sent from `gossip` (another node's real socket).
    pub fn cut(&self, gossip: SocketAddr) {
        self.blocked
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(gossip);
    }

    /// Forwards everything again.
    pub fn heal(&self) {
        self.blocked.lock().unwrap_or_else(PoisonError::into_inner).clear();
    }
}

impl Drop for GossipLink {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Sends `payload` as a plain websocket text frame.
pub async fn send_text(socket: &mut Ws, payload: String) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    socket.send(Message::Text(payload.into())).await
}

/// HTML pages of another origin (another loopback port than any node's),
/// served as given over plain HTTP/1.1: the sites that embed `/hc.js` in
/// browser tests. Unknown paths get 404. Stops when dropped.
pub struct PageServer {
    origin: String,
    task: tokio::task::JoinHandle<()>,
}

impl PageServer {
    /// Serves `pages` (`(path, html)`) on an ephemeral port.
    pub async fn start(pages: Vec<(&'static str, String)>) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the page server");
        let origin = format!("http://{}", listener.local_addr().expect("page server address"));
        let pages: Arc<std::collections::HashMap<&str, String>> = Arc::new(pages.into_iter().collect());
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let pages = Arc::clone(&pages);
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head);
                    let path = head.split(' ').nth(1).unwrap_or("/");
                    let (status, body) = pages
                        .get(path)
                        .map_or(("404 Not Found", ""), |page| ("200 OK", page.as_str()));
                    let response = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n\
                         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(response.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Self { origin, task }
    }

    /// The full URL of `path` on this server.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin)
    }
}

impl Drop for PageServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The profile directory this test was built into (`target/debug` for a plain
/// `cargo test`): a test binary is `<profile dir>/deps/<name>-<hash>`.
fn profile_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.to_path_buf()))
        .filter(|dir| dir.join("deps").is_dir())
        .unwrap_or_else(|| repo_root().join("target").join("debug"))
}

/// The `headcount` binary of the same profile, built if missing or stale.
pub fn headcount_binary() -> PathBuf {
    let dir = profile_dir();
    let mut build = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned()));
    build.current_dir(repo_root()).args(["build", "-p", "headcount"]);
    if dir.file_name().is_some_and(|name| name == "release") {
        build.arg("--release");
    }
    let status = build.status().expect("run cargo build -p headcount");
    assert!(status.success(), "cargo build -p headcount failed: {status}");
    let binary = dir.join("headcount");
    assert!(binary.is_file(), "no binary at {}", binary.display());
    binary
}

/// Percent-encodes every byte of `text` except unreserved ASCII, so the node
/// decodes exactly `text` from a URL path or query.
pub fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}
