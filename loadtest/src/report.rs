//! Turning results into the marked section of BENCHMARKS.md, and judging
//! them against the targets of issue 6.
//!
//! The section between `<!-- loadtest:begin -->` and `<!-- loadtest:end -->`
//! belongs to the load tools; everything outside it is left byte for byte.
//! Inside, the suite and the scale run each own a sub-section, so running one
//! keeps the other's last results; hand-written analysis lives in
//! `loadtest/FINDINGS.md` and is copied in on every rewrite, so a regenerated
//! section never loses the explanation of a missed target.

use std::path::Path;

use anyhow::Context;

use crate::{
    scale::ScaleResults,
    stats::LatencySummary,
    suite::{ClusterResults, SuiteResults},
};

const BEGIN: &str = "<!-- loadtest:begin -->";
const END: &str = "<!-- loadtest:end -->";

/// The sub-sections.
#[derive(Debug, Clone, Copy)]
pub enum Part {
    /// `loadtest/suite.sh`.
    Suite,
    /// `loadtest/scale.sh`.
    Scale,
}

impl Part {
    fn markers(self) -> (&'static str, &'static str) {
        match self {
            Self::Suite => ("<!-- loadtest:suite:begin -->", "<!-- loadtest:suite:end -->"),
            Self::Scale => ("<!-- loadtest:scale:begin -->", "<!-- loadtest:scale:end -->"),
        }
    }

    fn placeholder(self) -> &'static str {
        match self {
            Self::Suite => "_No suite run recorded yet: `bash loadtest/suite.sh`._\n",
            Self::Scale => "_No scale run recorded yet: `bash loadtest/scale.sh`._\n",
        }
    }
}

const INTRO: &str = "\
## Load tests

Every performance figure of headcount comes from `headcount-load` (crate
`loadtest/`), as a ratio to a baseline measured in the same run: this machine
is shared and noisy, so absolute numbers move from run to run while ratios
hold. The baseline is `headcount-bare`, a minimal axum websocket server with
headcount's buffer settings that sends one small frame on connect and does
nothing else.

| command | what it does | time |
| --- | --- | --- |
| `bash loadtest/suite.sh` | builds release, runs the standard suite, rewrites the suite part below | ≤ 10 min |
| `bash loadtest/scale.sh` | builds release, holds 100k connections on 6 nodes, rewrites the scale part below | ≈ 1–2 min |
| `target/release/headcount-load render` | rewrites this section from the last results (e.g. after editing `loadtest/FINDINGS.md`) | 1 s |
| `target/release/headcount-load <hold\\|churn\\|converge\\|count> --help` | one measurement against nodes you started | |

Raw JSON of the last runs: `target/loadtest/suite.json`, `target/loadtest/scale.json`;
server and load logs in `target/loadtest/logs/`.
";

/// Rewrites `part` inside the marked section of `path`, creating the file
/// or the markers when missing.
pub fn write_section(path: &Path, part: Part, body: &str) -> anyhow::Result<()> {
    let current = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => format!("# Benchmarks\n\n{BEGIN}\n{END}\n"),
        Err(error) => return Err(error).with_context(|| path.display().to_string()),
    };
    let (before, inside, after) = match (current.find(BEGIN), current.find(END)) {
        (Some(begin), Some(end)) if begin < end => (
            current[..begin].to_owned(),
            current[begin + BEGIN.len()..end].to_owned(),
            current[end + END.len()..].to_owned(),
        ),
        _ => {
            let mut before = current.clone();
            if !before.ends_with('\n') {
                before.push('\n');
            }
            before.push('\n');
            (before, String::new(), "\n".to_owned())
        }
    };
    let keep = |other: Part| extract(&inside, other).unwrap_or_else(|| other.placeholder().to_owned());
    let (suite, scale) = match part {
        Part::Suite => (body.to_owned(), keep(Part::Scale)),
        Part::Scale => (keep(Part::Suite), body.to_owned()),
    };
    let findings = path
        .parent()
        .map(|dir| dir.join("loadtest").join("FINDINGS.md"))
        .and_then(|file| std::fs::read_to_string(file).ok())
        .map(|text| format!("\n{}\n", text.trim_end()))
        .unwrap_or_default();
    let (suite_begin, suite_end) = Part::Suite.markers();
    let (scale_begin, scale_end) = Part::Scale.markers();
    let section = format!(
        "{BEGIN}\n{INTRO}\n{suite_begin}\n{}\n{suite_end}\n\n{scale_begin}\n{}\n{scale_end}\n{findings}{END}",
        suite.trim_end(),
        scale.trim_end()
    );
    std::fs::write(path, format!("{before}{section}{after}")).with_context(|| path.display().to_string())
}

fn extract(inside: &str, part: Part) -> Option<String> {
    let (begin, end) = part.markers();
    let start = inside.find(begin)? + begin.len();
    let stop = inside[start..].find(end)? + start;
    Some(inside[start..stop].trim().to_owned() + "\n")
}

/// Flags of `render`.
#[derive(Debug, Clone, clap::Args)]
pub struct RenderArgs {
    /// File whose marked section is rewritten.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub benchmarks: std::path::PathBuf,
    /// Where `suite.json` and `scale.json` are.
    #[arg(long, default_value = "target/loadtest")]
    pub results: std::path::PathBuf,
}

/// Rewrites the section from saved results, each part only if its results
/// exist (the other part is kept as it is).
pub fn render(args: &RenderArgs) -> anyhow::Result<()> {
    let read = |name: &str| std::fs::read_to_string(args.results.join(name)).ok();
    let mut rendered = Vec::new();
    if let Some(text) = read("suite.json") {
        let results: SuiteResults = serde_json::from_str(&text).context("suite.json")?;
        write_section(&args.benchmarks, Part::Suite, &suite_markdown(&results))?;
        rendered.push("suite");
    }
    if let Some(text) = read("scale.json") {
        let results: ScaleResults = serde_json::from_str(&text).context("scale.json")?;
        write_section(&args.benchmarks, Part::Scale, &scale_markdown(&results))?;
        rendered.push("scale");
    }
    if rendered.is_empty() {
        anyhow::bail!("no suite.json or scale.json in {}", args.results.display());
    }
    eprintln!(
        "render: rewrote {} ({})",
        args.benchmarks.display(),
        rendered.join(", ")
    );
    Ok(())
}

/// One target and how the run did against it.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// What is judged.
    pub name: String,
    /// What was measured.
    pub value: String,
    /// The target.
    pub target: String,
    /// Met, missed, or not measured.
    pub pass: Option<bool>,
}

fn verdict(
    name: impl Into<String>,
    value: impl Into<String>,
    target: impl Into<String>,
    pass: Option<bool>,
) -> Verdict {
    Verdict {
        name: name.into(),
        value: value.into(),
        target: target.into(),
        pass,
    }
}

fn mark(pass: Option<bool>) -> &'static str {
    match pass {
        Some(true) => "met",
        Some(false) => "**MISSED**",
        None => "not measured",
    }
}

fn kib(bytes: f64) -> String {
    format!("{:.2} KiB", bytes / 1024.0)
}

fn thousands(n: f64) -> String {
    let whole = n.round() as i64;
    let digits = whole.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if whole < 0 { format!("-{out}") } else { out }
}

fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite() && b.is_finite()).then(|| a / b)
}

fn show_ratio(r: Option<f64>) -> String {
    r.map_or_else(|| "–".into(), |r| format!("{r:.2}×"))
}

fn ms3(s: &LatencySummary) -> String {
    format!("{:.3} / {:.3} / {:.3} ms", s.p50_ms, s.p99_ms, s.p999_ms)
}

fn ms2(s: &LatencySummary) -> String {
    format!("{:.1} / {:.1} ms", s.p50_ms, s.p99_ms)
}

/// Cycles per second over every round of one server.
fn churn_rate(rounds: &[crate::churn::ChurnReport]) -> Option<f64> {
    let secs: f64 = rounds.iter().map(|r| r.duration_secs).sum();
    let cycles: u64 = rounds.iter().map(|r| r.cycles).sum();
    (secs > 0.0).then(|| cycles as f64 / secs)
}

/// headcount/bare cycles-per-second ratio of each alternating round pair.
fn churn_pair_ratios(results: &SuiteResults) -> Vec<f64> {
    let node = &results.node;
    node.churn_headcount
        .iter()
        .zip(&node.churn_bare)
        .filter_map(|(h, b)| ratio(h.cycles_per_sec, b.cycles_per_sec))
        .collect()
}

fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

fn churn_cpu(rounds: &[crate::churn::ChurnReport]) -> Option<f64> {
    let values: Vec<f64> = rounds.iter().filter_map(|r| r.server_cpu_us_per_cycle).collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// Every target the suite can judge.
pub fn verdicts(results: &SuiteResults) -> Vec<Verdict> {
    let node = &results.node;
    let mut out = Vec::new();
    let hc_mem = node.hold_headcount.as_ref().and_then(|h| h.bytes_per_connection());
    let bare_mem = node.hold_bare.as_ref().and_then(|h| h.bytes_per_connection());
    if let (Some(hc), Some(bare)) = (hc_mem, bare_mem) {
        let r = ratio(hc, bare);
        out.push(verdict(
            "RSS per connection vs bare",
            show_ratio(r),
            "≤ 1.15× bare",
            r.map(|r| r <= 1.15),
        ));
        out.push(verdict("RSS per connection", kib(hc), "≤ 4 KiB", Some(hc <= 4096.0)));
    }
    // Judged on the median of the paired rounds: a burst of someone else's
    // work that hits one round should not decide the verdict either way.
    if let Some(r) = median(&churn_pair_ratios(results)) {
        out.push(verdict(
            "churn cycles/s vs bare (median of paired rounds)",
            show_ratio(Some(r)),
            "≥ 0.9× bare",
            Some(r >= 0.9),
        ));
    }
    if let Some(count) = &node.count_headcount {
        let ok = count.requests > 0 && count.errors.is_empty();
        let floor = node.count_bare.as_ref().map_or(String::new(), |bare| {
            format!(" (bare HTTP floor {:.3} ms)", bare.latency.p99_ms)
        });
        out.push(verdict(
            format!("GET /count p99 with {} held", thousands(results.connections as f64)),
            format!("{:.3} ms{floor}", count.latency.p99_ms),
            "≤ 1 ms",
            Some(ok && count.latency.p99_ms <= 1.0),
        ));
    }
    for cluster in &results.clusters {
        if let Some(c) = &cluster.converge {
            let limit = cluster.interval_ms + 100.0;
            let ok = c.join_failures == 0 && c.join.p99_ms <= limit;
            out.push(verdict(
                format!(
                    "convergence p99, {} nodes, X = {} ms",
                    cluster.nodes, cluster.interval_ms
                ),
                format!("{:.0} ms", c.join.p99_ms),
                format!("≤ {limit:.0} ms"),
                Some(ok),
            ));
        }
        if cluster.quiet_topics > 0 {
            let limit = 2.0 * cluster.interval_ms;
            out.push(verdict(
                format!(
                    "all totals agree after {} joins stop, {} nodes, X = {} ms (SPEC: within 2·X)",
                    thousands(cluster.quiet_topics as f64),
                    cluster.nodes,
                    cluster.interval_ms
                ),
                cluster
                    .quiet_agree_ms
                    .map_or("never".into(), |ms| format!("{ms:.0} ms")),
                format!("≤ {limit:.0} ms"),
                Some(cluster.quiet_agree_ms.is_some_and(|ms| ms <= limit)),
            ));
            let max = cluster.gossip_quiet.max_sent();
            out.push(verdict(
                format!(
                    "quiet gossip, {} nodes, X = {} ms, {} topics (target is for 100k: see scale run)",
                    cluster.nodes,
                    cluster.interval_ms,
                    thousands(cluster.quiet_topics as f64)
                ),
                format!("{} B/s", thousands(max)),
                "≤ 2,000 B/s per node",
                Some(max <= 2000.0),
            ));
        }
    }
    out
}

/// The suite's sub-section.
pub fn suite_markdown(results: &SuiteResults) -> String {
    let mut md = String::new();
    let push = |md: &mut String, line: String| {
        md.push_str(&line);
        md.push('\n');
    };
    push(&mut md, format!("### Standard suite — {}", results.started));
    md.push('\n');
    if let Some(m) = &results.machine {
        push(
            &mut md,
            format!(
                "Machine: {}, {} cores shared by servers and load generator, {:.0} GiB, Linux {}; load average {} at the start, {} at the end (other people's builds and tests run on it too). Wall time {:.0} s.",
                m.cpu, m.cores, m.mem_gib, m.kernel, m.load_start, m.load_end, results.wall_secs
            ),
        );
        md.push('\n');
    }

    let node = &results.node;
    if node.hold_headcount.is_some() || !node.churn_headcount.is_empty() {
        push(
            &mut md,
            "#### Per node process — headcount against bare, same run".into(),
        );
        md.push('\n');
        push(&mut md, "| measure | headcount | bare | ratio | target |".into());
        push(&mut md, "| --- | --- | --- | --- | --- |".into());
        if let (Some(hc), Some(bare)) = (&node.hold_headcount, &node.hold_bare) {
            push(
                &mut md,
                format!(
                    "| connections held ({} topics, uniform) | {} of {} | {} of {} | | |",
                    thousands(results.topics as f64),
                    thousands(hc.held as f64),
                    thousands(hc.requested as f64),
                    thousands(bare.held as f64),
                    thousands(bare.requested as f64)
                ),
            );
            let (hm, bm) = (
                hc.bytes_per_connection().unwrap_or(f64::NAN),
                bare.bytes_per_connection().unwrap_or(f64::NAN),
            );
            push(
                &mut md,
                format!(
                    "| server RSS per connection (VmRSS delta / held) | {} | {} | {} | ≤ 1.15× bare, ≤ 4 KiB |",
                    kib(hm),
                    kib(bm),
                    show_ratio(ratio(hm, bm))
                ),
            );
            let rss = |h: &crate::hold::HoldReport| {
                h.servers.first().map_or("–".into(), |s| {
                    format!(
                        "{:.1} → {:.1} MiB",
                        s.rss_before_kib as f64 / 1024.0,
                        s.rss_held_kib as f64 / 1024.0
                    )
                })
            };
            push(
                &mut md,
                format!("| server RSS before → held | {} | {} | | |", rss(hc), rss(bare)),
            );
            push(
                &mut md,
                format!(
                    "| handshakes/s while connecting (100 in flight) | {} | {} | {} | |",
                    thousands(hc.handshakes_per_sec),
                    thousands(bare.handshakes_per_sec),
                    show_ratio(ratio(hc.handshakes_per_sec, bare.handshakes_per_sec))
                ),
            );
            push(
                &mut md,
                format!(
                    "| connect → first frame p50 / p99 | {} | {} | {} (p99) | |",
                    ms2(&hc.first_frame),
                    ms2(&bare.first_frame),
                    show_ratio(ratio(hc.first_frame.p99_ms, bare.first_frame.p99_ms))
                ),
            );
            push(
                &mut md,
                format!(
                    "| listen-queue overflows while connecting (machine-wide) | {} | {} | | |",
                    hc.listen_overflows, bare.listen_overflows
                ),
            );
        }
        if let (Some(hc), Some(bare)) = (churn_rate(&node.churn_headcount), churn_rate(&node.churn_bare)) {
            let workers = node.churn_headcount.first().map_or(0, |r| r.concurrency);
            let pairs = churn_pair_ratios(results);
            let rounds: Vec<String> = pairs.iter().map(|&r| show_ratio(Some(r))).collect();
            push(
                &mut md,
                format!(
                    "| churn cycles/s (join + leave; {workers} workers, closed loop, {} alternating rounds each; paired-round ratios {}) | {} | {} | {} overall, {} median of pairs | ≥ 0.9× bare |",
                    pairs.len(),
                    rounds.join(", "),
                    thousands(hc),
                    thousands(bare),
                    show_ratio(ratio(hc, bare)),
                    show_ratio(median(&pairs))
                ),
            );
            if let (Some(h), Some(b)) = (node.churn_headcount.first(), node.churn_bare.first()) {
                push(
                    &mut md,
                    format!(
                        "| churn cycle p50 / p99 (round 1) | {} | {} | | |",
                        ms2(&h.cycle),
                        ms2(&b.cycle)
                    ),
                );
            }
            if let (Some(hcpu), Some(bcpu)) = (churn_cpu(&node.churn_headcount), churn_cpu(&node.churn_bare)) {
                push(
                    &mut md,
                    format!(
                        "| server CPU per churn cycle | {hcpu:.0} µs | {bcpu:.0} µs | {} | |",
                        show_ratio(ratio(hcpu, bcpu))
                    ),
                );
            }
            let failed: u64 = node
                .churn_headcount
                .iter()
                .chain(&node.churn_bare)
                .map(|r| r.failed)
                .sum();
            if failed > 0 {
                push(
                    &mut md,
                    format!("| churn cycles failed (both servers) | {failed} | | | |"),
                );
            }
        }
        if let (Some(hc), Some(bare)) = (&node.count_headcount, &node.count_bare) {
            let rounds = |p99s: &[f64]| p99s.iter().map(|p| format!("{p:.2}")).collect::<Vec<_>>().join(", ");
            push(
                &mut md,
                format!(
                    "| GET /count p50 / p99 / p99.9, {} req/s, {} held, {} alternating rounds | {} | {} (static answer: the HTTP floor) | {} (p99) | p99 ≤ 1 ms |",
                    thousands(hc.rate_target),
                    thousands(results.connections as f64),
                    node.count_rounds_p99_headcount.len(),
                    ms3(&hc.latency),
                    ms3(&bare.latency),
                    show_ratio(ratio(hc.latency.p99_ms, bare.latency.p99_ms))
                ),
            );
            push(
                &mut md,
                format!(
                    "| GET /count p99 of each round, ms | {} | {} | | |",
                    rounds(&node.count_rounds_p99_headcount),
                    rounds(&node.count_rounds_p99_bare)
                ),
            );
            push(
                &mut md,
                format!(
                    "| GET /count requests that started > 5 ms late (load generator descheduled) | {} of {} | {} of {} | | |",
                    hc.late_starts, hc.requests, bare.late_starts, bare.requests
                ),
            );
        }
        md.push('\n');
    }

    if !results.clusters.is_empty() {
        push(
            &mut md,
            "#### Per cluster — headcount only (targets are in terms of X)".into(),
        );
        md.push('\n');
        push(&mut md, "| nodes | X | join seen by every node p50 / p99 | leave p50 / p99 | target p99 | gossip sent B/s per node, mean (max): idle | 10 busy topics | quiet topics | quiet: all totals agree after last join (slowest node) | quiet: gossip tail after agreement | quiet: all totals 0 after release start (client close time) |".into());
        push(
            &mut md,
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |".into(),
        );
        for cluster in &results.clusters {
            push(&mut md, cluster_row(cluster));
        }
        md.push('\n');
        if let Some(c) = results.clusters.iter().find_map(|c| c.converge.as_ref()) {
            push(
                &mut md,
                format!(
                    "Convergence: {} trials per cluster, joins round-robin over the nodes, join and leave each at a random phase of the gossip tick, every node polled every {:.0} ms (figures are upper bounds by one poll). Busy: open-loop churn at {} cycles/s over 10 topics on all nodes. Quiet: one connection per topic spread over all nodes, nothing changing, read once the totals agreed and every node was back within 1.5× (+200 B/s) of its idle gossip rate (the tail column says how long that took). Gossip is UDP payload from `headcount_gossip_sent_bytes_total`; full-state pulls go over gRPC and are not in it.",
                    c.trials,
                    c.poll_ms,
                    results
                        .clusters
                        .first()
                        .and_then(|c| c.busy_churn.as_ref())
                        .map_or("?".into(), |b| thousands(b.rate_target))
                ),
            );
            md.push('\n');
        }
    }

    push(&mut md, "#### Targets".into());
    md.push('\n');
    push(&mut md, "| target | measured | goal | verdict |".into());
    push(&mut md, "| --- | --- | --- | --- |".into());
    for v in verdicts(results) {
        push(
            &mut md,
            format!("| {} | {} | {} | {} |", v.name, v.value, v.target, mark(v.pass)),
        );
    }
    md.push('\n');
    if results.problems.is_empty() {
        push(&mut md, "Correctness checks (totals back to 0 after every release, no held connection dropped, `/count` agreeing with the poller): all passed.".into());
    } else {
        push(&mut md, "Correctness problems seen in this run (product bugs):".into());
        md.push('\n');
        for problem in &results.problems {
            push(&mut md, format!("- {problem}"));
        }
    }
    md
}

fn cluster_row(c: &ClusterResults) -> String {
    let (join, leave) = c.converge.as_ref().map_or(("–".into(), "–".into()), |v| {
        let fails = if v.join_failures > 0 {
            format!(" ({} of {} never converged)", v.join_failures, v.trials)
        } else {
            String::new()
        };
        (format!("{}{fails}", ms2(&v.join)), ms2(&v.leave))
    });
    let g = |r: &crate::suite::GossipReading| format!("{} ({})", thousands(r.mean_sent()), thousands(r.max_sent()));
    let each: Vec<String> = c
        .quiet_agree_each_ms
        .iter()
        .map(|ms| ms.map_or("never".into(), |ms| format!("{ms:.0}")))
        .collect();
    let pulls: f64 = c.quiet_pulls_each.iter().sum();
    let agree = c.quiet_agree_ms.map_or("never (30 s)".into(), |ms| {
        format!("{ms:.0} ms (per node {}; {pulls:.0} full-state pulls)", each.join(", "))
    });
    let zero = c.quiet_release_agree_ms.map_or("never (30 s)".into(), |ms| {
        format!("{ms:.0} ms ({:.0} ms)", c.quiet_release_secs * 1000.0)
    });
    let tail = c.quiet_tail_secs.map_or("> 30 s".into(), |secs| format!("{secs:.1} s"));
    format!(
        "| {} | {} ms | {join} | {leave} | ≤ {:.0} ms | {} | {} | {} with {} topics | {agree} | {tail} | {zero} |",
        c.nodes,
        c.interval_ms,
        c.interval_ms + 100.0,
        g(&c.gossip_idle),
        g(&c.gossip_busy),
        g(&c.gossip_quiet),
        thousands(c.quiet_topics as f64),
    )
}

/// The scale run's sub-section.
pub fn scale_markdown(r: &ScaleResults) -> String {
    let mut md = format!("### Scale run — {}\n\n", r.started);
    if let Some(m) = &r.machine {
        md.push_str(&format!(
            "Machine: {}, {} cores, {:.0} GiB, Linux {}; load average {} at the start, {} at the end. Wall time {:.0} s.\n\n",
            m.cpu, m.cores, m.mem_gib, m.kernel, m.load_start, m.load_end, r.wall_secs
        ));
    }
    let x_ms = r.interval_ms;
    let agree_ok = r.agree_ms.map(|ms| ms <= 2.0 * x_ms);
    let per_conn = r.bytes_per_connection();
    let steady = r.gossip_steady.max_sent();
    md.push_str("| measure | value | target | verdict |\n| --- | --- | --- | --- |\n");
    md.push_str(&format!(
        "| connections held | {} of {} on {} nodes ({} load processes), each on its own topic | {} | {} |\n",
        thousands(r.held as f64),
        thousands(r.requested as f64),
        r.nodes,
        r.procs,
        thousands(r.requested as f64),
        mark(Some(r.held == r.requested)),
    ));
    md.push_str(&format!(
        "| time to connect them all | {:.1} s ({} handshakes/s); slowest process connect p50 / p99 {} | | |\n",
        r.connect_secs,
        thousands(r.held as f64 / r.connect_secs.max(1e-9)),
        ms2(&r.connect_worst),
    ));
    let each: Vec<String> = r
        .agree_each_ms
        .iter()
        .map(|ms| ms.map_or("never".into(), |ms| format!("{ms:.0}")))
        .collect();
    md.push_str(&format!(
        "| time from the last join until every node's `/counts` total is {} | {} (per node, ms: {}; full-state pulls per node: {}) | ≤ 2·X = {:.0} ms | {} |\n",
        thousands(r.held as f64),
        r.agree_ms.map_or("never".into(), |ms| format!("{ms:.0} ms")),
        each.join(", "),
        r.pulls_each.iter().map(|p| format!("{p:.0}")).collect::<Vec<_>>().join(", "),
        2.0 * x_ms,
        mark(agree_ok),
    ));
    md.push_str(&format!(
        "| server RSS per connection (sum of node deltas / held) | {} (nodes {:.0} → {:.0} MiB in total) | ≤ 4 KiB | {} |\n",
        per_conn.map_or("–".into(), kib),
        r.rss_before_kib.iter().sum::<u64>() as f64 / 1024.0,
        r.rss_held_kib.iter().sum::<u64>() as f64 / 1024.0,
        mark(per_conn.map(|b| b <= 4096.0)),
    ));
    md.push_str(&format!(
        "| gossip tail: from agreement until every node sends near its idle rate again | {} | | |\n",
        r.quiet_tail_secs.map_or("> 60 s".into(), |secs| format!("{secs:.1} s")),
    ));
    md.push_str(&format!(
        "| gossip sent per node, steady, {} quiet topics: mean (max) | {} ({}) B/s; idle cluster before the joins {} ({}) B/s | ≤ 2,000 B/s | {} |\n",
        thousands(r.held as f64),
        thousands(r.gossip_steady.mean_sent()),
        thousands(steady),
        thousands(r.gossip_idle.mean_sent()),
        thousands(r.gossip_idle.max_sent()),
        mark(Some(steady <= 2000.0)),
    ));
    let after_last_leave = r.release_agree_ms.map(|ms| ms - r.release_secs * 1000.0);
    md.push_str(&format!(
        "| time until every total is 0 after the last leave | {} | ≤ 2·X = {:.0} ms | {} |\n",
        match (r.release_agree_ms, after_last_leave) {
            (Some(total), Some(after)) => format!(
                "{after:.0} ms ({total:.0} ms from the start of the release; the clients took {:.1} s to close all)",
                r.release_secs
            ),
            _ => "never (60 s)".into(),
        },
        2.0 * x_ms,
        mark(after_last_leave.map(|ms| ms <= 2.0 * x_ms)),
    ));
    md.push_str(&format!("\nX = {x_ms:.0} ms. Nodes were started with `--max-connections-per-ip 1000000`; clients bound to {} source addresses in 127.0.1.0/24.\n", r.sources));
    if r.problems.is_empty() {
        md.push_str("\nCorrectness checks: all passed.\n");
    } else {
        md.push_str("\nCorrectness problems seen in this run (product bugs):\n\n");
        for problem in &r.problems {
            md.push_str(&format!("- {problem}\n"));
        }
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(100_000.0), "100,000");
        assert_eq!(thousands(-1234.0), "-1,234");
    }

    #[test]
    fn sections_keep_the_outside_and_the_other_part() {
        let dir = std::env::temp_dir().join(format!("headcount-load-report-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("BENCHMARKS.md");
        std::fs::write(
            &file,
            "# Mine\nkeep me\n<!-- loadtest:begin -->\nold\n<!-- loadtest:end -->\ntail stays\n",
        )
        .expect("write");
        write_section(&file, Part::Scale, "scale numbers\n").expect("scale");
        write_section(&file, Part::Suite, "suite numbers\n").expect("suite");
        write_section(&file, Part::Suite, "suite numbers 2\n").expect("suite again");
        let text = std::fs::read_to_string(&file).expect("read");
        assert!(text.starts_with("# Mine\nkeep me\n<!-- loadtest:begin -->"), "{text}");
        assert!(text.ends_with("<!-- loadtest:end -->\ntail stays\n"), "{text}");
        assert!(
            text.contains("scale numbers") && text.contains("suite numbers 2") && !text.contains("suite numbers\n"),
            "{text}"
        );
        assert!(!text.contains("\nold\n"));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn missing_file_is_created_with_markers() {
        let dir = std::env::temp_dir().join(format!("headcount-load-report-new-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("BENCHMARKS.md");
        write_section(&file, Part::Suite, "numbers\n").expect("write");
        let text = std::fs::read_to_string(&file).expect("read");
        assert!(
            text.contains(BEGIN) && text.contains(END) && text.contains("numbers") && text.contains("No scale run")
        );
        std::fs::remove_dir_all(&dir).ok();
    }
}
