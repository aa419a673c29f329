//! `suite`: the standard benchmark run, ratios to a baseline measured in the
//! same run, written into BENCHMARKS.md.
//!
//! This machine is shared and noisy (two cores, other people compiling), so
//! no absolute number here means much on its own. Every per-node figure is
//! taken for headcount and for the bare server back to back, on fresh
//! processes, with the same load, and the ratio is the claim. Churn, the
//! figure most exposed to noise, alternates bare/headcount rounds and keeps
//! every round. Cluster figures have no bare counterpart: they are compared
//! with their targets, which are written in terms of X.
//!
//! The suite also checks what it can see of correctness (totals back to 0
//! after every release, no held connection dropped, `/count` agreeing with
//! the poller) and reports any failure as a product bug with its numbers.

use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::{
    Report,
    churn::{self, ChurnArgs, ChurnReport},
    converge::{self, ConvergeArgs, ConvergeReport},
    count::{self, CountArgs, CountReport},
    hold::HoldReport,
    lab::{self, Kind, Lab, Machine, Server},
    report,
    topics::{NetArgs, Sources, TopicArgs},
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
    /// The headcount binary [default: next to this one].
    #[arg(long)]
    pub headcount: Option<PathBuf>,
    /// File whose marked section is rewritten.
    #[arg(long, default_value = "BENCHMARKS.md")]
    pub benchmarks: PathBuf,
    /// Do not touch BENCHMARKS.md.
    #[arg(long)]
    pub no_write: bool,
}

/// Per-node results: headcount against bare.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct NodeResults {
    /// Holding C connections on a fresh headcount node.
    pub hold_headcount: Option<HoldReport>,
    /// The same on a fresh bare server.
    pub hold_bare: Option<HoldReport>,
    /// GET /count while headcount holds them.
    pub count_headcount: Option<CountReport>,
    /// The same request shape on the bare server (its static `/count`).
    pub count_bare: Option<CountReport>,
    /// p99 of each headcount round, ms.
    pub count_rounds_p99_headcount: Vec<f64>,
    /// p99 of each bare round, ms.
    pub count_rounds_p99_bare: Vec<f64>,
    /// Closed-loop churn rounds on headcount.
    pub churn_headcount: Vec<ChurnReport>,
    /// Closed-loop churn rounds on bare.
    pub churn_bare: Vec<ChurnReport>,
}

/// Gossip traffic of every node over one window.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct GossipReading {
    /// UDP bytes sent per second, per node.
    pub sent_bps: Vec<f64>,
    /// UDP bytes received per second, per node.
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
        if self.sent_bps.is_empty() {
            0.0
        } else {
            self.sent_bps.iter().sum::<f64>() / self.sent_bps.len() as f64
        }
    }
}

/// One cluster configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterResults {
    /// Nodes.
    pub nodes: usize,
    /// X in milliseconds.
    pub interval_ms: f64,
    /// Join/leave convergence.
    pub converge: Option<ConvergeReport>,
    /// Gossip with no topics at all.
    pub gossip_idle: GossipReading,
    /// Gossip while 10 topics churn.
    pub gossip_busy: GossipReading,
    /// The churn that made them busy.
    pub busy_churn: Option<ChurnReport>,
    /// Topics held for the quiet reading.
    pub quiet_topics: u64,
    /// Gossip while many topics are held and nothing changes.
    pub gossip_quiet: GossipReading,
    /// From the last join to every node's total agreeing, ms.
    pub quiet_agree_ms: Option<f64>,
    /// The same, per node.
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

/// Everything one suite run measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct SuiteResults {
    /// Always `suite`.
    pub mode: String,
    /// UTC start time.
    pub started: String,
    /// Wall time of the run, seconds.
    pub wall_secs: f64,
    /// The machine.
    pub machine: Option<Machine>,
    /// Connections held per node.
    pub connections: u64,
    /// Topics they spread over.
    pub topics: u64,
    /// Per-node part.
    pub node: NodeResults,
    /// Cluster part.
    pub clusters: Vec<ClusterResults>,
    /// Correctness problems seen (product bugs), with numbers.
    pub problems: Vec<String>,
}

impl Report for SuiteResults {
    fn summary(&self) -> String {
        let verdicts = report::verdicts(self);
        let missed: Vec<&str> = verdicts
            .iter()
            .filter(|v| v.pass == Some(false))
            .map(|v| v.name.as_str())
            .collect();
        format!(
            "suite: {} targets checked, {} met, missed: [{}]; {} problems; {:.0}s",
            verdicts.iter().filter(|v| v.pass.is_some()).count(),
            verdicts.iter().filter(|v| v.pass == Some(true)).count(),
            missed.join(", "),
            self.problems.len(),
            self.wall_secs,
        )
    }
}

fn say(message: impl AsRef<str>) {
    eprintln!("[suite] {}", message.as_ref());
}

/// UTC now as `YYYY-MM-DD HH:MM UTC`.
pub fn now_utc() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .map(|text| text.trim().to_owned())
        .unwrap_or_else(|| "unknown time".into())
}

/// Runs `suite`.
pub async fn run(args: SuiteArgs) -> anyhow::Result<SuiteResults> {
    let started = Instant::now();
    let lab = Lab::new(args.headcount.clone())?;
    let mut results = SuiteResults {
        mode: "suite".into(),
        started: now_utc(),
        machine: Some(lab::machine()),
        connections: args.connections,
        topics: args.topics,
        ..SuiteResults::default()
    };
    if !args.skip_node {
        node_part(&lab, &args, &mut results).await?;
    }
    if !args.skip_cluster {
        for &nodes in &args.cluster_sizes {
            for &interval in &args.intervals {
                let cluster = cluster_part(&lab, &args, nodes, interval, &mut results.problems).await?;
                results.clusters.push(cluster);
            }
        }
    }
    if let Some(machine) = &mut results.machine {
        machine.load_end = lab::loadavg();
    }
    results.wall_secs = started.elapsed().as_secs_f64();
    let json = lab.dir.join("suite.json");
    std::fs::write(&json, serde_json::to_string_pretty(&results)?).with_context(|| json.display().to_string())?;
    say(format!("raw results in {}", json.display()));
    if !args.no_write {
        report::write_section(&args.benchmarks, report::Part::Suite, &report::suite_markdown(&results))?;
        say(format!("rewrote the suite section of {}", args.benchmarks.display()));
    }
    Ok(results)
}

/// Short closed-loop churn so lazy allocations happen before any reading.
async fn warm_up(server: &Server) -> anyhow::Result<()> {
    churn::run(ChurnArgs {
        net: NetArgs {
            targets: vec![server.http],
            sources: "127.0.0.9".parse().map_err(anyhow::Error::msg)?,
        },
        topics: TopicArgs::uniform("warm/", 16),
        rate: 0.0,
        concurrency: 16,
        duration: Duration::from_secs(1),
        timeout: Duration::from_secs(5),
        server_pid: Vec::new(),
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok(())
}

/// Arguments of a `hold` child process. With no `pids` it reports ready
/// as soon as the last join is done (no settle pause).
pub fn hold_args(
    targets: &[SocketAddr],
    sources: &str,
    connections: u64,
    topics: u64,
    prefix: &str,
    pids: &[u32],
) -> Vec<String> {
    let targets: Vec<String> = targets.iter().map(ToString::to_string).collect();
    let settle = if pids.is_empty() { "0s" } else { "2s" };
    let mut args = vec![
        "--settle".into(),
        settle.into(),
        "--targets".into(),
        targets.join(","),
        "--sources".into(),
        sources.into(),
        "--connections".into(),
        connections.to_string(),
        "--topics".into(),
        topics.to_string(),
        "--topic-prefix".into(),
        prefix.into(),
        "--concurrency".into(),
        "100".into(),
    ];
    if !pids.is_empty() {
        let pids: Vec<String> = pids.iter().map(ToString::to_string).collect();
        args.extend(["--server-pid".into(), pids.join(",")]);
    }
    args
}

async fn node_part(lab: &Lab, args: &SuiteArgs, results: &mut SuiteResults) -> anyhow::Result<()> {
    // Both servers are fresh processes, so neither inherits allocator state
    // from earlier work; they hold their connections one after the other
    // (memory is read by each hold process on its own server), then the
    // GET /count rounds and the churn rounds alternate between them, so a
    // burst of someone else's work on the machine hits both sides alike.
    let mut bare = lab.bare("bare")?;
    let mut headcount = lab.headcount("hc", Duration::from_secs(1), &[], &[])?;
    lab.wait_healthy(std::slice::from_mut(&mut bare), Duration::from_secs(20))
        .await?;
    lab.wait_healthy(std::slice::from_mut(&mut headcount), Duration::from_secs(20))
        .await?;
    warm_up(&bare).await?;
    warm_up(&headcount).await?;

    let prefix = "hold/";
    let mut holders = Vec::new();
    for (server, sources) in [(&bare, "127.0.0.2-5"), (&headcount, "127.0.0.6-9")] {
        say(format!(
            "{:?}: holding {} connections over {} topics",
            server.kind, args.connections, args.topics
        ));
        let mut holder = lab.holder(
            &format!("hold-{:?}", server.kind),
            &hold_args(
                &[server.http],
                sources,
                args.connections,
                args.topics,
                prefix,
                &[server.pid],
            ),
        )?;
        let ready = holder.ready(Duration::from_secs(120)).await?;
        say(format!(
            "{:?}: {} held, {} failed in {:.1}s",
            server.kind, ready.held, ready.failed, ready.connect_secs
        ));
        if server.kind == Kind::Headcount {
            check_total(
                lab,
                &[server.http],
                ready.held,
                "single node, after holding",
                &mut results.problems,
            )
            .await;
            if ready.failed > 0 {
                results.problems.push(format!(
                    "headcount refused or failed {} of {} joins on one node",
                    ready.failed, args.connections
                ));
            }
        }
        holders.push(holder);
    }

    let (mut count_bare, mut count_headcount) = (Vec::new(), Vec::new());
    let round = args.count_duration.div_f64(args.count_rounds.max(1) as f64);
    for _ in 0..args.count_rounds.max(1) {
        for server in [&bare, &headcount] {
            let measured = count::run_with_histogram(CountArgs {
                targets: vec![server.http],
                topics: TopicArgs::uniform(prefix, args.topics),
                rate: args.count_rate,
                connections: 4,
                duration: round,
                warmup: Duration::from_millis(500),
            })
            .await?;
            say(format!("{:?}: {}", server.kind, measured.0.summary()));
            match server.kind {
                Kind::Bare => count_bare.push(measured),
                Kind::Headcount => count_headcount.push(measured),
            }
        }
    }
    results.node.count_bare = count::merge(&count_bare);
    results.node.count_headcount = count::merge(&count_headcount);
    results.node.count_rounds_p99_bare = count_bare.iter().map(|(r, _)| r.latency.p99_ms).collect();
    results.node.count_rounds_p99_headcount = count_headcount.iter().map(|(r, _)| r.latency.p99_ms).collect();

    for (holder, server) in holders.into_iter().zip([&bare, &headcount]) {
        let report = holder.release(Duration::from_secs(60)).await?;
        say(format!("{:?}: {}", server.kind, report.summary()));
        if server.kind == Kind::Headcount {
            if report.dropped_while_held > 0 {
                results.problems.push(format!(
                    "headcount closed {} of {} held connections during the hold",
                    report.dropped_while_held, report.held
                ));
            }
            if lab
                .wait_totals(&[server.http], 0, Duration::from_millis(50), Duration::from_secs(5))
                .await
                .is_none()
            {
                let total = lab.api.total(server.http).await.unwrap_or(u64::MAX);
                results.problems.push(format!(
                    "single node: /counts total is {total}, not 0, 5 s after all {} connections closed",
                    report.held
                ));
            }
            results.node.hold_headcount = Some(report);
        } else {
            results.node.hold_bare = Some(report);
        }
    }

    for round in 0..args.churn_rounds {
        for server in [&bare, &headcount] {
            let report = churn::run(ChurnArgs {
                net: NetArgs {
                    targets: vec![server.http],
                    sources: "127.0.0.10-17".parse().map_err(anyhow::Error::msg)?,
                },
                topics: TopicArgs::uniform("churn/", 100),
                rate: 0.0,
                concurrency: args.churn_workers,
                duration: args.churn_duration,
                timeout: Duration::from_secs(5),
                server_pid: vec![server.pid],
            })
            .await?;
            say(format!("round {round} {:?}: {}", server.kind, report.summary()));
            match server.kind {
                Kind::Bare => results.node.churn_bare.push(report),
                Kind::Headcount => results.node.churn_headcount.push(report),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
    if lab
        .wait_totals(&[headcount.http], 0, Duration::from_millis(50), Duration::from_secs(5))
        .await
        .is_none()
    {
        let total = lab.api.total(headcount.http).await.unwrap_or(u64::MAX);
        let cycles: u64 = results.node.churn_headcount.iter().map(|r| r.cycles).sum();
        results.problems.push(format!(
            "single node: /counts total is {total}, not 0, 5 s after {cycles} churn cycles ended"
        ));
    }
    bare.stop(Duration::from_secs(10)).await;
    headcount.stop(Duration::from_secs(10)).await;
    Ok(())
}

async fn check_total(lab: &Lab, nodes: &[SocketAddr], want: u64, when: &str, problems: &mut Vec<String>) {
    if lab
        .wait_totals(nodes, want, Duration::from_millis(50), Duration::from_secs(5))
        .await
        .is_none()
    {
        let mut seen = Vec::new();
        for &node in nodes {
            seen.push(
                lab.api
                    .total(node)
                    .await
                    .map_or_else(|e| format!("error {e}"), |t| t.to_string()),
            );
        }
        problems.push(format!(
            "{when}: /counts totals [{}] never reached {want} within 5 s",
            seen.join(", ")
        ));
    }
}

/// Waits until gossip has quieted down after a burst of changes: every node
/// sends at most 1.5× (+200 B/s) what it sent when the cluster was idle,
/// over a full second. Broadcasts are retransmitted for a while after a
/// change and that tail is not the steady state; how long it lasts is
/// returned (`None` if it had not ended after `max_wait`).
pub async fn wait_quiet(lab: &Lab, nodes: &[SocketAddr], idle: &GossipReading, max_wait: Duration) -> Option<Duration> {
    let limit = idle.max_sent() * 1.5 + 200.0;
    let started = Instant::now();
    while started.elapsed() < max_wait {
        let second = gossip_reading(lab, nodes, Duration::from_secs(1)).await;
        if second.sent_bps.iter().all(|&bps| bps <= limit) {
            return Some(started.elapsed());
        }
    }
    None
}

/// One counter's value on every node (NaN where unreadable).
pub async fn counter_each(lab: &Lab, nodes: &[SocketAddr], name: &str) -> Vec<f64> {
    let mut values = Vec::new();
    for &node in nodes {
        values.push(lab.api.metrics(node).await.map_or(f64::NAN, |m| m.sum(name)));
    }
    values
}

/// Reads gossip counters on every node over `window`.
pub async fn gossip_reading(lab: &Lab, nodes: &[SocketAddr], window: Duration) -> GossipReading {
    let read = |node| async move {
        match lab.api.metrics(node).await {
            Ok(m) => (
                m.sum("headcount_gossip_sent_bytes_total"),
                m.sum("headcount_gossip_received_bytes_total"),
                m.sum("headcount_cluster_pulls_total"),
            ),
            Err(_) => (f64::NAN, f64::NAN, f64::NAN),
        }
    };
    let mut before = Vec::new();
    for &node in nodes {
        before.push((Instant::now(), read(node).await));
    }
    tokio::time::sleep(window).await;
    let mut reading = GossipReading::default();
    for (i, &node) in nodes.iter().enumerate() {
        let after = read(node).await;
        let (at, (sent, received, pulls)) = before[i];
        let secs = at.elapsed().as_secs_f64();
        reading.sent_bps.push((after.0 - sent) / secs);
        reading.received_bps.push((after.1 - received) / secs);
        reading.pulls += after.2 - pulls;
    }
    reading
}

async fn cluster_part(
    lab: &Lab,
    args: &SuiteArgs,
    n: usize,
    interval: Duration,
    problems: &mut Vec<String>,
) -> anyhow::Result<ClusterResults> {
    let tag = format!("c{n}x{}", interval.as_millis());
    say(format!("cluster of {n} nodes, X = {interval:?}"));
    let nodes = lab.cluster(&tag, n, interval, &[]).await?;
    let https: Vec<SocketAddr> = nodes.iter().map(|node| node.http).collect();
    let mut result = ClusterResults {
        nodes: n,
        interval_ms: interval.as_secs_f64() * 1000.0,
        ..ClusterResults::default()
    };

    let converged = converge::run(ConvergeArgs {
        nodes: https.clone(),
        sources: "127.0.0.20-23".parse::<Sources>().map_err(anyhow::Error::msg)?,
        trials: args.trials,
        concurrency: 8,
        interval,
        poll: Duration::from_millis(5),
        timeout: Duration::from_secs(10) + interval * 4,
    })
    .await?;
    say(converged.summary());
    if converged.join_failures
        + converged.leave_failures
        + converged.count_mismatches
        + converged.first_frame_mismatches
        + converged.anomalies
        > 0
    {
        problems.push(format!("{tag}: {}", converged.summary()));
    }
    result.converge = Some(converged);

    result.gossip_idle = gossip_reading(lab, &https, args.gossip_window).await;
    say(format!(
        "{tag}: idle gossip {:.0} B/s per node (max)",
        result.gossip_idle.max_sent()
    ));

    let busy = tokio::spawn(churn::run(ChurnArgs {
        net: NetArgs {
            targets: https.clone(),
            sources: "127.0.0.24-27".parse().map_err(anyhow::Error::msg)?,
        },
        topics: TopicArgs::uniform("busy/", 10),
        rate: args.busy_rate,
        concurrency: 64,
        duration: args.gossip_window + Duration::from_secs(2),
        timeout: Duration::from_secs(5),
        server_pid: Vec::new(),
    }));
    tokio::time::sleep(Duration::from_secs(1)).await;
    result.gossip_busy = gossip_reading(lab, &https, args.gossip_window).await;
    let busy = busy.await??;
    say(format!(
        "{tag}: busy gossip {:.0} B/s per node (max); {}",
        result.gossip_busy.max_sent(),
        busy.summary()
    ));
    result.busy_churn = Some(busy);
    check_total(lab, &https, 0, &format!("{tag}: after the busy churn"), problems).await;

    let pulls_before = counter_each(lab, &https, "headcount_cluster_pulls_total").await;
    let mut holder = lab.holder(
        &format!("{tag}-quiet"),
        &hold_args(
            &https,
            "127.0.0.30-33",
            args.quiet_topics,
            args.quiet_topics,
            "quiet/",
            &[],
        ),
    )?;
    let ready = holder.ready(Duration::from_secs(120)).await?;
    result.quiet_topics = ready.held;
    result.quiet_agree_each_ms = lab
        .wait_totals_each(&https, ready.held, Duration::from_millis(10), Duration::from_secs(30))
        .await
        .into_iter()
        .map(|took| took.map(|took| took.as_secs_f64() * 1000.0))
        .collect();
    result.quiet_agree_ms = result
        .quiet_agree_each_ms
        .iter()
        .try_fold(0.0f64, |slowest, took| took.map(|took| slowest.max(took)));
    if result.quiet_agree_ms.is_none() {
        check_total(
            lab,
            &https,
            ready.held,
            &format!("{tag}: {} quiet topics held", ready.held),
            problems,
        )
        .await;
    }
    let pulls_after = counter_each(lab, &https, "headcount_cluster_pulls_total").await;
    result.quiet_pulls_each = pulls_after.iter().zip(&pulls_before).map(|(a, b)| a - b).collect();
    result.quiet_tail_secs = wait_quiet(lab, &https, &result.gossip_idle, Duration::from_secs(30))
        .await
        .map(|took| took.as_secs_f64());
    result.gossip_quiet = gossip_reading(lab, &https, args.gossip_window).await;
    say(format!(
        "{tag}: {} quiet topics, agreed in {:?} ms (per node {:?}), gossip tail {:?} s, then {:.0} B/s per node (max)",
        ready.held,
        result.quiet_agree_ms,
        result.quiet_agree_each_ms,
        result.quiet_tail_secs,
        result.gossip_quiet.max_sent()
    ));
    holder.start_release();
    let (zero, released) = tokio::join!(
        lab.wait_totals(&https, 0, Duration::from_millis(10), Duration::from_secs(30)),
        holder.release(Duration::from_secs(60)),
    );
    let released = released?;
    if released.dropped_while_held > 0 {
        problems.push(format!(
            "{tag}: {} of {} quiet connections were closed by the nodes while held",
            released.dropped_while_held, released.held
        ));
    }
    result.quiet_release_secs = released.release_secs;
    result.quiet_release_agree_ms = zero.map(|took| took.as_secs_f64() * 1000.0);
    if result.quiet_release_agree_ms.is_none() {
        check_total(
            lab,
            &https,
            0,
            &format!("{tag}: after releasing the quiet topics"),
            problems,
        )
        .await;
    }
    for mut node in nodes {
        if let Some(status) = node.exited() {
            problems.push(format!("{tag}: node {} exited during the run ({status})", node.name));
        }
        node.stop(Duration::from_secs(10)).await;
    }
    Ok(result)
}
