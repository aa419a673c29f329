//! Count updates on the wire, and who may send them.
//!
//! Every round a node sends its own updates (and digests) straight to every
//! member, as `Kind::Counts` datagrams; nobody passes on another node's
//! counts. So a receiver accepts an update only from the host of the member
//! that owns it ([`check_origin`]: the datagram's source IP must be the IP of
//! the member's gossip address; the port may differ, as behind a relay): a
//! peer holding the secret cannot speak for a node on another host without
//! also forging that host's source address.
//! The decoder validates every name and topic; nothing here panics on input.

use headcount_counter::Topic;
use headcount_proto::cluster::{CountUpdate, NodeRef, TopicCount};
use prost::Message;
use std::net::SocketAddr;

use crate::{
    identity::{NodeId, NodeName},
    state::Update,
};

/// Why a count update was refused.
#[derive(Debug, thiserror::Error)]
pub enum BroadcastError {
    /// Not a `CountUpdate`.
    #[error("count update does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    /// Decodes but breaks a rule (name, topic).
    #[error("invalid count update: {0}")]
    Invalid(&'static str),
    /// Sent from another address than its origin's.
    #[error("count update from {from}, not from its origin {origin}")]
    NotFromOrigin {
        /// Where the datagram came from.
        from: SocketAddr,
        /// The gossip address of the member that owns the counts.
        origin: SocketAddr,
    },
}

/// Checks that `update` came from the member that owns it: `members` are
/// the live members; an origin that is not one of them is left to the merge
/// rules (which ignore it).
pub fn check_origin<'a>(
    update: &Update,
    from: SocketAddr,
    mut members: impl Iterator<Item = &'a NodeId>,
) -> Result<(), BroadcastError> {
    match members.find(|id| id.name == update.name && id.incarnation == update.incarnation) {
        Some(origin) if origin.gossip.ip() != from.ip() => Err(BroadcastError::NotFromOrigin {
            from,
            origin: origin.gossip,
        }),
        _ => Ok(()),
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

    #[test]
    fn invalid_updates_are_errors() {
        assert!(decode_update(&[0xff, 0xff, 0xff]).is_err());
        assert!(decode_update(&wire("", 1, 1, 1, &[])).is_err());
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
        assert!(decode_update(&bad_topic.encode_to_vec()).is_err());
    }

    #[test]
    fn only_the_owner_may_send_its_counts() {
        let name = NodeName::new("a").expect("valid");
        let a = NodeId::starting_now(&name, "10.0.0.1:7946".parse().expect("addr"), 9090);
        let update = decode_update(&wire("a", a.incarnation, 1, 1, &[("t", 3)])).expect("decodes");
        let members = || std::iter::once(&a);
        assert!(check_origin(&update, a.gossip, members()).is_ok());
        let relayed: SocketAddr = "10.0.0.1:40000".parse().expect("addr");
        assert!(
            check_origin(&update, relayed, members()).is_ok(),
            "same host, another port"
        );
        let liar: SocketAddr = "10.0.0.66:7946".parse().expect("addr");
        assert!(matches!(
            check_origin(&update, liar, members()),
            Err(BroadcastError::NotFromOrigin { .. })
        ));
        let stranger = decode_update(&wire("z", 1, 1, 1, &[("t", 3)])).expect("decodes");
        assert!(
            check_origin(&stranger, liar, members()).is_ok(),
            "not a member: the merge rules ignore it"
        );
    }

    proptest! {
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1400)) {
            let _ = decode_update(&bytes);
        }

        #[test]
        fn updates_round_trip(seq in any::<u64>(), round in any::<u64>(), count in any::<u64>(), name in "[a-z]{1,64}") {
            let data = wire(&name, 7, seq, round, &[("x/y", count)]);
            let update = decode_update(&data).expect("decodes");
            prop_assert_eq!(update, Update { name, incarnation: 7, seq, round, counts: vec![(topic("x/y"), count)] });
        }
    }
}
