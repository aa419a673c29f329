//! This node's own counts as the cluster has been told them: what each
//! round's changes turn into on the wire, and the full state a puller gets.
//!
//! Every count-carrying update takes the next `seq`; a topic's version is the
//! seq that last set it, so a pulled state fits the receivers' merge rules
//! exactly. A round too big to broadcast is recorded under one seq and only
//! announced, so peers repair it by pulling.

use std::collections::HashMap;

use headcount_counter::Topic;
use headcount_proto::cluster::{NodeState, TopicCount};

use crate::{broadcast::encode_update, identity::NodeId};

/// Budget for one count update, leaving room in a packet for foca's header
/// and membership updates.
const MAX_UPDATE_BYTES: usize = 900;
/// Above this many updates in one round, peers repair by pulling instead.
const MAX_UPDATES_PER_ROUND: usize = 16;

/// This node's own counts as published to the cluster.
#[derive(Default)]
pub(crate) struct Published {
    seq: u64,
    round: u64,
    counts: HashMap<Topic, (u64, u64)>,
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
        if count == 0 {
            self.counts.remove(&topic);
        } else {
            self.counts.insert(topic, (count, self.seq));
        }
    }

    pub(crate) fn full_state(&self, identity: &NodeId) -> NodeState {
        let counts = self
            .counts
            .iter()
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
        assert_eq!(published.counts.len(), 199, "count 0 is not published");
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
        let state = published.full_state(&node);
        assert_eq!((state.seq, state.counts.len()), (1, 5_000));
    }
}
