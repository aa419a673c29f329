//! The merge rules of the cluster view: what this node knows of every other
//! live node's counts, and their sum per topic. Plain data, no IO, no clock
//! (time is passed in), so every rule is a fast unit or property test.
//!
//! Each remote node's counts are versioned per topic by the `seq` of the
//! update that last changed them. A value replaces another only when its
//! version is higher, so applying the same updates in any order, any number of
//! times, gives the same state. Per node, a `watermark` says that every
//! update up to it is reflected: anything at or below it is stale, and a
//! topic that dropped to zero at or below it can be forgotten (absence is
//! zero). A node that announced a seq above what is contiguous has a gap,
//! which a pull closes: a delta of what changed after the watermark, or the
//! node's whole state.
//!
//! Nodes are known by name and incarnation. Of the incarnations of one name,
//! the newest is counted: a restarted node's old counts leave the sums the
//! moment the new one is up. An older incarnation that keeps sending fresh
//! rounds after that is not a dead predecessor but a second live node with
//! the same name (a misconfiguration): it is counted again, so its visitors
//! are never hidden, and flagged as a duplicate.
//!
//! Peers are not trusted to be sane: an update or a full state that claims a
//! count above [`PeerLimits::max_count`], more topics than
//! [`PeerLimits::max_topics`] on one node, or a seq far ahead of the one
//! its last full state had, is refused whole and changes nothing. Every sum
//! saturates instead of wrapping.

use std::{
    collections::{BTreeSet, HashMap},
    time::Instant,
};

use headcount_counter::Topic;

mod limits;
#[cfg(test)]
mod tests;

pub use limits::{MAX_SEQ_AHEAD, PeerLimits, Refusal};

use limits::check_update;

/// Updates above the watermark remembered per node; more than this while a
/// gap is open only costs a few recomputed watermarks, never correctness.
const MAX_APPLIED_ABOVE: usize = 1024;

/// A decoded, validated count update (or digest, when `counts` is empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    /// Origin node name.
    pub name: String,
    /// Origin incarnation.
    pub incarnation: u64,
    /// Sequence number of the latest count-carrying update.
    pub seq: u64,
    /// Sender's gossip round.
    pub round: u64,
    /// Absolute counts that changed in this update.
    pub counts: Vec<(Topic, u64)>,
}

/// A node's published state as of `seq`: whole, or a delta.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullState {
    /// Origin node name.
    pub name: String,
    /// Origin incarnation.
    pub incarnation: u64,
    /// The update this state reflects.
    pub seq: u64,
    /// Whole: every topic with a non-zero count. Delta: every topic set
    /// after `delta_since`, zeros included. Each with the seq that last
    /// changed it.
    pub counts: Vec<(Topic, u64, u64)>,
    /// Some: a delta from this seq on; none: the whole state.
    pub delta_since: Option<u64>,
}

/// What applying an update or a full state did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Counts changed.
    Changed,
    /// Accepted (fresh digest or duplicate-free update) but no count moved.
    Unchanged,
    /// Older than what is known: ignored.
    Stale,
    /// The origin is not a live member at that incarnation: ignored.
    NotMember,
    /// Beyond the peer limits: refused whole, nothing changed.
    Refused(Refusal),
}

/// What the view shows of one remote node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeSummary {
    /// Incarnation whose counts are held.
    pub incarnation: u64,
    /// Sum of the node's counts.
    pub connections: u64,
    /// Topics with a non-zero count on the node.
    pub topics: u64,
    /// When an update or digest of this node was last accepted.
    pub last_heard: Instant,
    /// Whether updates are missing (a pull is due).
    pub gap: bool,
    /// Every update up to this one is reflected: what a pull asks after.
    pub watermark: u64,
}

#[derive(Debug, Clone, Copy)]
struct Versioned {
    count: u64,
    version: u64,
}

#[derive(Debug)]
struct NodeCounts {
    watermark: u64,
    applied_above: BTreeSet<u64>,
    highest_seen: u64,
    /// A full state was applied: seqs are bounded from here on.
    pulled: bool,
    counts: HashMap<Topic, Versioned>,
    connections: u64,
    topics: u64,
    last_heard: Instant,
    /// Its counts are in the sums (see the module doc).
    counted: bool,
    /// Highest round heard from it.
    last_round: u64,
    /// The round it had reached when a newer incarnation of its name came
    /// up; rounds well past it prove it is alive.
    superseded_at_round: Option<u64>,
}

/// Rounds past being superseded after which an older incarnation counts as
/// a live duplicate: more than one, so a single delayed datagram of a
/// crashed predecessor cannot bring it back.
const DUPLICATE_AFTER_ROUNDS: u64 = 2;

/// One incarnation of one remote node.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeKey {
    /// Its name.
    pub name: String,
    /// Its incarnation.
    pub incarnation: u64,
}

impl NodeKey {
    /// The key of `name` at `incarnation`.
    pub fn new(name: &str, incarnation: u64) -> Self {
        Self {
            name: name.to_owned(),
            incarnation,
        }
    }
}

/// Remote nodes' counts and their per-topic sum.
#[derive(Debug, Default)]
pub struct ClusterState {
    nodes: HashMap<NodeKey, NodeCounts>,
    totals: imbl::HashMap<Topic, u64>,
    limits: PeerLimits,
}

impl ClusterState {
    /// An empty state whose peers are held to `limits`.
    pub fn new(limits: PeerLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// A node became a live member. Returns whether it is new (not known at
    /// this incarnation). The newest incarnation of a name is counted; the
    /// counts of older ones leave the sums at once.
    pub fn member_up(&mut self, name: &str, incarnation: u64, now: Instant) -> bool {
        let key = NodeKey::new(name, incarnation);
        if self.nodes.contains_key(&key) {
            return false;
        }
        let newest = !self
            .nodes
            .keys()
            .any(|other| other.name == name && other.incarnation > incarnation);
        if newest {
            let older: Vec<NodeKey> = self
                .nodes
                .iter()
                .filter(|(other, node)| other.name == name && node.counted)
                .map(|(other, _)| other.clone())
                .collect();
            for other in older {
                self.set_counted(&other, false);
                if let Some(node) = self.nodes.get_mut(&other) {
                    node.superseded_at_round = Some(node.last_round);
                }
            }
        }
        let node = NodeCounts {
            watermark: 0,
            applied_above: BTreeSet::new(),
            highest_seen: 0,
            pulled: false,
            counts: HashMap::new(),
            connections: 0,
            topics: 0,
            last_heard: now,
            counted: newest,
            last_round: 0,
            superseded_at_round: (!newest).then_some(0),
        };
        self.nodes.insert(key, node);
        true
    }

    /// Adds `key`'s counts to the sums or takes them out.
    fn set_counted(&mut self, key: &NodeKey, counted: bool) {
        let Some(node) = self.nodes.get_mut(key) else {
            return;
        };
        if node.counted == counted {
            return;
        }
        node.counted = counted;
        for (topic, value) in &node.counts {
            let (old, new) = if counted { (0, value.count) } else { (value.count, 0) };
            adjust(&mut self.totals, topic, old, new);
        }
    }

    /// Whether another incarnation of `key`'s name is alive at the same time
    /// (two nodes share a name).
    pub fn duplicate(&self, key: &NodeKey) -> bool {
        self.nodes.get(key).is_some_and(|node| node.counted)
            && self
                .nodes
                .iter()
                .any(|(other, node)| other.name == key.name && other.incarnation != key.incarnation && node.counted)
    }

    /// A node was declared down or left: its counts leave the sums now.
    /// Returns whether anything was dropped.
    pub fn member_down(&mut self, name: &str, incarnation: u64) -> bool {
        let key = NodeKey::new(name, incarnation);
        if !self.nodes.contains_key(&key) {
            return false;
        }
        self.set_counted(&key, false);
        self.nodes.remove(&key);
        true
    }

    /// Applies an update or digest from a live member.
    pub fn apply_update(&mut self, update: &Update, now: Instant) -> Outcome {
        let key = NodeKey::new(&update.name, update.incarnation);
        let Some(node) = self.nodes.get_mut(&key) else {
            return Outcome::NotMember;
        };
        if let Err(refusal) = check_update(&self.limits, node, update) {
            return Outcome::Refused(refusal);
        }
        node.last_round = node.last_round.max(update.round);
        let proven_alive = node
            .superseded_at_round
            .is_some_and(|at| node.last_round >= at.saturating_add(DUPLICATE_AFTER_ROUNDS));
        let mut changed = false;
        if proven_alive {
            node.superseded_at_round = None;
            self.set_counted(&key, true);
            changed = true;
        }
        let Some(node) = self.nodes.get_mut(&key) else {
            return Outcome::NotMember;
        };
        node.last_heard = now;
        node.highest_seen = node.highest_seen.max(update.seq);
        let outcome = |changed| if changed { Outcome::Changed } else { Outcome::Unchanged };
        if update.counts.is_empty() {
            return outcome(changed);
        }
        if update.seq <= node.watermark || node.applied_above.contains(&update.seq) {
            return if changed { Outcome::Changed } else { Outcome::Stale };
        }
        for (topic, count) in &update.counts {
            changed |= set(node, &mut self.totals, topic, *count, update.seq);
        }
        node.applied_above.insert(update.seq);
        advance(node);
        outcome(changed)
    }

    /// Applies a pulled state, whole or delta. A delta applies only on top
    /// of what it was asked for: from a seq this node already reflects.
    pub fn apply_full_state(&mut self, state: &FullState, now: Instant) -> Outcome {
        let Some(node) = self.nodes.get_mut(&NodeKey::new(&state.name, state.incarnation)) else {
            return Outcome::NotMember;
        };
        if state.seq < node.watermark || state.delta_since.is_some_and(|since| since > node.watermark) {
            return Outcome::Stale;
        }
        let live_topics = state.counts.iter().filter(|(_, count, _)| *count > 0).count();
        if live_topics > self.limits.max_topics {
            return Outcome::Refused(Refusal::TooManyTopics);
        }
        if state.counts.iter().any(|(_, count, _)| *count > self.limits.max_count) {
            return Outcome::Refused(Refusal::CountTooHigh);
        }
        node.last_heard = now;
        // The owner's own state is the truth about its seq: a claim far
        // beyond it came from someone else and must not hold a gap open.
        if node.highest_seen > state.seq.saturating_add(MAX_SEQ_AHEAD) {
            node.highest_seen = state.seq;
        }
        node.highest_seen = node.highest_seen.max(state.seq);
        node.pulled = true;
        let mut changed = false;
        let present: HashMap<&Topic, (u64, u64)> = state
            .counts
            .iter()
            .map(|(topic, count, version)| (topic, (*count, *version)))
            .collect();
        // A whole state says every topic it lacks is 0; a delta only speaks
        // for the topics it holds.
        let absent: Vec<Topic> = match state.delta_since {
            Some(_) => Vec::new(),
            None => node
                .counts
                .iter()
                .filter(|(topic, value)| value.version <= state.seq && !present.contains_key(topic))
                .map(|(topic, _)| topic.clone())
                .collect(),
        };
        for topic in absent {
            changed |= set(node, &mut self.totals, &topic, 0, state.seq);
        }
        for (topic, (count, version)) in present {
            if version > node.watermark && version <= state.seq {
                changed |= set(node, &mut self.totals, topic, count, version);
            }
        }
        node.watermark = state.seq;
        advance(node);
        if changed { Outcome::Changed } else { Outcome::Unchanged }
    }

    /// Nodes that have announced updates this node is missing.
    pub fn gaps(&self) -> impl Iterator<Item = &NodeKey> {
        self.nodes
            .iter()
            .filter(|(_, node)| node.highest_seen > node.watermark)
            .map(|(key, _)| key)
    }

    /// Sum over remote live nodes of their count of `topic`.
    pub fn count(&self, topic: &str) -> u64 {
        self.totals.get(topic).copied().unwrap_or(0)
    }

    /// Per-topic sums over remote live nodes; cheap to clone (shared structure).
    pub fn totals(&self) -> imbl::HashMap<Topic, u64> {
        self.totals.clone()
    }

    /// Number of remote nodes whose counts are included.
    pub fn nodes(&self) -> usize {
        self.nodes.values().filter(|node| node.counted).count()
    }

    /// What is known of one incarnation of a remote node.
    pub fn node(&self, name: &str, incarnation: u64) -> Option<NodeSummary> {
        self.nodes
            .get(&NodeKey::new(name, incarnation))
            .map(|node| NodeSummary {
                incarnation,
                connections: node.connections,
                topics: node.topics,
                last_heard: node.last_heard,
                gap: node.highest_seen > node.watermark,
                watermark: node.watermark,
            })
    }
}

/// Sets one topic of one node if `version` is newer; keeps the node totals
/// and (for a counted node) the cluster sums in step. Returns whether the count moved.
fn set(node: &mut NodeCounts, totals: &mut imbl::HashMap<Topic, u64>, topic: &Topic, count: u64, version: u64) -> bool {
    let old = match node.counts.get(topic) {
        Some(current) if current.version >= version => return false,
        Some(current) => current.count,
        None => 0,
    };
    node.counts.insert(topic.clone(), Versioned { count, version });
    if old == count {
        return false;
    }
    node.connections = node.connections.saturating_sub(old).saturating_add(count);
    match (old, count) {
        (0, _) => node.topics = node.topics.saturating_add(1),
        (_, 0) => node.topics = node.topics.saturating_sub(1),
        _ => {}
    }
    if node.counted {
        adjust(totals, topic, old, count);
    }
    true
}

fn adjust(totals: &mut imbl::HashMap<Topic, u64>, topic: &Topic, old: u64, new: u64) {
    let sum = totals
        .get(topic)
        .copied()
        .unwrap_or(0)
        .saturating_sub(old)
        .saturating_add(new);
    if sum == 0 {
        totals.remove(topic);
    } else {
        totals.insert(topic.clone(), sum);
    }
}

/// Moves the watermark over contiguous applied updates and forgets zero
/// counts at or below it.
fn advance(node: &mut NodeCounts) {
    while node
        .applied_above
        .first()
        .is_some_and(|&seq| seq <= node.watermark.saturating_add(1))
    {
        if let Some(seq) = node.applied_above.pop_first() {
            node.watermark = node.watermark.max(seq);
        }
    }
    while node.applied_above.len() > MAX_APPLIED_ABOVE {
        node.applied_above.pop_first();
    }
    let watermark = node.watermark;
    node.counts
        .retain(|_, value| value.count > 0 || value.version > watermark);
}
