//! What a run measured, as written to `target/loadtest/NAME.json`: filled in by `runs`, read back by `render`.
//! Every field has a default, so older files still load; times are in the unit their name ends with, X is the
//! gossip interval.

use serde::{Deserialize, Serialize};

use crate::measure::{churn::ChurnReport, converge::ConvergeReport, count::CountReport, hold::HoldReport};
use crate::measure::{procfs::Machine, stats::LatencySummary};

/// What every run records: its mode, when it started (`YYYY-MM-DD HH:MM UTC`) and how long it took, the machine,
/// and the correctness problems it saw (product bugs, with numbers).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RunInfo {
    pub mode: String,
    pub started: String,
    pub wall_secs: f64,
    pub machine: Option<Machine>,
    pub problems: Vec<String>,
}

/// Everything one suite run measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SuiteResults {
    #[serde(flatten)]
    pub run: RunInfo,
    /// Connections held per node and the topics they spread over.
    pub connections: u64,
    pub topics: u64,
    pub node: NodeResults,
    pub clusters: Vec<ClusterResults>,
}

/// Per-node results: headcount against bare, each on a fresh process. GET /count is measured while each holds its
/// connections (bare's is a static answer), all rounds merged, with each round's p99.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeResults {
    pub hold_headcount: Option<HoldReport>,
    pub hold_bare: Option<HoldReport>,
    pub count_headcount: Option<CountReport>,
    pub count_bare: Option<CountReport>,
    pub count_rounds_p99_headcount: Vec<f64>,
    pub count_rounds_p99_bare: Vec<f64>,
    pub churn_headcount: Vec<ChurnReport>,
    pub churn_bare: Vec<ChurnReport>,
}

/// Gossip traffic of every node over one window: UDP bytes sent and received per second, per node; full-state pulls
/// during the window, all nodes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GossipReading {
    pub sent_bps: Vec<f64>,
    pub received_bps: Vec<f64>,
    pub pulls: f64,
}

impl GossipReading {
    /// The busiest node's sent bytes per second.
    pub fn max_sent(&self) -> f64 {
        self.sent_bps.iter().copied().fold(0.0, f64::max)
    }

    /// Mean sent bytes per second per node.
    pub fn mean_sent(&self) -> f64 {
        self.sent_bps.iter().sum::<f64>() / self.sent_bps.len().max(1) as f64
    }
}

/// One cluster configuration of the suite: convergence, gossip with no topics at all and while 10 topics churn
/// (that churn too), and a quiet reading (see [`ScaleResults`], whose fields these `quiet_` ones are).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterResults {
    pub nodes: usize,
    pub interval_ms: f64,
    pub converge: Option<ConvergeReport>,
    pub gossip_idle: GossipReading,
    pub gossip_busy: GossipReading,
    pub busy_churn: Option<ChurnReport>,
    /// Topics held, one connection each, and gossip while nothing changes.
    pub quiet_topics: u64,
    pub gossip_quiet: GossipReading,
    pub quiet_agree_ms: Option<f64>,
    pub quiet_agree_each_ms: Vec<Option<f64>>,
    pub quiet_tail_secs: Option<f64>,
    pub quiet_pulls_each: Vec<f64>,
    pub quiet_release_secs: f64,
    pub quiet_release_agree_ms: Option<f64>,
}

/// What a scale run measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ScaleResults {
    #[serde(flatten)]
    pub run: RunInfo,
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
}

impl ScaleResults {
    /// Resident bytes per held connection over all nodes.
    pub fn bytes_per_connection(&self) -> Option<f64> {
        let grown = self.rss_held_kib.iter().zip(&self.rss_before_kib);
        let grown = grown.map(|(held, before)| *held as i64 - *before as i64);
        (self.held > 0).then(|| grown.sum::<i64>() as f64 * 1024.0 / self.held as f64)
    }
}
