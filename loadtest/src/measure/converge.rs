//! `converge`: how long after a client joins on one node every node counts it. A trial joins a fresh topic on one
//! node (round-robin), at a random phase of the gossip tick, waits until every node counts 1, leaves (again at a
//! random phase) and waits until every node counts 0; 8 trials run at once, and one that has not converged after 10
//! s + 4·X failed. One poller per node reads the run's whole prefix (`/counts?prefix=…`) every 5 ms (polling
//! `/count` per trial per node would slow the very gossip being measured), so the figures are upper bounds by one
//! poll plus one request; once a join converged every node's `/count` is checked against it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use clap::Args;
use futures_util::{StreamExt, stream};
use rand::RngExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::client::{self, Api};
use super::topics::NetArgs;
use super::{Latency, LatencySummary};

const POLL: Duration = Duration::from_millis(5);

#[derive(Debug, Clone, Args)]
pub struct ConvergeArgs {
    /// Every node of the cluster (`--targets`, or `--nodes`).
    #[command(flatten)]
    pub net: NetArgs,
    /// Number of trials.
    #[arg(long, default_value_t = 50)]
    pub trials: usize,
    /// The cluster's gossip interval X (trial starts are spread over it).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
}

/// What `converge` measured (`mode` is always `converge`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConvergeReport {
    pub mode: String,
    pub nodes: usize,
    /// The gossip interval X and the poll interval, milliseconds.
    pub interval_ms: f64,
    pub poll_ms: f64,
    pub trials: usize,
    /// Trials whose join never converged (or whose join failed).
    pub join_failures: usize,
    /// Trials whose leave never converged.
    pub leave_failures: usize,
    /// Node answers to `/count` that disagreed after convergence (count, local or nodes not as expected).
    pub count_mismatches: usize,
    /// First frames whose count was not 1 on a fresh topic.
    pub first_frame_mismatches: usize,
    /// Counts other than 0 or 1 seen for a trial topic.
    pub anomalies: usize,
    /// Join until every node counts it, leave until every node dropped it.
    pub join: LatencySummary,
    pub leave: LatencySummary,
    /// Per trial: join convergence ms, -1 when it failed.
    pub join_samples_ms: Vec<f64>,
}

/// What one poll of one node saw, and when.
type Seen = (Instant, Arc<HashMap<String, u64>>);
/// What the trials measured so far: counts, join and leave latencies.
type Tally = Mutex<(ConvergeReport, Latency, Latency)>;

async fn poll_node(api: Api, node: SocketAddr, prefix: String, tx: watch::Sender<Seen>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let sent = Instant::now();
        if let Ok(counts) = api.counts(node, &prefix, 10_000).await {
            tx.send_replace((Instant::now(), Arc::new(counts.into_iter().collect())));
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep_until((sent + POLL).into()) => {}
        }
    }
}

/// When the last node was seen showing `topic` at `want` (`None` after `timeout`), and whether a count was off.
async fn wait_all(
    views: &[watch::Receiver<Seen>],
    topic: &str,
    want: u64,
    timeout: Duration,
) -> (Option<Instant>, bool) {
    let (mut last, mut anomaly) = (None, false);
    let deadline = tokio::time::Instant::now() + timeout;
    for view in views {
        let mut view = view.clone();
        let seen = view.wait_for(|(_, counts)| {
            let count = counts.get(topic).copied().unwrap_or(0);
            anomaly |= count > 1;
            count == want
        });
        let Ok(Ok(seen)) = tokio::time::timeout_at(deadline, seen).await else {
            return (None, anomaly);
        };
        last = last.max(Some(seen.0));
    }
    (last, anomaly)
}

/// Trial `i` on a fresh topic; what it saw goes into `tally`.
async fn trial(args: &ConvergeArgs, api: &Api, views: &[watch::Receiver<Seen>], topic: String, i: u64, tally: &Tally) {
    let (nodes, timeout) = (&args.net.targets, Duration::from_secs(10) + args.interval * 4);
    let phase = || args.interval.mul_f64(rand::rng().random_range(0.0..1.0));
    tokio::time::sleep(phase()).await;
    let ((entry, source), joined_at) = (args.net.endpoint(i), Instant::now());
    let joined = client::join(entry, source, &topic, timeout).await;
    let seen = match &joined {
        Ok(_) => wait_all(views, &topic, 1, timeout).await,
        Err(_) => (None, false),
    };
    let (took, mut anomalies) = (seen.0.map(|at| at - joined_at), usize::from(seen.1));
    let (mut left, mut mismatches) = (None, 0);
    let first_frame_off = joined.as_ref().is_ok_and(|joined| joined.count != 1);
    if let Ok(joined) = joined {
        for &node in nodes {
            let (local, n) = (u64::from(node == entry), nodes.len() as u32);
            let agrees = |c: serde_json::Value| c["count"] == 1 && c["local"] == local && c["nodes"] == n;
            mismatches += usize::from(!api.count(node, &topic).await.is_ok_and(agrees));
        }
        // Joins converge just after a gossip tick: leave at a random phase of it too, not always the same one.
        tokio::time::sleep(phase()).await;
        let left_at = Instant::now();
        client::leave(joined.ws, Duration::from_secs(2)).await;
        let (seen, anomaly) = wait_all(views, &topic, 0, timeout).await;
        (left, anomalies) = (Some(seen.map(|at| at - left_at)), anomalies + usize::from(anomaly));
    }
    let mut tally = tally.lock().unwrap_or_else(PoisonError::into_inner);
    let (r, join, leave) = &mut *tally;
    took.inspect(|&took| join.record(took));
    left.flatten().inspect(|&took| leave.record(took));
    r.join_samples_ms.push(took.map_or(-1.0, |t| t.as_secs_f64() * 1000.0));
    r.join_failures += usize::from(took.is_none());
    r.leave_failures += usize::from(left.is_some_and(|left| left.is_none()));
    r.count_mismatches += mismatches;
    r.first_frame_mismatches += usize::from(first_frame_off);
    r.anomalies += anomalies;
}

pub async fn run(args: ConvergeArgs) -> anyhow::Result<ConvergeReport> {
    let run_id = rand::rng().random_range(0..u32::MAX);
    let (prefix, stop) = (format!("converge/{run_id:08x}/"), CancellationToken::new());
    let tally = Tally::default();
    let mut views = Vec::new();
    for &node in &args.net.targets {
        let (tx, rx) = watch::channel((Instant::now(), Arc::default()));
        let api = Api::new(Duration::from_secs(5), 1, None)?;
        tokio::spawn(poll_node(api, node, prefix.clone(), tx, stop.clone()));
        views.push(rx);
    }
    let api = Api::new(Duration::from_secs(5), usize::MAX, None)?;
    let trials = stream::iter(0..args.trials as u64);
    let one = |i| trial(&args, &api, &views, format!("{prefix}{i}"), i, &tally);
    trials.for_each_concurrent(8, one).await;
    stop.cancel();
    let (mut r, join, leave) = tally.into_inner().unwrap_or_else(PoisonError::into_inner);
    (r.mode, r.nodes, r.trials) = ("converge".into(), args.net.targets.len(), args.trials);
    (r.interval_ms, r.poll_ms) = (args.interval.as_secs_f64() * 1000.0, POLL.as_secs_f64() * 1000.0);
    (r.join, r.leave) = (join.summary(), leave.summary());
    Ok(r)
}
