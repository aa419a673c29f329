//! Who a node is on the wire: its name, where to reach it, and an incarnation
//! that is new on every start and every rejoin.
//!
//! foca treats two identities with the same gossip address as the same member
//! and keeps the one that wins [`Identity::win_addr_conflict`]: the higher
//! incarnation. Incarnations start at the wall clock in milliseconds, so a
//! restarted process always outranks its previous life, and a rejoin after
//! being declared down (foca's `renew`) adds one.
//!
//! [`NodeName`] is the one home of the node-name rule, the way `Topic` is of
//! the topic rule: flags, the host-name fallback and every decoder of peer
//! messages check names through it.

use std::{
    net::SocketAddr,
    time::{SystemTime, UNIX_EPOCH},
};

use foca::Identity;
use headcount_proto::cluster::NodeRef;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Longest node name accepted, in bytes; keeps every SWIM packet small.
pub const MAX_NODE_NAME_BYTES: usize = 64;

/// The name used when the host name is not a valid node name.
const FALLBACK_NAME: &str = "headcount";
/// The name of the stand-in for a seed not met yet (a valid name, never a
/// member's: only the address of an announce's destination matters).
const SEED_NAME: &str = "(seed)";

/// A node name: 1 to [`MAX_NODE_NAME_BYTES`] bytes of UTF-8 with no control
/// characters.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeName(String);

/// Why a string is not a node name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be 1 to {MAX_NODE_NAME_BYTES} bytes without control characters")]
pub struct InvalidNodeName;

impl NodeName {
    /// Checks `name` against the rule.
    pub fn new(name: &str) -> Result<Self, InvalidNodeName> {
        if name.is_empty() || name.len() > MAX_NODE_NAME_BYTES || name.chars().any(char::is_control) {
            return Err(InvalidNodeName);
        }
        Ok(Self(name.to_owned()))
    }

    /// This host's name. One too long is cut and given a hash of the whole
    /// name, so long host names that share a beginning stay distinct; one
    /// that cannot be a name at all (empty, control characters) is
    /// `headcount`.
    pub fn of_this_host() -> Self {
        Self::from_host(&gethostname::gethostname().to_string_lossy())
    }

    fn from_host(host: &str) -> Self {
        if let Ok(name) = Self::new(host) {
            return name;
        }
        if host.is_empty() || host.chars().any(char::is_control) {
            return Self(FALLBACK_NAME.to_owned());
        }
        let hash = Sha256::digest(host.as_bytes());
        let suffix: String = hash.iter().take(4).map(|byte| format!("{byte:02x}")).collect();
        let mut cut = MAX_NODE_NAME_BYTES - suffix.len() - 1;
        while !host.is_char_boundary(cut) {
            cut -= 1;
        }
        Self(format!("{}-{suffix}", &host[..cut]))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for NodeName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for NodeName {
    type Err = InvalidNodeName;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Self::new(name)
    }
}

/// One incarnation of one node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeId {
    /// The node's `--node-name`. Decoding refuses a name that breaks the
    /// rule, so a packet cannot bring an invalid name into the membership,
    /// secret or not.
    #[serde(deserialize_with = "wire_name")]
    pub name: String,
    /// Gossip address other nodes send to (`--advertise`).
    pub gossip: SocketAddr,
    /// Port of the node's gRPC server, on the gossip address's IP, used to
    /// pull full state.
    pub sync_port: u16,
    /// New on every start (wall clock, ms) and every rejoin (+1).
    pub incarnation: u64,
}

impl NodeId {
    /// A fresh identity for a node starting now.
    pub fn starting_now(name: &NodeName, gossip: SocketAddr, sync_port: u16) -> Self {
        let incarnation = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX));
        Self {
            name: name.to_string(),
            gossip,
            sync_port,
            incarnation,
        }
    }

    /// A stand-in for a seed whose identity is not known yet: only its address
    /// matters, foca ignores the rest of the destination of an announce.
    pub fn seed(gossip: SocketAddr) -> Self {
        Self {
            name: SEED_NAME.to_owned(),
            gossip,
            sync_port: 0,
            incarnation: 0,
        }
    }

    /// The address of this node's sync (gRPC) server.
    pub fn sync_addr(&self) -> SocketAddr {
        SocketAddr::new(self.gossip.ip(), self.sync_port)
    }

    /// The wire reference used in count messages.
    pub fn node_ref(&self) -> NodeRef {
        NodeRef {
            name: self.name.clone(),
            incarnation: self.incarnation,
        }
    }
}

fn wire_name<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let name = String::deserialize(deserializer)?;
    NodeName::new(&name).map_err(serde::de::Error::custom)?;
    Ok(name)
}

impl Identity for NodeId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            incarnation: self.incarnation.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.gossip
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        self.incarnation > adversary.incarnation
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(name: &str) -> NodeName {
        NodeName::new(name).expect("valid")
    }

    #[test]
    fn node_names_follow_the_rule() {
        assert_eq!(name("node-a").as_str(), "node-a");
        assert_eq!(
            name(&"x".repeat(MAX_NODE_NAME_BYTES)).as_str().len(),
            MAX_NODE_NAME_BYTES
        );
        for bad in [
            String::new(),
            "x".repeat(MAX_NODE_NAME_BYTES + 1),
            "a\u{1b}b".into(),
            "a\nb".into(),
        ] {
            assert_eq!(NodeName::new(&bad), Err(InvalidNodeName), "{bad:?}");
        }
        assert!(NodeName::new(NodeName::of_this_host().as_str()).is_ok());
    }

    #[test]
    fn long_host_names_stay_distinct_and_valid() {
        let stem = "pod-".repeat(20);
        let a = NodeName::from_host(&format!("{stem}a.cluster.local"));
        let b = NodeName::from_host(&format!("{stem}b.cluster.local"));
        assert_ne!(a, b);
        assert!(NodeName::new(a.as_str()).is_ok() && a.as_str().len() <= MAX_NODE_NAME_BYTES);
        assert!(NodeName::from_host("é".repeat(40).as_str()).as_str().len() <= MAX_NODE_NAME_BYTES);
        assert_eq!(NodeName::from_host("").as_str(), "headcount");
        assert_eq!(NodeName::from_host("web-1").as_str(), "web-1");
    }

    #[test]
    fn identities_with_invalid_names_do_not_decode() {
        let mut id = NodeId::starting_now(&name("a"), "127.0.0.1:7946".parse().expect("addr"), 9090);
        let round_trip = |id: &NodeId| postcard::from_bytes::<NodeId>(&postcard::to_allocvec(id).expect("encodes"));
        assert_eq!(round_trip(&id).ok(), Some(id.clone()));
        assert!(round_trip(&NodeId::seed(id.gossip)).is_ok(), "the seed stand-in");
        id.name = String::new();
        assert!(round_trip(&id).is_err(), "an empty name");
        id.name = format!("{}\u{1b}[31m", "x".repeat(300));
        assert!(round_trip(&id).is_err(), "a 300-byte name with an escape sequence");
    }

    fn id(incarnation: u64) -> NodeId {
        NodeId {
            incarnation,
            ..NodeId::starting_now(&name("a"), "127.0.0.1:7946".parse().expect("addr"), 9090)
        }
    }

    #[test]
    fn a_renewed_identity_wins_over_its_previous_self() {
        let before = id(10);
        let after = before.renew().expect("renews");
        assert_eq!(after.addr(), before.addr());
        assert!(after.win_addr_conflict(&before));
        assert!(!before.win_addr_conflict(&after));
    }

    #[test]
    fn a_restart_outranks_the_previous_process() {
        let first = NodeId::starting_now(&name("a"), "127.0.0.1:1".parse().expect("addr"), 1);
        std::thread::sleep(std::time::Duration::from_millis(2));
        let second = NodeId::starting_now(&name("a"), "127.0.0.1:1".parse().expect("addr"), 1);
        assert!(second.win_addr_conflict(&first));
    }

    #[test]
    fn sync_address_uses_the_gossip_ip() {
        let node = NodeId::starting_now(&name("a"), "10.1.2.3:7946".parse().expect("addr"), 9090);
        assert_eq!(node.sync_addr(), "10.1.2.3:9090".parse().expect("addr"));
    }
}
