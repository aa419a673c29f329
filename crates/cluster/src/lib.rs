//! The cluster layer of a headcount node.
//!
//! Membership and failure detection are SWIM (foca) over UDP. Every gossip
//! interval a node sends the topics whose local count changed, as absolute
//! counts tagged with its incarnation and a sequence number, riding foca's
//! custom broadcasts; a node that sees a gap pulls the peer's full state over
//! gRPC. The merged result is a [`ClusterView`] that readers get through a
//! `watch` channel. `docs/protocol.md` explains the protocol and its timings.
//!
//! IO-free cores: [`state`] (merge rules), [`broadcast`] (codec and
//! de-duplication), [`envelope`] (authentication). The runtime: the gossip
//! task that owns foca, the seed announcer, and the sync service.

pub mod broadcast;
pub mod envelope;
mod gossip;
mod identity;
mod metrics;
pub mod state;
mod sync;
mod view;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use headcount_counter::CounterTable;
use prometheus_client::registry::Registry;
use tokio::{
    net::UdpSocket,
    sync::{mpsc, watch},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::debug;

pub use identity::{MAX_NODE_NAME_BYTES, NodeId};
pub use metrics::ClusterMetrics;
pub use sync::{PullError, SyncService};
pub use view::{ClusterView, MemberInfo, MemberState};

use crate::{
    envelope::Sealer,
    gossip::{Command, Gossip, GossipParts, GossipSettings, MAX_DATAGRAM},
};

/// How often seeds and down members are announced to.
const ANNOUNCE_INTERVAL: Duration = Duration::from_secs(1);
/// Depth of the gossip task's command queue.
const COMMAND_QUEUE: usize = 256;

/// How this node takes part in the cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Stable human name, shown in `/cluster`.
    pub node_name: String,
    /// Gossip address other nodes use to reach this one.
    pub advertise: SocketAddr,
    /// Port of this node's gRPC server, where peers pull full state.
    pub sync_port: u16,
    /// `host:port` gossip addresses to join; resolved again on every try.
    pub seeds: Vec<String>,
    /// How often changed counts are sent (X).
    pub gossip_interval: Duration,
    /// How long a suspected member may answer before it is declared down.
    pub suspect_timeout: Duration,
    /// Shared key authenticating every message; none: no authentication.
    pub secret: Option<Vec<u8>>,
}

/// A running cluster layer: the view for readers, the sync service for the
/// gRPC server.
pub struct Cluster {
    view: watch::Receiver<Arc<ClusterView>>,
    sync: SyncService,
}

impl Cluster {
    /// Starts the gossip task and the seed announcer on `tracker`. `socket`
    /// is the bound gossip socket; `table` is this node's local counts.
    /// Both tasks stop on `shutdown`, the gossip task after leaving.
    pub fn start(
        config: ClusterConfig,
        socket: UdpSocket,
        table: CounterTable,
        registry: &mut Registry,
        tracker: &TaskTracker,
        shutdown: CancellationToken,
    ) -> Self {
        let metrics = ClusterMetrics::register(registry);
        let identity = NodeId::starting_now(config.node_name.clone(), config.advertise, config.sync_port);
        let sealer = Sealer::new(config.secret.as_deref(), MAX_DATAGRAM);
        let (view_tx, view) = watch::channel(Arc::new(ClusterView::alone(config.node_name.clone(), config.advertise)));
        let (commands_tx, commands) = mpsc::channel(COMMAND_QUEUE);
        let sync = SyncService::new(config.node_name, sealer.clone(), commands_tx.clone(), metrics.clone());
        let settings = GossipSettings {
            identity,
            interval: config.gossip_interval,
            suspect_timeout: config.suspect_timeout,
        };
        let parts = GossipParts {
            socket,
            sealer,
            table,
            view: view_tx,
            commands,
            commands_tx: commands_tx.clone(),
            metrics,
            tracker: tracker.clone(),
            shutdown: shutdown.clone(),
        };
        tracker.spawn(Gossip::new(settings, parts).run());
        tracker.spawn(announce_seeds(config.seeds, commands_tx, shutdown));
        Self { view, sync }
    }

    /// The latest cluster view, updated by the gossip task.
    pub fn view(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.view.clone()
    }

    /// The sync service to mount on this node's gRPC server.
    pub fn sync_service(&self) -> SyncService {
        self.sync.clone()
    }
}

/// Resolves the seeds again on every tick (DNS names of compose services or
/// Kubernetes headless services change as nodes come and go) and asks the
/// gossip task to announce to them.
async fn announce_seeds(seeds: Vec<String>, commands: mpsc::Sender<Command>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(ANNOUNCE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut addrs = Vec::new();
        for seed in &seeds {
            match tokio::net::lookup_host(seed.as_str()).await {
                Ok(resolved) => addrs.extend(resolved),
                Err(error) => debug!(%seed, %error, "seed does not resolve yet"),
            }
        }
        // A full queue means the gossip task is busy; the next tick retries.
        let _ = commands.try_send(Command::Announce(addrs));
    }
}
