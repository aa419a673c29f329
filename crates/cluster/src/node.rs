//! The protocol core of one node, IO-free: foca's own pattern one level up.
//!
//! [`NodeCore`] owns foca, this node's published counts, the merged cluster
//! state, the repair bookkeeping and the list of down members. It is fed
//! inputs — an opened datagram, a foca timer, a gossip round with the
//! counts that changed, seeds to announce to, the result of a pull — each
//! with `now` passed in, and answers with [`Effect`]s: datagrams to send,
//! timers to set, pulls to start. It never reads a clock, touches a socket
//! or spawns; its randomness is the seeded generator it is given. So the
//! gossip task (`gossip`) is only a `select!` loop with the IO, and the
//! simulation in `tests/simulation.rs` runs a hundred cores over in-memory
//! links in simulated time.
//!
//! Sealing and opening envelopes stay at the edge: they read the wall
//! clock (the replay window) and are tested on their own (`envelope`).
//!
//! Every iteration whose order reaches the effects is over ordered
//! collections, so the same inputs give the same effects in the same order.

use std::{
    collections::{BTreeSet, HashSet},
    net::SocketAddr,
    time::{Duration, Instant},
};

use foca::{AccumulatingRuntime, Foca, Member, NoCustomBroadcast, OwnedNotification, PostcardCodec, Timer};
use headcount_counter::Topic;
use headcount_proto::cluster::{Kind, NodeState};
use rand::rngs::StdRng;
use tracing::{debug, info, warn};

use crate::{
    broadcast::{check_origin, decode_update},
    down::DownMembers,
    identity::NodeId,
    metrics::ClusterMetrics,
    published::Published,
    state::{ClusterState, FullState, NodeKey, Outcome, PeerLimits},
    timings::Timings,
    view::{ClusterView, MemberInfo, MemberState},
};

/// foca's packet limit; with the envelope a datagram stays under 1472 bytes,
/// the UDP payload of a 1500-byte MTU.
pub const MAX_FOCA_PACKET: usize = 1400;

type SwimNode = Foca<NodeId, PostcardCodec, StdRng, NoCustomBroadcast>;

/// What the core asks its runtime to do.
#[derive(Debug)]
pub enum Effect {
    /// Seal `body` as an envelope of `kind` and send it to each of `to`.
    Send {
        /// Gossip addresses.
        to: Vec<SocketAddr>,
        /// What the body is: foca's or a count update.
        kind: Kind,
        /// The unsealed body.
        body: Vec<u8>,
    },
    /// Feed `timer` back through [`NodeCore::timer`] after `after`.
    Schedule {
        /// How long from now.
        after: Duration,
        /// foca's timer.
        timer: Timer<NodeId>,
    },
    /// Pull what changed on `target` after update `since` (0: its whole
    /// state), then feed the answer to [`NodeCore::pulled`] or the failure
    /// to [`NodeCore::pull_failed`] under `key`.
    Pull {
        /// The node pulled, as the repair bookkeeping knows it.
        key: NodeKey,
        /// Its identity, with the sync address to ask.
        target: NodeId,
        /// The update the puller holds everything up to.
        since: u64,
    },
}

/// The protocol of one node, fed inputs with the time and answering with
/// [`Effect`]s.
pub struct NodeCore {
    identity: NodeId,
    timings: Timings,
    foca: SwimNode,
    runtime: AccumulatingRuntime<NodeId>,
    state: ClusterState,
    published: Published,
    /// Pulls started and not finished.
    pulling: HashSet<NodeKey>,
    /// Gaps seen at the last round: a gap still open a round later is
    /// pulled.
    previous_gaps: BTreeSet<NodeKey>,
    /// Names already reported as used by two live nodes.
    duplicates_reported: HashSet<String>,
    down: DownMembers,
    /// Every seed resolved to this node itself: it is the cluster.
    seeded_alone: bool,
    /// When this node last sent an update or digest.
    last_sent: Instant,
    view_dirty: bool,
    /// `leave` was called: foca's `Defunct` that follows is expected.
    leaving: bool,
    effects: Vec<Effect>,
    metrics: ClusterMetrics,
}

impl NodeCore {
    /// A node that is `identity`, on `timings`, holding peers to `limits`,
    /// drawing SWIM's randomness from `rng`, started at `now`.
    pub fn new(
        identity: NodeId,
        timings: Timings,
        limits: PeerLimits,
        rng: StdRng,
        metrics: ClusterMetrics,
        now: Instant,
    ) -> Self {
        let foca = Foca::new(identity.clone(), timings.swim(MAX_FOCA_PACKET), rng, PostcardCodec);
        Self {
            identity,
            timings,
            foca,
            runtime: AccumulatingRuntime::new(),
            state: ClusterState::new(limits),
            published: Published::default(),
            pulling: HashSet::new(),
            previous_gaps: BTreeSet::new(),
            duplicates_reported: HashSet::new(),
            down: DownMembers::new(&timings),
            seeded_alone: false,
            last_sent: now,
            view_dirty: true,
            leaving: false,
            effects: Vec::new(),
            metrics,
        }
    }

    /// This node as the cluster knows it now (a rejoin renews it).
    pub fn identity(&self) -> &NodeId {
        &self.identity
    }

    /// The number of the last round published.
    pub fn round_number(&self) -> u64 {
        self.published.round()
    }

    /// What the inputs so far asked for, oldest first.
    pub fn effects(&mut self) -> std::vec::Drain<'_, Effect> {
        self.effects.drain(..)
    }

    /// An opened datagram of `kind` from `from`.
    pub fn datagram(&mut self, kind: Kind, body: &[u8], from: SocketAddr, now: Instant) {
        if kind == Kind::Counts {
            self.on_counts(body, from, now);
        } else if let Err(error) = self.foca.handle_data(body, &mut self.runtime) {
            debug!(%error, "gossip packet rejected");
            self.metrics.dropped("rejected");
        }
        self.drain_foca(now);
    }

    /// A timer set by an [`Effect::Schedule`] went off.
    pub fn timer(&mut self, timer: Timer<NodeId>, now: Instant) {
        log_foca_error("timer", self.foca.handle_timer(timer, &mut self.runtime));
        self.drain_foca(now);
    }

    /// A gossip round: `changed` are the local topics whose count changed
    /// since the last one, with their counts now.
    pub fn round(&mut self, changed: Vec<(Topic, u64)>, now: Instant) {
        let interval = self.timings.gossip_interval;
        let digest_due = now.saturating_duration_since(self.last_sent) + interval / 2 >= self.timings.digest_interval;
        let updates = self.published.next_round(&self.identity, changed, digest_due);
        if !updates.is_empty() {
            self.last_sent = now;
        }
        // Straight to every member: nobody passes on another node's counts.
        let members: Vec<SocketAddr> = self.foca.iter_members().map(|member| member.id().gossip).collect();
        if !members.is_empty() {
            for body in updates {
                self.effects.push(Effect::Send {
                    to: members.clone(),
                    kind: Kind::Counts,
                    body,
                });
            }
        }
        let gaps: BTreeSet<NodeKey> = self.state.gaps().cloned().collect();
        let persistent: Vec<NodeKey> = gaps.intersection(&self.previous_gaps).cloned().collect();
        for key in persistent {
            self.pull(&key);
        }
        self.previous_gaps = gaps;
        self.confirm_silent_suspects(now);
        // Stale flags and last-heard times move with the clock.
        self.view_dirty = true;
    }

    /// Declares down every suspect whose digests have also stopped.
    ///
    /// foca declares a suspect down only on the timer of the node whose
    /// probe failed; everyone else waits for that node's `Down` to reach
    /// them, which loss can keep from one of them for a whole probe cycle
    /// (the simulation saw a crash pruned after 14 s at 10 % loss). A live
    /// suspect keeps sending a digest every round; one silent for the
    /// suspect timeout and a round more is taken as down here, which foca
    /// then spreads like its own.
    fn confirm_silent_suspects(&mut self, now: Instant) {
        let silent_after =
            self.timings.suspect_timeout + self.timings.gossip_interval.max(self.timings.digest_interval);
        let silent: Vec<Member<NodeId>> = self
            .foca
            .iter_membership_state()
            .filter(|member| member.state() == foca::State::Suspect)
            .filter(|member| {
                let id = member.id();
                self.state
                    .node(&id.name, id.incarnation)
                    .is_some_and(|node| now.saturating_duration_since(node.last_heard) > silent_after)
            })
            .map(|member| Member::down(member.id().clone()))
            .collect();
        if silent.is_empty() {
            return;
        }
        for member in &silent {
            info!(peer = %member.id().name, "suspect and silent: declared down");
        }
        let result = self.foca.apply_many(silent.into_iter(), true, &mut self.runtime);
        log_foca_error("confirm", result);
        self.drain_foca(now);
    }

    /// Announces to `seeds` (the seed addresses as resolved now) and to
    /// members declared down that are due one, so that a node finds the
    /// cluster after it starts and both sides of a healed partition find
    /// each other again.
    pub fn announce(&mut self, seeds: Vec<SocketAddr>, now: Instant) {
        let alone = !seeds.is_empty() && seeds.iter().all(|seed| *seed == self.identity.gossip);
        if alone != self.seeded_alone {
            self.seeded_alone = alone;
            self.view_dirty = true;
        }
        let active: HashSet<SocketAddr> = self.foca.iter_members().map(|member| member.id().gossip).collect();
        let down = self.down.due(now);
        let targets: BTreeSet<SocketAddr> = seeds.into_iter().chain(down).collect();
        for addr in targets {
            if addr != self.identity.gossip && !active.contains(&addr) {
                log_foca_error("announce", self.foca.announce(NodeId::seed(addr), &mut self.runtime));
            }
        }
        self.drain_foca(now);
    }

    /// A pull under `key` answered `full`.
    pub fn pulled(&mut self, key: &NodeKey, full: &FullState, now: Instant) {
        self.pulling.remove(key);
        self.metrics.pulls.get_or_create(&[("result", "ok")]).inc();
        if full.delta_since.is_none() {
            self.metrics.full_pulls.inc();
        }
        match self.state.apply_full_state(full, now) {
            Outcome::Changed => self.view_dirty = true,
            Outcome::Refused(refusal) => {
                self.metrics.dropped(refusal.label());
                warn!(peer = %key.name, reason = refusal.label(), "pulled state refused");
                return;
            }
            Outcome::Unchanged | Outcome::Stale | Outcome::NotMember => {}
        }
        // The peer moved on while its state travelled (a burst): catch up
        // now rather than at its next digest.
        if self.has_gap(key) {
            self.pull(key);
        }
    }

    /// A pull under `key` failed; the gap stays, and is pulled again at a
    /// later round or digest.
    pub fn pull_failed(&mut self, key: &NodeKey) {
        self.pulling.remove(key);
        self.metrics.pulls.get_or_create(&[("result", "error")]).inc();
    }

    /// This node's published state as a puller holding every update up to
    /// `since` needs it.
    pub fn state_for(&self, since: u64) -> NodeState {
        self.published.state_for(&self.identity, since)
    }

    /// Tells the cluster this node is leaving, so peers drop its counts now
    /// instead of waiting for failure detection. Only the datagrams matter
    /// after this.
    pub fn leave(&mut self, now: Instant) {
        self.leaving = true;
        log_foca_error("leave", self.foca.leave_cluster(&mut self.runtime));
        self.drain_foca(now);
        info!(node = %self.identity.name, "left the cluster");
    }

    /// The view readers should see, if anything in it changed since the
    /// last one taken.
    pub fn take_view(&mut self, now: Instant) -> Option<ClusterView> {
        if !self.view_dirty {
            return None;
        }
        self.view_dirty = false;
        Some(self.view(now))
    }

    /// Merges a count update (or digest) that its origin sent from `from`.
    fn on_counts(&mut self, body: &[u8], from: SocketAddr, now: Instant) {
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
        let outcome = self.state.apply_update(&update, now);
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
        // reordering; `round` pulls those if they persist.
        let key = NodeKey::new(&update.name, update.incarnation);
        if update.counts.is_empty() && self.has_gap(&key) {
            self.pull(&key);
        }
        if self.state.duplicate(&key) && self.duplicates_reported.insert(key.name.clone()) {
            warn!(peer = %key.name, "two live nodes use this name; both are counted, give each its own --node-name");
        }
    }

    fn has_gap(&self, key: &NodeKey) -> bool {
        self.state.node(&key.name, key.incarnation).is_some_and(|node| node.gap)
    }

    /// Starts a pull of `key` unless one is under way or it is no member.
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
        self.effects.push(Effect::Pull {
            key: key.clone(),
            target,
            since,
        });
    }

    /// Turns everything foca asked for and delivered into effects and
    /// state, until nothing is left.
    fn drain_foca(&mut self, now: Instant) {
        loop {
            while let Some(notification) = self.runtime.to_notify() {
                self.on_notification(notification, now);
            }
            while let Some((after, timer)) = self.runtime.to_schedule() {
                self.effects.push(Effect::Schedule { after, timer });
            }
            while let Some((to, data)) = self.runtime.to_send() {
                self.effects.push(Effect::Send {
                    to: vec![to.gossip],
                    kind: Kind::Gossip,
                    body: data.to_vec(),
                });
            }
            if self.runtime.backlog() == 0 {
                break;
            }
        }
    }

    fn on_notification(&mut self, notification: OwnedNotification<NodeId>, now: Instant) {
        match notification {
            OwnedNotification::MemberUp(id) => self.member_up(&id, now),
            OwnedNotification::MemberDown(id) => self.member_down(&id, now),
            OwnedNotification::Rename(before, after) => {
                self.member_down(&before, now);
                self.member_up(&after, now);
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
            OwnedNotification::Defunct if self.leaving => debug!("down, as leaving makes it"),
            OwnedNotification::Defunct => warn!("declared down by the cluster and cannot rejoin"),
        }
        self.view_dirty = true;
    }

    fn member_up(&mut self, id: &NodeId, now: Instant) {
        self.down.came_up(id.gossip);
        // SWIM spreads a join a bounded number of times, so a member that
        // joined while this node was still unknown to the cluster may not
        // know it, and would never send it counts (until a probe of this
        // node's reached it: up to a whole probe cycle, ~50 s at 100
        // nodes). One announce makes the knowledge mutual at once.
        log_foca_error("announce", self.foca.announce(id.clone(), &mut self.runtime));
        // Its counts are pulled once a datagram from its own address shows
        // what it has published (a gap), never from an address that a
        // packet merely named.
        if self.state.member_up(&id.name, id.incarnation, now) {
            info!(peer = %id.name, addr = %id.gossip, "member up");
        }
    }

    fn member_down(&mut self, id: &NodeId, now: Instant) {
        info!(peer = %id.name, addr = %id.gossip, "member down");
        self.down.went_down(id, now);
        self.state.member_down(&id.name, id.incarnation);
    }

    fn view(&self, now: Instant) -> ClusterView {
        let live = self.foca.num_members();
        let stale_after = self.timings.stale_after(live);
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
                        && summary.is_some_and(|node| now.saturating_duration_since(node.last_heard) > stale_after),
                }
            })
            .collect();
        for (state, count) in [MemberState::Alive, MemberState::Suspect, MemberState::Down]
            .into_iter()
            .zip(counts)
        {
            self.metrics.set_members(state, count);
        }
        ClusterView {
            self_name: self.identity.name.clone(),
            self_addr: self.identity.gossip,
            joined: live > 0 || self.seeded_alone,
            members,
            totals: self.state.totals(),
            live_remote: self.state.nodes(),
        }
    }
}

fn log_foca_error(what: &str, result: Result<(), foca::Error>) {
    if let Err(error) = result {
        debug!(%error, "foca {what} failed");
    }
}
