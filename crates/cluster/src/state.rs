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
//! which full-state repair closes.
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

/// Updates above the watermark remembered per node; more than this while a
/// gap is open only costs a few recomputed watermarks, never correctness.
const MAX_APPLIED_ABOVE: usize = 1024;
/// Once a node's full state is known, a seq further than this above it is
/// refused: an honest node sends at most 17 seqs a round, so this is more
/// than an hour of bursts, and a forged seq cannot open a gap that never
/// closes.
pub const MAX_SEQ_AHEAD: u64 = 65_536;

/// What one remote node may claim: the contract's bounds of a node
/// (`--max-connections`, `--max-topics`), applied to peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerLimits {
    /// Highest count of one topic on one node.
    pub max_count: u64,
    /// Most topics with a non-zero count on one node.
    pub max_topics: usize,
}

impl Default for PeerLimits {
    fn default() -> Self {
        Self {
            max_count: 1_000_000,
            max_topics: 100_000,
        }
    }
}

impl PeerLimits {
    /// Largest encoded full state of a node within these limits.
    pub fn max_state_bytes(&self) -> usize {
        // Per topic: up to 256 bytes of name, two varints, framing.
        self.max_topics.saturating_mul(256 + 32).saturating_add(4096)
    }
}

/// Why a claim of a peer was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A count above [`PeerLimits::max_count`].
    CountTooHigh,
    /// More topics on one node than [`PeerLimits::max_topics`].
    TooManyTopics,
    /// A seq more than [`MAX_SEQ_AHEAD`] above what the node's state had.
    SeqTooFarAhead,
}

impl Refusal {
    /// The reason label in `/metrics`.
    pub fn label(self) -> &'static str {
        match self {
            Self::CountTooHigh => "count_too_high",
            Self::TooManyTopics => "too_many_topics",
            Self::SeqTooFarAhead => "seq_too_far_ahead",
        }
    }
}

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

/// A node's whole published state as of `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FullState {
    /// Origin node name.
    pub name: String,
    /// Origin incarnation.
    pub incarnation: u64,
    /// The update this state reflects.
    pub seq: u64,
    /// Every topic with a non-zero count, with the seq that last changed it.
    pub counts: Vec<(Topic, u64, u64)>,
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
    /// Whether updates are missing (a full-state pull is due).
    pub gap: bool,
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

    /// A node became a live member. Returns true when its counts must be
    /// pulled (it is new). The newest incarnation of a name is counted; the
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

    /// Applies a pulled full state.
    pub fn apply_full_state(&mut self, state: &FullState, now: Instant) -> Outcome {
        let Some(node) = self.nodes.get_mut(&NodeKey::new(&state.name, state.incarnation)) else {
            return Outcome::NotMember;
        };
        if state.seq < node.watermark {
            return Outcome::Stale;
        }
        if state.counts.len() > self.limits.max_topics {
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
        let absent: Vec<Topic> = node
            .counts
            .iter()
            .filter(|(topic, value)| value.version <= state.seq && !present.contains_key(topic))
            .map(|(topic, _)| topic.clone())
            .collect();
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
            })
    }
}

/// Checks an update against the limits before anything of it is applied.
fn check_update(limits: &PeerLimits, node: &NodeCounts, update: &Update) -> Result<(), Refusal> {
    if node.pulled && update.seq > node.watermark.saturating_add(MAX_SEQ_AHEAD) {
        return Err(Refusal::SeqTooFarAhead);
    }
    if update.counts.iter().any(|(_, count)| *count > limits.max_count) {
        return Err(Refusal::CountTooHigh);
    }
    let held = |topic: &Topic| node.counts.get(topic).is_some_and(|value| value.count > 0);
    let arriving = update
        .counts
        .iter()
        .filter(|(topic, count)| *count > 0 && !held(topic))
        .count();
    let leaving = update
        .counts
        .iter()
        .filter(|(topic, count)| *count == 0 && held(topic))
        .count();
    let after = usize::try_from(node.topics)
        .unwrap_or(usize::MAX)
        .saturating_add(arriving)
        .saturating_sub(leaving);
    if after > limits.max_topics {
        return Err(Refusal::TooManyTopics);
    }
    Ok(())
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
    while node.applied_above.first().is_some_and(|&seq| seq <= node.watermark + 1) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn topic(name: &str) -> Topic {
        Topic::new(name).expect("valid")
    }

    fn update(seq: u64, counts: &[(&str, u64)]) -> Update {
        Update {
            name: "b".into(),
            incarnation: 1,
            seq,
            round: seq,
            counts: counts.iter().map(|(t, c)| (topic(t), *c)).collect(),
        }
    }

    fn live() -> (ClusterState, Instant) {
        let now = Instant::now();
        let mut state = ClusterState::default();
        assert!(state.member_up("b", 1, now));
        (state, now)
    }

    fn full(seq: u64, counts: &[(&str, u64, u64)]) -> FullState {
        FullState {
            name: "b".into(),
            incarnation: 1,
            seq,
            counts: counts.iter().map(|(t, c, v)| (topic(t), *c, *v)).collect(),
        }
    }

    fn limited(max_count: u64, max_topics: usize) -> (ClusterState, Instant) {
        let now = Instant::now();
        let mut state = ClusterState::new(PeerLimits { max_count, max_topics });
        assert!(state.member_up("b", 1, now));
        (state, now)
    }

    #[test]
    fn a_count_above_the_limit_is_refused_whole() {
        let (mut state, now) = limited(10, 100);
        let lie = update(1, &[("a", 3), ("b", 11)]);
        assert_eq!(state.apply_update(&lie, now), Outcome::Refused(Refusal::CountTooHigh));
        assert_eq!((state.count("a"), state.count("b")), (0, 0));
        assert!(
            !state.node("b", 1).expect("member").gap,
            "a refused update announces nothing"
        );
        let lie = full(1, &[("a", u64::MAX, 1)]);
        assert_eq!(
            state.apply_full_state(&lie, now),
            Outcome::Refused(Refusal::CountTooHigh)
        );
        assert_eq!(state.count("a"), 0);
    }

    #[test]
    fn more_topics_than_the_limit_are_refused_whole() {
        let (mut state, now) = limited(10, 2);
        assert_eq!(
            state.apply_update(&update(1, &[("a", 1), ("b", 1)]), now),
            Outcome::Changed
        );
        assert_eq!(
            state.apply_update(&update(2, &[("a", 2), ("c", 1)]), now),
            Outcome::Refused(Refusal::TooManyTopics)
        );
        assert_eq!((state.count("a"), state.count("c")), (1, 0));
        assert_eq!(
            state.apply_update(&update(2, &[("a", 0), ("c", 1)]), now),
            Outcome::Changed,
            "a topic that leaves makes room"
        );
        let lie = full(3, &[("a", 1, 1), ("b", 1, 1), ("c", 1, 3)]);
        assert_eq!(
            state.apply_full_state(&lie, now),
            Outcome::Refused(Refusal::TooManyTopics)
        );
    }

    #[test]
    fn a_forged_seq_far_ahead_neither_pins_a_topic_nor_holds_a_gap_open() {
        let (mut state, now) = live();
        // Before the owner's state is known, a forged digest opens a gap...
        let forged = update(1 << 62, &[]);
        assert_eq!(state.apply_update(&forged, now), Outcome::Unchanged);
        assert!(state.node("b", 1).expect("member").gap);
        // ...which the owner's full state closes for good.
        assert_eq!(state.apply_full_state(&full(3, &[("t", 1, 3)]), now), Outcome::Changed);
        assert!(!state.node("b", 1).expect("member").gap);
        let pin = update(1 << 62, &[("t", 999)]);
        assert_eq!(state.apply_update(&pin, now), Outcome::Refused(Refusal::SeqTooFarAhead));
        assert_eq!(state.count("t"), 1);
        assert!(!state.node("b", 1).expect("member").gap);
        assert_eq!(state.apply_update(&update(4, &[("t", 0)]), now), Outcome::Changed);
        assert_eq!(state.count("t"), 0, "the owner's next update still applies");
    }

    #[test]
    fn sums_saturate_instead_of_wrapping() {
        let now = Instant::now();
        let mut state = ClusterState::new(PeerLimits {
            max_count: u64::MAX,
            max_topics: 10,
        });
        for name in ["b", "c"] {
            assert!(state.member_up(name, 1, now));
            let mut big = update(1, &[("t", u64::MAX - 1)]);
            big.name = name.into();
            state.apply_update(&big, now);
        }
        assert_eq!(state.count("t"), u64::MAX);
    }

    #[test]
    fn updates_from_non_members_change_nothing() {
        let mut state = ClusterState::default();
        assert_eq!(
            state.apply_update(&update(1, &[("a", 5)]), Instant::now()),
            Outcome::NotMember
        );
        assert_eq!(state.count("a"), 0);
    }

    #[test]
    fn in_order_updates_set_absolute_counts() {
        let (mut state, now) = live();
        assert_eq!(
            state.apply_update(&update(1, &[("a", 5), ("b", 1)]), now),
            Outcome::Changed
        );
        assert_eq!(state.apply_update(&update(2, &[("a", 3)]), now), Outcome::Changed);
        assert_eq!((state.count("a"), state.count("b")), (3, 1));
        let node = state.node("b", 1).expect("known");
        assert_eq!((node.connections, node.topics, node.gap), (4, 2, false));
    }

    #[test]
    fn stale_and_duplicate_updates_change_nothing() {
        let (mut state, now) = live();
        state.apply_update(&update(1, &[("a", 5)]), now);
        state.apply_update(&update(2, &[("a", 7)]), now);
        assert_eq!(state.apply_update(&update(1, &[("a", 5)]), now), Outcome::Stale);
        assert_eq!(state.apply_update(&update(2, &[("a", 7)]), now), Outcome::Stale);
        assert_eq!(state.count("a"), 7);
    }

    #[test]
    fn a_digest_ahead_of_the_watermark_opens_a_gap_and_full_state_closes_it() {
        let (mut state, now) = live();
        state.apply_update(&update(1, &[("a", 5)]), now);
        assert_eq!(state.apply_update(&update(4, &[]), now), Outcome::Unchanged);
        assert_eq!(state.gaps().collect::<Vec<_>>(), vec![&NodeKey::new("b", 1)]);
        let full = FullState {
            name: "b".into(),
            incarnation: 1,
            seq: 4,
            counts: vec![(topic("c"), 2, 3)],
        };
        assert_eq!(state.apply_full_state(&full, now), Outcome::Changed);
        assert_eq!(
            (state.count("a"), state.count("c")),
            (0, 2),
            "a is absent at seq 4, so zero"
        );
        assert_eq!(state.gaps().count(), 0);
        assert_eq!(state.apply_update(&update(3, &[("a", 9)]), now), Outcome::Stale);
    }

    #[test]
    fn an_old_full_state_does_not_undo_newer_updates() {
        let (mut state, now) = live();
        state.apply_update(&update(1, &[("a", 5)]), now);
        state.apply_update(&update(3, &[("a", 8), ("z", 1)]), now);
        let full = FullState {
            name: "b".into(),
            incarnation: 1,
            seq: 2,
            counts: vec![(topic("a"), 6, 2)],
        };
        state.apply_full_state(&full, now);
        assert_eq!((state.count("a"), state.count("z")), (8, 1));
        assert_eq!(state.gaps().count(), 0, "1, 2 (full state) and 3 are contiguous");
    }

    #[test]
    fn member_down_drops_the_nodes_share_only() {
        let now = Instant::now();
        let mut state = ClusterState::default();
        state.member_up("b", 1, now);
        state.member_up("c", 1, now);
        state.apply_update(&update(1, &[("a", 5)]), now);
        state.apply_update(
            &Update {
                name: "c".into(),
                ..update(1, &[("a", 2)])
            },
            now,
        );
        assert_eq!(state.count("a"), 7);
        assert!(state.member_down("b", 1));
        assert_eq!(state.count("a"), 2);
        assert_eq!(state.apply_update(&update(2, &[("a", 9)]), now), Outcome::NotMember);
    }

    #[test]
    fn a_new_incarnation_replaces_the_old_counts_at_once() {
        let (mut state, now) = live();
        state.apply_update(&update(1, &[("a", 5)]), now);
        assert!(state.member_up("b", 2, now), "new incarnation must be pulled");
        assert_eq!(state.count("a"), 0);
        assert!(
            !state.member_up("b", 1, now),
            "an incarnation already known is not pulled again"
        );
        let mut newer = update(1, &[("a", 2)]);
        newer.incarnation = 2;
        assert_eq!(state.apply_update(&newer, now), Outcome::Changed);
        state.member_down("b", 1);
        assert_eq!(state.count("a"), 2, "down of the old incarnation keeps the new one");
        assert_eq!(state.apply_update(&update(2, &[("a", 5)]), now), Outcome::NotMember);
        assert_eq!(state.nodes(), 1);
    }

    fn from(incarnation: u64, seq: u64, round: u64, counts: &[(&str, u64)]) -> Update {
        Update {
            incarnation,
            round,
            ..update(seq, counts)
        }
    }

    #[test]
    fn two_live_nodes_with_one_name_are_both_counted() {
        let (mut state, now) = live();
        assert_eq!(state.apply_update(&from(1, 1, 10, &[("a", 5)]), now), Outcome::Changed);
        assert!(state.member_up("b", 2, now));
        assert_eq!(state.apply_update(&from(2, 1, 1, &[("a", 3)]), now), Outcome::Changed);
        assert_eq!(state.count("a"), 3, "the older one is out at once, as after a restart");
        // A datagram the older one sent before it was superseded changes nothing.
        state.apply_update(&from(1, 1, 11, &[]), now);
        assert_eq!(state.count("a"), 3);
        assert!(!state.duplicate(&NodeKey::new("b", 1)));
        // But rounds well past that prove it is alive: a second node.
        assert_eq!(state.apply_update(&from(1, 1, 12, &[]), now), Outcome::Changed);
        assert_eq!(state.count("a"), 8, "both nodes' visitors are counted");
        assert!(state.duplicate(&NodeKey::new("b", 1)) && state.duplicate(&NodeKey::new("b", 2)));
        assert_eq!(state.nodes(), 2);
        state.member_down("b", 2);
        assert_eq!(state.count("a"), 5);
    }

    /// One node's history: each step sets some topics; returns the updates
    /// and the true final counts.
    fn history() -> impl Strategy<Value = (Vec<Update>, HashMap<Topic, u64>)> {
        proptest::collection::vec(proptest::collection::vec((0u8..5, 0u64..4), 1..4), 1..12).prop_map(|steps| {
            let mut truth = HashMap::new();
            let updates = steps
                .into_iter()
                .enumerate()
                .map(|(i, sets)| {
                    let counts: Vec<(Topic, u64)> = sets
                        .into_iter()
                        .map(|(t, c)| (topic(&format!("t{t}")), c))
                        .collect::<HashMap<_, _>>()
                        .into_iter()
                        .collect();
                    for (t, c) in &counts {
                        truth.insert(t.clone(), *c);
                    }
                    update(
                        i as u64 + 1,
                        &counts.iter().map(|(t, c)| (t.as_str(), *c)).collect::<Vec<_>>(),
                    )
                })
                .collect();
            truth.retain(|_, c| *c > 0);
            (updates, truth)
        })
    }

    fn totals_of(state: &ClusterState) -> HashMap<Topic, u64> {
        state.totals().into_iter().collect()
    }

    proptest! {
        #[test]
        fn any_order_and_duplication_gives_the_same_view(
            (updates, truth) in history(),
            order in proptest::collection::vec(any::<prop::sample::Index>(), 0..40),
        ) {
            let (mut state, now) = live();
            // Random picks (with repeats) first, then everything once in
            // reverse: every update arrives at least once, in a scrambled order.
            for pick in &order {
                state.apply_update(&updates[pick.index(updates.len())], now);
            }
            for u in updates.iter().rev() {
                state.apply_update(u, now);
            }
            prop_assert_eq!(totals_of(&state), truth);
            prop_assert_eq!(state.gaps().count(), 0);
        }

        #[test]
        fn a_full_state_at_any_point_converges_to_the_same_view(
            (updates, truth) in history(),
            cut in any::<prop::sample::Index>(),
            skip in any::<prop::sample::Index>(),
        ) {
            // The full state as of update `cut`, built from the history.
            let cut = cut.index(updates.len()) + 1;
            let mut at_cut: HashMap<Topic, (u64, u64)> = HashMap::new();
            for u in &updates[..cut] {
                for (t, c) in &u.counts {
                    at_cut.insert(t.clone(), (*c, u.seq));
                }
            }
            let full = FullState {
                name: "b".into(),
                incarnation: 1,
                seq: cut as u64,
                counts: at_cut.into_iter().filter(|(_, (c, _))| *c > 0).map(|(t, (c, v))| (t, c, v)).collect(),
            };
            let (mut state, now) = live();
            let skipped = skip.index(updates.len());
            for (i, u) in updates.iter().enumerate() {
                if i != skipped {
                    state.apply_update(u, now);
                }
            }
            state.apply_full_state(&full, now);
            // A lost update after the cut is still missing; deliver it late.
            state.apply_update(&updates[skipped], now);
            prop_assert_eq!(totals_of(&state), truth);
        }

        #[test]
        fn stale_updates_change_nothing((updates, truth) in history()) {
            let (mut state, now) = live();
            for u in &updates {
                state.apply_update(u, now);
            }
            for u in &updates {
                prop_assert_eq!(state.apply_update(u, now), Outcome::Stale);
            }
            prop_assert_eq!(totals_of(&state), truth);
        }
    }
}
