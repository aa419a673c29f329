//! The cluster layer of a headcount node.
//!
//! Membership and failure detection are SWIM (foca) over UDP. Every gossip
//! interval a node sends the topics whose local count changed, as absolute
//! counts tagged with its incarnation and a sequence number, straight to
//! every member; a node that sees a gap pulls what changed on that peer over
//! gRPC. The merged result is a [`ClusterView`] that readers get through a
//! `watch` channel. `docs/protocol.md` explains the protocol; [`Timings`]
//! holds every timing of it.
//!
//! IO-free: [`node`] (the protocol core of a node: foca, repair, the
//! view), [`state`] (merge rules), [`broadcast`] (codec and origin check),
//! [`envelope`] (authentication), `published` (this node's side of the
//! wire), [`timings`]. The runtime: the gossip task that carries out the
//! core's effects and the seed announcer (`gossip`), and the two ends of
//! repair ([`sync_client`], `sync_server`).

pub mod broadcast;
mod down;
pub mod envelope;
mod gossip;
mod identity;
mod link;
mod metrics;
pub mod node;
mod published;
pub mod state;
pub mod sync_client;
mod sync_server;
mod sync_tls;
pub mod timings;
mod view;

use std::{net::SocketAddr, sync::Arc};

use headcount_counter::CounterTable;
use prometheus_client::registry::Registry;
use tokio::{
    net::UdpSocket,
    sync::{mpsc, watch},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

pub use identity::{InvalidNodeName, MAX_NODE_NAME_BYTES, NodeId, NodeName};
pub use link::PeerLink;
pub use metrics::ClusterMetrics;
pub use sync_client::PullError;
pub use sync_server::SyncService;
pub use timings::Timings;
pub use view::{ClusterView, MemberInfo, MemberState};

pub use envelope::{ClusterSecret, MIN_SECRET_BYTES, SecretTooShort};

pub use state::PeerLimits;

use crate::{
    envelope::Sealer,
    gossip::{GossipParts, GossipSettings, MAX_DATAGRAM},
};

/// Full-state requests from the sync service that may wait for the gossip task.
const STATE_REQUEST_QUEUE: usize = 16;

/// How this node takes part in the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Stable human name, shown in `/cluster`.
    pub node_name: NodeName,
    /// Gossip address other nodes use to reach this one.
    pub advertise: SocketAddr,
    /// Port of this node's gRPC server, where peers pull state.
    pub sync_port: u16,
    /// `host:port` gossip addresses to join; resolved again on every try.
    pub seeds: Vec<String>,
    /// Every timing of the protocol: X, the suspect timeout and the rest.
    pub timings: Timings,
    /// Shared key authenticating every message; none: no authentication.
    pub secret: Option<ClusterSecret>,
    /// What a peer may claim: counts and topics beyond are refused.
    pub peer_limits: PeerLimits,
    /// The cluster's gRPC ports serve TLS: pulls speak it too.
    pub sync_tls: bool,
    /// The first incarnation; none (normal): the wall clock in milliseconds.
    /// Tests set it to replay a clock that was wrong.
    pub first_incarnation: Option<u64>,
}

/// Why the cluster layer could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// TLS for pulls between nodes could not be set up.
    #[error("tls for pulls between nodes: {0}")]
    SyncTls(#[from] rustls::Error),
    /// The gossip thread's runtime or socket could not be set up.
    #[error("gossip thread: {0}")]
    Gossip(#[from] std::io::Error),
}

/// A running cluster layer: the view for readers, the sync service for the
/// gRPC server.
pub struct Cluster {
    view: watch::Receiver<Arc<ClusterView>>,
    sync: SyncService,
    link: PeerLink,
}

impl Cluster {
    /// Starts the gossip task and the seed announcer on `tracker`, in the
    /// current tracing span. `socket` is the bound gossip socket; `table` is
    /// this node's local counts. Both tasks stop on `shutdown`, the gossip
    /// task after leaving. Fails if TLS for pulls or the gossip thread cannot be set up.
    pub fn start(
        config: ClusterConfig,
        socket: UdpSocket,
        table: CounterTable,
        registry: &mut Registry,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Result<Self, StartError> {
        let sync_tls = config.sync_tls.then(sync_tls::connector).transpose()?;
        let metrics = ClusterMetrics::register(registry);
        let mut identity = NodeId::starting_now(&config.node_name, config.advertise, config.sync_port);
        if let Some(incarnation) = config.first_incarnation {
            identity.incarnation = incarnation;
        }
        let sealer = Sealer::new(config.secret.as_ref().map(ClusterSecret::as_bytes), MAX_DATAGRAM);
        let own_name = config.node_name.to_string();
        let (view_tx, view) = watch::channel(Arc::new(ClusterView::alone(own_name.clone(), config.advertise)));
        let (state_requests_tx, state_requests) = mpsc::channel(STATE_REQUEST_QUEUE);
        let sync = SyncService::new(
            own_name,
            sealer.clone(),
            state_requests_tx,
            config.peer_limits.max_state_bytes(),
            metrics.clone(),
        );
        let link = PeerLink::new(sealer.clone(), sync_tls);
        let settings = GossipSettings {
            identity,
            link: link.clone(),
            peer_limits: config.peer_limits,
            timings: config.timings,
        };
        let parts = GossipParts {
            sealer,
            table,
            view: view_tx,
            state_requests,
            metrics,
            tracker: tracker.clone(),
            shutdown,
        };
        gossip::spawn(settings, parts, socket, config.seeds)?;
        Ok(Self { view, sync, link })
    }

    /// The latest cluster view, updated by the gossip task.
    pub fn view(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.view.clone()
    }

    /// How to reach peers' gRPC servers, with this cluster's secret and TLS.
    pub fn link(&self) -> PeerLink {
        self.link.clone()
    }

    /// The sync service to mount on this node's gRPC server.
    pub fn sync_service(&self) -> SyncService {
        self.sync.clone()
    }
}
