//! The suite's and the scale run's sub-sections of BENCHMARKS.md, written
//! from their results; every goal and verdict comes from [`TARGETS`].

use super::{
    results::{ClusterResults, GossipReading, ScaleResults, SuiteResults},
    table::{Table, kib, list, ms_or_never, p50_p99, ratio, thousands, times},
    targets::{TARGETS, churn_pair_ratios, mark, median, verdicts},
};
use crate::measure::{churn::ChurnReport, hold::HoldReport, procfs::Machine, stats::LatencySummary};

fn machine(m: &Machine, cores: &str, busy: &str, wall_secs: f64) -> String {
    format!(
        "Machine: {}, {} cores{cores}, {:.0} GiB, Linux {}; load average {} at the start, {} at the end{busy}. Wall time {wall_secs:.0} s.\n\n",
        m.cpu, m.cores, m.mem_gib, m.kernel, m.load_start, m.load_end
    )
}

fn problems(problems: &[String], all_passed: &str) -> String {
    if problems.is_empty() {
        return format!("{all_passed}: all passed.\n");
    }
    let items: String = problems.iter().map(|problem| format!("- {problem}\n")).collect();
    format!("Correctness problems seen in this run (product bugs):\n\n{items}")
}

/// Cycles per second over every round of one server.
fn churn_rate(rounds: &[ChurnReport]) -> Option<f64> {
    let secs: f64 = rounds.iter().map(|r| r.duration_secs).sum();
    let cycles: u64 = rounds.iter().map(|r| r.cycles).sum();
    (secs > 0.0).then(|| cycles as f64 / secs)
}

/// Mean server CPU per cycle over the rounds that measured it.
fn churn_cpu(rounds: &[ChurnReport]) -> Option<f64> {
    let values: Vec<f64> = rounds.iter().filter_map(|r| r.server_cpu_us_per_cycle).collect();
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

fn p50_p99_p999(s: &LatencySummary) -> String {
    format!("{:.3} / {:.3} / {:.3} ms", s.p50_ms, s.p99_ms, s.p999_ms)
}

/// The rows comparing two held sets of connections.
fn hold_rows(table: &mut Table, topics: u64, hc: &HoldReport, bare: &HoldReport) {
    let held = |h: &HoldReport| format!("{} of {}", thousands(h.held as f64), thousands(h.requested as f64));
    let name = format!("connections held ({} topics, uniform)", thousands(topics as f64));
    table.row(&[&name, &held(hc), &held(bare), "", ""]);
    let (hm, bm) = (hc.bytes_per_connection().unwrap_or(f64::NAN), bare.bytes_per_connection().unwrap_or(f64::NAN));
    let goal = format!("{}, {}", TARGETS.rss_vs_bare, TARGETS.rss_kib);
    let name = "server RSS per connection (VmRSS delta / held)";
    table.row(&[name, &kib(hm), &kib(bm), &times(ratio(hm, bm)), &goal]);
    let rss = |h: &HoldReport| {
        (h.servers.first()).map_or("–".into(), |s| {
            format!("{:.1} → {:.1} MiB", s.rss_before_kib as f64 / 1024.0, s.rss_held_kib as f64 / 1024.0)
        })
    };
    table.row(&["server RSS before → held", &rss(hc), &rss(bare), "", ""]);
    let (hs, bs) = (hc.handshakes_per_sec, bare.handshakes_per_sec);
    let name = "handshakes/s while connecting (100 in flight)";
    table.row(&[name, &thousands(hs), &thousands(bs), &times(ratio(hs, bs)), ""]);
    let (hf, bf) = (&hc.first_frame, &bare.first_frame);
    let p99 = format!("{} (p99)", times(ratio(hf.p99_ms, bf.p99_ms)));
    table.row(&["connect → first frame p50 / p99", &p50_p99(hf), &p50_p99(bf), &p99, ""]);
    let (ho, bo) = (hc.listen_overflows.to_string(), bare.listen_overflows.to_string());
    table.row(&["listen-queue overflows while connecting (machine-wide)", &ho, &bo, "", ""]);
}

/// The suite's sub-section.
pub fn suite(results: &SuiteResults) -> String {
    let mut md = format!("### Standard suite — {}\n\n", results.started);
    if let Some(m) = &results.machine {
        let busy = " (other people's builds and tests run on it too)";
        md += &machine(m, " shared by servers and load generator", busy, results.wall_secs);
    }
    let node = &results.node;
    if node.hold_headcount.is_some() || !node.churn_headcount.is_empty() {
        md += "#### Per node process — headcount against bare, same run\n\n";
        let mut table = Table::new(&["measure", "headcount", "bare", "ratio", "target"]);
        if let (Some(hc), Some(bare)) = (&node.hold_headcount, &node.hold_bare) {
            hold_rows(&mut table, results.topics, hc, bare);
        }
        let (hc_rounds, bare_rounds) = (&node.churn_headcount, &node.churn_bare);
        if let (Some(hc), Some(bare)) = (churn_rate(hc_rounds), churn_rate(bare_rounds)) {
            let workers = hc_rounds.first().map_or(0, |r| r.concurrency);
            let pairs = churn_pair_ratios(node);
            let name = format!(
                "churn cycles/s (join + leave; {workers} workers, closed loop, {} alternating rounds each; paired-round ratios {})",
                pairs.len(),
                list(pairs.iter().map(|&r| times(Some(r))))
            );
            let ratios = format!("{} overall, {} median of pairs", times(ratio(hc, bare)), times(median(&pairs)));
            table.row(&[&name, &thousands(hc), &thousands(bare), &ratios, &TARGETS.churn_vs_bare.to_string()]);
            if let (Some(h), Some(b)) = (hc_rounds.first(), bare_rounds.first()) {
                table.row(&["churn cycle p50 / p99 (round 1)", &p50_p99(&h.cycle), &p50_p99(&b.cycle), "", ""]);
            }
            if let (Some(h), Some(b)) = (churn_cpu(hc_rounds), churn_cpu(bare_rounds)) {
                let (h_us, b_us) = (format!("{h:.0} µs"), format!("{b:.0} µs"));
                table.row(&["server CPU per churn cycle", &h_us, &b_us, &times(ratio(h, b)), ""]);
            }
            let failed: u64 = hc_rounds.iter().chain(bare_rounds).map(|r| r.failed).sum();
            if failed > 0 {
                table.row(&["churn cycles failed (both servers)", &failed.to_string(), "", "", ""]);
            }
        }
        if let (Some(hc), Some(bare)) = (&node.count_headcount, &node.count_bare) {
            let (hc_p99s, bare_p99s) = (&node.count_rounds_p99_headcount, &node.count_rounds_p99_bare);
            let name = format!(
                "GET /count p50 / p99 / p99.9, {} req/s, {} held, {} alternating rounds",
                thousands(hc.rate_target),
                thousands(results.connections as f64),
                hc_p99s.len()
            );
            let floor = format!("{} (static answer: the HTTP floor)", p50_p99_p999(&bare.latency));
            let p99 = format!("{} (p99)", times(ratio(hc.latency.p99_ms, bare.latency.p99_ms)));
            let goal = format!("p99 {}", TARGETS.count_p99_ms);
            table.row(&[&name, &p50_p99_p999(&hc.latency), &floor, &p99, &goal]);
            let rounds = |p99s: &[f64]| list(p99s.iter().map(|p| format!("{p:.2}")));
            table.row(&["GET /count p99 of each round, ms", &rounds(hc_p99s), &rounds(bare_p99s), "", ""]);
            let (hl, bl) = (
                format!("{} of {}", hc.late_starts, hc.requests),
                format!("{} of {}", bare.late_starts, bare.requests),
            );
            let name = "GET /count requests that started > 5 ms late (load generator descheduled)";
            table.row(&[name, &hl, &bl, "", ""]);
        }
        md += &table.end();
        md += "\n";
    }

    if !results.clusters.is_empty() {
        md += "#### Per cluster — headcount only (targets are in terms of X)\n\n";
        let mut table = Table::new(&[
            "nodes",
            "X",
            "join seen by every node p50 / p99",
            "leave p50 / p99",
            "target p99",
            "gossip sent B/s per node, mean (max): idle",
            "10 busy topics",
            "quiet topics",
            "quiet: all totals agree after last join (slowest node)",
            "quiet: gossip tail after agreement",
            "quiet: all totals 0 after release start (client close time)",
        ]);
        for cluster in &results.clusters {
            cluster_row(&mut table, cluster);
        }
        md += &table.end();
        md += "\n";
        if let Some(c) = results.clusters.iter().find_map(|c| c.converge.as_ref()) {
            let busy = results.clusters.first().and_then(|c| c.busy_churn.as_ref());
            md += &format!(
                "Convergence: {} trials per cluster, joins round-robin over the nodes, join and leave each at a random phase of the gossip tick, every node polled every {:.0} ms (figures are upper bounds by one poll). Busy: open-loop churn at {} cycles/s over 10 topics on all nodes. Quiet: one connection per topic spread over all nodes, nothing changing, read once the totals agreed and every node was back within 1.5× (+200 B/s) of its idle gossip rate (the tail column says how long that took). Gossip is UDP payload from `headcount_gossip_sent_bytes_total`; full-state pulls go over gRPC and are not in it.\n\n",
                c.trials,
                c.poll_ms,
                busy.map_or("?".into(), |b| thousands(b.rate_target))
            );
        }
    }

    md += "#### Targets\n\n";
    let mut table = Table::new(&["target", "measured", "goal", "verdict"]);
    for v in verdicts(results) {
        table.row(&[&v.name, &v.value, &v.goal, mark(v.pass)]);
    }
    md += &table.end();
    md += "\n";
    let checks = "Correctness checks (totals back to 0 after every release, no held connection dropped, `/count` agreeing with the poller)";
    md + &problems(&results.problems, checks)
}

fn cluster_row(table: &mut Table, c: &ClusterResults) {
    let (join, leave) = c.converge.as_ref().map_or(("–".into(), "–".into()), |v| {
        let fails = if v.join_failures > 0 {
            format!(" ({} of {} never converged)", v.join_failures, v.trials)
        } else {
            String::new()
        };
        (format!("{}{fails}", p50_p99(&v.join)), p50_p99(&v.leave))
    });
    let gossip = |r: &GossipReading| format!("{} ({})", thousands(r.mean_sent()), thousands(r.max_sent()));
    let each = list(c.quiet_agree_each_ms.iter().map(|ms| ms.map_or("never".into(), |ms| format!("{ms:.0}"))));
    let pulls: f64 = c.quiet_pulls_each.iter().sum();
    let agree = (c.quiet_agree_ms)
        .map_or("never (30 s)".into(), |ms| format!("{ms:.0} ms (per node {each}; {pulls:.0} full-state pulls)"));
    let zero = (c.quiet_release_agree_ms)
        .map_or("never (30 s)".into(), |ms| format!("{ms:.0} ms ({:.0} ms)", c.quiet_release_secs * 1000.0));
    table.row(&[
        &c.nodes.to_string(),
        &format!("{} ms", c.interval_ms),
        &join,
        &leave,
        &TARGETS.converge_p99_ms.goal(c.interval_ms, false),
        &gossip(&c.gossip_idle),
        &gossip(&c.gossip_busy),
        &format!("{} with {} topics", gossip(&c.gossip_quiet), thousands(c.quiet_topics as f64)),
        &agree,
        &c.quiet_tail_secs.map_or("> 30 s".into(), |secs| format!("{secs:.1} s")),
        &zero,
    ]);
}

/// The scale run's sub-section.
pub fn scale(r: &ScaleResults) -> String {
    let mut md = format!("### Scale run — {}\n\n", r.started);
    if let Some(m) = &r.machine {
        md += &machine(m, "", "", r.wall_secs);
    }
    let (x, t) = (r.interval_ms, &TARGETS);
    let mut table = Table::new(&["measure", "value", "target", "verdict"]);
    let (held, requested) = (thousands(r.held as f64), thousands(r.requested as f64));
    let value =
        format!("{held} of {requested} on {} nodes ({} load processes), each on its own topic", r.nodes, r.procs);
    table.row(&["connections held", &value, &requested, mark(Some(r.held == r.requested))]);
    let value = format!(
        "{:.1} s ({} handshakes/s); slowest process connect p50 / p99 {}",
        r.connect_secs,
        thousands(r.held as f64 / r.connect_secs.max(1e-9)),
        p50_p99(&r.connect_worst),
    );
    table.row(&["time to connect them all", &value, "", ""]);
    let name = format!("time from the last join until every node's `/counts` total is {held}");
    let value = format!(
        "{} (per node, ms: {}; full-state pulls per node: {})",
        ms_or_never(r.agree_ms),
        list(r.agree_each_ms.iter().map(|ms| ms.map_or("never".into(), |ms| format!("{ms:.0}")))),
        list(r.pulls_each.iter().map(|p| format!("{p:.0}"))),
    );
    let pass = r.agree_ms.map(|ms| t.agree_ms.met(ms, x));
    table.row(&[&name, &value, &t.agree_ms.goal(x, true), mark(pass)]);
    let per_conn = r.bytes_per_connection();
    let value = format!(
        "{} (nodes {:.0} → {:.0} MiB in total)",
        per_conn.map_or("–".into(), kib),
        r.rss_before_kib.iter().sum::<u64>() as f64 / 1024.0,
        r.rss_held_kib.iter().sum::<u64>() as f64 / 1024.0,
    );
    let pass = per_conn.map(|b| t.rss_kib.met(b / 1024.0, 0.0));
    table.row(&["server RSS per connection (sum of node deltas / held)", &value, &t.rss_kib.to_string(), mark(pass)]);
    let tail = r.quiet_tail_secs.map_or("> 60 s".into(), |secs| format!("{secs:.1} s"));
    table.row(&["gossip tail: from agreement until every node sends near its idle rate again", &tail, "", ""]);
    let (steady, idle) = (&r.gossip_steady, &r.gossip_idle);
    let name = format!("gossip sent per node, steady, {held} quiet topics: mean (max)");
    let value = format!(
        "{} ({}) B/s; idle cluster before the joins {} ({}) B/s",
        thousands(steady.mean_sent()),
        thousands(steady.max_sent()),
        thousands(idle.mean_sent()),
        thousands(idle.max_sent()),
    );
    let pass = Some(t.quiet_gossip_bps.met(steady.max_sent(), 0.0));
    table.row(&[&name, &value, &t.quiet_gossip_bps.to_string(), mark(pass)]);
    let after_last_leave = r.release_agree_ms.map(|ms| ms - r.release_secs * 1000.0);
    let value = match (r.release_agree_ms, after_last_leave) {
        (Some(total), Some(after)) => format!(
            "{after:.0} ms ({total:.0} ms from the start of the release; the clients took {:.1} s to close all)",
            r.release_secs
        ),
        _ => "never (60 s)".into(),
    };
    let pass = after_last_leave.map(|ms| t.agree_ms.met(ms, x));
    table.row(&["time until every total is 0 after the last leave", &value, &t.agree_ms.goal(x, true), mark(pass)]);
    md += &table.end();
    md += &format!(
        "\nX = {x:.0} ms. Nodes were started with `--max-connections-per-ip 1000000`; clients bound to {} source addresses in 127.0.1.0/24.\n\n",
        r.sources
    );
    md + &problems(&r.problems, "Correctness checks")
}
