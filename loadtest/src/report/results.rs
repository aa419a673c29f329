//! What a suite or scale run measured, as written to
//! `target/loadtest/suite.json` and `scale.json`: filled in by `runs`, read
//! back by `render`. Every field has a default, so older files still load;
//! times are in the unit their name ends with, X is the gossip interval.

use serde::{Deserialize, Serialize};

use crate::measure::{
    churn::ChurnReport, converge::ConvergeReport, count::CountReport, hold::HoldReport, procfs::Machine,
    stats::LatencySummary,
};

/// Everything one suite run measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SuiteResults {
    pub mode: String,
    /// `YYYY-MM-DD HH:MM UTC`.
    pub started: String,
    pub wall_secs: f64,
    pub machine: Option<Machine>,
    /// Connections held per node and the topics they spread over.
    pub connections: u64,
    pub topics: u64,
    pub node: NodeResults,
    pub clusters: Vec<ClusterResults>,
    /// Correctness problems seen (product bugs), with numbers.
    pub problems: Vec<String>,
}

/// Per-node results: headcount against bare, each on a fresh process.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeResults {
    pub hold_headcount: Option<HoldReport>,
    pub hold_bare: Option<HoldReport>,
    /// GET /count while each holds its connections (bare's is a static answer), all rounds merged.
    pub count_headcount: Option<CountReport>,
    pub count_bare: Option<CountReport>,
    pub count_rounds_p99_headcount: Vec<f64>,
    pub count_rounds_p99_bare: Vec<f64>,
    pub churn_headcount: Vec<ChurnReport>,
    pub churn_bare: Vec<ChurnReport>,
}

/// Gossip traffic of every node over one window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GossipReading {
    /// UDP bytes sent and received per second, per node.
    pub sent_bps: Vec<f64>,
    pub received_bps: Vec<f64>,
    /// Full-state pulls during the window, all nodes.
    pub pulls: f64,
}

impl GossipReading {
    /// The busiest node's sent bytes per second.
    pub fn max_sent(&self) -> f64 {
        self.sent_bps.iter().copied().fold(0.0, f64::max)
    }

    /// Mean sent bytes per second per node.
    pub fn mean_sent(&self) -> f64 {
        if self.sent_bps.is_empty() { 0.0 } else { self.sent_bps.iter().sum::<f64>() / self.sent_bps.len() as f64 }
    }
}

/// One cluster configuration of the suite.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterResults {
    pub nodes: usize,
    pub interval_ms: f64,
    pub converge: Option<ConvergeReport>,
    /// Gossip with no topics at all, and while 10 topics churn (that churn too).
    pub gossip_idle: GossipReading,
    pub gossip_busy: GossipReading,
    pub busy_churn: Option<ChurnReport>,
    /// Topics held (one connection each) for the quiet reading.
    pub quiet_topics: u64,
    /// Gossip while they are held and nothing changes.
    pub gossip_quiet: GossipReading,
    /// From the last join to every node's total agreeing, ms: the slowest node, and each.
    pub quiet_agree_ms: Option<f64>,
    pub quiet_agree_each_ms: Vec<Option<f64>>,
    /// From agreement until gossip was back near its idle rate, seconds.
    pub quiet_tail_secs: Option<f64>,
    /// Full-state pulls each node made from the first quiet join to agreement.
    pub quiet_pulls_each: Vec<f64>,
    /// Seconds the load process took to close every quiet connection.
    pub quiet_release_secs: f64,
    /// From the start of the release to every node's total at 0, ms.
    pub quiet_release_agree_ms: Option<f64>,
}

/// What a scale run measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ScaleResults {
    pub mode: String,
    /// `YYYY-MM-DD HH:MM UTC`.
    pub started: String,
    pub wall_secs: f64,
    pub machine: Option<Machine>,
    /// Nodes, load processes and the source addresses they used.
    pub nodes: usize,
    pub procs: usize,
    pub sources: usize,
    pub interval_ms: f64,
    /// Connections asked for and held.
    pub requested: u64,
    pub held: u64,
    /// From starting the load processes to the last one ready, seconds.
    pub connect_secs: f64,
    /// The worst p99 among the load processes' connect latencies.
    pub connect_worst: LatencySummary,
    /// From the last join to every node agreeing on the total, ms: the slowest node, and each.
    pub agree_ms: Option<f64>,
    pub agree_each_ms: Vec<Option<f64>>,
    /// Full-state pulls each node made from the first join to agreement.
    pub pulls_each: Vec<f64>,
    /// Node VmRSS before the joins and with everything held, KiB.
    pub rss_before_kib: Vec<u64>,
    pub rss_held_kib: Vec<u64>,
    pub gossip_idle: GossipReading,
    /// From agreement until gossip was back near its idle rate, seconds.
    pub quiet_tail_secs: Option<f64>,
    /// Gossip with every connection held and nothing changing.
    pub gossip_steady: GossipReading,
    /// Seconds the slowest load process took to close its connections.
    pub release_secs: f64,
    /// From the start of the release to every total at 0, ms.
    pub release_agree_ms: Option<f64>,
    pub holds: Vec<HoldReport>,
    pub problems: Vec<String>,
}

impl ScaleResults {
    /// Resident bytes per held connection over all nodes.
    pub fn bytes_per_connection(&self) -> Option<f64> {
        let grown: i64 = self.rss_held_kib.iter().zip(&self.rss_before_kib).map(|(h, b)| *h as i64 - *b as i64).sum();
        (self.held > 0).then(|| grown as f64 * 1024.0 / self.held as f64)
    }
}
