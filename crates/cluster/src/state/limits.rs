//! What a remote node may claim, and the check of an update against it
//! before any of it is applied: counts up to `--max-connections`, topics up
//! to `--max-topics`, and a seq no further than [`MAX_SEQ_AHEAD`] past the
//! node's last full state.

use std::collections::HashSet;

use super::{NodeCounts, Update};

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

/// Checks an update against the limits before anything of it is applied.
pub(super) fn check_update(limits: &PeerLimits, node: &NodeCounts, update: &Update) -> Result<(), Refusal> {
    if node.pulled && update.seq > node.watermark.saturating_add(MAX_SEQ_AHEAD) {
        return Err(Refusal::SeqTooFarAhead);
    }
    let stale = update.seq <= node.watermark || node.applied_above.contains(&update.seq);
    if stale {
        // Nothing of it will be applied: it is reported stale, not refused.
        return Ok(());
    }
    if update.counts.iter().any(|(_, count)| *count > limits.max_count) {
        return Err(Refusal::CountTooHigh);
    }
    // Only the first entry of a topic is applied, so only it counts here.
    let mut seen = HashSet::new();
    let (mut arriving, mut leaving) = (0usize, 0usize);
    for (topic, count) in &update.counts {
        if !seen.insert(topic) {
            continue;
        }
        let held = node.counts.get(topic).is_some_and(|value| value.count > 0);
        match (held, *count > 0) {
            (false, true) => arriving += 1,
            (true, false) => leaving += 1,
            _ => {}
        }
    }
    let after = usize::try_from(node.topics)
        .unwrap_or(usize::MAX)
        .saturating_add(arriving)
        .saturating_sub(leaving);
    if after > limits.max_topics {
        return Err(Refusal::TooManyTopics);
    }
    Ok(())
}
