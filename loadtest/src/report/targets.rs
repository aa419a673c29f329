//! The targets of issue 6, in one table. Each is judged by [`Target::met`]
//! and written by [`Target::goal`] from the same numbers, so the verdict and
//! the goal printed next to it cannot disagree.

use super::{
    results::{NodeResults, SuiteResults},
    table::{kib, ms_or_never, ratio, thousands, times},
};
use crate::measure::hold::HoldReport;

/// A bound on a figure: at most (or with `floor`, at least) `fixed + per_x · X`, X the gossip interval.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub fixed: f64,
    pub per_x: f64,
    pub floor: bool,
    /// Unit of the figure, written after the bound.
    pub unit: &'static str,
}

impl Target {
    /// Whether `value` meets the target where X = `x_ms` (any X for targets without one).
    pub fn met(&self, value: f64, x_ms: f64) -> bool {
        let limit = self.fixed + self.per_x * x_ms;
        if self.floor { value >= limit } else { value <= limit }
    }

    /// The goal as written: `≤ 4 KiB`, `≥ 0.9× bare`; for X = `x_ms` in whole
    /// units, `≤ 1100 ms`, or with the `formula`, `≤ 2·X = 2000 ms`.
    pub fn goal(&self, x_ms: f64, formula: bool) -> String {
        let limit = self.fixed + self.per_x * x_ms;
        let bound = match (self.per_x == 0.0, formula) {
            (true, _) if limit.fract() == 0.0 => thousands(limit),
            (true, _) => limit.to_string(),
            (false, false) => format!("{limit:.0}"),
            (false, true) => format!("{}·X = {limit:.0}", self.per_x),
        };
        format!("{} {bound}{}", if self.floor { "≥" } else { "≤" }, self.unit)
    }
}

impl std::fmt::Display for Target {
    /// The goal of a target without X.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.goal(0.0, false))
    }
}

const fn at_most(fixed: f64, per_x: f64, unit: &'static str) -> Target {
    Target { fixed, per_x, floor: false, unit }
}

/// Every target by name; see [`TARGETS`].
pub struct Targets {
    pub rss_vs_bare: Target,
    pub rss_kib: Target,
    pub churn_vs_bare: Target,
    pub count_p99_ms: Target,
    pub converge_p99_ms: Target,
    /// Every node's total agreeing after a burst of joins or leaves stops.
    pub agree_ms: Target,
    /// Gossip sent per node while many topics are held and nothing changes.
    pub quiet_gossip_bps: Target,
}

/// The single source of every target, for both the verdicts and the report.
pub const TARGETS: Targets = Targets {
    rss_vs_bare: at_most(1.15, 0.0, "× bare"),
    rss_kib: at_most(4.0, 0.0, " KiB"),
    churn_vs_bare: Target { fixed: 0.9, per_x: 0.0, floor: true, unit: "× bare" },
    count_p99_ms: at_most(1.0, 0.0, " ms"),
    converge_p99_ms: at_most(100.0, 1.0, " ms"),
    agree_ms: at_most(0.0, 2.0, " ms"),
    quiet_gossip_bps: at_most(2000.0, 0.0, " B/s"),
};

/// One target and how a run did against it: what is judged, what was
/// measured, the goal; met, missed, or not measured.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub name: String,
    pub value: String,
    pub goal: String,
    pub pass: Option<bool>,
}

/// Met, missed or not measured, as the report writes it.
pub fn mark(pass: Option<bool>) -> &'static str {
    match pass {
        Some(true) => "met",
        Some(false) => "**MISSED**",
        None => "not measured",
    }
}

/// The median, `None` when there are no values.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    (n > 0).then(|| (sorted[(n - 1) / 2] + sorted[n / 2]) / 2.0)
}

/// headcount/bare cycles-per-second ratio of each alternating churn round pair.
pub fn churn_pair_ratios(node: &NodeResults) -> Vec<f64> {
    let pairs = node.churn_headcount.iter().zip(&node.churn_bare);
    pairs.filter_map(|(h, b)| ratio(h.cycles_per_sec, b.cycles_per_sec)).collect()
}

/// Every target the suite can judge.
pub fn verdicts(results: &SuiteResults) -> Vec<Verdict> {
    let (node, t) = (&results.node, &TARGETS);
    let mut out = Vec::new();
    let mut add = |name: String, value: String, goal: String, pass: Option<bool>| {
        out.push(Verdict { name, value, goal, pass });
    };
    let memory = |hold: &Option<HoldReport>| hold.as_ref().and_then(HoldReport::bytes_per_connection);
    if let (Some(hc), Some(bare)) = (memory(&node.hold_headcount), memory(&node.hold_bare)) {
        let r = ratio(hc, bare);
        let pass = r.map(|r| t.rss_vs_bare.met(r, 0.0));
        add("RSS per connection vs bare".into(), times(r), t.rss_vs_bare.to_string(), pass);
        add("RSS per connection".into(), kib(hc), t.rss_kib.to_string(), Some(t.rss_kib.met(hc / 1024.0, 0.0)));
    }
    // Judged on the median of the paired rounds: a burst of someone else's
    // work that hits one round should not decide the verdict either way.
    if let Some(r) = median(&churn_pair_ratios(node)) {
        let name = "churn cycles/s vs bare (median of paired rounds)".into();
        add(name, times(Some(r)), t.churn_vs_bare.to_string(), Some(t.churn_vs_bare.met(r, 0.0)));
    }
    if let Some(count) = &node.count_headcount {
        let ok = count.requests > 0 && count.errors.is_empty() && t.count_p99_ms.met(count.latency.p99_ms, 0.0);
        let floor = (node.count_bare.as_ref())
            .map_or(String::new(), |bare| format!(" (bare HTTP floor {:.3} ms)", bare.latency.p99_ms));
        let name = format!("GET /count p99 with {} held", thousands(results.connections as f64));
        add(name, format!("{:.3} ms{floor}", count.latency.p99_ms), t.count_p99_ms.to_string(), Some(ok));
    }
    for cluster in &results.clusters {
        let (nodes, x) = (cluster.nodes, cluster.interval_ms);
        if let Some(c) = &cluster.converge {
            let pass = c.join_failures == 0 && t.converge_p99_ms.met(c.join.p99_ms, x);
            let name = format!("convergence p99, {nodes} nodes, X = {x} ms");
            add(name, format!("{:.0} ms", c.join.p99_ms), t.converge_p99_ms.goal(x, false), Some(pass));
        }
        if cluster.quiet_topics > 0 {
            let topics = thousands(cluster.quiet_topics as f64);
            let (agree, per_x) = (cluster.quiet_agree_ms, t.agree_ms.per_x);
            add(
                format!(
                    "all totals agree after {topics} joins stop, {nodes} nodes, X = {x} ms (SPEC: within {per_x}·X)"
                ),
                ms_or_never(agree),
                t.agree_ms.goal(x, false),
                Some(agree.is_some_and(|ms| t.agree_ms.met(ms, x))),
            );
            let max = cluster.gossip_quiet.max_sent();
            add(
                format!("quiet gossip, {nodes} nodes, X = {x} ms, {topics} topics (target is for 100k: see scale run)"),
                format!("{} B/s", thousands(max)),
                format!("{} per node", t.quiet_gossip_bps),
                Some(t.quiet_gossip_bps.met(max, 0.0)),
            );
        }
    }
    out
}
