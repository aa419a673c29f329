//! Accepting TCP connections with the limits of the open internet, for the
//! HTTP server and the gRPC server alike.
//!
//! A connection is capped per client IP at accept time, before a byte of its
//! request is read: over [`accept_cap`] it is closed at once. An HTTP
//! connection must send its request headers within 10 s and is closed after
//! 60 s without a byte either way ([`HttpTimings`]; an open live stream
//! writes a keep-alive comment every 15 s, so it is never idle).
//! A websocket upgrade leaves this loop: the session keeps its own 90 s idle
//! rule. Each accepted socket carries its per-IP permit for as long as it is
//! open, upgraded or not.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use axum::{Router, body::Body, extract::ConnectInfo, http::Request};
use futures_util::{Stream, stream};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto::Builder,
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    time::Instant,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;
use tracing::debug;

use crate::{admission::SocketPermit, metrics::NodeMetrics};

/// The timeouts of an HTTP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpTimings {
    /// How long a client may take to send its request headers.
    pub header_read_timeout: Duration,
    /// How long a connection may stay silent both ways.
    pub idle_timeout: Duration,
}

impl Default for HttpTimings {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
        }
    }
}
/// How long a connection being shut down may take to finish its response.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// Connections one client IP may hold beyond its websocket cap: room for API
/// calls and for an upgrade that is refused with 429 rather than cut.
const ACCEPT_HEADROOM: u32 = 64;

/// The per-IP cap on open TCP connections for a `--max-connections-per-ip`.
pub fn accept_cap(max_per_ip: u32) -> u32 {
    max_per_ip.saturating_add(ACCEPT_HEADROOM)
}

/// Takes a per-IP place for an accepted connection; `None` refuses it.
pub(crate) type AcceptGate = Arc<dyn Fn(SocketAddr) -> Option<SocketPermit> + Send + Sync>;

/// An accepted socket with its per-IP permit and the time it was last used.
pub(crate) struct Tracked {
    inner: TcpStream,
    last_used: Arc<AtomicU64>,
    started: Instant,
    _permit: SocketPermit,
}

impl Tracked {
    fn new(inner: TcpStream, permit: SocketPermit) -> Self {
        Self {
            inner,
            last_used: Arc::default(),
            started: Instant::now(),
            _permit: permit,
        }
    }

    fn touch(&self) {
        let elapsed = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_used.store(elapsed, Ordering::Relaxed);
    }

    /// Resolves once nothing was read or written for `idle`.
    fn idle_for(&self, idle: Duration) -> impl Future<Output = ()> + Send + 'static {
        let (last_used, started) = (Arc::clone(&self.last_used), self.started);
        async move {
            loop {
                let last = started + Duration::from_millis(last_used.load(Ordering::Relaxed));
                if last.elapsed() >= idle {
                    return;
                }
                tokio::time::sleep_until(last + idle).await;
            }
        }
    }
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if polled.is_ready() {
            self.touch();
        }
        polled
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if polled.is_ready() {
            self.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl tonic::transport::server::Connected for Tracked {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// Accepts the next connection that passes the gate; refused ones are
/// closed and counted, failed accepts retried.
async fn accept(listener: &TcpListener, gate: &AcceptGate, metrics: &NodeMetrics) -> (Tracked, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => match gate(peer) {
                Some(permit) => {
                    // Small pushes should leave at once, not wait for Nagle.
                    let _ = stream.set_nodelay(true);
                    return (Tracked::new(stream, permit), peer);
                }
                None => {
                    metrics.refused.get_or_create(&[("reason", "per_ip_accept")]).inc();
                }
            },
            Err(error) => {
                // Out of file descriptors, or a connection reset before it
                // was accepted: wait a moment rather than spin.
                debug!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Serves HTTP on `listener` until `shutdown`; connections are tracked by
/// `tracker` and finish their response (or their upgrade) before it empties.
pub(crate) async fn serve_http(
    listener: TcpListener,
    app: Router,
    timings: HttpTimings,
    gate: AcceptGate,
    metrics: NodeMetrics,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let (io, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = accept(&listener, &gate, &metrics) => accepted,
        };
        tracker.spawn(serve_connection(io, peer, app.clone(), timings, shutdown.clone()));
    }
}

async fn serve_connection(
    io: Tracked,
    peer: SocketAddr,
    app: Router,
    timings: HttpTimings,
    shutdown: CancellationToken,
) {
    let idle = io.idle_for(timings.idle_timeout);
    let service = app.map_request(move |request: Request<Incoming>| {
        let mut request = request.map(Body::new);
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    });
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(timings.header_read_timeout);
    builder.http2().timer(TokioTimer::new()).enable_connect_protocol();
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(service));
    tokio::pin!(connection, idle);
    let stop = tokio::select! {
        served = connection.as_mut() => {
            if let Err(error) = served {
                debug!(%error, "http connection ended");
            }
            return;
        }
        () = shutdown.cancelled() => "shutdown",
        () = &mut idle => "idle",
    };
    debug!(reason = stop, "closing http connection");
    connection.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, connection).await;
}

/// The accepted connections of the gRPC server, through the same gate.
pub(crate) fn grpc_incoming(
    listener: TcpListener,
    gate: AcceptGate,
    metrics: NodeMetrics,
) -> impl Stream<Item = io::Result<Tracked>> + Send + 'static {
    stream::unfold((listener, gate, metrics), |(listener, gate, metrics)| async move {
        let (io, _) = accept(&listener, &gate, &metrics).await;
        Some((Ok(io), (listener, gate, metrics)))
    })
}
