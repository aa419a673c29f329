//! The gossip task: the one owner of foca, of this node's published counts
//! and of the cluster state.
//!
//! It loops over `select! { biased; shutdown, timers, datagrams, state
//! requests, commands, round }`. foca is driven through an accumulating
//! runtime that the task drains after every input: datagrams are sealed and
//! sent, timers go to a delay queue, membership notifications are merged
//! into [`ClusterState`]. Count updates do not ride foca: each round this
//! node sends its own straight to every member, and accepts others' only
//! from their origin's address. A fresh [`ClusterView`] is published when
//! anything a reader sees has changed.

use std::{
    collections::HashSet,
    net::SocketAddr,
    num::{NonZeroU32, NonZeroUsize},
    sync::Arc,
    time::{Duration, Instant},
};

use foca::{AccumulatingRuntime, Config, Foca, NoCustomBroadcast, OwnedNotification, PostcardCodec, Timer};
use headcount_counter::CounterTable;
use headcount_proto::cluster::Kind;
use rand::{SeedableRng, rngs::StdRng};
use tokio::{
    net::UdpSocket,
    sync::{mpsc, watch},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker, time::DelayQueue};
use tracing::{Instrument, debug, debug_span, info, info_span, warn};

use crate::{
    broadcast::{check_origin, decode_update},
    down::DownMembers,
    envelope::Sealer,
    identity::NodeId,
    link::PeerLink,
    metrics::ClusterMetrics,
    published::Published,
    state::{ClusterState, FullState, NodeKey, Outcome, PeerLimits},
    sync_client::{self, PullError},
    sync_server::StateRequest,
    timings::{ANNOUNCE_INTERVAL, DIGEST_INTERVAL, FORGET_DOWN_AFTER, PROBE_PERIOD, PROBE_RTT, STALE_AFTER_ROUNDS},
    view::{ClusterView, MemberInfo, MemberState},
};

/// foca's packet limit; with the envelope a datagram stays under 1472 bytes,
/// the UDP payload of a 1500-byte MTU.
const MAX_FOCA_PACKET: usize = 1400;
/// Largest datagram accepted; anything bigger is dropped unread.
pub(crate) const MAX_DATAGRAM: usize = 1500;
/// Depth of the gossip task's command queue.
const COMMAND_QUEUE: usize = 256;

type SwimNode = Foca<NodeId, PostcardCodec, StdRng, NoCustomBroadcast>;

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
    pub(crate) interval: Duration,
    pub(crate) suspect_timeout: Duration,
}

pub(crate) struct Gossip {
    identity: NodeId,
    interval: Duration,
    foca: SwimNode,
    runtime: AccumulatingRuntime<NodeId>,
    timers: DelayQueue<Timer<NodeId>>,
    socket: UdpSocket,
    sealer: Sealer,
    state: ClusterState,
    /// Largest full state a peer may answer a pull with.
    max_state_bytes: usize,
    /// How pulls reach peers.
    link: PeerLink,
    table: CounterTable,
    published: Published,
    view: watch::Sender<Arc<ClusterView>>,
    view_dirty: bool,
    state_requests: mpsc::Receiver<StateRequest>,
    commands: mpsc::Receiver<Command>,
    commands_tx: mpsc::Sender<Command>,
    pulling: HashSet<NodeKey>,
    previous_gaps: HashSet<NodeKey>,
    /// Names already reported as used by two live nodes.
    duplicates_reported: HashSet<String>,
    down: DownMembers,
    /// Every seed resolved to this node itself: it is the cluster.
    seeded_alone: bool,
    /// When this node last sent an update or digest.
    last_sent: Instant,
    metrics: ClusterMetrics,
    tracker: TaskTracker,
    shutdown: CancellationToken,
}

/// What the gossip task needs from its caller.
pub(crate) struct GossipParts {
    pub(crate) socket: UdpSocket,
    pub(crate) sealer: Sealer,
    pub(crate) table: CounterTable,
    pub(crate) view: watch::Sender<Arc<ClusterView>>,
    pub(crate) state_requests: mpsc::Receiver<StateRequest>,
    pub(crate) metrics: ClusterMetrics,
    pub(crate) tracker: TaskTracker,
    pub(crate) shutdown: CancellationToken,
}

/// Starts the gossip task and its seed announcer on `parts.tracker`; both
/// stop on `parts.shutdown`, the gossip task after leaving the cluster.
pub(crate) fn spawn(settings: GossipSettings, parts: GossipParts, seeds: Vec<String>) {
    let (commands_tx, commands) = mpsc::channel(COMMAND_QUEUE);
    let tracker = parts.tracker.clone();
    let announcer = announce_seeds(seeds, commands_tx.clone(), parts.shutdown.clone());
    tracker.spawn(announcer.in_current_span());
    tracker.spawn(
        Gossip::new(settings, parts, commands, commands_tx)
            .run()
            .in_current_span(),
    );
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

impl Gossip {
    fn new(
        settings: GossipSettings,
        parts: GossipParts,
        commands: mpsc::Receiver<Command>,
        commands_tx: mpsc::Sender<Command>,
    ) -> Self {
        let foca = Foca::new(
            settings.identity.clone(),
            swim_config(settings.suspect_timeout),
            StdRng::from_rng(&mut rand::rng()),
            PostcardCodec,
        );
        Self {
            identity: settings.identity,
            interval: settings.interval,
            foca,
            runtime: AccumulatingRuntime::new(),
            timers: DelayQueue::new(),
            socket: parts.socket,
            sealer: parts.sealer,
            state: ClusterState::new(settings.peer_limits),
            max_state_bytes: settings.peer_limits.max_state_bytes(),
            link: settings.link,
            table: parts.table,
            published: Published::default(),
            view: parts.view,
            view_dirty: true,
            state_requests: parts.state_requests,
            commands,
            commands_tx,
            pulling: HashSet::new(),
            previous_gaps: HashSet::new(),
            duplicates_reported: HashSet::new(),
            down: DownMembers::default(),
            seeded_alone: false,
            last_sent: Instant::now(),
            metrics: parts.metrics,
            tracker: parts.tracker,
            shutdown: parts.shutdown,
        }
    }

    async fn run(mut self) {
        let mut round = tokio::time::interval(self.interval);
        round.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        info!(node = %self.identity.name, addr = %self.identity.gossip, "gossip started");
        loop {
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                Some(expired) = std::future::poll_fn(|cx| self.timers.poll_expired(cx)) => {
                    let result = self.foca.handle_timer(expired.into_inner(), &mut self.runtime);
                    log_foca_error("timer", result);
                }
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, from)) => self.on_datagram(&buf[..len], from),
                    Err(error) => debug!(%error, "gossip receive failed"),
                },
                Some(request) = self.state_requests.recv() => {
                    // The asker may have given up; nothing to do then.
                    let _ = request.reply.send(self.published.state_for(&self.identity, request.since));
                }
                Some(command) = self.commands.recv() => self.on_command(command),
                _ = round.tick() => {
                    let span = debug_span!("gossip_round", round = self.published.round() + 1);
                    span.in_scope(|| self.on_round());
                }
            }
            self.metrics
                .command_queue_depth
                .set(i64::try_from(self.commands.len()).unwrap_or(i64::MAX));
            self.flush();
        }
        self.leave();
    }

    fn on_datagram(&mut self, data: &[u8], from: SocketAddr) {
        self.metrics.received_packets.inc();
        self.metrics.received_bytes.inc_by(data.len() as u64);
        match self.sealer.open_datagram(data) {
            Ok((Kind::Counts, body)) => self.on_counts(&body, from),
            Ok((_, body)) => {
                if let Err(error) = self.foca.handle_data(&body, &mut self.runtime) {
                    debug!(%error, "gossip packet rejected");
                    self.metrics.dropped("rejected");
                }
            }
            Err(reason) => {
                debug!(%reason, "gossip datagram dropped");
                self.metrics.dropped(reason.label());
            }
        }
    }

    /// Merges a count update (or digest) that its origin sent from `from`.
    fn on_counts(&mut self, body: &[u8], from: SocketAddr) {
        let update = match decode_update(body) {
            Ok(update) => update,
            Err(error) => {
                debug!(%error, "count update dropped");
                self.metrics.dropped("malformed_update");
                return;
            }
        };
        if let Err(error) = check_origin(&update, from, self.foca.iter_members().map(|member| member.id())) {
            debug!(%error, "count update dropped");
            self.metrics.dropped("not_from_origin");
            return;
        }
        let outcome = self.state.apply_update(&update, Instant::now());
        let label = match outcome {
            Outcome::Changed => "changed",
            Outcome::Unchanged => "unchanged",
            Outcome::Stale => "stale",
            Outcome::NotMember => "not_member",
            Outcome::Refused(refusal) => {
                self.metrics.dropped(refusal.label());
                "refused"
            }
        };
        self.metrics.updates.get_or_create(&[("outcome", label)]).inc();
        self.view_dirty |= outcome == Outcome::Changed;
        // A digest comes after every update of its sender's round, so a gap
        // it reveals is real (lost updates, or a burst the sender left to
        // repair): pull now. Gaps seen between updates may only be
        // reordering; `on_round` pulls those if they persist.
        let key = NodeKey::new(&update.name, update.incarnation);
        if update.counts.is_empty() && self.state.node(&key.name, key.incarnation).is_some_and(|node| node.gap) {
            self.pull(&key);
        }
        if self.state.duplicate(&key) && self.duplicates_reported.insert(key.name.clone()) {
            warn!(peer = %key.name, "two live nodes use this name; both are counted, give each its own --node-name");
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Announce(seeds) => self.announce(seeds),
            Command::Pulled { key, result } => {
                self.pulling.remove(&key);
                match result {
                    Ok(full) => {
                        self.metrics.pulls.get_or_create(&[("result", "ok")]).inc();
                        if full.delta_since.is_none() {
                            self.metrics.full_pulls.inc();
                        }
                        match self.state.apply_full_state(&full, Instant::now()) {
                            Outcome::Changed => self.view_dirty = true,
                            Outcome::Refused(refusal) => {
                                self.metrics.dropped(refusal.label());
                                warn!(peer = %key.name, reason = refusal.label(), "pulled state refused");
                                return;
                            }
                            Outcome::Unchanged | Outcome::Stale | Outcome::NotMember => {}
                        }
                        // The peer moved on while its state travelled (a
                        // burst): catch up now rather than at its next digest.
                        if self.state.node(&key.name, key.incarnation).is_some_and(|node| node.gap) {
                            self.pull(&key);
                        }
                    }
                    Err(error) => {
                        self.metrics.pulls.get_or_create(&[("result", "error")]).inc();
                        warn!(peer = %key.name, %error, "pull failed");
                    }
                }
            }
        }
    }

    /// Announces to seeds and to members declared down, so that a node
    /// finds the cluster after it starts and both sides of a healed
    /// partition find each other again.
    fn announce(&mut self, seeds: Vec<SocketAddr>) {
        let alone = !seeds.is_empty() && seeds.iter().all(|seed| *seed == self.identity.gossip);
        if alone != self.seeded_alone {
            self.seeded_alone = alone;
            self.view_dirty = true;
        }
        let active: HashSet<SocketAddr> = self.foca.iter_members().map(|member| member.id().gossip).collect();
        let down = self.down.due(Instant::now());
        let targets: HashSet<SocketAddr> = seeds.into_iter().chain(down).collect();
        for addr in targets {
            if addr != self.identity.gossip && !active.contains(&addr) {
                log_foca_error("announce", self.foca.announce(NodeId::seed(addr), &mut self.runtime));
            }
        }
    }

    fn on_round(&mut self) {
        let changed = self.table.drain_changed();
        let digest_due = self.last_sent.elapsed() + self.interval / 2 >= DIGEST_INTERVAL;
        let updates = self.published.next_round(&self.identity, changed, digest_due);
        if !updates.is_empty() {
            self.last_sent = Instant::now();
        }
        // Straight to every member: nobody passes on another node's counts.
        let members: Vec<SocketAddr> = self.foca.iter_members().map(|member| member.id().gossip).collect();
        for update in updates {
            let sealed = self.sealer.seal(Kind::Counts, update);
            for member in &members {
                self.send_sealed(*member, &sealed);
            }
        }
        let gaps: HashSet<NodeKey> = self.state.gaps().cloned().collect();
        let persistent: Vec<NodeKey> = gaps.intersection(&self.previous_gaps).cloned().collect();
        for key in persistent {
            self.pull(&key);
        }
        self.previous_gaps = gaps;
        self.view_dirty = true;
    }

    fn pull(&mut self, key: &NodeKey) {
        let Some(target) = self
            .foca
            .iter_members()
            .map(|member| member.id())
            .find(|id| id.name == key.name && id.incarnation == key.incarnation)
            .cloned()
        else {
            return;
        };
        if !self.pulling.insert(key.clone()) {
            return;
        }
        let since = self
            .state
            .node(&key.name, key.incarnation)
            .map_or(0, |node| node.watermark);
        let key = key.clone();
        let link = self.link.clone();
        let max_state_bytes = self.max_state_bytes;
        let commands = self.commands_tx.clone();
        let shutdown = self.shutdown.clone();
        let span = info_span!("pull", peer = %target.name);
        let pull = async move {
            let result = tokio::select! {
                () = shutdown.cancelled() => return,
                result = sync_client::pull(&link, &target, max_state_bytes, since) => result,
            };
            // The gossip task is gone only when shutting down.
            let _ = commands.send(Command::Pulled { key, result }).await;
        };
        self.tracker.spawn(pull.instrument(span));
    }

    /// Drains everything foca asked for and everything it delivered, until
    /// nothing is left.
    fn flush(&mut self) {
        loop {
            while let Some(notification) = self.runtime.to_notify() {
                self.on_notification(notification);
            }
            while let Some((after, timer)) = self.runtime.to_schedule() {
                self.timers.insert(timer, after);
            }
            while let Some((to, data)) = self.runtime.to_send() {
                self.send(to.gossip, data.to_vec());
            }
            if self.runtime.backlog() == 0 {
                break;
            }
        }
        if self.view_dirty {
            self.publish_view();
        }
    }

    fn send(&self, to: SocketAddr, packet: Vec<u8>) {
        self.send_sealed(to, &self.sealer.seal(Kind::Gossip, packet));
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

    fn on_notification(&mut self, notification: OwnedNotification<NodeId>) {
        match notification {
            OwnedNotification::MemberUp(id) => self.member_up(&id),
            OwnedNotification::MemberDown(id) => self.member_down(&id),
            OwnedNotification::Rename(before, after) => {
                self.member_down(&before);
                self.member_up(&after);
            }
            OwnedNotification::Rejoin(id) => {
                info!(
                    incarnation = id.incarnation,
                    "rejoined the cluster under a new incarnation"
                );
                self.identity = id;
            }
            OwnedNotification::Active => info!("joined the cluster"),
            OwnedNotification::Idle => info!("no other live member"),
            OwnedNotification::Defunct => warn!("declared down by the cluster and cannot rejoin"),
        }
        self.view_dirty = true;
    }

    fn member_up(&mut self, id: &NodeId) {
        self.down.came_up(id.gossip);
        // Its counts are pulled once a datagram from its own address shows
        // what it has published (a gap), never from an address that a
        // packet merely named.
        if self.state.member_up(&id.name, id.incarnation, Instant::now()) {
            info!(peer = %id.name, addr = %id.gossip, "member up");
        }
    }

    fn member_down(&mut self, id: &NodeId) {
        info!(peer = %id.name, addr = %id.gossip, "member down");
        self.down.went_down(id, Instant::now());
        self.state.member_down(&id.name, id.incarnation);
    }

    fn publish_view(&mut self) {
        self.view_dirty = false;
        let now = Instant::now();
        let live = self.foca.num_members();
        let rounds = STALE_AFTER_ROUNDS.max(u32::try_from(2 * live / 3).unwrap_or(u32::MAX));
        let stale_after = self.interval.max(DIGEST_INTERVAL) * rounds;
        let mut counts = [0i64; 3];
        // Live members as SWIM sees them; down ones from this node's own
        // list, which outlives SWIM's short memory of them.
        let live_members = self
            .foca
            .iter_membership_state()
            .filter_map(|member| match member.state() {
                foca::State::Alive => Some((member.id(), MemberState::Alive)),
                foca::State::Suspect => Some((member.id(), MemberState::Suspect)),
                foca::State::Down => None,
            });
        let down_members = self.down.iter().map(|id| (id, MemberState::Down));
        let members: Vec<MemberInfo> = live_members
            .chain(down_members)
            .map(|(id, state)| {
                counts[state as usize] += 1;
                let summary = self.state.node(&id.name, id.incarnation);
                let summary = summary.filter(|_| state != MemberState::Down);
                MemberInfo {
                    name: id.name.clone(),
                    addr: id.gossip,
                    sync_addr: id.sync_addr(),
                    state,
                    connections: summary.map_or(0, |node| node.connections),
                    topics: summary.map_or(0, |node| node.topics),
                    last_heard: summary.map(|node| node.last_heard),
                    stale: state == MemberState::Alive
                        && summary.is_some_and(|node| now.duration_since(node.last_heard) > stale_after),
                }
            })
            .collect();
        for (state, count) in [MemberState::Alive, MemberState::Suspect, MemberState::Down]
            .into_iter()
            .zip(counts)
        {
            self.metrics.set_members(state, count);
        }
        let view = ClusterView {
            self_name: self.identity.name.clone(),
            self_addr: self.identity.gossip,
            joined: live > 0 || self.seeded_alone,
            members,
            totals: self.state.totals(),
            live_remote: self.state.nodes(),
        };
        self.view.send_replace(Arc::new(view));
    }

    /// Tells the cluster this node is leaving, so peers drop its counts now
    /// instead of waiting for failure detection.
    fn leave(&mut self) {
        log_foca_error("leave", self.foca.leave_cluster(&mut self.runtime));
        while let Some((to, data)) = self.runtime.to_send() {
            self.send(to.gossip, data.to_vec());
        }
        info!(node = %self.identity.name, "left the cluster");
    }
}

/// foca's LAN preset with the probe timings of [`crate::timings`] and the
/// operator's suspect timeout.
fn swim_config(suspect_timeout: Duration) -> Config {
    let mut config = Config::new_lan(NonZeroU32::new(32).unwrap_or(NonZeroU32::MIN));
    config.probe_period = PROBE_PERIOD;
    config.probe_rtt = PROBE_RTT;
    config.suspect_to_down_after = suspect_timeout;
    config.remove_down_after = Some(FORGET_DOWN_AFTER);
    config.max_packet_size = NonZeroUsize::new(MAX_FOCA_PACKET).unwrap_or(NonZeroUsize::MIN);
    config
}

fn log_foca_error(what: &str, result: Result<(), foca::Error>) {
    if let Err(error) = result {
        debug!(%error, "foca {what} failed");
    }
}
