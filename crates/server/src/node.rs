//! One headcount node: the counting table, the cluster layer, the push hub,
//! the HTTP and gRPC servers, all on one task tracker and one cancellation
//! token.
//!
//! [`Node::start`] takes its listeners and its shutdown token as arguments,
//! so tests run real nodes on port 0 and stop them as they like. Cancelling
//! the token is the whole shutdown: the servers stop accepting, websocket
//! sessions close with 1001, watch streams end, gRPC health turns
//! NOT_SERVING and the gossip task leaves the cluster; [`Node::stopped`]
//! waits for all of it.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use futures_util::Stream;
use headcount_cluster::{
    Cluster, ClusterConfig, ClusterSecret, NodeName, PeerLimits, StartError as ClusterStartError, Timings,
};
use headcount_counter::CounterTable;
use headcount_history::{History, HistoryConfig, HistorySync, StoreError};
use headcount_proto::v1::{cluster_server::ClusterServer, counter_server::CounterServer, stats_server::StatsServer};
use prometheus_client::registry::Registry;
use tokio::{
    net::{TcpListener, UdpSocket},
    sync::watch,
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tonic::service::interceptor::InterceptedService;
use tonic_health::ServingStatus;
use tracing::{Instrument, error, info, info_span};

use crate::{
    access::{Access, AdminToken},
    admission::Admission,
    app::app,
    chart,
    client_ip::TrustedProxies,
    grpc::{ClusterApi, CounterApi, StatsApi, admin_only},
    metrics::NodeMetrics,
    peaks,
    push::Hub,
    query::Query,
    serve::{AcceptGate, Accepting, Conn, HttpTimings, grpc_incoming, serve_http},
    state::{AppState, SessionTimings},
    tls::{CertStore, GRPC_ALPN, HTTP_ALPN, TlsError, TlsFiles},
};

/// Everything a node is configured with (the binary maps flags onto it).
/// [`Default`] is the product contract's defaults, the one place they are
/// written: the binary's flags default to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    /// Stable human name shown in `/cluster`.
    pub node_name: NodeName,
    /// Gossip address other nodes use; none: the gossip socket's address.
    pub advertise: Option<SocketAddr>,
    /// `host:port` gossip addresses to join.
    pub seeds: Vec<String>,
    /// X (how often changed counts are disseminated), the suspect timeout
    /// and the protocol's fixed timings.
    pub timings: Timings,
    /// The most often a watcher is sent a changed count.
    pub push_interval: Duration,
    /// Local counter shards.
    pub shards: usize,
    /// Shared key authenticating gossip and sync; none: no authentication.
    pub cluster_secret: Option<ClusterSecret>,
    /// Websocket connections this node accepts.
    pub max_connections: usize,
    /// Websocket connections per client IP.
    pub max_connections_per_ip: u32,
    /// Distinct topics with live connections on this node.
    pub max_topics: usize,
    /// Origins allowed to open websockets; none: any.
    pub allowed_origins: Option<Vec<String>>,
    /// Ping and idle timings of websocket sessions.
    pub session: SessionTimings,
    /// Header-read and idle timeouts of HTTP connections.
    pub http: HttpTimings,
    /// Token that dashboards, listings, cluster and metrics need; none: open.
    pub admin_token: Option<AdminToken>,
    /// Listings (and stats) under these prefixes stay open with a token set.
    pub public_prefixes: Vec<String>,
    /// Proxies whose `Forwarded` / `X-Forwarded-For` name the client.
    pub trusted_proxies: TrustedProxies,
    /// Serve HTTP, websockets and gRPC over TLS with these files; none: plain.
    pub tls: Option<TlsFiles>,
    /// The first incarnation; none (normal): the wall clock in milliseconds.
    /// Tests set it to replay a clock that was wrong.
    pub first_incarnation: Option<u64>,
    /// Where and how visit history is kept; none: no history.
    pub history: Option<HistoryConfig>,
}

impl NodeConfig {
    /// The defaults, for a node named `node_name`.
    pub fn new(node_name: NodeName) -> Self {
        Self {
            node_name,
            ..Self::default()
        }
    }
}

impl Default for NodeConfig {
    /// The product contract's defaults; the node is named after this host.
    fn default() -> Self {
        Self {
            node_name: NodeName::of_this_host(),
            advertise: None,
            seeds: Vec::new(),
            timings: Timings::DEFAULT,
            push_interval: Duration::from_secs(1),
            shards: std::thread::available_parallelism().map_or(1, usize::from),
            cluster_secret: None,
            max_connections: 1_000_000,
            max_connections_per_ip: 1_000,
            max_topics: 100_000,
            allowed_origins: None,
            session: SessionTimings::default(),
            http: HttpTimings::default(),
            admin_token: None,
            public_prefixes: Vec::new(),
            trusted_proxies: TrustedProxies::default(),
            tls: None,
            first_incarnation: None,
            history: Some(HistoryConfig::default()),
        }
    }
}

/// The sockets a node serves on, bound by the caller.
pub struct Listeners {
    /// HTTP and websockets.
    pub http: TcpListener,
    /// gRPC (public API, health, reflection, and peer sync).
    pub grpc: TcpListener,
    /// Cluster gossip.
    pub gossip: UdpSocket,
}

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener's address could not be read.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    /// The TLS certificate or key could not be loaded.
    #[error("--tls-cert / --tls-key: {0}")]
    Tls(#[from] TlsError),
    /// The cluster layer could not start.
    #[error("cluster: {0}")]
    Cluster(#[from] ClusterStartError),
    /// The history store could not be opened.
    #[error("--data-dir: {0}")]
    History(StoreError),
    /// The gossip address other nodes would use is not routable.
    #[error("advertise address {0} is not routable: set --advertise")]
    Unroutable(SocketAddr),
}

/// A running node.
pub struct Node {
    /// Where HTTP and websockets are served.
    pub http_addr: SocketAddr,
    /// Where gRPC is served.
    pub grpc_addr: SocketAddr,
    /// Where gossip is received.
    pub gossip_addr: SocketAddr,
    tracker: TaskTracker,
}

impl Node {
    /// Starts every task of a node on `listeners`; all stop on `shutdown`.
    pub async fn start(
        config: NodeConfig,
        listeners: Listeners,
        shutdown: CancellationToken,
    ) -> Result<Self, StartError> {
        let http_addr = listeners.http.local_addr()?;
        let grpc_addr = listeners.grpc.local_addr()?;
        let gossip_addr = listeners.gossip.local_addr()?;
        let advertise = config.advertise.unwrap_or(gossip_addr);
        if advertise.ip().is_unspecified() {
            return Err(StartError::Unroutable(advertise));
        }
        let certs = config.tls.clone().map(CertStore::load).transpose()?.map(Arc::new);
        let span = info_span!("node", node = %config.node_name);
        let tracker = TaskTracker::new();
        let mut registry = Registry::default();
        let history = config
            .history
            .clone()
            .map(|history| History::open(history, &mut registry))
            .transpose()
            .map_err(StartError::History)?;
        let table = CounterTable::new(config.shards, config.max_topics);
        let cluster_config = ClusterConfig {
            node_name: config.node_name.clone(),
            advertise,
            sync_port: grpc_addr.port(),
            seeds: config.seeds.clone(),
            timings: config.timings,
            secret: config.cluster_secret.clone(),
            sync_tls: config.tls.is_some(),
            first_incarnation: config.first_incarnation,
            peer_limits: PeerLimits {
                max_count: u64::try_from(config.max_connections).unwrap_or(u64::MAX),
                max_topics: config.max_topics,
            },
        };
        let cluster = span.in_scope(|| {
            Cluster::start(
                cluster_config,
                listeners.gossip,
                table.clone(),
                &mut registry,
                &tracker,
                shutdown.clone(),
            )
        })?;
        let query = Query::new(table.clone(), cluster.view());
        if let Some(history) = &history {
            span.in_scope(|| history.start(cluster.link(), cluster.view(), &tracker, shutdown.clone()));
            let peaks = peaks::run(query.clone(), history.clone(), shutdown.clone());
            tracker.spawn(peaks.instrument(span.clone()));
        }
        let metrics = NodeMetrics::register(&mut registry);
        let hub = Arc::new(Hub::default());
        let (chart_tx, chart) = watch::channel(Arc::default());
        let sampler = chart::run(query.clone(), chart_tx, shutdown.clone());
        tracker.spawn(sampler.instrument(span.clone()));
        let admission = Arc::new(Admission::new(
            config.allowed_origins.clone(),
            config.trusted_proxies.clone(),
            config.max_connections,
            config.max_connections_per_ip,
        ));
        let gate: AcceptGate = {
            let admission = Arc::clone(&admission);
            Arc::new(move |peer: SocketAddr| admission.accept(peer.ip()))
        };
        let (http_tls, grpc_tls) = match certs {
            Some(certs) => {
                let acceptors = (certs.acceptor(HTTP_ALPN)?, certs.acceptor(GRPC_ALPN)?);
                let watch = certs.watch(metrics.tls_reloads.clone(), shutdown.clone());
                tracker.spawn(watch.instrument(span.clone()));
                (Some(acceptors.0), Some(acceptors.1))
            }
            None => (None, None),
        };
        let accepting = |tls| Accepting {
            gate: Arc::clone(&gate),
            tls,
            metrics: metrics.clone(),
        };
        let access = Arc::new(Access::new(config.admin_token.clone(), config.public_prefixes.clone()));
        let state = Arc::new(AppState {
            access: Arc::clone(&access),
            query: query.clone(),
            table,
            history: history.clone(),
            hub: Arc::clone(&hub),
            admission: Arc::clone(&admission),
            metrics: metrics.clone(),
            registry: Arc::new(registry),
            needs_join: !config.seeds.is_empty(),
            timings: config.session,
            push_interval: config.push_interval,
            chart,
            shutdown: shutdown.clone(),
            tracker: tracker.clone(),
        });

        let push = (Arc::clone(&hub), query.clone(), shutdown.clone());
        tracker.spawn(async move { push.0.run(push.1, config.push_interval, push.2).await }.instrument(span.clone()));
        let http = serve_http(
            listeners.http,
            app(state),
            config.http,
            accepting(http_tls),
            shutdown.clone(),
            tracker.clone(),
        );
        tracker.spawn(http.instrument(span.clone()));
        let grpc = GrpcParts {
            query,
            hub,
            access: Arc::clone(&access),
            admission,
            metrics: metrics.clone(),
            sync: cluster.sync_service(),
            history: history.clone(),
            history_sync: history.map(|history| HistorySync::new(history, cluster.link())),
        };
        let incoming = span.in_scope(|| grpc_incoming(listeners.grpc, accepting(grpc_tls), &tracker));
        tracker.spawn(serve_grpc(incoming, grpc, shutdown).instrument(span.clone()));
        tracker.close();
        span.in_scope(|| info!(%http_addr, %grpc_addr, %gossip_addr, %advertise, "node started"));
        Ok(Self {
            http_addr,
            grpc_addr,
            gossip_addr,
            tracker,
        })
    }

    /// Resolves once every task of the node has ended (after shutdown).
    pub async fn stopped(&self) {
        self.tracker.wait().await;
    }
}

/// Services reported by gRPC health: the whole server ("") and the public API.
const HEALTH_SERVICES: [&str; 4] = ["", "headcount.v1.Counter", "headcount.v1.Cluster", "headcount.v1.Stats"];

struct GrpcParts {
    query: Query,
    hub: Arc<Hub>,
    access: Arc<Access>,
    admission: Arc<Admission>,
    metrics: NodeMetrics,
    sync: headcount_cluster::SyncService,
    history: Option<History>,
    history_sync: Option<HistorySync>,
}

/// Streams one connection may open at once.
const GRPC_MAX_STREAMS: u32 = 100;
/// HTTP/2 pings find dead peers of idle gRPC connections.
const GRPC_KEEPALIVE: Duration = Duration::from_secs(30);
const GRPC_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

async fn serve_grpc(
    incoming: impl Stream<Item = std::io::Result<Conn>> + Send + 'static,
    parts: GrpcParts,
    shutdown: CancellationToken,
) {
    let (mut health, health_service) = tonic_health::server::health_reporter();
    for service in HEALTH_SERVICES {
        health.set_service_status(service, ServingStatus::Serving).await;
    }
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(headcount_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let (reflection_v1, reflection_v1alpha) = match (reflection().build_v1(), reflection().build_v1alpha()) {
        (Ok(v1), Ok(v1alpha)) => (v1, v1alpha),
        (Err(error), _) | (_, Err(error)) => {
            error!(%error, "grpc reflection could not be built");
            return;
        }
    };
    let counter = CounterApi::new(
        parts.query.clone(),
        parts.hub,
        Arc::clone(&parts.access),
        parts.admission,
        parts.metrics,
        shutdown.clone(),
    );
    let stop = shutdown.clone();
    let served = tonic::transport::Server::builder()
        .max_concurrent_streams(GRPC_MAX_STREAMS)
        .http2_keepalive_interval(Some(GRPC_KEEPALIVE))
        .http2_keepalive_timeout(Some(GRPC_KEEPALIVE_TIMEOUT))
        .add_service(health_service)
        .add_service(InterceptedService::new(
            reflection_v1,
            admin_only(Arc::clone(&parts.access)),
        ))
        .add_service(InterceptedService::new(
            reflection_v1alpha,
            admin_only(Arc::clone(&parts.access)),
        ))
        .add_service(CounterServer::new(counter))
        .add_service(ClusterServer::new(ClusterApi::new(
            parts.query,
            Arc::clone(&parts.access),
        )))
        .add_service(StatsServer::new(StatsApi::new(parts.history, parts.access)))
        .add_service(parts.sync.into_server())
        .add_optional_service(parts.history_sync.map(HistorySync::into_server))
        .serve_with_incoming_shutdown(incoming, async move {
            stop.cancelled().await;
            // Watchers see NOT_SERVING, then their streams end, so open
            // Health/Watch calls do not hold the graceful shutdown open.
            for service in HEALTH_SERVICES {
                health.set_service_status(service, ServingStatus::NotServing).await;
            }
            for service in HEALTH_SERVICES {
                health.clear_service_status(service).await;
            }
        })
        .await;
    if let Err(error) = served {
        error!(%error, "grpc server failed");
    }
}
