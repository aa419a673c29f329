//! `scale`: hold 100,000 websocket connections on one machine, each on its
//! own topic, and check the cluster agrees on the total.
//!
//! No single process may have more than 20,000 open files, so the load is
//! split over several nodes and several `hold` processes (one per node by
//! default, ~17k sockets each), and clients bind to two 127.0.1.x source
//! addresses per process (a bound source address has ~28k ports). With one
//! topic per connection this is also the "100k quiet topics" reading of
//! gossip traffic: once the joins stop, nothing changes, and every node should
//! be sending almost nothing but SWIM probes.

use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Args;
use serde::{Deserialize, Serialize};

use crate::{
    Report,
    hold::HoldReport,
    lab::{self, Lab, Machine},
    report,
    stats::LatencySummary,
    suite::{self, GossipReading},
};

/// Flags of `scale`.
#[derive(Debug, Clone, Args)]
pub struct ScaleArgs {
    /// headcount nodes.
    #[arg(long, default_value_t = 6)]
    pub nodes: usize,
    /// Connections in total, one topic each.
    #[arg(long, default_value_t = 100_000)]
    pub connections: u64,
    /// Load processes (each must stay under ~19k sockets).
    #[arg(long, default_value_t = 6)]
    pub procs: usize,
    /// Gossip interval X.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// How long the steady gossip reading lasts.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub window: Duration,
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

/// What `scale` measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ScaleResults {
    /// Always `scale`.
    pub mode: String,
    /// UTC start time.
    pub started: String,
    /// Wall time, seconds.
    pub wall_secs: f64,
    /// The machine.
    pub machine: Option<Machine>,
    /// Nodes.
    pub nodes: usize,
    /// Load processes.
    pub procs: usize,
    /// Source addresses used.
    pub sources: usize,
    /// X, milliseconds.
    pub interval_ms: f64,
    /// Connections asked for.
    pub requested: u64,
    /// Connections held.
    pub held: u64,
    /// From starting the load processes to the last one ready, seconds.
    pub connect_secs: f64,
    /// The worst p99 among the load processes' connect latencies.
    pub connect_worst: LatencySummary,
    /// From the last join to every node agreeing on the total, ms.
    pub agree_ms: Option<f64>,
    /// The same, per node.
    pub agree_each_ms: Vec<Option<f64>>,
    /// Full-state pulls each node made from the first join to agreement.
    pub pulls_each: Vec<f64>,
    /// Node VmRSS before the joins, KiB.
    pub rss_before_kib: Vec<u64>,
    /// Node VmRSS with everything held, KiB.
    pub rss_held_kib: Vec<u64>,
    /// Gossip of the idle cluster.
    pub gossip_idle: GossipReading,
    /// From agreement until gossip was back near its idle rate, seconds.
    pub quiet_tail_secs: Option<f64>,
    /// Gossip with every connection held and nothing changing.
    pub gossip_steady: GossipReading,
    /// Seconds the slowest load process took to close its connections.
    pub release_secs: f64,
    /// From the start of the release to every total at 0, ms.
    pub release_agree_ms: Option<f64>,
    /// Each load process's report.
    pub holds: Vec<HoldReport>,
    /// Correctness problems seen.
    pub problems: Vec<String>,
}

impl ScaleResults {
    /// Resident bytes per held connection over all nodes.
    pub fn bytes_per_connection(&self) -> Option<f64> {
        let grown: i64 = self
            .rss_held_kib
            .iter()
            .zip(&self.rss_before_kib)
            .map(|(h, b)| *h as i64 - *b as i64)
            .sum();
        (self.held > 0).then(|| grown as f64 * 1024.0 / self.held as f64)
    }
}

impl Report for ScaleResults {
    fn summary(&self) -> String {
        format!(
            "scale: {}/{} held on {} nodes in {:.1}s; totals agreed {} after the last join; {} per connection; steady gossip max {:.0} B/s per node; {} problems",
            self.held,
            self.requested,
            self.nodes,
            self.connect_secs,
            self.agree_ms.map_or("never".into(), |ms| format!("{ms:.0} ms")),
            self.bytes_per_connection().map_or("–".into(), |b| format!("{b:.0} B")),
            self.gossip_steady.max_sent(),
            self.problems.len(),
        )
    }
}

fn say(message: impl AsRef<str>) {
    eprintln!("[scale] {}", message.as_ref());
}

/// Runs `scale`.
/// Every node's `/counts` total, for a problem report.
async fn node_totals(lab: &Lab, https: &[SocketAddr]) -> String {
    let mut totals = Vec::new();
    for &node in https {
        totals.push(
            lab.api
                .total(node)
                .await
                .map_or_else(|e| format!("error {e}"), |t| t.to_string()),
        );
    }
    totals.join(", ")
}

pub async fn run(args: ScaleArgs) -> anyhow::Result<ScaleResults> {
    if args.nodes == 0 || args.procs == 0 {
        bail!("--nodes and --procs must be at least 1");
    }
    let per_proc = args.connections.div_ceil(args.procs as u64);
    if per_proc > 19_000 {
        bail!("{per_proc} connections per load process exceed the 20,000 open-files limit: raise --procs");
    }
    if args.connections.div_ceil(args.nodes as u64) > 19_000 {
        bail!("more than 19,000 connections per node exceed the 20,000 open-files limit: raise --nodes");
    }
    let started = Instant::now();
    let lab = Lab::new(args.headcount.clone())?;
    let mut results = ScaleResults {
        mode: "scale".into(),
        started: suite::now_utc(),
        machine: Some(lab::machine()),
        nodes: args.nodes,
        procs: args.procs,
        sources: args.procs * 2,
        interval_ms: args.interval.as_secs_f64() * 1000.0,
        requested: args.connections,
        ..ScaleResults::default()
    };
    say(format!("starting {} nodes, X = {:?}", args.nodes, args.interval));
    let mut nodes = lab.cluster("scale", args.nodes, args.interval, &[]).await?;
    let https: Vec<SocketAddr> = nodes.iter().map(|node| node.http).collect();
    results.gossip_idle = suite::gossip_reading(&lab, &https, Duration::from_secs(5)).await;
    results.rss_before_kib = nodes.iter().map(|node| node.rss_kib()).collect();

    say(format!(
        "{} load processes opening {} connections",
        args.procs, args.connections
    ));
    let pulls_before = suite::counter_each(&lab, &https, "headcount_cluster_pulls_total").await;
    let connecting = Instant::now();
    let mut holders = Vec::new();
    let mut left = args.connections;
    for p in 0..args.procs {
        let count = per_proc.min(left);
        left -= count;
        let sources = format!("127.0.1.{}-{}", 10 + 2 * p, 11 + 2 * p);
        let target = [https[p % https.len()]];
        let hold = suite::hold_args(&target, &sources, count, count, &format!("scale/p{p}/"), &[]);
        holders.push(lab.holder(&format!("scale-hold-{p}"), &hold)?);
    }
    let mut held = 0;
    for holder in &mut holders {
        let ready = holder.ready(Duration::from_secs(300)).await?;
        held += ready.held;
        if ready.failed > 0 {
            results
                .problems
                .push(format!("a load process had {} failed joins", ready.failed));
        }
    }
    results.connect_secs = connecting.elapsed().as_secs_f64();
    results.held = held;
    say(format!(
        "{held} held after {:.1} s; waiting for every node to agree",
        results.connect_secs
    ));

    let each = lab
        .wait_totals_each(&https, held, Duration::from_millis(10), Duration::from_secs(60))
        .await;
    results.agree_each_ms = each
        .iter()
        .map(|took| took.map(|took| took.as_secs_f64() * 1000.0))
        .collect();
    results.agree_ms = results
        .agree_each_ms
        .iter()
        .try_fold(0.0f64, |slowest, took| took.map(|took| slowest.max(took)));
    let pulls_after = suite::counter_each(&lab, &https, "headcount_cluster_pulls_total").await;
    results.pulls_each = pulls_after.iter().zip(&pulls_before).map(|(a, b)| a - b).collect();
    if results.agree_ms.is_none() {
        results.problems.push(format!(
            "with {held} connections held, node totals were [{}] 60 s after the last join",
            node_totals(&lab, &https).await
        ));
    }
    tokio::time::sleep(args.interval * 2).await;
    results.rss_held_kib = nodes.iter().map(|node| node.rss_kib()).collect();
    results.quiet_tail_secs = suite::wait_quiet(&lab, &https, &results.gossip_idle, Duration::from_secs(60))
        .await
        .map(|took| took.as_secs_f64() + 2.0 * args.interval.as_secs_f64());
    say(format!(
        "agreed after {:?} ms; reading steady gossip for {:?}",
        results.agree_ms, args.window
    ));
    results.gossip_steady = suite::gossip_reading(&lab, &https, args.window).await;

    for holder in &mut holders {
        holder.start_release();
    }
    let (zero, reports) = tokio::join!(
        lab.wait_totals(&https, 0, Duration::from_millis(10), Duration::from_secs(60)),
        futures_util::future::join_all(
            holders
                .into_iter()
                .map(|holder| holder.release(Duration::from_secs(120)))
        ),
    );
    for report in reports {
        let report = report?;
        if report.dropped_while_held > 0 {
            results.problems.push(format!(
                "nodes closed {} of {} held connections of one load process during the hold",
                report.dropped_while_held, report.held
            ));
        }
        results.holds.push(report);
    }
    results.release_secs = results.holds.iter().map(|h| h.release_secs).fold(0.0, f64::max);
    results.release_agree_ms = zero.map(|took| took.as_secs_f64() * 1000.0);
    if results.release_agree_ms.is_none() {
        results.problems.push(format!(
            "node totals were [{}], not 0, 60 s after every connection closed",
            node_totals(&lab, &https).await
        ));
    }
    results.connect_worst = results
        .holds
        .iter()
        .map(|h| h.first_frame)
        .max_by(|a, b| a.p99_ms.total_cmp(&b.p99_ms))
        .unwrap_or_default();
    for node in &mut nodes {
        if let Some(status) = node.exited() {
            results
                .problems
                .push(format!("node {} exited during the run ({status})", node.name));
        }
    }
    for node in nodes {
        node.stop(Duration::from_secs(15)).await;
    }
    if let Some(machine) = &mut results.machine {
        machine.load_end = lab::loadavg();
    }
    results.wall_secs = started.elapsed().as_secs_f64();
    let json = lab.dir.join("scale.json");
    std::fs::write(&json, serde_json::to_string_pretty(&results)?).with_context(|| json.display().to_string())?;
    say(format!("raw results in {}", json.display()));
    if !args.no_write {
        report::write_section(&args.benchmarks, report::Part::Scale, &report::scale_markdown(&results))?;
        say(format!("rewrote the scale section of {}", args.benchmarks.display()));
    }
    Ok(results)
}
