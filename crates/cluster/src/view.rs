//! The read side of the cluster: an immutable snapshot that the gossip task
//! publishes through a `watch` channel. HTTP, websocket and gRPC readers
//! borrow the latest one; they never take a lock the gossip task holds.

use std::{net::SocketAddr, time::Instant};

use headcount_counter::Topic;

/// Liveness of a member as SWIM decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// Answers probes; its counts are included.
    Alive,
    /// Missed probes; still included until declared down.
    Suspect,
    /// Declared down or left; its counts are dropped.
    Down,
}

/// One remote member, as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// The member's `--node-name`.
    pub name: String,
    /// The member's gossip address.
    pub addr: SocketAddr,
    /// The member's gRPC address, where peers pull and push.
    pub sync_addr: SocketAddr,
    /// SWIM state.
    pub state: MemberState,
    /// Connections counted on the member (0 once down).
    pub connections: u64,
    /// Topics with live connections on the member (0 once down).
    pub topics: u64,
    /// When its counts were last heard, if ever.
    pub last_heard: Option<Instant>,
    /// Alive for SWIM, but its count gossip stopped arriving.
    pub stale: bool,
}

/// What this node knows of the rest of the cluster at one moment.
#[derive(Debug, Clone)]
pub struct ClusterView {
    /// This node's name.
    pub self_name: String,
    /// This node's gossip address.
    pub self_addr: SocketAddr,
    /// Whether this node has at least one live member besides itself, or
    /// its seeds name only itself (it is the whole cluster).
    pub joined: bool,
    /// Every remote member known: live ones and recently down ones.
    pub members: Vec<MemberInfo>,
    pub(crate) totals: imbl::HashMap<Topic, u64>,
    pub(crate) live_remote: usize,
}

impl ClusterView {
    /// The view of a node that knows no other node yet.
    pub fn alone(self_name: String, self_addr: SocketAddr) -> Self {
        Self {
            self_name,
            self_addr,
            joined: false,
            members: Vec::new(),
            totals: imbl::HashMap::new(),
            live_remote: 0,
        }
    }

    /// Sum over the live remote nodes of their latest count of `topic`.
    pub fn remote_count(&self, topic: &str) -> u64 {
        self.totals.get(topic).copied().unwrap_or(0)
    }

    /// Every topic with a non-zero remote sum.
    pub fn remote_counts(&self) -> impl Iterator<Item = (&Topic, u64)> {
        self.totals.iter().map(|(topic, count)| (topic, *count))
    }

    /// Connections on the remote members, summed (down members count 0).
    pub fn remote_connections(&self) -> u64 {
        self.members
            .iter()
            .fold(0u64, |sum, member| sum.saturating_add(member.connections))
    }

    /// Number of remote nodes whose counts are included.
    pub fn live_remote_nodes(&self) -> usize {
        self.live_remote
    }
}
