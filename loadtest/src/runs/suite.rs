//! `suite`: the standard benchmark run. The machine is shared and noisy, so every per-node figure is taken for
//! headcount and for the bare server back to back, on fresh processes, with the same load, and the ratio is the
//! claim (churn and GET /count alternate bare/headcount rounds); cluster figures are compared with their targets,
//! written in terms of X. What it sees of correctness (totals back to 0 after every release, no held connection
//! dropped, `/count` agreeing with the poller) goes into the report as product bugs with their numbers.

use std::net::SocketAddr;
use std::time::Duration;

use super::lab::{Lab, Server, UNCAPPED};
use super::{RunArgs, check_totals, flags, list, quiet, say};
use crate::measure::{churn, converge, count, count::CountReport, summary};
use crate::report::{ClusterResults, NodeResults, ScaleResults, SuiteResults};

/// Per node process: connections held, and the topics they spread over (uniform).
const HELD: (u64, u64) = (10_000, 1_000);
/// Cluster sizes and gossip intervals X, in ms.
const CLUSTERS: [(usize, u64); 4] = [(3, 1000), (3, 200), (5, 1000), (5, 200)];
/// Churn: rounds per server (alternating bare and headcount), each this long, closed-loop workers.
const CHURN: (usize, &str, usize) = (4, "5s", 32);
/// GET /count: rounds per server (alternating), requests per second, ms over all rounds.
const COUNT: (u128, f64, u128) = (4, 2000.0, 12_000);
/// Per cluster: convergence trials, connections (one topic each) held for the quiet reading, churn cycles/s over
/// the 10 busy topics, gossip window.
const CLUSTER: (usize, u64, f64, Duration) = (80, 10_000, 200.0, Duration::from_secs(8));

/// Flags of `suite`.
#[derive(Debug, Clone, clap::Args)]
pub struct SuiteArgs {
    #[command(flatten)]
    pub run: RunArgs,
}

/// Runs `suite`.
pub async fn run(args: SuiteArgs) -> anyhow::Result<SuiteResults> {
    let (lab, mut r) = args.run.start::<SuiteResults>("suite")?;
    (r.connections, r.topics) = HELD;
    node_part(&lab, &mut r.node, &mut r.run.problems).await?;
    for (nodes, ms) in CLUSTERS {
        let cluster = cluster_part(&lab, nodes, Duration::from_millis(ms), &mut r.run.problems).await?;
        r.clusters.push(cluster);
    }
    args.run.finish(&lab, &mut r)?;
    Ok(r)
}

async fn node_part(lab: &Lab, node: &mut NodeResults, problems: &mut Vec<String>) -> anyhow::Result<()> {
    // Both servers are fresh processes, so neither inherits allocator state from earlier work; they hold their
    // connections one after the other (memory is read by each hold process on its own server), then the GET /count
    // rounds and the churn rounds alternate between them, so a burst of someone else's work on the machine hits
    // both sides alike.
    let hc = lab.server("hc", Some(Duration::from_secs(1)), UNCAPPED)?;
    let mut servers = [lab.server("bare", None, "")?, hc];
    lab.wait_up(&mut servers, 1).await?;
    for server in &servers {
        // A short closed-loop churn so lazy allocations happen before any reading.
        let warm = "--sources 127.0.0.9 --topics 16 --topic-prefix warm/ --concurrency 16 --duration 1s";
        churn::run(flags(&format!("--targets {} {warm}", server.http))?).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (hc, (connections, topics)) = ([servers[1].http], HELD);
    let mut holders = Vec::new();
    for (server, from) in servers.iter().zip(["127.0.0.2-5", "127.0.0.6-9"]) {
        let load = format!("--connections {connections} --topics {topics} --topic-prefix hold/");
        let (to, pid) = (server.http, server.pid);
        let line = format!("--targets {to} --sources {from} {load} --server-pid {pid}");
        let mut holder = lab.holder(&format!("hold-{}", server.name), &line)?;
        let ready = holder.report(Duration::from_secs(120)).await?;
        let (name, held, failed, secs) = (&server.name, ready.held, ready.failed, ready.connect_secs);
        say("suite", format!("{name}: {held} held, {failed} failed in {secs:.1}s"));
        holders.push((holder, ready));
    }
    let (held, failed) = (holders[1].1.held, holders[1].1.failed);
    check_totals(lab, &hc, held, "single node, after holding", problems).await;
    if failed > 0 {
        let problem = format!("headcount refused or failed {failed} of {connections} joins on one node");
        problems.push(problem);
    }

    let ((rounds, rate, duration), mut counts) = (COUNT, [Vec::new(), Vec::new()]);
    for _ in 0..rounds {
        for (server, measured) in servers.iter().zip(&mut counts) {
            let (to, ms) = (server.http, duration / rounds);
            let load = format!("--targets {to} --topics {topics} --topic-prefix hold/ --rate {rate} --duration {ms}ms");
            let round = count::run(flags(&load)?).await?;
            measured.push(round);
        }
    }
    let p99s = |rounds: &[(CountReport, _)]| rounds.iter().map(|(r, _)| r.latency.p99_ms).collect();
    let merged = |rounds| count::merge(rounds).map(|(report, _)| report);
    (node.count_bare, node.count_rounds_p99_bare) = (merged(&counts[0]), p99s(&counts[0]));
    (node.count_headcount, node.count_rounds_p99_headcount) = (merged(&counts[1]), p99s(&counts[1]));

    for ((holder, _), hold) in holders.into_iter().zip([&mut node.hold_bare, &mut node.hold_headcount]) {
        let report = holder.release(Duration::from_secs(60)).await?;
        *hold = Some(report);
    }
    if let Some(report) = &node.hold_headcount {
        let (dropped, held) = (report.dropped_while_held, report.held);
        if dropped > 0 {
            let problem = format!("headcount closed {dropped} of {held} held connections during the hold");
            problems.push(problem);
        }
        let when = format!("single node, after all {held} connections closed");
        check_totals(lab, &hc, 0, &when, problems).await;
    }

    let (rounds, duration, workers) = CHURN;
    for _ in 0..rounds {
        for (server, rounds) in servers.iter().zip([&mut node.churn_bare, &mut node.churn_headcount]) {
            let load = format!("--topics 100 --topic-prefix churn/ --concurrency {workers} --duration {duration}");
            let (to, pid) = (server.http, server.pid);
            let line = format!("--targets {to} --sources 127.0.0.10-17 {load} --server-pid {pid}");
            let report = churn::run(flags(&line)?).await?;
            rounds.push(report);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let cycles: u64 = node.churn_headcount.iter().map(|r| r.cycles).sum();
    let when = format!("single node, after {cycles} churn cycles ended");
    check_totals(lab, &hc, 0, &when, problems).await;
    Server::stop(servers.into(), problems).await;
    Ok(())
}

async fn cluster_part(lab: &Lab, n: usize, x: Duration, problems: &mut Vec<String>) -> anyhow::Result<ClusterResults> {
    let ((trials, quiet_topics, busy_rate, window), tag) = (CLUSTER, &format!("c{n}x{}", x.as_millis()));
    say(tag, format!("cluster of {n} nodes, X = {x:?}"));
    let nodes = lab.cluster(tag, n, x).await?;
    let https: Vec<SocketAddr> = nodes.iter().map(|node| node.http).collect();
    let (to, mut c) = (list(&https), ClusterResults::default());
    (c.nodes, c.interval_ms) = (n, x.as_secs_f64() * 1000.0);

    let ms = x.as_millis();
    let line = format!("--targets {to} --sources 127.0.0.20-23 --trials {trials} --interval {ms}ms");
    let converged = converge::run(flags(&line)?).await?;
    let v = &converged;
    say(tag, summary(v));
    if v.join_failures + v.leave_failures + v.count_mismatches + v.first_frame_mismatches + v.anomalies > 0 {
        problems.push(format!("{tag}: {}", summary(v)));
    }
    c.converge = Some(converged);

    c.gossip_idle = lab.gossip(&https, window).await;
    let ms = window.as_millis() + 2000;
    let load = format!("--rate {busy_rate} --concurrency 64 --duration {ms}ms");
    let line = format!("--targets {to} --sources 127.0.0.24-27 --topics 10 --topic-prefix busy/ {load}");
    let busy = tokio::spawn(churn::run(flags(&line)?));
    tokio::time::sleep(Duration::from_secs(1)).await;
    c.gossip_busy = lab.gossip(&https, window).await;
    let busy = busy.await??;
    let (idle, busy_bps, churned) = (c.gossip_idle.max_sent(), c.gossip_busy.max_sent(), summary(&busy));
    let line = format!("gossip {idle:.0} B/s idle, {busy_bps:.0} busy (max); {churned}");
    say(tag, line);
    c.busy_churn = Some(busy);
    check_totals(lab, &https, 0, &format!("{tag}: after the busy churn"), problems).await;

    let topics = format!("--connections {quiet_topics} --topics {quiet_topics} --topic-prefix quiet/");
    let holds = [format!("--targets {to} --sources 127.0.0.30-33 {topics} --settle 0s")];
    let mut q = ScaleResults::default();
    q.gossip_idle.clone_from(&c.gossip_idle);
    let times = [
        Duration::from_secs(300),
        Duration::from_secs(30),
        Duration::ZERO,
        window,
    ];
    quiet(lab, (tag, &nodes), times, &holds, &mut q).await?;
    (c.quiet_topics, c.quiet_agree_ms, c.quiet_agree_each_ms) = (q.held, q.agree_ms, q.agree_each_ms);
    (c.quiet_pulls_each, c.quiet_tail_secs, c.gossip_quiet) = (q.pulls_each, q.quiet_tail_secs, q.gossip_steady);
    (c.quiet_release_secs, c.quiet_release_agree_ms) = (q.release_secs, q.release_agree_ms);
    problems.extend(q.run.problems);
    Server::stop(nodes, problems).await;
    Ok(c)
}
