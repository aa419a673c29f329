//! This node's own counts as the cluster has been told them: what each
//! round's changes turn into on the wire, and the full state a puller gets.
//!
//! Every count-carrying update takes the next `seq`; a topic's version is the
//! seq that last set it, so a pulled state fits the receivers' merge rules
//! exactly. A round too big to broadcast is recorded under one seq and only
//! announced, so peers repair it by pulling.
//!
//! A puller that holds every update up to some seq gets a *delta*: the
//! topics set after it. For that, a topic that drops to 0 stays as a
//! tombstone (count 0, its version) so the delta can say so. Tombstones are
//! bounded: past [`MAX_TOMBSTONES`] they are all forgotten at once and the
//! *floor* rises to the current seq; a puller behind the floor gets the
//! whole state instead.

use std::collections::HashMap;

use headcount_counter::Topic;
use headcount_proto::cluster::{NodeState, TopicCount};

use crate::{broadcast::encode_update, identity::NodeId};

/// Budget for one count update, leaving room in a packet for foca's header
/// and membership updates.
const MAX_UPDATE_BYTES: usize = 900;
/// Above this many updates in one round, peers repair by pulling instead.
const MAX_UPDATES_PER_ROUND: usize = 16;
/// Topics at 0 remembered for deltas; past this they are all forgotten.
pub(crate) const MAX_TOMBSTONES: usize = 65_536;

/// This node's own counts as published to the cluster.
#[derive(Default)]
pub(crate) struct Published {
    seq: u64,
    round: u64,
    /// Every topic with its count (0: a tombstone) and version.
    counts: HashMap<Topic, (u64, u64)>,
    tombstones: usize,
    /// Deltas can be answered for a puller at this seq or above.
    floor: u64,
}

impl Published {
    /// The number of the last round published.
    pub(crate) fn round(&self) -> u64 {
        self.round
    }

    /// Turns one round's changes into encoded updates, recording them. A
    /// quiet round gives a digest when `digest_due`, else nothing.
    pub(crate) fn next_round(
        &mut self,
        identity: &NodeId,
        changed: Vec<(Topic, u64)>,
        digest_due: bool,
    ) -> Vec<Vec<u8>> {
        self.round += 1;
        let node = identity.node_ref();
        if changed.is_empty() {
            return if digest_due {
                vec![encode_update(node, self.seq, self.round, &[])]
            } else {
                Vec::new()
            };
        }
        let chunks = chunk(changed);
        if chunks.len() > MAX_UPDATES_PER_ROUND {
            // Too much for broadcasts: record it under one seq and announce
            // that seq in a digest; peers see the gap and pull.
            self.seq += 1;
            for (topic, count) in chunks.into_iter().flatten() {
                self.record(topic, count);
            }
            return vec![encode_update(node, self.seq, self.round, &[])];
        }
        chunks
            .into_iter()
            .map(|chunk| {
                self.seq += 1;
                let encoded = encode_update(node.clone(), self.seq, self.round, &chunk);
                for (topic, count) in chunk {
                    self.record(topic, count);
                }
                encoded
            })
            .collect()
    }

    fn record(&mut self, topic: Topic, count: u64) {
        let was_tombstone = self.counts.get(&topic).is_some_and(|(old, _)| *old == 0);
        if count == 0 && !self.counts.contains_key(&topic) {
            return;
        }
        self.counts.insert(topic, (count, self.seq));
        match (was_tombstone, count == 0) {
            (false, true) => self.tombstones += 1,
            (true, false) => self.tombstones -= 1,
            _ => {}
        }
        if self.tombstones > MAX_TOMBSTONES {
            self.counts.retain(|_, (count, _)| *count > 0);
            self.tombstones = 0;
            self.floor = self.seq;
        }
    }

    /// The state a puller holding every update up to `since` needs: the
    /// topics set after it (a delta), or the whole state when `since` is
    /// below the floor (or 0: the puller holds nothing).
    pub(crate) fn state_for(&self, identity: &NodeId, since: u64) -> NodeState {
        let delta = since > 0 && since >= self.floor;
        let counts = self
            .counts
            .iter()
            .filter(|(_, (count, version))| if delta { *version > since } else { *count > 0 })
            .map(|(topic, (count, version))| TopicCount {
                topic: topic.to_string(),
                count: *count,
                version: *version,
            })
            .collect();
        NodeState {
            node: Some(identity.node_ref()),
            seq: self.seq,
            counts,
            delta,
            since: if delta { since } else { 0 },
        }
    }
}

/// Splits changes into groups that each encode within [`MAX_UPDATE_BYTES`].
fn chunk(changed: Vec<(Topic, u64)>) -> Vec<Vec<(Topic, u64)>> {
    let mut chunks = vec![Vec::new()];
    let mut size = 0;
    for (topic, count) in changed {
        // tag + length + topic + tag + varint count + message framing
        let entry = topic.len() + 16;
        if size + entry > MAX_UPDATE_BYTES && size > 0 {
            chunks.push(Vec::new());
            size = 0;
        }
        size += entry;
        if let Some(last) = chunks.last_mut() {
            last.push((topic, count));
        }
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{broadcast::decode_update, identity::NodeName};

    fn topic(name: &str) -> Topic {
        Topic::new(name).expect("valid")
    }

    fn identity() -> NodeId {
        NodeId::starting_now(
            &NodeName::new("a").expect("valid"),
            "127.0.0.1:7946".parse().expect("addr"),
            9090,
        )
    }

    #[test]
    fn a_quiet_round_is_one_digest_at_the_current_seq() {
        let mut published = Published::default();
        let node = identity();
        let first = published.next_round(&node, vec![(topic("x"), 2)], true);
        let quiet = published.next_round(&node, Vec::new(), true);
        assert!(
            published.next_round(&node, Vec::new(), false).is_empty(),
            "no digest when none is due"
        );
        assert_eq!(first.len(), 1);
        let digest = decode_update(&quiet[0]).expect("decodes");
        assert_eq!((digest.seq, digest.round, digest.counts.len()), (1, 2, 0));
    }

    #[test]
    fn a_big_round_splits_into_updates_that_fit_a_packet() {
        let mut published = Published::default();
        let node = identity();
        let changed: Vec<_> = (0..200)
            .map(|i| (topic(&format!("/a/fairly/long/page/path/{i:04}")), i))
            .collect();
        let updates = published.next_round(&node, changed, false);
        assert!(updates.len() > 1 && updates.len() <= MAX_UPDATES_PER_ROUND);
        assert!(
            updates.iter().all(|u| u.len() <= MAX_UPDATE_BYTES + 64),
            "sizes {:?}",
            updates.iter().map(Vec::len).collect::<Vec<_>>()
        );
        let seqs: Vec<u64> = updates.iter().map(|u| decode_update(u).expect("decodes").seq).collect();
        assert_eq!(seqs, (1..=updates.len() as u64).collect::<Vec<_>>());
        let state = published.state_for(&node, 0);
        assert_eq!(state.counts.len(), 199, "count 0 is not published");
    }

    #[test]
    fn an_oversized_round_is_announced_as_a_gap_for_peers_to_pull() {
        let mut published = Published::default();
        let node = identity();
        let changed: Vec<_> = (0..5_000).map(|i| (topic(&format!("/page/{i}")), 1)).collect();
        let updates = published.next_round(&node, changed, false);
        assert_eq!(updates.len(), 1);
        let digest = decode_update(&updates[0]).expect("decodes");
        assert_eq!((digest.seq, digest.counts.len()), (1, 0));
        let state = published.state_for(&node, 0);
        assert_eq!((state.seq, state.counts.len(), state.delta), (1, 5_000, false));
    }

    fn counts_of(state: &NodeState) -> Vec<(String, u64, u64)> {
        let mut counts: Vec<_> = state
            .counts
            .iter()
            .map(|count| (count.topic.clone(), count.count, count.version))
            .collect();
        counts.sort();
        counts
    }

    #[test]
    fn a_delta_holds_what_changed_since_including_drops_to_zero() {
        let mut published = Published::default();
        let node = identity();
        published.next_round(&node, vec![(topic("a"), 1), (topic("b"), 2)], false);
        published.next_round(&node, vec![(topic("c"), 3)], false);
        published.next_round(&node, vec![(topic("a"), 0), (topic("b"), 5)], false);
        let delta = published.state_for(&node, 2);
        assert!(delta.delta);
        assert_eq!((delta.seq, delta.since), (3, 2));
        assert_eq!(
            counts_of(&delta),
            [("a".into(), 0, 3), ("b".into(), 5, 3)],
            "only seq 3, and a's drop to 0"
        );
        let full = published.state_for(&node, 0);
        assert!(!full.delta);
        assert_eq!(
            counts_of(&full),
            [("b".into(), 5, 3), ("c".into(), 3, 2)],
            "no tombstones"
        );
        assert!(published.state_for(&node, 3).counts.is_empty(), "nothing new");
    }

    #[test]
    fn past_the_tombstone_bound_old_pullers_get_the_whole_state() {
        let mut published = Published::default();
        let node = identity();
        let topics: Vec<Topic> = (0..=MAX_TOMBSTONES).map(|i| topic(&format!("t{i}"))).collect();
        published.next_round(&node, topics.iter().map(|t| (t.clone(), 1)).collect(), false);
        let before = published.seq;
        published.next_round(&node, vec![(topic("live"), 1)], false);
        published.next_round(&node, topics.iter().map(|t| (t.clone(), 0)).collect(), false);
        assert_eq!(published.counts.len(), 1, "tombstones forgotten, the live topic kept");
        let behind = published.state_for(&node, before);
        assert!(!behind.delta, "a delta could not say which topics dropped");
        assert_eq!(counts_of(&behind), [("live".into(), 1, before + 1)]);
        assert!(published.state_for(&node, published.seq).delta);
    }
}
