//! The gossip task: the IO around this node's protocol core ([`NodeCore`]).
//!
//! It loops over `select! { biased; shutdown, timers, datagrams, state
//! requests, commands, round }`, feeds each input to the core with the
//! time, and carries out the core's effects: datagrams are sealed and sent,
//! timers go to a delay queue, pulls are spawned and their results come
//! back as commands. A fresh [`ClusterView`] is published when the core
//! says anything a reader sees has changed. Every decision is the core's.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Instant};

use foca::Timer;
use headcount_counter::CounterTable;
use rand::{SeedableRng, rngs::StdRng};
use socket2::SockRef;
use tokio::{
    net::UdpSocket,
    runtime::Handle,
    sync::{mpsc, oneshot, watch},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker, time::DelayQueue};
use tracing::{Instrument, Span, debug, debug_span, error, info, info_span, warn};

use crate::{
    envelope::Sealer,
    identity::NodeId,
    link::PeerLink,
    metrics::ClusterMetrics,
    node::{Effect, NodeCore},
    state::{FullState, NodeKey, PeerLimits},
    sync_client::{self, PullError},
    sync_server::StateRequest,
    timings::Timings,
    view::ClusterView,
};

/// Largest datagram accepted; anything bigger is dropped unread.
pub(crate) const MAX_DATAGRAM: usize = 1500;
/// Depth of the gossip task's command queue.
const COMMAND_QUEUE: usize = 256;
/// Receive buffer asked for the gossip socket: room for about two seconds
/// of a busy 50-node cluster's datagrams while the gossip thread waits for a
/// core (Linux's default, 208 KiB, dropped 113,707 datagrams in the million
/// run). The kernel caps it at `net.core.rmem_max`.
const RECEIVE_BUFFER: usize = 4 << 20;

/// What the task's helpers (the seed announcer, finished pulls) tell it.
enum Command {
    /// Announce to these seed addresses (and to members down).
    Announce(Vec<SocketAddr>),
    /// A pull finished.
    Pulled {
        key: NodeKey,
        result: Result<FullState, PullError>,
    },
}

/// The settings the gossip task runs with.
pub(crate) struct GossipSettings {
    pub(crate) identity: NodeId,
    pub(crate) link: PeerLink,
    pub(crate) peer_limits: PeerLimits,
    pub(crate) timings: Timings,
}

pub(crate) struct Gossip {
    core: NodeCore,
    timings: Timings,
    timers: DelayQueue<Timer<NodeId>>,
    socket: UdpSocket,
    sealer: Sealer,
    /// Largest full state a peer may answer a pull with.
    max_state_bytes: usize,
    /// How pulls reach peers.
    link: PeerLink,
    table: CounterTable,
    view: watch::Sender<Arc<ClusterView>>,
    state_requests: mpsc::Receiver<StateRequest>,
    commands: mpsc::Receiver<Command>,
    commands_tx: mpsc::Sender<Command>,
    metrics: ClusterMetrics,
    tracker: TaskTracker,
    /// The node's runtime, where pulls run.
    node_runtime: Handle,
    shutdown: CancellationToken,
}

/// What the gossip task needs from its caller.
pub(crate) struct GossipParts {
    pub(crate) sealer: Sealer,
    pub(crate) table: CounterTable,
    pub(crate) view: watch::Sender<Arc<ClusterView>>,
    pub(crate) state_requests: mpsc::Receiver<StateRequest>,
    pub(crate) metrics: ClusterMetrics,
    pub(crate) tracker: TaskTracker,
    pub(crate) shutdown: CancellationToken,
}

/// Starts the seed announcer on `parts.tracker`, and the gossip task on a
/// thread of its own (tracked there too); both stop on `parts.shutdown`, the
/// gossip task after leaving the cluster.
///
/// The gossip task answers SWIM's probes, so it must run within the probe
/// round trip however busy the node is. On the node's runtime it would wait
/// behind every ready websocket task: 20 nodes holding 100,000 connections
/// on 2 cores saw 7,410 members falsely declared down in 3 minutes, each one
/// dropping and re-pulling counts that changed every topic again. On its own
/// thread it waits only for the OS scheduler. Pulls still run on the node's
/// runtime.
pub(crate) fn spawn(
    settings: GossipSettings,
    parts: GossipParts,
    socket: UdpSocket,
    seeds: Vec<String>,
) -> std::io::Result<()> {
    let (commands_tx, commands) = mpsc::channel(COMMAND_QUEUE);
    let tracker = parts.tracker.clone();
    let announcer = announce_seeds(seeds, settings.timings, commands_tx.clone(), parts.shutdown.clone());
    tracker.spawn(announcer.in_current_span());
    let node_runtime = Handle::current();
    // Dropped with the node's runtime (a crash, or the end of a test): the
    // gossip thread then stops at once, without leaving, as in a crash.
    let (alive, node_gone) = oneshot::channel::<Infallible>();
    node_runtime.spawn(async move {
        let _alive = alive;
        std::future::pending::<()>().await;
    });
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let socket = socket.into_std()?;
    if let Err(error) = SockRef::from(&socket).set_recv_buffer_size(RECEIVE_BUFFER) {
        warn!(%error, "the gossip socket keeps its default receive buffer");
    }
    let span = Span::current();
    tracker.spawn_blocking(move || {
        runtime.block_on(
            async move {
                match UdpSocket::from_std(socket) {
                    Ok(socket) => {
                        Gossip::new(settings, parts, socket, node_runtime, commands, commands_tx)
                            .run(node_gone)
                            .await;
                    }
                    Err(error) => error!(%error, "the gossip socket cannot be moved to the gossip thread"),
                }
            }
            .instrument(span),
        );
    });
    Ok(())
}

/// Resolves the seeds again on every tick (DNS names of compose services or
/// Kubernetes headless services change as nodes come and go) and asks the
/// gossip task to announce to them.
async fn announce_seeds(
    seeds: Vec<String>,
    timings: Timings,
    commands: mpsc::Sender<Command>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(timings.announce_interval);
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

impl Gossip {
    fn new(
        settings: GossipSettings,
        parts: GossipParts,
        socket: UdpSocket,
        node_runtime: Handle,
        commands: mpsc::Receiver<Command>,
        commands_tx: mpsc::Sender<Command>,
    ) -> Self {
        let core = NodeCore::new(
            settings.identity,
            settings.timings,
            settings.peer_limits,
            StdRng::from_rng(&mut rand::rng()),
            parts.metrics.clone(),
            Instant::now(),
        );
        Self {
            core,
            timings: settings.timings,
            timers: DelayQueue::new(),
            socket,
            sealer: parts.sealer,
            max_state_bytes: settings.peer_limits.max_state_bytes(),
            link: settings.link,
            table: parts.table,
            view: parts.view,
            state_requests: parts.state_requests,
            commands,
            commands_tx,
            metrics: parts.metrics,
            tracker: parts.tracker,
            node_runtime,
            shutdown: parts.shutdown,
        }
    }

    async fn run(mut self, mut node_gone: oneshot::Receiver<Infallible>) {
        let mut round = tokio::time::interval(self.timings.gossip_interval);
        round.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        let identity = self.core.identity();
        info!(node = %identity.name, addr = %identity.gossip, "gossip started");
        loop {
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                _ = &mut node_gone => return,
                Some(expired) = std::future::poll_fn(|cx| self.timers.poll_expired(cx)) => {
                    self.core.timer(expired.into_inner(), Instant::now());
                }
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, from)) => self.on_datagram(&buf[..len], from),
                    Err(error) => debug!(%error, "gossip receive failed"),
                },
                Some(request) = self.state_requests.recv() => {
                    // The asker may have given up; nothing to do then.
                    let _ = request.reply.send(self.core.state_for(request.since));
                }
                Some(command) = self.commands.recv() => self.on_command(command),
                _ = round.tick() => {
                    let span = debug_span!("gossip_round", round = self.core.round_number() + 1);
                    span.in_scope(|| self.core.round(self.table.drain_changed(), Instant::now()));
                }
            }
            self.metrics
                .command_queue_depth
                .set(i64::try_from(self.commands.len()).unwrap_or(i64::MAX));
            self.carry_out();
        }
        self.core.leave(Instant::now());
        self.carry_out();
    }

    /// Opens a datagram and hands it to the core.
    fn on_datagram(&mut self, data: &[u8], from: SocketAddr) {
        self.metrics.received_packets.inc();
        self.metrics.received_bytes.inc_by(data.len() as u64);
        match self.sealer.open_datagram(data) {
            Ok((kind, body)) => self.core.datagram(kind, &body, from, Instant::now()),
            Err(reason) => {
                debug!(%reason, "gossip datagram dropped");
                self.metrics.dropped(reason.label());
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        let now = Instant::now();
        match command {
            Command::Announce(seeds) => self.core.announce(seeds, now),
            Command::Pulled { key, result: Ok(full) } => self.core.pulled(&key, &full, now),
            Command::Pulled {
                key,
                result: Err(error),
            } => {
                warn!(peer = %key.name, %error, "pull failed");
                self.core.pull_failed(&key);
            }
        }
    }

    /// Carries out every effect the core asked for, then publishes its view
    /// if it changed.
    fn carry_out(&mut self) {
        let effects: Vec<Effect> = self.core.effects().collect();
        for effect in effects {
            match effect {
                Effect::Send { to, kind, body } => {
                    let sealed = self.sealer.seal(kind, body);
                    for addr in to {
                        self.send_sealed(addr, &sealed);
                    }
                }
                Effect::Schedule { after, timer } => {
                    self.timers.insert(timer, after);
                }
                Effect::Pull { key, target, since } => self.pull(key, target, since),
            }
        }
        if let Some(view) = self.core.take_view(Instant::now()) {
            self.view.send_replace(Arc::new(view));
        }
    }

    fn pull(&self, key: NodeKey, target: NodeId, since: u64) {
        let link = self.link.clone();
        let max_state_bytes = self.max_state_bytes;
        let timeout = self.timings.pull_timeout;
        let commands = self.commands_tx.clone();
        let shutdown = self.shutdown.clone();
        let span = info_span!("pull", peer = %target.name);
        let pull = async move {
            let result = tokio::select! {
                () = shutdown.cancelled() => return,
                result = sync_client::pull(&link, &target, max_state_bytes, since, timeout) => result,
            };
            // The gossip task is gone only when shutting down.
            let _ = commands.send(Command::Pulled { key, result }).await;
        };
        self.tracker.spawn_on(pull.instrument(span), &self.node_runtime);
    }

    fn send_sealed(&self, to: SocketAddr, sealed: &[u8]) {
        match self.socket.try_send_to(sealed, to) {
            Ok(sent) => {
                self.metrics.sent_packets.inc();
                self.metrics.sent_bytes.inc_by(sent as u64);
            }
            Err(error) => debug!(%to, %error, "gossip send failed"),
        }
    }
}
