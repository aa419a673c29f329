//! `suite`: the standard benchmark run. The machine is shared and noisy, so
//! every per-node figure is taken for headcount and for the bare server back
//! to back, on fresh processes, with the same load, and the ratio is the
//! claim (churn and GET /count alternate bare/headcount rounds); cluster
//! figures are compared with their targets, written in terms of X. What it
//! sees of correctness (totals back to 0 after every release, no held
//! connection dropped, `/count` agreeing with the poller) goes into the
//! report as product bugs with their numbers.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use clap::Args;

use super::{QuietPlan, RunArgs, check_totals, churn_flags, hold_flags, lab::Lab, now_utc, quiet, say};
use crate::{
    measure::{
        churn,
        converge::{self, ConvergeArgs},
        count::{self, CountArgs, CountReport},
        procfs, summary,
        topics::TopicArgs,
    },
    report::{
        results::{ClusterResults, ScaleResults, SuiteResults},
        targets::verdicts,
    },
};
/// Flags of `suite`.
#[derive(Debug, Clone, Args)]
pub struct SuiteArgs {
    /// Connections held per node process.
    #[arg(long, default_value_t = 10_000)]
    pub connections: u64,
    /// Topics they spread over (uniform).
    #[arg(long, default_value_t = 1_000)]
    pub topics: u64,
    /// Length of one churn round.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub churn_duration: Duration,
    /// Closed-loop churn workers.
    #[arg(long, default_value_t = 32)]
    pub churn_workers: usize,
    /// Churn rounds per server (alternating bare and headcount).
    #[arg(long, default_value_t = 4)]
    pub churn_rounds: usize,
    /// GET /count requests per second.
    #[arg(long, default_value_t = 2000.0)]
    pub count_rate: f64,
    /// How long GET /count is measured on each server, over all rounds.
    #[arg(long, default_value = "12s", value_parser = humantime::parse_duration)]
    pub count_duration: Duration,
    /// GET /count rounds per server (alternating bare and headcount).
    #[arg(long, default_value_t = 4)]
    pub count_rounds: usize,
    /// Cluster sizes.
    #[arg(long, value_delimiter = ',', default_value = "3,5")]
    pub cluster_sizes: Vec<usize>,
    /// Gossip intervals X.
    #[arg(long, value_delimiter = ',', default_value = "1s,200ms", value_parser = humantime::parse_duration)]
    pub intervals: Vec<Duration>,
    /// Convergence trials per cluster.
    #[arg(long, default_value_t = 80)]
    pub trials: usize,
    /// Connections (one topic each) held for the quiet-gossip reading.
    #[arg(long, default_value_t = 10_000)]
    pub quiet_topics: u64,
    /// Churn cycles per second over the 10 busy topics.
    #[arg(long, default_value_t = 200.0)]
    pub busy_rate: f64,
    /// How long each gossip reading lasts.
    #[arg(long, default_value = "8s", value_parser = humantime::parse_duration)]
    pub gossip_window: Duration,
    /// Skip the per-node part.
    #[arg(long)]
    pub skip_node: bool,
    /// Skip the cluster part.
    #[arg(long)]
    pub skip_cluster: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

/// Runs `suite`.
pub async fn run(args: SuiteArgs) -> anyhow::Result<SuiteResults> {
    let (started, lab) = (Instant::now(), Lab::new(args.run.headcount.clone())?);
    let (connections, topics) = (args.connections, args.topics);
    let (mode, machine) = ("suite".into(), Some(procfs::machine()));
    let mut results = SuiteResults { mode, started: now_utc(), machine, connections, topics, ..Default::default() };
    if !args.skip_node {
        node_part(&lab, &args, &mut results).await?;
    }
    for &nodes in args.cluster_sizes.iter().filter(|_| !args.skip_cluster) {
        for &interval in &args.intervals {
            let cluster = cluster_part(&lab, &args, nodes, interval, &mut results.problems).await?;
            results.clusters.push(cluster);
        }
    }
    if let Some(machine) = &mut results.machine {
        machine.load_end = procfs::loadavg();
    }
    results.wall_secs = started.elapsed().as_secs_f64();
    args.run.save(&lab, &results)?;
    let verdicts = verdicts(&results);
    let missed: Vec<&str> = verdicts.iter().filter(|v| v.pass == Some(false)).map(|v| v.name.as_str()).collect();
    let met = verdicts.iter().filter(|v| v.pass == Some(true)).count();
    say(
        "suite",
        format_args!(
            "{met} of {} targets met, missed: {missed:?}; {} problems",
            verdicts.len(),
            results.problems.len()
        ),
    );
    Ok(results)
}

async fn node_part(lab: &Lab, args: &SuiteArgs, results: &mut SuiteResults) -> anyhow::Result<()> {
    // Both servers are fresh processes, so neither inherits allocator state
    // from earlier work; they hold their connections one after the other
    // (memory is read by each hold process on its own server), then the
    // GET /count rounds and the churn rounds alternate between them, so a
    // burst of someone else's work on the machine hits both sides alike.
    let mut servers = [lab.server("bare", None, None)?, lab.server("hc", Some(Duration::from_secs(1)), None)?];
    lab.wait_up(&mut servers, 1).await?;
    for server in &servers {
        // A short closed-loop churn so lazy allocations happen before any reading.
        let warm = TopicArgs::uniform("warm/", 16);
        churn::run(churn_flags(&[server.http], "127.0.0.9", warm, (0.0, 16), Duration::from_secs(1), &[])?).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (node, problems, hc) = (&mut results.node, &mut results.problems, [servers[1].http]);
    let (connections, topics) = (args.connections, TopicArgs::uniform("hold/", args.topics));
    let mut holders = Vec::new();
    for (server, from) in servers.iter().zip(["127.0.0.2-5", "127.0.0.6-9"]) {
        let flags = hold_flags(&[server.http], from, connections, topics.clone(), &[server.pid])?;
        let mut holder = lab.holder(&format!("hold-{}", server.name), &flags)?;
        let ready = holder.ready(Duration::from_secs(120)).await?;
        say(
            "suite",
            format_args!("{}: {} held, {} failed in {:.1}s", server.name, ready.held, ready.failed, ready.connect_secs),
        );
        holders.push((holder, ready));
    }
    let ready = &holders[1].1;
    check_totals(lab, &hc, ready.held, "single node, after holding", problems).await;
    if ready.failed > 0 {
        problems.push(format!("headcount refused or failed {} of {connections} joins on one node", ready.failed));
    }

    let (mut counts, rounds) = ([Vec::new(), Vec::new()], args.count_rounds.max(1));
    for _ in 0..rounds {
        for (server, measured) in servers.iter().zip(&mut counts) {
            let (targets, topics, rate, connections) = (vec![server.http], topics.clone(), args.count_rate, 4);
            let (duration, warmup) = (args.count_duration.div_f64(rounds as f64), Duration::from_millis(500));
            let round = count::run(CountArgs { targets, topics, rate, connections, duration, warmup }).await?;
            say("suite", format_args!("{}: {}", server.name, summary(&round.0)));
            measured.push(round);
        }
    }
    let p99s = |rounds: &[(CountReport, _)]| rounds.iter().map(|(r, _)| r.latency.p99_ms).collect();
    let merged = |rounds| count::merge(rounds).map(|(report, _)| report);
    (node.count_bare, node.count_rounds_p99_bare) = (merged(&counts[0]), p99s(&counts[0]));
    (node.count_headcount, node.count_rounds_p99_headcount) = (merged(&counts[1]), p99s(&counts[1]));

    for ((holder, _), (server, hold)) in
        holders.into_iter().zip(servers.iter().zip([&mut node.hold_bare, &mut node.hold_headcount]))
    {
        let report = holder.release(Duration::from_secs(60)).await?;
        say("suite", format_args!("{}: {}", server.name, summary(&report)));
        *hold = Some(report);
    }
    if let Some(report) = &node.hold_headcount {
        if report.dropped_while_held > 0 {
            let (dropped, held) = (report.dropped_while_held, report.held);
            problems.push(format!("headcount closed {dropped} of {held} held connections during the hold"));
        }
        check_totals(lab, &hc, 0, &format!("single node, after all {} connections closed", report.held), problems)
            .await;
    }

    for round in 0..args.churn_rounds {
        for (server, rounds) in servers.iter().zip([&mut node.churn_bare, &mut node.churn_headcount]) {
            let (topics, load) = (TopicArgs::uniform("churn/", 100), (0.0, args.churn_workers));
            let flags = churn_flags(&[server.http], "127.0.0.10-17", topics, load, args.churn_duration, &[server.pid])?;
            let report = churn::run(flags).await?;
            say("suite", format_args!("round {round} {}: {}", server.name, summary(&report)));
            rounds.push(report);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    let cycles: u64 = node.churn_headcount.iter().map(|r| r.cycles).sum();
    check_totals(lab, &hc, 0, &format!("single node, after {cycles} churn cycles ended"), problems).await;
    for server in servers {
        server.stop(Duration::from_secs(10)).await;
    }
    Ok(())
}

async fn cluster_part(
    lab: &Lab,
    args: &SuiteArgs,
    n: usize,
    x: Duration,
    problems: &mut Vec<String>,
) -> anyhow::Result<ClusterResults> {
    let (tag, window) = (&format!("c{n}x{}", x.as_millis()), args.gossip_window);
    say(tag, format_args!("cluster of {n} nodes, X = {x:?}"));
    let nodes = lab.cluster(tag, n, x).await?;
    let https: Vec<SocketAddr> = nodes.iter().map(|node| node.http).collect();
    let mut result = ClusterResults { nodes: n, interval_ms: x.as_secs_f64() * 1000.0, ..Default::default() };

    let (nodes_, sources) = (https.clone(), "127.0.0.20-23".parse().map_err(anyhow::Error::msg)?);
    let (trials, poll, timeout) = (args.trials, Duration::from_millis(5), Duration::from_secs(10) + x * 4);
    let c = converge::run(ConvergeArgs { nodes: nodes_, sources, trials, concurrency: 8, interval: x, poll, timeout })
        .await?;
    say(tag, summary(&c));
    if c.join_failures + c.leave_failures + c.count_mismatches + c.first_frame_mismatches + c.anomalies > 0 {
        problems.push(format!("{tag}: {}", summary(&c)));
    }
    result.converge = Some(c);

    result.gossip_idle = lab.gossip(&https, window).await;
    let busy = TopicArgs::uniform("busy/", 10);
    let busy = churn_flags(&https, "127.0.0.24-27", busy, (args.busy_rate, 64), window + Duration::from_secs(2), &[])?;
    let busy = tokio::spawn(churn::run(busy));
    tokio::time::sleep(Duration::from_secs(1)).await;
    result.gossip_busy = lab.gossip(&https, window).await;
    let busy = busy.await??;
    let (idle, busy_bps) = (result.gossip_idle.max_sent(), result.gossip_busy.max_sent());
    say(tag, format_args!("gossip {idle:.0} B/s per node idle, {busy_bps:.0} busy (max); {}", summary(&busy)));
    result.busy_churn = Some(busy);
    check_totals(lab, &https, 0, &format!("{tag}: after the busy churn"), problems).await;

    let topics = TopicArgs::uniform("quiet/", args.quiet_topics);
    let holds = [hold_flags(&https, "127.0.0.30-33", args.quiet_topics, topics, &[])?];
    let mut q = ScaleResults { gossip_idle: result.gossip_idle.clone(), ..Default::default() };
    let plan = QuietPlan { tag, nodes: &nodes, wait: Duration::from_secs(30), settle: Duration::ZERO, window };
    quiet(lab, plan, &holds, &mut q).await?;
    (result.quiet_topics, result.quiet_agree_ms, result.quiet_agree_each_ms) = (q.held, q.agree_ms, q.agree_each_ms);
    (result.quiet_pulls_each, result.quiet_tail_secs, result.gossip_quiet) =
        (q.pulls_each, q.quiet_tail_secs, q.gossip_steady);
    (result.quiet_release_secs, result.quiet_release_agree_ms) = (q.release_secs, q.release_agree_ms);
    problems.extend(q.problems);
    for node in nodes {
        let name = node.name.clone();
        if let Some(status) = node.stop(Duration::from_secs(10)).await {
            problems.push(format!("{tag}: node {name} exited during the run ({status})"));
        }
    }
    Ok(result)
}
