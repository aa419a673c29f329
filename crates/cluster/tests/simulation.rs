//! A deterministic simulation of the cluster protocol: many [`NodeCore`]s
//! over in-memory links, in simulated time.
//!
//! One event queue, ordered by (time, insertion), drives every node: datagram
//! deliveries, foca's timers, gossip rounds, seed announces, and the two legs
//! of each pull. Links lose datagrams with a seeded probability, delay them
//! by a seeded 1–5 ms, and refuse anything across a partition; a crashed
//! node's core is dropped with everything it had scheduled. Pulls ride TCP
//! in a real node, so they are delayed but not lost; one to a node that
//! cannot be reached fails after the pull timeout. Envelopes are left out
//! (the edge seals them; `envelope` has its own tests), but the bytes a node
//! sends are counted sealed, with a cluster secret.
//!
//! Each scenario asserts the contract's bounds (SPEC §6) in simulated time:
//! agreement within 2·X of the last change or of a rejoin, a crash pruned
//! within 5 s. A failure names its seed; `HEADCOUNT_SIM_SEED=<seed> cargo
//! test -p headcount-cluster --test simulation <scenario>` replays it
//! exactly. With `--nocapture` each scenario prints what it measured.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    rc::Rc,
    sync::Arc,
    time::{Duration, Instant},
};

use foca::Timer;
use headcount_cluster::{
    ClusterMetrics, ClusterView, MemberState, NodeId, PeerLimits, Timings,
    envelope::Sealer,
    node::{Effect, NodeCore},
    state::{FullState, NodeKey},
    sync_client::decode_state,
};
use headcount_counter::Topic;
use headcount_proto::cluster::Kind;
use rand::{RngExt, SeedableRng, rngs::StdRng};

const TIMINGS: Timings = Timings::DEFAULT;
/// X.
const X: Duration = TIMINGS.gossip_interval;
/// The contract's bound on pruning a crashed node.
const CRASH_PRUNED_WITHIN: Duration = Duration::from_secs(5);
/// How often agreement is checked: the resolution of every time measured.
const CHECK_EVERY: Duration = Duration::from_millis(10);
const GOSSIP_PORT: u16 = 7946;
const SYNC_PORT: u16 = 7947;

/// Something that happens to one node at one moment.
enum Event {
    Deliver {
        to: usize,
        from: SocketAddr,
        kind: Kind,
        body: Rc<[u8]>,
    },
    Timer {
        node: usize,
        life: u64,
        timer: Timer<NodeId>,
    },
    Round {
        node: usize,
        life: u64,
    },
    Announce {
        node: usize,
        life: u64,
    },
    PullRequest {
        puller: usize,
        life: u64,
        to: usize,
        key: NodeKey,
        target: NodeId,
        since: u64,
    },
    PullAnswer {
        node: usize,
        life: u64,
        key: NodeKey,
        state: Option<FullState>,
    },
}

struct SimNode {
    name: String,
    addr: SocketAddr,
    core: Option<NodeCore>,
    /// Bumped on every start: events of an earlier life are dropped.
    life: u64,
    /// The node's own counts, as its clients made them.
    local: BTreeMap<Topic, u64>,
    /// Topics changed since its last round.
    changed: BTreeMap<Topic, u64>,
    view: Option<Arc<ClusterView>>,
    sent_bytes: u64,
}

/// The links between nodes.
struct Network {
    loss: f64,
    /// Side of each node while partitioned.
    sides: Option<Vec<u8>>,
}

struct Sim {
    seed: u64,
    rng: StdRng,
    start: Instant,
    now: Duration,
    next_event: u64,
    queue: BTreeMap<(Duration, u64), Event>,
    nodes: Vec<SimNode>,
    by_ip: HashMap<IpAddr, usize>,
    seeds: Vec<SocketAddr>,
    net: Network,
    sealer: Sealer,
    whole_state_pulls: u64,
    delta_pulls: u64,
}

impl Sim {
    /// `n` nodes, not started, seeded with the first three.
    fn new(seed: u64, n: usize) -> Self {
        let nodes: Vec<SimNode> = (0..n)
            .map(|i| {
                let ip = Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250 + 1) as u8);
                SimNode {
                    name: format!("node-{i:03}"),
                    addr: SocketAddr::new(IpAddr::V4(ip), GOSSIP_PORT),
                    core: None,
                    life: 0,
                    local: BTreeMap::new(),
                    changed: BTreeMap::new(),
                    view: None,
                    sent_bytes: 0,
                }
            })
            .collect();
        let by_ip = nodes.iter().enumerate().map(|(i, node)| (node.addr.ip(), i)).collect();
        let seeds = nodes.iter().take(3).map(|node| node.addr).collect();
        Self {
            seed,
            rng: StdRng::seed_from_u64(seed),
            start: Instant::now(),
            now: Duration::ZERO,
            next_event: 0,
            queue: BTreeMap::new(),
            nodes,
            by_ip,
            seeds,
            net: Network { loss: 0.0, sides: None },
            sealer: Sealer::new(Some(b"a simulated cluster secret"), 1500),
            whole_state_pulls: 0,
            delta_pulls: 0,
        }
    }

    /// Starts every node within the first 100 ms.
    fn start_all(&mut self) {
        for node in 0..self.nodes.len() {
            let at = self.now + Duration::from_millis(self.rng.random_range(0..100));
            self.run_until_time(at);
            self.start(node);
        }
    }

    /// Starts `node` (again) under a new incarnation, with no connections.
    fn start(&mut self, node: usize) {
        let life = self.nodes[node].life + 1;
        let rng = StdRng::seed_from_u64(self.rng.random());
        let sim_node = &mut self.nodes[node];
        sim_node.life = life;
        sim_node.local.clear();
        sim_node.changed.clear();
        let identity = NodeId {
            name: sim_node.name.clone(),
            gossip: sim_node.addr,
            sync_port: SYNC_PORT,
            incarnation: life,
        };
        let limits = PeerLimits {
            max_count: 1_000_000,
            max_topics: 200_000,
        };
        let now = self.start + self.now;
        sim_node.core = Some(NodeCore::new(
            identity,
            TIMINGS,
            limits,
            rng,
            ClusterMetrics::default(),
            now,
        ));
        let round = self.now + X.mul_f64(self.rng.random());
        self.schedule_at(round, Event::Round { node, life });
        let announce = self.now + TIMINGS.announce_interval.mul_f64(self.rng.random());
        self.schedule_at(announce, Event::Announce { node, life });
    }

    /// `node` stops dead: nothing it sent later, nothing sent to it arrives.
    fn crash(&mut self, node: usize) {
        self.nodes[node].core = None;
        self.nodes[node].view = None;
    }

    fn live(&self, node: usize) -> bool {
        self.nodes[node].core.is_some()
    }

    /// A client of `node` makes its count of `topic` `count`.
    fn set(&mut self, node: usize, topic: &str, count: u64) {
        let topic = Topic::new(topic).expect("a valid topic");
        let sim_node = &mut self.nodes[node];
        if count == 0 {
            sim_node.local.remove(&topic);
        } else {
            sim_node.local.insert(topic.clone(), count);
        }
        sim_node.changed.insert(topic, count);
    }

    fn schedule_at(&mut self, at: Duration, event: Event) {
        self.next_event += 1;
        self.queue.insert((at, self.next_event), event);
    }

    fn delay(&mut self) -> Duration {
        Duration::from_micros(self.rng.random_range(1_000..5_000))
    }

    /// Whether `from` can reach `to` now (a crashed node reaches nobody).
    fn reachable(&self, from: usize, to: usize) -> bool {
        self.live(from) && self.live(to) && self.net.sides.as_ref().is_none_or(|sides| sides[from] == sides[to])
    }

    /// Runs every event up to `until`, then sets the clock to it.
    fn run_until_time(&mut self, until: Duration) {
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > until {
                break;
            }
            let ((at, _), event) = entry.remove_entry();
            self.now = at;
            self.handle(event);
        }
        self.now = until;
    }

    fn run_for(&mut self, duration: Duration) {
        self.run_until_time(self.now + duration);
    }

    /// Runs until `done` holds (checked every [`CHECK_EVERY`]) and returns
    /// how long that took, or `None` if it did not within `within`.
    fn run_until(&mut self, within: Duration, mut done: impl FnMut(&Self) -> bool) -> Option<Duration> {
        let from = self.now;
        loop {
            if done(self) {
                return Some(self.now - from);
            }
            if self.now - from >= within {
                return None;
            }
            self.run_for(CHECK_EVERY);
        }
    }

    fn handle(&mut self, event: Event) {
        let now = self.start + self.now;
        let node = match event {
            Event::Deliver { to, from, kind, body } => {
                if let Some(core) = self.nodes[to].core.as_mut() {
                    core.datagram(kind, &body, from, now);
                }
                to
            }
            Event::Timer { node, life, timer } => {
                if let Some(core) = self.core_of(node, life) {
                    core.timer(timer, now);
                }
                node
            }
            Event::Round { node, life } => {
                let changed: Vec<(Topic, u64)> = std::mem::take(&mut self.nodes[node].changed).into_iter().collect();
                let Some(core) = self.core_of(node, life) else { return };
                core.round(changed, now);
                self.schedule_at(self.now + X, Event::Round { node, life });
                node
            }
            Event::Announce { node, life } => {
                let seeds = self.seeds.clone();
                let Some(core) = self.core_of(node, life) else { return };
                core.announce(seeds, now);
                let next = self.now + TIMINGS.announce_interval;
                self.schedule_at(next, Event::Announce { node, life });
                node
            }
            Event::PullRequest {
                puller,
                life,
                to,
                key,
                target,
                since,
            } => {
                self.answer_pull(puller, life, to, key, &target, since);
                return;
            }
            Event::PullAnswer { node, life, key, state } => {
                let Some(core) = self.core_of(node, life) else { return };
                match state {
                    Some(state) => core.pulled(&key, &state, now),
                    None => core.pull_failed(&key),
                }
                node
            }
        };
        self.carry_out(node);
    }

    fn core_of(&mut self, node: usize, life: u64) -> Option<&mut NodeCore> {
        let sim_node = &mut self.nodes[node];
        sim_node.core.as_mut().filter(|_| sim_node.life == life)
    }

    fn answer_pull(&mut self, puller: usize, life: u64, to: usize, key: NodeKey, target: &NodeId, since: u64) {
        let state = match (&self.nodes[to].core, self.reachable(to, puller)) {
            (Some(core), true) => decode_state(core.state_for(since), target).ok(),
            _ => None,
        };
        match &state {
            Some(state) if state.delta_since.is_none() => self.whole_state_pulls += 1,
            Some(_) => self.delta_pulls += 1,
            None => {}
        }
        let at = self.now
            + if state.is_some() {
                self.delay()
            } else {
                TIMINGS.pull_timeout
            };
        self.schedule_at(
            at,
            Event::PullAnswer {
                node: puller,
                life,
                key,
                state,
            },
        );
    }

    /// Carries out what `node`'s core asked for, and takes its view.
    fn carry_out(&mut self, node: usize) {
        let Some(core) = self.nodes[node].core.as_mut() else {
            return;
        };
        let effects: Vec<Effect> = core.effects().collect();
        let view = core.take_view(self.start + self.now);
        if let Some(view) = view {
            self.nodes[node].view = Some(Arc::new(view));
        }
        let life = self.nodes[node].life;
        for effect in effects {
            match effect {
                Effect::Send { to, kind, body } => self.send(node, &to, kind, body),
                Effect::Schedule { after, timer } => {
                    self.schedule_at(self.now + after, Event::Timer { node, life, timer });
                }
                Effect::Pull { key, target, since } => {
                    let to = self.by_ip.get(&target.gossip.ip()).copied();
                    match to.filter(|to| self.reachable(node, *to)) {
                        Some(to) => {
                            let at = self.now + self.delay();
                            self.schedule_at(
                                at,
                                Event::PullRequest {
                                    puller: node,
                                    life,
                                    to,
                                    key,
                                    target,
                                    since,
                                },
                            );
                        }
                        None => {
                            let at = self.now + TIMINGS.pull_timeout;
                            self.schedule_at(
                                at,
                                Event::PullAnswer {
                                    node,
                                    life,
                                    key,
                                    state: None,
                                },
                            );
                        }
                    }
                }
            }
        }
    }

    fn send(&mut self, from: usize, to: &[SocketAddr], kind: Kind, body: Vec<u8>) {
        let sealed = self.sealer.seal(kind, body.clone()).len() as u64;
        let body: Rc<[u8]> = body.into();
        let from_addr = self.nodes[from].addr;
        for addr in to {
            self.nodes[from].sent_bytes += sealed;
            let Some(&dest) = self.by_ip.get(&addr.ip()) else {
                continue;
            };
            let lost = self.rng.random_bool(self.net.loss);
            let delay = self.delay();
            if !lost && self.reachable(from, dest) {
                self.schedule_at(
                    self.now + delay,
                    Event::Deliver {
                        to: dest,
                        from: from_addr,
                        kind,
                        body: Rc::clone(&body),
                    },
                );
            }
        }
    }

    /// The live nodes `node` can reach, itself included.
    fn reach(&self, node: usize) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&other| other == node || self.reachable(node, other))
            .collect()
    }

    /// Whether every live node's view of every topic is the sum of the
    /// counts on the other live nodes it can reach, and of nothing else.
    fn agreed(&self) -> bool {
        (0..self.nodes.len())
            .filter(|&node| self.live(node))
            .all(|node| self.sees_exactly(node, &self.reach(node)))
    }

    fn sees_exactly(&self, node: usize, reach: &[usize]) -> bool {
        let Some(view) = &self.nodes[node].view else {
            return false;
        };
        let others: Vec<usize> = reach.iter().copied().filter(|&other| other != node).collect();
        // Cheap first: each reachable member's sum, and nobody else's.
        let counted: BTreeMap<&str, u64> = view
            .members
            .iter()
            .filter(|member| member.state != MemberState::Down && member.connections > 0)
            .map(|member| (member.name.as_str(), member.connections))
            .collect();
        let expected: BTreeMap<&str, u64> = others
            .iter()
            .map(|&other| (self.nodes[other].name.as_str(), self.nodes[other].local.values().sum()))
            .filter(|(_, sum)| *sum > 0)
            .collect();
        if counted != expected {
            return false;
        }
        let mut sums: HashMap<&Topic, u64> = HashMap::new();
        for &other in &others {
            for (topic, count) in &self.nodes[other].local {
                *sums.entry(topic).or_default() += count;
            }
        }
        view.remote_counts().count() == sums.len()
            && sums.iter().all(|(topic, count)| view.remote_count(topic) == *count)
    }

    /// Whether every live node lists every other live node it can reach,
    /// under its current incarnation, as alive or suspect (in SWIM a
    /// suspect is alive: foca keeps a suspicion whose originator restarted
    /// until the suspect is probed and fails, and its counts stay in), and
    /// lists nobody down.
    fn all_live(&self) -> bool {
        (0..self.nodes.len()).filter(|&node| self.live(node)).all(|node| {
            let Some(view) = &self.nodes[node].view else {
                return false;
            };
            let expected: BTreeSet<&str> = self
                .reach(node)
                .into_iter()
                .filter(|&other| other != node)
                .map(|other| self.nodes[other].name.as_str())
                .collect();
            let live: BTreeSet<&str> = view
                .members
                .iter()
                .filter(|member| member.state != MemberState::Down)
                .map(|member| member.name.as_str())
                .collect();
            live == expected && view.members.len() == expected.len()
        })
    }

    /// What each node's view lists, for a failure message: the views that
    /// differ from the truth.
    fn membership(&self) -> String {
        let mut wrong = Vec::new();
        for node in (0..self.nodes.len()).filter(|&node| self.live(node)) {
            let Some(view) = &self.nodes[node].view else {
                wrong.push(format!("{node}: no view"));
                continue;
            };
            let mut states = [0usize; 3];
            for member in &view.members {
                states[member.state as usize] += 1;
            }
            let reach = self.reach(node);
            let counts_right = self.sees_exactly(node, &reach);
            if states[0] + states[1] != reach.len() - 1 || states[2] != 0 || !counts_right {
                let off: Vec<String> = view
                    .members
                    .iter()
                    .filter(|member| member.state != MemberState::Down)
                    .filter_map(|member| {
                        let other = self.nodes.iter().find(|other| other.name == member.name)?;
                        let truth: u64 = other.local.values().sum();
                        (truth != member.connections)
                            .then(|| format!("{} {} not {truth}", member.name, member.connections))
                    })
                    .collect();
                wrong.push(format!(
                    "{node} lists alive/suspect/down {states:?} of {} reachable, counts {}",
                    reach.len() - 1,
                    if counts_right {
                        "right".to_owned()
                    } else {
                        format!("wrong ({})", off.join(", "))
                    }
                ));
            }
        }
        format!(
            "{} views wrong: {}",
            wrong.len(),
            wrong
                .iter()
                .filter(|line| line.contains("wrong"))
                .chain(&wrong)
                .take(5)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ")
        )
    }

    /// How many times a live node was declared down and rejoined under a
    /// new incarnation (SWIM renews it), summed over the nodes.
    fn rejoins(&self) -> u64 {
        self.nodes
            .iter()
            .filter_map(|node| Some(node.core.as_ref()?.identity().incarnation - node.life))
            .sum()
    }

    /// Members that `node` lists as down.
    fn listed_down(&self, node: usize) -> usize {
        self.nodes[node].view.as_ref().map_or(0, |view| {
            view.members
                .iter()
                .filter(|member| member.state == MemberState::Down)
                .count()
        })
    }

    /// Bytes every live node sent, summed.
    fn sent_bytes(&self) -> Vec<u64> {
        self.nodes.iter().map(|node| node.sent_bytes).collect()
    }

    fn fail(&self, what: impl std::fmt::Display) -> String {
        format!("at {:?} (simulated): {what}", self.now)
    }
}

/// Runs `scenario` with `HEADCOUNT_SIM_SEED` if set, else with `seed`; a
/// failure names the seed that replays it.
fn run(name: &str, seed: u64, scenario: impl FnOnce(&mut Sim) -> Result<(), String>, n: usize) {
    let seed = std::env::var("HEADCOUNT_SIM_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or(seed);
    let started = Instant::now();
    let mut sim = Sim::new(seed, n);
    if let Err(failure) = scenario(&mut sim) {
        panic!(
            "{name} failed with seed {seed} {failure}\n\
             replay: HEADCOUNT_SIM_SEED={seed} cargo test -p headcount-cluster --test simulation {name}"
        );
    }
    println!(
        "{name} (seed {}): {:?} simulated in {:?}",
        sim.seed,
        sim.now,
        started.elapsed()
    );
}

/// Starts the cluster with a few topics on every node and waits until
/// everyone sees everyone and agrees.
fn converge(sim: &mut Sim, within: Duration) -> Result<Duration, String> {
    sim.start_all();
    for node in 0..sim.nodes.len() {
        sim.set(node, &format!("site/page-{}", node % 10), node as u64 + 1);
        sim.set(node, &format!("site/own-{node}"), 1);
    }
    sim.run_until(within, |sim| sim.all_live() && sim.agreed())
        .ok_or_else(|| sim.fail(format!("not converged within {within:?}: {}", sim.membership())))
}

/// Changes counts on every `step`-th node, then returns how long until
/// everyone agrees (the bound is 2·X after the change).
fn change_and_agree(sim: &mut Sim, step: usize, within: Duration) -> Result<Duration, String> {
    let change = sim.now.as_millis() as u64;
    for node in (0..sim.nodes.len()).step_by(step) {
        if sim.live(node) {
            sim.set(node, &format!("site/page-{}", (node + 3) % 10), change);
            sim.set(node, &format!("site/own-{node}"), change % 2);
        }
    }
    sim.run_until(within, Sim::agreed).ok_or_else(|| {
        sim.fail(format!(
            "no agreement within {within:?} of a change: {}",
            sim.membership()
        ))
    })
}

fn bytes_per_node_second(sim: &mut Sim, over: Duration) -> f64 {
    let before = sim.sent_bytes();
    sim.run_for(over);
    sent_per_live_node_second(sim, before, over)
}

/// Bytes sent since `before` (per node), per live node and second of `over`.
fn sent_per_live_node_second(sim: &Sim, before: Vec<u64>, over: Duration) -> f64 {
    let live = (0..sim.nodes.len()).filter(|&node| sim.live(node)).count();
    let sent: u64 = sim
        .sent_bytes()
        .iter()
        .zip(&before)
        .map(|(after, before)| after - before)
        .sum();
    sent as f64 / live as f64 / over.as_secs_f64()
}

/// Bytes per node and second while every node changes `topics` topics
/// every round.
fn busy_bytes_per_node_second(sim: &mut Sim, topics: usize, over: Duration) -> f64 {
    let before = sim.sent_bytes();
    let rounds = over.as_secs();
    for round in 0..rounds {
        for node in 0..sim.nodes.len() {
            for topic in 0..topics {
                sim.set(node, &format!("busy/{node}/{topic}"), round + 1);
            }
        }
        sim.run_for(X);
    }
    sent_per_live_node_second(sim, before, X * u32::try_from(rounds).expect("a few rounds"))
}

#[test]
fn a_hundred_nodes_converge_and_agree_within_two_rounds_of_a_change() {
    run(
        "a_hundred_nodes_converge_and_agree_within_two_rounds_of_a_change",
        1,
        |sim| {
            let joined = converge(sim, Duration::from_secs(20))?;
            let pulls_after_join = sim.whole_state_pulls;
            let quiet = bytes_per_node_second(sim, Duration::from_secs(5));
            let mut agreements = Vec::new();
            for _ in 0..3 {
                agreements.push(change_and_agree(sim, 3, 2 * X)?);
                sim.run_for(X);
            }
            let whole_later = sim.whole_state_pulls - pulls_after_join;
            let busy = busy_bytes_per_node_second(sim, 10, Duration::from_secs(5));
            println!(
                "100 nodes: joined and agreed in {joined:?}; agreement after changes {agreements:?}; \
                 gossip per node {quiet:.0} B/s quiet, {busy:.0} B/s with 10 topics changing every round; \
                 whole-state pulls {pulls_after_join} while joining, {whole_later} after; delta pulls {}",
                sim.delta_pulls
            );
            // Cost follows change: quiet, a node sends each member a digest
            // (and its share of SWIM) a second.
            let per_member = quiet / 99.0;
            if per_member > 100.0 {
                return Err(sim.fail(format!("quiet gossip costs {per_member:.0} B/s per member")));
            }
            if whole_later > 0 {
                return Err(sim.fail(format!("{whole_later} whole-state pulls between live nodes")));
            }
            Ok(())
        },
        100,
    );
}

#[test]
fn a_crashed_node_is_pruned_within_five_seconds() {
    run(
        "a_crashed_node_is_pruned_within_five_seconds",
        2,
        |sim| {
            converge(sim, Duration::from_secs(10))?;
            sim.crash(7);
            let pruned = sim
                .run_until(CRASH_PRUNED_WITHIN, Sim::agreed)
                .ok_or_else(|| sim.fail("the crashed node's counts are still counted"))?;
            let down = sim
                .run_until(CRASH_PRUNED_WITHIN, |sim| {
                    (0..sim.nodes.len()).all(|node| !sim.live(node) || sim.listed_down(node) == 1)
                })
                .ok_or_else(|| sim.fail("the crashed node is not listed down everywhere"))?;
            println!("crash: counts pruned after {pruned:?}, listed down {down:?} later");
            Ok(())
        },
        20,
    );
}

#[test]
fn a_partition_splits_the_counts_and_heals() {
    run(
        "a_partition_splits_the_counts_and_heals",
        3,
        |sim| {
            converge(sim, Duration::from_secs(10))?;
            let n = sim.nodes.len();
            sim.net.sides = Some((0..n).map(|node| u8::from(node >= n / 2)).collect());
            // The contract bounds the pruning of one crash; half the
            // cluster going at once takes SWIM longer.
            let split = sim.run_until(2 * CRASH_PRUNED_WITHIN, Sim::agreed).ok_or_else(|| {
                sim.fail(format!(
                    "each side does not count what it can reach: {}",
                    sim.membership()
                ))
            })?;
            change_and_agree(sim, 4, 2 * X)?;
            sim.run_for(Duration::from_secs(20));
            sim.net.sides = None;
            let rejoined = sim
                .run_until(Duration::from_secs(10), Sim::all_live)
                .ok_or_else(|| sim.fail("the sides did not find each other"))?;
            let agreed = sim
                .run_until(2 * X, Sim::agreed)
                .ok_or_else(|| sim.fail("no agreement within 2·X of the rejoin"))?;
            println!(
                "partition: sides counted alone after {split:?}; rejoined {rejoined:?} after healing, agreed {agreed:?} later"
            );
            Ok(())
        },
        20,
    );
}

/// Under loss the contract sets no bound. What the protocol must still do:
/// agree within a few rounds of every change (a lost update is caught by
/// the next digest), including after a member falsely declared down has
/// rejoined under a new incarnation.
fn under_loss(sim: &mut Sim, loss: f64, within: Duration) -> Result<(), String> {
    converge(sim, Duration::from_secs(10))?;
    sim.net.loss = loss;
    let mut agreements = Vec::new();
    for _ in 0..5 {
        agreements.push(change_and_agree(sim, 2, within)?);
        sim.run_for(X);
    }
    let rejoins_before = sim.rejoins();
    sim.run_for(quiet_time());
    let quiet = sim
        .run_until(within, Sim::agreed)
        .ok_or_else(|| sim.fail(format!("no agreement after a quiet time: {}", sim.membership())))?;
    let node_hours = sim.nodes.len() as f64 * quiet_time().as_secs_f64() / 3600.0;
    let false_downs = (sim.rejoins() - rejoins_before) as f64 / node_hours;
    sim.crash(7);
    let pruned = sim
        .run_until(CRASH_PRUNED_WITHIN, Sim::agreed)
        .ok_or_else(|| sim.fail(format!("a crash is not pruned within 5 s: {}", sim.membership())))?;
    println!(
        "{:.0} % loss: agreement after changes {agreements:?}, after {:?} quiet {quiet:?}; \
         members falsely declared down (rejoined) {:.1} per node-hour; a crash pruned after {pruned:?}",
        loss * 100.0,
        quiet_time(),
        false_downs
    );
    Ok(())
}

/// How long the quiet part of a loss scenario lasts: 30 s, or
/// `HEADCOUNT_SIM_QUIET_SECS` (the false-suspicion rate in BENCHMARKS.md
/// comes from an hour).
fn quiet_time() -> Duration {
    let secs = std::env::var("HEADCOUNT_SIM_QUIET_SECS")
        .ok()
        .and_then(|secs| secs.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

#[test]
fn ten_percent_packet_loss() {
    run("ten_percent_packet_loss", 4, |sim| under_loss(sim, 0.1, 10 * X), 20);
}

#[test]
fn thirty_percent_packet_loss_then_recovery() {
    run(
        "thirty_percent_packet_loss_then_recovery",
        5,
        |sim| {
            // So lossy that members flap: counts may be wrong while it
            // lasts. Once it ends, everyone is alive and agrees again.
            converge(sim, Duration::from_secs(10))?;
            sim.net.loss = 0.3;
            let mut agreements = Vec::new();
            for _ in 0..5 {
                agreements.push(change_and_agree(sim, 2, 10 * X).ok());
                sim.run_for(X);
            }
            let rejoins = sim.rejoins();
            sim.net.loss = 0.0;
            let recovered = sim
                .run_until(Duration::from_secs(10), |sim| sim.all_live() && sim.agreed())
                .ok_or_else(|| sim.fail(format!("no recovery after the loss ended: {}", sim.membership())))?;
            println!(
                "30 % loss: agreement after changes {agreements:?} (None: not within 10·X); \
                 members falsely declared down (rejoined) {rejoins}; all live and agreeing {recovered:?} after it ended"
            );
            Ok(())
        },
        20,
    );
}

#[test]
fn the_whole_cluster_restarts_and_no_member_stays_down() {
    run(
        "the_whole_cluster_restarts_and_no_member_stays_down",
        6,
        |sim| {
            converge(sim, Duration::from_secs(10))?;
            for node in 0..sim.nodes.len() {
                sim.crash(node);
            }
            sim.run_for(Duration::from_millis(500));
            let first_life = converge(sim, Duration::from_secs(20))?;
            println!("whole restart: everyone alive and agreeing {first_life:?} after the restart");
            Ok(())
        },
        20,
    );
}

#[test]
fn a_burst_of_100k_topic_changes_is_repaired_by_a_delta() {
    run(
        "a_burst_of_100k_topic_changes_is_repaired_by_a_delta",
        7,
        |sim| {
            converge(sim, Duration::from_secs(10))?;
            let whole_before = sim.whole_state_pulls;
            for topic in 0..100_000 {
                sim.set(topic % 2, &format!("burst/{topic}"), 1 + topic as u64 % 3);
            }
            let burst = sim
                .run_until(2 * X, Sim::agreed)
                .ok_or_else(|| sim.fail("no agreement within 2·X of the burst"))?;
            for topic in 0..100_000 {
                sim.set(topic % 2, &format!("burst/{topic}"), 0);
            }
            let cleared = sim
                .run_until(2 * X, Sim::agreed)
                .ok_or_else(|| sim.fail("no agreement within 2·X of clearing the burst"))?;
            let whole = sim.whole_state_pulls - whole_before;
            println!(
                "burst of 100k: agreed {burst:?} after, cleared {cleared:?}; whole-state pulls {whole}, delta pulls {}",
                sim.delta_pulls
            );
            if whole > 0 {
                return Err(sim.fail(format!("{whole} whole-state pulls between live nodes")));
            }
            Ok(())
        },
        5,
    );
}
