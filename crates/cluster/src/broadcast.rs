//! Count updates riding foca's custom broadcasts.
//!
//! foca calls [`UpdateHandler::receive_item`] for every broadcast it finds in
//! a packet and for every one this node adds. The handler decodes and
//! validates the update, decides whether it is news (so foca passes it on) and
//! hands news to the gossip task through an inbox. The inbox is shared with
//! the task that owns foca and is only touched from inside that task, so its
//! lock is never contended.
//!
//! A broadcast's key says which older ones it makes pointless: a newer
//! incarnation of a node replaces everything of the older one, and any update
//! replaces older digests of the same node, since its seq says all they said.
//! Count-carrying updates are never replaced by each other: each holds topics
//! the others may not.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use foca::{BroadcastHandler, Invalidates};
use headcount_counter::Topic;
use headcount_proto::cluster::{CountUpdate, NodeRef, TopicCount};
use prost::Message;

use crate::{
    identity::{NodeId, NodeName},
    state::Update,
};

/// Origins remembered for de-duplication; past it the oldest is forgotten,
/// so forged origins cannot grow memory.
const MAX_ORIGINS: usize = 4096;
/// Width of the window of recent seqs remembered per origin.
const SEQ_WINDOW: u64 = 128;

/// Why a broadcast item was refused.
#[derive(Debug, thiserror::Error)]
pub enum BroadcastError {
    /// Not a `CountUpdate`.
    #[error("count update does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    /// Decodes but breaks a rule (name, topic).
    #[error("invalid count update: {0}")]
    Invalid(&'static str),
}

/// Identifies a broadcast for foca's replacement rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateKey {
    origin: String,
    incarnation: u64,
    seq: u64,
    round: u64,
    digest: bool,
}

impl Invalidates for UpdateKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.origin == other.origin
            && (self.incarnation > other.incarnation
                || (self.incarnation == other.incarnation && other.digest && self.round >= other.round))
    }
}

/// What was already seen of one origin.
#[derive(Debug, Clone, Copy)]
struct Seen {
    incarnation: u64,
    round: u64,
    highest_seq: u64,
    /// Bit `i` set: seq `highest_seq - i` was seen.
    window: u128,
    order: u64,
}

impl Seen {
    /// Records `update`; returns whether it is news.
    fn record(&mut self, update: &Update) -> bool {
        if update.incarnation != self.incarnation {
            if update.incarnation < self.incarnation {
                return false;
            }
            *self = Seen {
                incarnation: update.incarnation,
                round: 0,
                highest_seq: 0,
                window: 0,
                order: self.order,
            };
        }
        if update.counts.is_empty() {
            let news = update.round > self.round;
            self.round = self.round.max(update.round);
            return news;
        }
        self.round = self.round.max(update.round);
        if update.seq > self.highest_seq {
            let shift = update.seq - self.highest_seq;
            self.window = if shift >= SEQ_WINDOW { 0 } else { self.window << shift };
            self.window |= 1;
            self.highest_seq = update.seq;
            return true;
        }
        let age = self.highest_seq - update.seq;
        if age >= SEQ_WINDOW || self.window & (1 << age) != 0 {
            return false;
        }
        self.window |= 1 << age;
        true
    }
}

/// foca's broadcast handler for count updates.
pub struct UpdateHandler {
    own_name: String,
    seen: HashMap<String, Seen>,
    next_order: u64,
    inbox: Arc<Mutex<Vec<Update>>>,
}

impl UpdateHandler {
    /// A handler for the node named `own_name`, delivering news to `inbox`.
    pub fn new(own_name: String, inbox: Arc<Mutex<Vec<Update>>>) -> Self {
        Self {
            own_name,
            seen: HashMap::new(),
            next_order: 0,
            inbox,
        }
    }

    fn is_news(&mut self, update: &Update) -> bool {
        if !self.seen.contains_key(&update.name) && self.seen.len() >= MAX_ORIGINS {
            let oldest = self
                .seen
                .iter()
                .min_by_key(|(_, seen)| seen.order)
                .map(|(name, _)| name.clone());
            if let Some(oldest) = oldest {
                self.seen.remove(&oldest);
            }
        }
        self.next_order += 1;
        let order = self.next_order;
        let seen = self.seen.entry(update.name.clone()).or_insert(Seen {
            incarnation: update.incarnation,
            round: 0,
            highest_seq: 0,
            window: 0,
            order,
        });
        seen.order = order;
        seen.record(update)
    }
}

impl BroadcastHandler<NodeId> for UpdateHandler {
    type Key = UpdateKey;
    type Error = BroadcastError;

    fn receive_item(&mut self, data: &[u8], sender: Option<&NodeId>) -> Result<Option<UpdateKey>, BroadcastError> {
        let update = decode_update(data)?;
        let key = UpdateKey {
            origin: update.name.clone(),
            incarnation: update.incarnation,
            seq: update.seq,
            round: update.round,
            digest: update.counts.is_empty(),
        };
        if sender.is_none() {
            // Added by this node: always disseminate.
            return Ok(Some(key));
        }
        if update.name == self.own_name || !self.is_news(&update) {
            return Ok(None);
        }
        let digest = key.digest;
        self.inbox.lock().unwrap_or_else(PoisonError::into_inner).push(update);
        // Digests only refresh liveness and reveal gaps; the origin sends a
        // new one every round, so passing them on would only cost bandwidth.
        Ok((!digest).then_some(key))
    }
}

/// Encodes an update for the wire.
pub fn encode_update(node: NodeRef, seq: u64, round: u64, counts: &[(Topic, u64)]) -> Vec<u8> {
    let counts = counts
        .iter()
        .map(|(topic, count)| TopicCount {
            topic: topic.to_string(),
            count: *count,
            version: 0,
        })
        .collect();
    CountUpdate {
        node: Some(node),
        seq,
        round,
        counts,
    }
    .encode_to_vec()
}

/// Decodes and validates an update from the wire.
pub fn decode_update(data: &[u8]) -> Result<Update, BroadcastError> {
    let wire = CountUpdate::decode(data)?;
    let node = wire.node.ok_or(BroadcastError::Invalid("no origin"))?;
    NodeName::new(&node.name).map_err(|_| BroadcastError::Invalid("invalid node name"))?;
    let counts = wire
        .counts
        .into_iter()
        .map(|entry| Topic::new(&entry.topic).map(|topic| (topic, entry.count)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| BroadcastError::Invalid("invalid topic"))?;
    Ok(Update {
        name: node.name,
        incarnation: node.incarnation,
        seq: wire.seq,
        round: wire.round,
        counts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn topic(name: &str) -> Topic {
        Topic::new(name).expect("valid")
    }

    fn wire(name: &str, incarnation: u64, seq: u64, round: u64, counts: &[(&str, u64)]) -> Vec<u8> {
        let counts: Vec<(Topic, u64)> = counts.iter().map(|(t, c)| (topic(t), *c)).collect();
        encode_update(
            NodeRef {
                name: name.into(),
                incarnation,
            },
            seq,
            round,
            &counts,
        )
    }

    fn handler() -> (UpdateHandler, Arc<Mutex<Vec<Update>>>) {
        let inbox = Arc::new(Mutex::new(Vec::new()));
        (UpdateHandler::new("me".into(), Arc::clone(&inbox)), inbox)
    }

    fn sender() -> NodeId {
        NodeId::seed("127.0.0.1:1".parse().expect("addr"))
    }

    #[test]
    fn news_is_delivered_once_and_passed_on_once() {
        let (mut handler, inbox) = handler();
        let data = wire("b", 1, 1, 1, &[("a", 3)]);
        assert!(handler.receive_item(&data, Some(&sender())).expect("valid").is_some());
        assert!(handler.receive_item(&data, Some(&sender())).expect("valid").is_none());
        let delivered = inbox.lock().expect("lock").clone();
        assert_eq!(delivered.len(), 1);
        assert_eq!(delivered[0].counts, vec![(topic("a"), 3)]);
    }

    #[test]
    fn out_of_order_seqs_are_news_digests_only_when_newer() {
        let (mut handler, inbox) = handler();
        for seq in [3, 1, 2, 3, 1] {
            handler
                .receive_item(&wire("b", 1, seq, seq, &[("a", seq)]), Some(&sender()))
                .expect("valid");
        }
        assert_eq!(inbox.lock().expect("lock").len(), 3);
        for round in [9, 9, 8] {
            let passed_on = handler
                .receive_item(&wire("b", 1, 3, round, &[]), Some(&sender()))
                .expect("valid");
            assert!(passed_on.is_none(), "digests are delivered, never passed on");
        }
        assert_eq!(
            inbox.lock().expect("lock").len(),
            4,
            "only the newer digest is delivered"
        );
    }

    #[test]
    fn own_and_older_incarnation_updates_are_not_news() {
        let (mut handler, inbox) = handler();
        assert!(
            handler
                .receive_item(&wire("me", 1, 1, 1, &[("a", 1)]), Some(&sender()))
                .expect("valid")
                .is_none()
        );
        handler
            .receive_item(&wire("b", 5, 1, 1, &[("a", 1)]), Some(&sender()))
            .expect("valid");
        assert!(
            handler
                .receive_item(&wire("b", 4, 2, 2, &[("a", 1)]), Some(&sender()))
                .expect("valid")
                .is_none()
        );
        assert_eq!(inbox.lock().expect("lock").len(), 1);
    }

    #[test]
    fn invalid_items_are_errors() {
        let (mut handler, _) = handler();
        assert!(handler.receive_item(&[0xff, 0xff, 0xff], Some(&sender())).is_err());
        assert!(handler.receive_item(&wire("", 1, 1, 1, &[]), Some(&sender())).is_err());
        let bad_topic = CountUpdate {
            node: Some(NodeRef {
                name: "b".into(),
                incarnation: 1,
            }),
            seq: 1,
            round: 1,
            counts: vec![TopicCount {
                topic: "a\nb".into(),
                count: 1,
                version: 0,
            }],
        };
        assert!(
            handler
                .receive_item(&bad_topic.encode_to_vec(), Some(&sender()))
                .is_err()
        );
    }

    #[test]
    fn forged_origins_do_not_grow_memory_without_bound() {
        let (mut handler, _) = handler();
        for i in 0..(MAX_ORIGINS + 500) {
            handler
                .receive_item(&wire(&format!("n{i}"), 1, 1, 1, &[]), Some(&sender()))
                .expect("valid");
        }
        assert_eq!(handler.seen.len(), MAX_ORIGINS);
    }

    #[test]
    fn keys_replace_older_digests_and_older_incarnations_only() {
        let key = |incarnation, seq, round, digest| UpdateKey {
            origin: "b".into(),
            incarnation,
            seq,
            round,
            digest,
        };
        assert!(key(1, 5, 5, false).invalidates(&key(1, 4, 4, true)));
        assert!(key(1, 5, 6, true).invalidates(&key(1, 5, 5, true)));
        assert!(!key(1, 5, 5, false).invalidates(&key(1, 4, 4, false)));
        assert!(!key(1, 5, 4, true).invalidates(&key(1, 5, 5, true)));
        assert!(key(2, 1, 1, true).invalidates(&key(1, 9, 9, false)));
        let other = UpdateKey {
            origin: "c".into(),
            ..key(1, 1, 1, true)
        };
        assert!(!key(2, 9, 9, false).invalidates(&other));
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1400)) {
            let (mut handler, _) = handler();
            let _ = handler.receive_item(&bytes, Some(&sender()));
        }

        #[test]
        fn updates_round_trip(seq in any::<u64>(), round in any::<u64>(), count in any::<u64>(), name in "[a-z]{1,64}") {
            let data = wire(&name, 7, seq, round, &[("x/y", count)]);
            let update = decode_update(&data).expect("decodes");
            prop_assert_eq!(update, Update { name, incarnation: 7, seq, round, counts: vec![(topic("x/y"), count)] });
        }
    }
}
