//! Accepting TCP connections with the limits of the open internet, for the
//! HTTP server and the gRPC server alike.
//!
//! A connection is capped per client IP at accept time, before a byte of its
//! request is read: over its cap (`Admission::accept`) it is closed at once. An HTTP
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
use futures_util::Stream;
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto::Builder,
    service::TowerToHyperService,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::mpsc,
    time::Instant,
};
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tower::ServiceExt;
use tracing::{Instrument, debug};

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

/// A served connection: plain, or TLS over the tracked socket.
pub(crate) enum Conn {
    /// Plain TCP.
    Plain(Tracked),
    /// TLS (boxed: its state is large and only some nodes use it).
    Tls(Box<TlsStream<Tracked>>),
}

impl Conn {
    /// Completes the TLS handshake when `tls` is set; a client that does
    /// not finish it within `within` is dropped.
    async fn open(io: Tracked, tls: Option<&TlsAcceptor>, within: Duration) -> Option<Self> {
        let Some(acceptor) = tls else {
            return Some(Self::Plain(io));
        };
        match tokio::time::timeout(within, acceptor.accept(io)).await {
            Ok(Ok(stream)) => Some(Self::Tls(Box::new(stream))),
            Ok(Err(error)) => {
                debug!(%error, "tls handshake failed");
                None
            }
            Err(_) => None,
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_read(cx, buf),
            Self::Tls(io) => Pin::new(io.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_write(cx, buf),
            Self::Tls(io) => Pin::new(io.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_flush(cx),
            Self::Tls(io) => Pin::new(io.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(io) => Pin::new(io).poll_shutdown(cx),
            Self::Tls(io) => Pin::new(io.as_mut()).poll_shutdown(cx),
        }
    }
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = tonic::transport::server::TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        match self {
            Self::Plain(io) => io.connect_info(),
            Self::Tls(io) => io.get_ref().0.connect_info(),
        }
    }
}

/// What a listener serves with: the per-IP gate, TLS if configured, and
/// the metrics that count refusals.
#[derive(Clone)]
pub(crate) struct Accepting {
    pub(crate) gate: AcceptGate,
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) metrics: NodeMetrics,
}

/// Serves HTTP on `listener` until `shutdown`; connections are tracked by
/// `tracker` and finish their response (or their upgrade) before it empties.
pub(crate) async fn serve_http(
    listener: TcpListener,
    app: Router,
    timings: HttpTimings,
    accepting: Accepting,
    shutdown: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let (io, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            accepted = accept(&listener, &accepting.gate, &accepting.metrics) => accepted,
        };
        let (app, tls, shutdown) = (app.clone(), accepting.tls.clone(), shutdown.clone());
        tracker.spawn(async move {
            let idle = io.idle_for(timings.idle_timeout);
            if let Some(conn) = Conn::open(io, tls.as_ref(), timings.header_read_timeout).await {
                serve_connection(conn, idle, peer, app, timings, shutdown).await;
            }
        });
    }
}

async fn serve_connection(
    conn: Conn,
    idle: impl Future<Output = ()>,
    peer: SocketAddr,
    app: Router,
    timings: HttpTimings,
    shutdown: CancellationToken,
) {
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
    let connection = builder.serve_connection_with_upgrades(TokioIo::new(conn), TowerToHyperService::new(service));
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

/// Handshakes that may wait for the gRPC server to take them.
const GRPC_ACCEPT_QUEUE: usize = 64;
/// How long a gRPC client may take to finish its TLS handshake.
const GRPC_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The accepted (and, with TLS, handshaken) connections of the gRPC server,
/// through the same gate. Handshakes run on their own tasks, so a slow
/// client never holds up the next one. Accepting stops when the server
/// drops the stream (its own graceful shutdown decides when: ending the
/// stream early would cut its shutdown short).
pub(crate) fn grpc_incoming(
    listener: TcpListener,
    accepting: Accepting,
    tracker: &TaskTracker,
) -> impl Stream<Item = io::Result<Conn>> + Send + 'static {
    let (ready, incoming) = mpsc::channel(GRPC_ACCEPT_QUEUE);
    let handshakes = tracker.clone();
    tracker.spawn(
        async move {
            loop {
                let (io, _) = tokio::select! {
                    () = ready.closed() => return,
                    accepted = accept(&listener, &accepting.gate, &accepting.metrics) => accepted,
                };
                let (tls, ready) = (accepting.tls.clone(), ready.clone());
                handshakes.spawn(async move {
                    if let Some(conn) = Conn::open(io, tls.as_ref(), GRPC_HANDSHAKE_TIMEOUT).await {
                        let _ = ready.send(Ok(conn)).await;
                    }
                });
            }
        }
        .in_current_span(),
    );
    ReceiverStream::new(incoming)
}
