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
    time::{Duration, Instant},
};

use anyhow::bail;
use clap::Args;

use super::{QuietPlan, RunArgs, hold_flags, lab::Lab, now_utc, quiet, say};
use crate::{
    measure::{procfs, topics::TopicArgs},
    report::results::ScaleResults,
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
    #[command(flatten)]
    pub run: RunArgs,
}

/// Runs `scale`.
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
    let lab = Lab::new(args.run.headcount.clone())?;
    let mut r = ScaleResults {
        mode: "scale".into(),
        started: now_utc(),
        machine: Some(procfs::machine()),
        nodes: args.nodes,
        procs: args.procs,
        sources: args.procs * 2,
        interval_ms: args.interval.as_secs_f64() * 1000.0,
        requested: args.connections,
        ..ScaleResults::default()
    };
    say("scale", format_args!("starting {} nodes, X = {:?}", args.nodes, args.interval));
    let nodes = lab.cluster("scale", args.nodes, args.interval).await?;
    let https: Vec<SocketAddr> = nodes.iter().map(|node| node.http).collect();
    r.gossip_idle = lab.gossip(&https, Duration::from_secs(5)).await;
    r.rss_before_kib = nodes.iter().map(|node| node.rss_kib()).collect();

    say("scale", format_args!("{} load processes opening {} connections", args.procs, args.connections));
    let mut holds = Vec::new();
    for p in 0..args.procs {
        let count = per_proc.min(args.connections.saturating_sub(per_proc * p as u64));
        let from = format!("127.0.1.{}-{}", 10 + 2 * p, 11 + 2 * p);
        let topics = TopicArgs::uniform(format!("scale/p{p}/"), count);
        holds.push(hold_flags(&[https[p % https.len()]], &from, count, topics, &[])?);
    }
    let plan = QuietPlan {
        tag: "scale",
        nodes: &nodes,
        wait: Duration::from_secs(60),
        settle: args.interval * 2,
        window: args.window,
    };
    quiet(&lab, plan, &holds, &mut r).await?;
    let worst = r.holds.iter().map(|h| h.first_frame).max_by(|a, b| a.p99_ms.total_cmp(&b.p99_ms));
    r.connect_worst = worst.unwrap_or_default();
    for node in nodes {
        let name = node.name.clone();
        if let Some(status) = node.stop(Duration::from_secs(15)).await {
            r.problems.push(format!("node {name} exited during the run ({status})"));
        }
    }
    if let Some(machine) = &mut r.machine {
        machine.load_end = procfs::loadavg();
    }
    r.wall_secs = started.elapsed().as_secs_f64();
    args.run.save(&lab, &r)?;
    Ok(r)
}
