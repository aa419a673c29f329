//! The targets of issue 6, one constant each. Each is judged by [`Target::met`] and written by [`Target::goal`]
//! from the same numbers, so the verdict and the goal printed next to it cannot disagree.

use super::markdown::{kib, ms_or_never, ratio, thousands, times};
use super::results::{NodeResults, SuiteResults};
use crate::measure::{count::CountReport, hold::HoldReport};

/// A bound on a figure: at most (or with `floor`, at least) `fixed + per_x · X`, X the gossip interval, written
/// with `unit` after it.
#[derive(Debug, Clone, Copy)]
pub struct Target {
    pub fixed: f64,
    pub per_x: f64,
    pub floor: bool,
    pub unit: &'static str,
}

pub const RSS_VS_BARE: Target = Target::at_most(1.15, 0.0, "× bare");
pub const RSS_KIB: Target = Target::at_most(4.0, 0.0, " KiB");
pub const CHURN_VS_BARE: Target = Target::at_most(0.9, 0.0, "× bare").at_least();
pub const COUNT_P99_MS: Target = Target::at_most(1.0, 0.0, " ms");
pub const CONVERGE_P99_MS: Target = Target::at_most(100.0, 1.0, " ms");
/// Every node's total agreeing after a burst of joins or leaves stops.
pub const AGREE_MS: Target = Target::at_most(0.0, 2.0, " ms");
/// Gossip sent per node while many topics are held and nothing changes (as the suite writes it, and the scale run).
pub const QUIET_GOSSIP_PER_NODE: Target = Target::at_most(2000.0, 0.0, " B/s per node");
pub const QUIET_GOSSIP_BPS: Target = Target::at_most(2000.0, 0.0, " B/s");

impl Target {
    const fn at_most(fixed: f64, per_x: f64, unit: &'static str) -> Self {
        let floor = false;
        Self {
            fixed,
            per_x,
            floor,
            unit,
        }
    }

    const fn at_least(mut self) -> Self {
        self.floor = true;
        self
    }

    /// Whether `value` meets the target where X = `x_ms` (any X for targets without one).
    pub fn met(&self, value: f64, x_ms: f64) -> bool {
        let limit = self.fixed + self.per_x * x_ms;
        if self.floor { value >= limit } else { value <= limit }
    }

    /// The goal as written: `≤ 4 KiB`, `≥ 0.9× bare`; for X = `x_ms` in whole units, `≤ 1100 ms`, or with the
    /// `formula`, `≤ 2·X = 2000 ms`.
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

/// One target and how a run did against it: what is judged, what was measured, the goal; met (`Some(true)`),
/// missed, or not measured.
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
    let ratios = pairs.map(|(h, b)| ratio(h.cycles_per_sec, b.cycles_per_sec));
    ratios.flatten().collect()
}

/// Every target the suite can judge.
pub fn verdicts(results: &SuiteResults) -> Vec<Verdict> {
    let (node, mut out) = (&results.node, Vec::new());
    // A verdict on `judged` against `target` at X = `x` (not measured without a figure), missed anyway unless `ok`.
    let mut add = |name: String, value: String, (target, x): (Target, f64), judged: Option<f64>, ok: bool| {
        let (goal, pass) = (target.goal(x, false), judged.map(|v| ok && target.met(v, x)));
        out.push(Verdict {
            name,
            value,
            goal,
            pass,
        });
    };
    let memory = |hold: &Option<HoldReport>| hold.as_ref().and_then(HoldReport::bytes_per_connection);
    if let (Some(hc), Some(bare)) = (memory(&node.hold_headcount), memory(&node.hold_bare)) {
        let (r, name) = (ratio(hc, bare), "RSS per connection vs bare".into());
        add(name, times(r), (RSS_VS_BARE, 0.0), r, true);
        let (per_kib, name) = (Some(hc / 1024.0), "RSS per connection".into());
        add(name, kib(hc), (RSS_KIB, 0.0), per_kib, true);
    }
    // Judged on the median of the paired rounds: a burst of someone else's work that hits one round should not
    // decide the verdict either way.
    if let Some(r) = median(&churn_pair_ratios(node)) {
        let name = "churn cycles/s vs bare (median of paired rounds)".into();
        add(name, times(Some(r)), (CHURN_VS_BARE, 0.0), Some(r), true);
    }
    if let Some(count) = &node.count_headcount {
        let (p99, ok) = (count.latency.p99_ms, count.requests > 0 && count.errors.is_empty());
        let floor = |bare: &CountReport| format!(" (bare HTTP floor {:.3} ms)", bare.latency.p99_ms);
        let floor = node.count_bare.as_ref().map(floor).unwrap_or_default();
        let name = format!("GET /count p99 with {} held", thousands(results.connections as f64));
        let value = format!("{p99:.3} ms{floor}");
        add(name, value, (COUNT_P99_MS, 0.0), Some(p99), ok);
    }
    for cluster in &results.clusters {
        let (nodes, x) = (cluster.nodes, cluster.interval_ms);
        if let Some(c) = &cluster.converge {
            let (p99, ok) = (c.join.p99_ms, c.join_failures == 0);
            let name = format!("convergence p99, {nodes} nodes");
            let (name, value) = (format!("{name}, X = {x} ms"), format!("{p99:.0} ms"));
            add(name, value, (CONVERGE_P99_MS, x), Some(p99), ok);
        }
        if cluster.quiet_topics > 0 {
            let (topics, agree) = (thousands(cluster.quiet_topics as f64), cluster.quiet_agree_ms);
            let within = format!("{nodes} nodes, X = {x} ms (SPEC: within {}·X)", AGREE_MS.per_x);
            let name = format!("all totals agree after {topics} joins stop, {within}");
            let (value, judged) = (ms_or_never(agree), Some(agree.unwrap_or(f64::INFINITY)));
            add(name, value, (AGREE_MS, x), judged, true);
            let (max, target) = (cluster.gossip_quiet.max_sent(), (QUIET_GOSSIP_PER_NODE, x));
            let name = format!("quiet gossip, {nodes} nodes, X = {x} ms, {topics} topics");
            let name = format!("{name} (target is for 100k: see scale run)");
            add(name, format!("{} B/s", thousands(max)), target, Some(max), true);
        }
    }
    out
}
