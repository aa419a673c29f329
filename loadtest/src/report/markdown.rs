//! The suite's and the scale run's sub-sections of BENCHMARKS.md, written from their results; the targets of issue
//! 6, one constant each, judged by [`Target::met`] and written by [`Target::goal`] from the same numbers, so the
//! verdict and the goal printed next to it cannot disagree; and the table writer and number formats they use, kept
//! by hand since the exact layout (`| |` for an empty cell) is what BENCHMARKS.md diffs are read against.

use num_format::ToFormattedString;

use super::{ClusterResults, CrashTrial, GossipReading, GossipResults, NodeResults, ScaleResults, SuiteResults};
use crate::measure::count::CountReport;
use crate::measure::hold::{HoldReport, ServerMemory};
use crate::measure::{LatencySummary, Machine, churn::ChurnReport};

/// The machine line of a sub-section.
pub fn machine(m: &Machine, cores: &str, busy: &str, wall_secs: f64) -> String {
    let (cpu, n, mem, kernel, start, end) = (&m.cpu, m.cores, m.mem_gib, &m.kernel, &m.load_start, &m.load_end);
    let load = format!("load average {start} at the start, {end} at the end{busy}");
    format!("Machine: {cpu}, {n} cores{cores}, {mem:.0} GiB, Linux {kernel}; {load}. Wall time {wall_secs:.0} s.\n\n")
}

/// `{all_passed}: all passed.`, or the list of problems.
pub fn problems(problems: &[String], all_passed: &str) -> String {
    if problems.is_empty() {
        return format!("{all_passed}: all passed.\n");
    }
    let items: String = problems.iter().map(|problem| format!("- {problem}\n")).collect();
    format!("Correctness problems seen in this run (product bugs):\n\n{items}")
}

/// Cycles per second over every round of one server.
fn churn_rate(rounds: &[ChurnReport]) -> Option<f64> {
    let secs: f64 = rounds.iter().map(|r| r.duration_secs).sum();
    (secs > 0.0).then(|| rounds.iter().map(|r| r.cycles).sum::<u64>() as f64 / secs)
}

/// Mean server CPU per cycle over the rounds that measured it.
fn churn_cpu(rounds: &[ChurnReport]) -> Option<f64> {
    let values: Vec<f64> = rounds.iter().filter_map(|r| r.server_cpu_us_per_cycle).collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

fn p50_p99_p999(s: &LatencySummary) -> String {
    format!("{:.3} / {:.3} / {:.3} ms", s.p50_ms, s.p99_ms, s.p999_ms)
}

/// Whole milliseconds of each, `never` for `None`, joined.
fn each_ms(values: &[Option<f64>]) -> String {
    let ms = |ms: &Option<f64>| ms.map_or("never".into(), |ms| format!("{ms:.0}"));
    list(values.iter().map(ms))
}

/// `mean (max)` sent bytes per second.
fn gossip(r: &GossipReading) -> String {
    format!("{} ({})", thousands(r.mean_sent()), thousands(r.max_sent()))
}

/// The rows comparing two held sets of connections.
fn hold_rows(table: &mut Table, topics: u64, hc: &HoldReport, bare: &HoldReport) {
    let held = |h: &HoldReport| format!("{} of {}", thousands(h.held as f64), thousands(h.requested as f64));
    let name = format!("connections held ({} topics, uniform)", thousands(topics as f64));
    table.row(&[&name, &held(hc), &held(bare), "", ""]);
    let memory = |h: &HoldReport| h.bytes_per_connection().unwrap_or(f64::NAN);
    let (hm, bm, goal) = (memory(hc), memory(bare), format!("{}, {}", RSS_VS_BARE, RSS_KIB));
    let name = "server RSS per connection (VmRSS delta / held)";
    table.row(&[name, &kib(hm), &kib(bm), &times(ratio(hm, bm)), &goal]);
    let rss = |h: &HoldReport| {
        let mib = |kib: u64| kib as f64 / 1024.0;
        let text = |s: &ServerMemory| format!("{:.1} → {:.1} MiB", mib(s.rss_before_kib), mib(s.rss_held_kib));
        h.servers.first().map_or("–".into(), text)
    };
    table.row(&["server RSS before → held", &rss(hc), &rss(bare), "", ""]);
    let (hs, bs) = (hc.handshakes_per_sec, bare.handshakes_per_sec);
    let name = "handshakes/s while connecting (100 in flight)";
    table.row(&[name, &thousands(hs), &thousands(bs), &times(ratio(hs, bs)), ""]);
    let (hf, bf) = (&hc.first_frame, &bare.first_frame);
    let p99 = format!("{} (p99)", times(ratio(hf.p99_ms, bf.p99_ms)));
    table.row(&["connect → first frame p50 / p99", &p50_p99(hf), &p50_p99(bf), &p99, ""]);
    let (ho, bo) = (hc.listen_overflows.to_string(), bare.listen_overflows.to_string());
    let name = "listen-queue overflows while connecting (machine-wide)";
    table.row(&[name, &ho, &bo, "", ""]);
}

/// The churn rows, if both servers churned.
fn churn_rows(table: &mut Table, node: &NodeResults) {
    let (hc_rounds, bare_rounds) = (&node.churn_headcount, &node.churn_bare);
    let (Some(hc), Some(bare)) = (churn_rate(hc_rounds), churn_rate(bare_rounds)) else {
        return;
    };
    let (workers, pairs) = (hc_rounds.first().map_or(0, |r| r.concurrency), churn_pair_ratios(node));
    let (n, each) = (pairs.len(), list(pairs.iter().map(|&r| times(Some(r)))));
    let loop_ = format!("{workers} workers, closed loop, {n} alternating rounds each");
    let name = format!("churn cycles/s (join + leave; {loop_}; paired-round ratios {each})");
    let (overall, median) = (times(ratio(hc, bare)), times(median(&pairs)));
    let ratios = format!("{overall} overall, {median} median of pairs");
    let goal = CHURN_VS_BARE.to_string();
    table.row(&[&name, &thousands(hc), &thousands(bare), &ratios, &goal]);
    if let (Some(h), Some(b)) = (hc_rounds.first(), bare_rounds.first()) {
        let (h, b) = (p50_p99(&h.cycle), p50_p99(&b.cycle));
        table.row(&["churn cycle p50 / p99 (round 1)", &h, &b, "", ""]);
    }
    if let (Some(h), Some(b)) = (churn_cpu(hc_rounds), churn_cpu(bare_rounds)) {
        let (hu, bu, r) = (format!("{h:.0} µs"), format!("{b:.0} µs"), times(ratio(h, b)));
        table.row(&["server CPU per churn cycle", &hu, &bu, &r, ""]);
    }
    let failed: u64 = hc_rounds.iter().chain(bare_rounds).map(|r| r.failed).sum();
    if failed > 0 {
        table.row(&["churn cycles failed (both servers)", &failed.to_string(), "", "", ""]);
    }
}

/// The GET /count rows, if both servers were read.
fn count_rows(table: &mut Table, results: &SuiteResults) {
    let node = &results.node;
    let (Some(hc), Some(bare)) = (&node.count_headcount, &node.count_bare) else {
        return;
    };
    let (hc_p99s, bare_p99s) = (&node.count_rounds_p99_headcount, &node.count_rounds_p99_bare);
    let (rate, n) = (thousands(hc.rate_target), hc_p99s.len());
    let held = thousands(results.connections as f64);
    let name = format!("GET /count p50 / p99 / p99.9, {rate} req/s, {held} held, {n} alternating rounds");
    let floor = format!("{} (static answer: the HTTP floor)", p50_p99_p999(&bare.latency));
    let p99 = format!("{} (p99)", times(ratio(hc.latency.p99_ms, bare.latency.p99_ms)));
    let goal = format!("p99 {}", COUNT_P99_MS);
    table.row(&[&name, &p50_p99_p999(&hc.latency), &floor, &p99, &goal]);
    let rounds = |p99s: &[f64]| list(p99s.iter().map(|p| format!("{p:.2}")));
    let (h, b) = (rounds(hc_p99s), rounds(bare_p99s));
    table.row(&["GET /count p99 of each round, ms", &h, &b, "", ""]);
    let (hl, hr, bl, br) = (hc.late_starts, hc.requests, bare.late_starts, bare.requests);
    let name = "GET /count requests that started > 5 ms late (load generator descheduled)";
    table.row(&[name, &format!("{hl} of {hr}"), &format!("{bl} of {br}"), "", ""]);
}

/// The suite's sub-section.
pub fn suite(results: &SuiteResults) -> String {
    let mut md = format!("### Standard suite — {}\n\n", results.run.started);
    if let Some(m) = &results.run.machine {
        let busy = " (other people's builds and tests run on it too)";
        md += &machine(m, " shared by servers and load generator", busy, results.run.wall_secs);
    }
    let node = &results.node;
    if node.hold_headcount.is_some() || !node.churn_headcount.is_empty() {
        md += "#### Per node process — headcount against bare, same run\n\n";
        let mut table = Table::new(&["measure", "headcount", "bare", "ratio", "target"]);
        if let (Some(hc), Some(bare)) = (&node.hold_headcount, &node.hold_bare) {
            hold_rows(&mut table, results.topics, hc, bare);
        }
        churn_rows(&mut table, node);
        count_rows(&mut table, results);
        md += &table.0;
        md += "\n";
    }
    if !results.clusters.is_empty() {
        md += "#### Per cluster — headcount only (targets are in terms of X)\n\n";
        let header = "nodes|X|join seen by every node p50 / p99|leave p50 / p99|target p99|gossip sent B/s per node, mean (max): idle|10 busy topics|quiet topics|quiet: all totals agree after last join (slowest node)|quiet: gossip tail after agreement|quiet: all totals 0 after release start (client close time)";
        let mut table = Table::new(&header.split('|').collect::<Vec<_>>());
        for cluster in &results.clusters {
            cluster_row(&mut table, cluster);
        }
        md += &table.0;
        md += "\n";
        if let Some(c) = results.clusters.iter().find_map(|c| c.converge.as_ref()) {
            let busy = results.clusters.first().and_then(|c| c.busy_churn.as_ref());
            let (trials, poll) = (c.trials, c.poll_ms);
            let busy = busy.map_or("?".into(), |b| thousands(b.rate_target));
            md += &format!(
                "Convergence: {trials} trials per cluster, joins round-robin over the nodes, join and leave each at a random phase of the gossip tick, every node polled every {poll:.0} ms (figures are upper bounds by one poll). Busy: open-loop churn at {busy} cycles/s over 10 topics on all nodes. Quiet: one connection per topic spread over all nodes, nothing changing, read once the totals agreed and every node was back within 1.5× (+200 B/s) of its idle gossip rate (the tail column says how long that took). Gossip is UDP payload from `headcount_gossip_sent_bytes_total`; repair pulls (deltas and whole states) go over gRPC and are not in it.\n\n"
            );
        }
    }
    md += "#### Targets\n\n";
    let mut table = Table::new(&["target", "measured", "goal", "verdict"]);
    for (name, value, goal, pass) in verdicts(results) {
        table.row(&[&name, &value, &goal, mark(pass)]);
    }
    md += &table.0;
    let checks = "Correctness checks (totals back to 0 after every release, no held connection dropped, `/count` agreeing with the poller)";
    md + "\n" + &problems(&results.run.problems, checks)
}

fn cluster_row(table: &mut Table, c: &ClusterResults) {
    let (join, leave) = c.converge.as_ref().map_or(("–".into(), "–".into()), |v| {
        let failed = format!(" ({} of {} never converged)", v.join_failures, v.trials);
        let fails = if v.join_failures > 0 { failed } else { String::new() };
        (format!("{}{fails}", p50_p99(&v.join)), p50_p99(&v.leave))
    });
    let (each, pulls) = (each_ms(&c.quiet_agree_each_ms), c.quiet_pulls_each.iter().sum::<f64>());
    let agreed = |ms| format!("{ms:.0} ms (per node {each}; {pulls:.0} full-state pulls)");
    let agree = c.quiet_agree_ms.map_or("never (30 s)".into(), agreed);
    let release = c.quiet_release_secs * 1000.0;
    let zero = |ms| format!("{ms:.0} ms ({release:.0} ms)");
    let zero = c.quiet_release_agree_ms.map_or("never (30 s)".into(), zero);
    let (nodes, x) = (c.nodes.to_string(), format!("{} ms", c.interval_ms));
    let goal = CONVERGE_P99_MS.goal(c.interval_ms, false);
    let topics = thousands(c.quiet_topics as f64);
    let quiet = format!("{} with {topics} topics", gossip(&c.gossip_quiet));
    let tail = c.quiet_tail_secs.map_or("> 30 s".into(), |secs| format!("{secs:.1} s"));
    let (idle, busy) = (gossip(&c.gossip_idle), gossip(&c.gossip_busy));
    let cells = [
        &nodes, &x, &join, &leave, &goal, &idle, &busy, &quiet, &agree, &tail, &zero,
    ];
    table.row(&cells.map(String::as_str));
}

/// The scale run's sub-section.
pub fn scale(r: &ScaleResults) -> String {
    let title = if r.run.mode == "scale" {
        "Scale run".to_owned()
    } else {
        format!("Scale run `{}`", r.run.mode)
    };
    let mut md = format!("### {title} — {}\n\n", r.run.started);
    if let Some(m) = &r.run.machine {
        md += &machine(m, "", "", r.run.wall_secs);
    }
    let (x, mut table) = (r.interval_ms, Table::new(&["measure", "value", "target", "verdict"]));
    let (held, requested) = (thousands(r.held as f64), thousands(r.requested as f64));
    let (nodes, procs, all) = (r.nodes, r.procs, mark(Some(r.held == r.requested)));
    let topics = match r.topics {
        0 => "each on its own topic".to_owned(),
        topics => format!("over {} topics, each topic on every node", thousands(topics as f64)),
    };
    let value = format!("{held} of {requested} on {nodes} nodes ({procs} load processes), {topics}");
    table.row(&["connections held", &value, &requested, all]);
    if !r.stopped.is_empty() {
        let mut reasons = std::collections::BTreeMap::<&str, usize>::new();
        for reason in &r.stopped {
            *reasons.entry(reason.split(':').next().unwrap_or(reason)).or_default() += 1;
        }
        let reasons = list(reasons.iter().map(|(reason, n)| format!("{reason} ({n})")));
        let (stopped, example) = (r.stopped.len(), r.stopped.first().map_or("", String::as_str));
        let value = format!(
            "{stopped} of {} load processes stopped early, by {reasons} (e.g. {example})",
            r.procs
        );
        table.row(&["what ran out", &value, "", ""]);
    }
    let rate = thousands(r.held as f64 / r.connect_secs.max(1e-9));
    let (secs, worst) = (r.connect_secs, p50_p99(&r.connect_worst));
    let value = format!("{secs:.1} s ({rate} handshakes/s); slowest process connect p50 / p99 {worst}");
    table.row(&["time to connect them all", &value, "", ""]);
    let name = format!("time from the last join until every node's `/counts` total is {held}");
    let pulls = list(r.pulls_each.iter().map(|p| format!("{p:.0}")));
    let (each, agree) = (each_ms(&r.agree_each_ms), ms_or_never(r.agree_ms));
    let value = format!("{agree} (per node, ms: {each}; full-state pulls per node: {pulls})");
    let (pass, goal) = (r.agree_ms.map(|ms| AGREE_MS.met(ms, x)), AGREE_MS.goal(x, true));
    table.row(&[&name, &value, &goal, mark(pass)]);
    let mib = |kib: &[u64]| kib.iter().sum::<u64>() as f64 / 1024.0;
    let (before, after, per_conn) = (mib(&r.rss_before_kib), mib(&r.rss_held_kib), r.bytes_per_connection());
    let per = per_conn.map_or("–".into(), kib);
    let value = format!("{per} (nodes {before:.0} → {after:.0} MiB in total)");
    let pass = per_conn.map(|b| RSS_KIB.met(b / 1024.0, 0.0));
    let goal = RSS_KIB.to_string();
    let name = "server RSS per connection (sum of node deltas / held)";
    table.row(&[name, &value, &goal, mark(pass)]);
    if r.rss_load_kib > 0 {
        let (load, per) = (
            r.rss_load_kib as f64 / 1024.0,
            kib(r.rss_load_kib as f64 * 1024.0 / r.held.max(1) as f64),
        );
        let used = r.mem_available_before_mib.saturating_sub(r.mem_available_held_mib) as f64;
        let machine = kib(used * 1024.0 * 1024.0 / r.held.max(1) as f64);
        let (before, after) = (
            r.mem_available_before_mib as f64 / 1024.0,
            r.mem_available_held_mib as f64 / 1024.0,
        );
        let value = format!(
            "load processes {per} ({load:.0} MiB in total); the machine {machine} (MemAvailable {before:.1} → {after:.1} GiB: nodes, clients, both ends' kernel sockets)"
        );
        table.row(&["memory per connection outside the nodes", &value, "", ""]);
    }
    let tail = r.quiet_tail_secs.map_or("> 60 s".into(), |secs| format!("{secs:.1} s"));
    let name = "gossip tail: from agreement until every node sends near its idle rate again";
    table.row(&[name, &tail, "", ""]);
    let quiet = if r.topics == 0 {
        held.clone()
    } else {
        thousands(r.topics as f64)
    };
    let name = format!("gossip sent per node, steady, {quiet} quiet topics: mean (max)");
    let (steady, idle) = (gossip(&r.gossip_steady), gossip(&r.gossip_idle));
    let value = format!("{steady} B/s; idle cluster before the joins {idle} B/s");
    let pass = Some(QUIET_GOSSIP_BPS.met(r.gossip_steady.max_sent(), 0.0));
    table.row(&[&name, &value, &QUIET_GOSSIP_BPS.to_string(), mark(pass)]);
    if r.member_downs > 0 || r.udp_rcvbuf_errors > 0 {
        let (downs, dropped) = (thousands(r.member_downs as f64), thousands(r.udp_rcvbuf_errors as f64));
        let value = format!(
            "{downs} declared down by a peer (no node was killed); {dropped} UDP datagrams dropped on full receive buffers from the first join to agreement"
        );
        table.row(&["false downs", &value, "0", mark(Some(r.member_downs == 0))]);
    }
    let after_last_leave = r.release_agree_ms.map(|ms| ms - r.release_secs * 1000.0);
    let closed = format!("the clients took {:.1} s to close all", r.release_secs);
    let value = match (r.release_agree_ms, after_last_leave) {
        (Some(total), Some(after)) => format!("{after:.0} ms ({total:.0} ms from the start of the release; {closed})"),
        _ => "never (60 s)".into(),
    };
    let pass = after_last_leave.map(|ms| AGREE_MS.met(ms, x));
    let goal = AGREE_MS.goal(x, true);
    let name = "time until every total is 0 after the last leave";
    table.row(&[name, &value, &goal, mark(pass)]);
    md += &table.0;
    let sources = format!("clients bound to {} source addresses in 127.0.1.0/24", r.sources);
    let poll = format!("each node's total was polled every {:.0} ms", r.poll_ms.max(10.0));
    md +=
        &format!("\nX = {x:.0} ms. Nodes were started with `--max-connections-per-ip 1000000`; {sources}; {poll}.\n\n");
    md + &problems(&r.run.problems, "Correctness checks")
}

/// A Markdown table: a header row, its rule, then rows; `.0` is its text.
pub struct Table(pub String);

impl Table {
    /// A table with these column names.
    pub fn new(header: &[&str]) -> Self {
        let mut table = Self(String::new());
        table.row(header);
        table.0 += &"| --- ".repeat(header.len());
        table.0 += "|\n";
        table
    }

    /// Adds a row.
    pub fn row(&mut self, cells: &[&str]) {
        for cell in cells {
            self.0 += "| ";
            self.0 += cell;
            self.0 += if cell.is_empty() { "" } else { " " };
        }
        self.0 += "|\n";
    }
}

/// `1,234,567`: rounded, digits grouped by three.
pub fn thousands(n: f64) -> String {
    (n.round() as i64).to_formatted_string(&num_format::Locale::en)
}

/// Bytes as `1.23 KiB`.
pub fn kib(bytes: f64) -> String {
    format!("{:.2} KiB", bytes / 1024.0)
}

/// `a / b` when both are finite and `b` is positive.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite() && b.is_finite()).then(|| a / b)
}

/// A ratio as `1.03×`, or `–`.
pub fn times(r: Option<f64>) -> String {
    r.map_or_else(|| "–".into(), |r| format!("{r:.2}×"))
}

/// `p50 / p99 ms`, one decimal.
pub fn p50_p99(s: &LatencySummary) -> String {
    format!("{:.1} / {:.1} ms", s.p50_ms, s.p99_ms)
}

/// Whole milliseconds, or `never` for a wait that did not end.
pub fn ms_or_never(ms: Option<f64>) -> String {
    ms.map_or("never".into(), |ms| format!("{ms:.0} ms"))
}

/// Items joined with `, `.
pub fn list(values: impl IntoIterator<Item = String>) -> String {
    values.into_iter().collect::<Vec<_>>().join(", ")
}

/// A bound on a figure: at most (with `.2`, at least) `.0 + .1 · X`, X the gossip interval, then its unit `.3`.
#[derive(Debug, Clone, Copy)]
pub struct Target(f64, f64, bool, &'static str);

pub const RSS_VS_BARE: Target = Target(1.15, 0.0, false, "× bare");
pub const RSS_KIB: Target = Target(4.0, 0.0, false, " KiB");
pub const CHURN_VS_BARE: Target = Target(0.9, 0.0, true, "× bare");
pub const COUNT_P99_MS: Target = Target(1.0, 0.0, false, " ms");
pub const CONVERGE_P99_MS: Target = Target(100.0, 1.0, false, " ms");
/// Every node's total agreeing after a burst of joins or leaves stops.
pub const AGREE_MS: Target = Target(0.0, 2.0, false, " ms");
/// Gossip sent per node while many topics are held and nothing changes (as the suite writes it, and the scale run).
pub const QUIET_GOSSIP_PER_NODE: Target = Target(2000.0, 0.0, false, " B/s per node");
pub const QUIET_GOSSIP_BPS: Target = Target(2000.0, 0.0, false, " B/s");

impl Target {
    /// Whether `value` meets the target where X = `x_ms` (any X for targets without one).
    pub fn met(&self, value: f64, x_ms: f64) -> bool {
        let limit = self.0 + self.1 * x_ms;
        if self.2 { value >= limit } else { value <= limit }
    }

    /// The goal as written: `≤ 4 KiB`, `≥ 0.9× bare`, `≤ 1100 ms` at X = `x_ms`, with `formula` `≤ 2·X = 2000 ms`.
    pub fn goal(&self, x_ms: f64, formula: bool) -> String {
        let limit = self.0 + self.1 * x_ms;
        let bound = match (self.1 == 0.0, formula) {
            (true, _) if limit.fract() == 0.0 => thousands(limit),
            (true, _) => limit.to_string(),
            (false, false) => format!("{limit:.0}"),
            (false, true) => format!("{}·X = {limit:.0}", self.1),
        };
        format!("{} {bound}{}", if self.2 { "≥" } else { "≤" }, self.3)
    }
}

impl std::fmt::Display for Target {
    /// The goal of a target without X.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.goal(0.0, false))
    }
}

/// A target and how a run did: what is judged, the figure, the goal; met, missed or (`None`) not measured.
pub type Verdict = (String, String, String, Option<bool>);

/// Met, missed or not measured, as the report writes it.
pub fn mark(pass: Option<bool>) -> &'static str {
    ["not measured", "**MISSED**", "met"][pass.map_or(0, |pass| 1 + usize::from(pass))]
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
        out.push((name, value, goal, pass));
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
            let within = format!("{nodes} nodes, X = {x} ms (SPEC: within {}·X)", AGREE_MS.1);
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

/// `median (max)` of the nodes' sent bytes per second.
fn gossip_median(r: &GossipReading) -> String {
    let median = median(&r.sent_bps).map_or("–".into(), thousands);
    format!("{median} ({})", thousands(r.max_sent()))
}

/// The gossip run's section (its own, outside the generated one).
pub fn gossip_cost(r: &GossipResults) -> String {
    let loss = match r.loss_percent {
        0 => String::new(),
        p => format!(" under {p} % UDP loss"),
    };
    let mut md = format!("### Gossip cost and crash detection{loss} — {}\n\n", r.run.started);
    if let Some(m) = &r.run.machine {
        md += &machine(m, "", "", r.run.wall_secs);
    }
    let (quiet, churn) = (thousands(r.quiet_topics as f64), thousands(r.churn_rate));
    let mut table = Table::new(&[
        "nodes",
        "idle, B/s per node: median (max)",
        &format!("{quiet} quiet topics held"),
        &format!("changing: {churn} joins+leaves/s over {} topics", r.churn_topics),
        "crash → down on every survivor, ms",
        "crash → counts pruned everywhere, ms",
        "suspicions per node-hour (events / node-hours)",
        "false downs",
    ]);
    for s in &r.sizes {
        let trials = |pick: fn(&CrashTrial) -> Option<f64>| list(s.crashes.iter().map(|c| ms_or_never(pick(c))));
        let (down, pruned) = (trials(|c| c.down_ms), trials(|c| c.pruned_ms));
        let hours = s.node_hours();
        let rate = if hours > 0.0 {
            format!("{:.1}", s.suspicions as f64 / hours)
        } else {
            "–".into()
        };
        let suspicions = format!("{rate} ({} / {hours:.2})", s.suspicions);
        let cells = [
            s.nodes.to_string(),
            gossip_median(&s.idle),
            gossip_median(&s.quiet),
            gossip_median(&s.changing),
            down,
            pruned,
            suspicions,
            s.false_downs.to_string(),
        ];
        table.row(&cells.each_ref().map(String::as_str));
    }
    md += &table.0;
    let x = r.interval_ms;
    let window = r.window_secs;
    md += &format!(
        "\nX = {x:.0} ms. Gossip is UDP payload sent (`headcount_gossip_sent_bytes_total`) over {window:.0} s windows: idle \
         once every node saw all alive; quiet once the held topics' totals agreed and every node was back within 1.5× \
         (+200 B/s) of its idle rate; changing while open-loop joins and leaves ran on every node. Each crash kills one \
         node (SIGKILL) holding 100 connections once every node counts them, polls every survivor's `/cluster` and \
         `/counts` (times are upper bounds by one poll), then restarts it under its name. Suspicions are rising edges \
         of each node's `headcount_cluster_members{{state=\"suspect\"}}` (and `down`) gauges, polled, while no node was \
         killed: a lower bound.\n\n"
    );
    md + &problems(&r.run.problems, "Correctness checks")
}
