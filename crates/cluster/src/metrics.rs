//! What the cluster layer reports in `/metrics`.

use prometheus_client::{
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::view::MemberState;

type Labels = [(&'static str, &'static str); 1];

/// Counters and gauges of the gossip task and the sync service.
#[derive(Clone, Default)]
pub struct ClusterMetrics {
    pub(crate) sent_bytes: Counter,
    pub(crate) sent_packets: Counter,
    pub(crate) received_bytes: Counter,
    pub(crate) received_packets: Counter,
    pub(crate) dropped: Family<Labels, Counter>,
    pub(crate) members: Family<Labels, Gauge>,
    pub(crate) updates: Family<Labels, Counter>,
    pub(crate) pulls: Family<Labels, Counter>,
    pub(crate) full_pulls: Counter,
    pub(crate) command_queue_depth: Gauge,
}

impl ClusterMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> Self {
        let metrics = Self::default();
        registry.register(
            "headcount_gossip_sent_bytes",
            "Gossip bytes sent (UDP payload)",
            metrics.sent_bytes.clone(),
        );
        registry.register(
            "headcount_gossip_sent_packets",
            "Gossip datagrams sent",
            metrics.sent_packets.clone(),
        );
        registry.register(
            "headcount_gossip_received_bytes",
            "Gossip bytes received",
            metrics.received_bytes.clone(),
        );
        registry.register(
            "headcount_gossip_received_packets",
            "Gossip datagrams received",
            metrics.received_packets.clone(),
        );
        registry.register(
            "headcount_gossip_dropped",
            "Gossip datagrams and sync messages dropped, by reason",
            metrics.dropped.clone(),
        );
        registry.register(
            "headcount_cluster_members",
            "Known remote members, by state",
            metrics.members.clone(),
        );
        registry.register(
            "headcount_cluster_updates",
            "Count updates received, by outcome",
            metrics.updates.clone(),
        );
        registry.register(
            "headcount_cluster_pulls",
            "Repair pulls (deltas and full states), by result",
            metrics.pulls.clone(),
        );
        registry.register(
            "headcount_cluster_full_pulls",
            "Pulls answered with a whole state (a new member, or a delta too old to answer)",
            metrics.full_pulls.clone(),
        );
        registry.register(
            "headcount_gossip_command_queue_depth",
            "Commands waiting for the gossip task",
            metrics.command_queue_depth.clone(),
        );
        metrics
    }

    /// Sets the gauge of members in `state`.
    pub(crate) fn set_members(&self, state: MemberState, count: i64) {
        let label = match state {
            MemberState::Alive => "alive",
            MemberState::Suspect => "suspect",
            MemberState::Down => "down",
        };
        self.members.get_or_create(&[("state", label)]).set(count);
    }

    pub(crate) fn dropped(&self, reason: &'static str) {
        self.dropped.get_or_create(&[("reason", reason)]).inc();
    }
}
