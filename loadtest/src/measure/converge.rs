//! `converge`: how long after a client joins on one node every node counts
//! it. A trial joins a fresh topic on one node (round-robin), at a random
//! phase of the gossip tick, waits until every node counts 1, leaves (again
//! at a random phase) and waits until every node counts 0. One poller per
//! node reads the run's whole prefix (`/counts?prefix=…`) every `--poll`
//! (polling `/count` per trial per node would slow the very gossip being
//! measured), so the figures are upper bounds by one poll plus one request;
//! once a join converged every node's `/count` is checked against it.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use clap::Args;
use rand::{RngExt, SeedableRng, rngs::SmallRng};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{
    api::{Api, TopicCount},
    client,
    stats::{Latency, LatencySummary},
    topics::{Sources, loopback_addr},
};

#[derive(Debug, Clone, Args)]
pub struct ConvergeArgs {
    /// HTTP addresses of every node of the cluster, comma-separated.
    #[arg(long, value_delimiter = ',', required = true, value_parser = loopback_addr)]
    pub nodes: Vec<SocketAddr>,
    /// Client source addresses.
    #[arg(long, default_value = "127.0.0.2-5")]
    pub sources: Sources,
    /// Number of trials.
    #[arg(long, default_value_t = 50)]
    pub trials: usize,
    /// Trials in flight at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// The cluster's gossip interval X (trial starts are spread over it).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// How often each node is polled.
    #[arg(long, default_value = "5ms", value_parser = humantime::parse_duration)]
    pub poll: Duration,
    /// A trial that has not converged after this long counts as failed.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
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
    /// Node answers to `/count` that disagreed after convergence (count,
    /// local or nodes not as expected).
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

/// What one poll of one node saw.
#[derive(Clone)]
struct Seen {
    at: Instant,
    counts: Arc<HashMap<String, u64>>,
}

async fn poll_node(
    api: Api,
    node: SocketAddr,
    prefix: String,
    every: Duration,
    tx: watch::Sender<Seen>,
    stop: CancellationToken,
) {
    while !stop.is_cancelled() {
        let sent = Instant::now();
        if let Ok(listing) = api.counts(node, &prefix, 10_000).await {
            let counts = listing.topics.into_iter().map(|listed| (listed.topic, listed.count));
            tx.send_replace(Seen { at: Instant::now(), counts: Arc::new(counts.collect()) });
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep_until((sent + every).into()) => {}
        }
    }
}

/// Waits until every node shows `topic` at `want`; returns when the last
/// node's showing response arrived and whether an unexpected count was seen.
async fn wait_all(
    views: &[watch::Receiver<Seen>],
    topic: &str,
    want: u64,
    timeout: Duration,
) -> (Option<Instant>, bool) {
    let mut last = None;
    let mut anomaly = false;
    let deadline = tokio::time::Instant::now() + timeout;
    for view in views {
        let mut view = view.clone();
        let waited = tokio::time::timeout_at(
            deadline,
            view.wait_for(|seen| {
                let count = seen.counts.get(topic).copied().unwrap_or(0);
                anomaly |= count > 1;
                count == want
            }),
        )
        .await;
        match waited {
            Ok(Ok(seen)) => last = Some(last.map_or(seen.at, |prev: Instant| prev.max(seen.at))),
            _ => return (None, anomaly),
        }
    }
    (last, anomaly)
}

pub async fn run(args: ConvergeArgs) -> anyhow::Result<ConvergeReport> {
    let (api, run_id) = (Api::new(Duration::from_secs(5), usize::MAX)?, rand::rng().random_range(0..u32::MAX));
    let (prefix, stop) = (format!("converge/{run_id:08x}/"), CancellationToken::new());
    let (mut views, mut pollers) = (Vec::new(), tokio::task::JoinSet::new());
    for &node in &args.nodes {
        let (tx, rx) = watch::channel(Seen { at: Instant::now(), counts: Arc::default() });
        let api = Api::new(Duration::from_secs(5), 1)?;
        pollers.spawn(poll_node(api, node, prefix.clone(), args.poll, tx, stop.clone()));
        views.push(rx);
    }
    let (workers, mut set) = (args.concurrency.clamp(1, args.trials.max(1)), tokio::task::JoinSet::new());
    for worker in 0..workers {
        let (args, api, views, prefix) = (args.clone(), api.clone(), views.clone(), prefix.clone());
        set.spawn(async move {
            let mut rng = SmallRng::seed_from_u64(u64::from(run_id) ^ worker as u64);
            let (mut r, mut join, mut leave) = (ConvergeReport::default(), Latency::default(), Latency::default());
            for trial in (worker..args.trials).step_by(workers) {
                tokio::time::sleep(args.interval.mul_f64(rng.random_range(0.0..1.0))).await;
                let (topic, entry) = (format!("{prefix}{trial}"), args.nodes[trial % args.nodes.len()]);
                let source = (!args.sources.0.is_empty()).then(|| args.sources.0[trial % args.sources.0.len()]);
                let joined_at = Instant::now();
                let joined = client::join(entry, source, &topic, args.timeout).await;
                let (seen, anomaly) = match &joined {
                    Ok(_) => wait_all(&views, &topic, 1, args.timeout).await,
                    Err(_) => (None, false),
                };
                let took = seen.map(|at| at.saturating_duration_since(joined_at));
                took.inspect(|&took| join.record(took));
                r.join_samples_ms.push(took.map_or(-1.0, |took| took.as_secs_f64() * 1000.0));
                r.join_failures += usize::from(took.is_none());
                r.anomalies += usize::from(anomaly);
                let Ok(joined) = joined else { continue };
                r.first_frame_mismatches += usize::from(joined.count != 1);
                for &node in &args.nodes {
                    let (local, nodes) = (u64::from(node == entry), args.nodes.len() as u32);
                    let agrees = |c: TopicCount| c.count == 1 && c.local == local && c.nodes == nodes;
                    r.count_mismatches += usize::from(!api.count(node, &topic).await.is_ok_and(agrees));
                }
                // Joins converge just after a gossip tick; leaving at once
                // would always leave at the same phase of the tick.
                tokio::time::sleep(args.interval.mul_f64(rng.random_range(0.0..1.0))).await;
                let left_at = Instant::now();
                client::leave(joined.ws, Duration::from_secs(2)).await;
                let (seen, anomaly) = wait_all(&views, &topic, 0, args.timeout).await;
                seen.inspect(|at| leave.record(at.saturating_duration_since(left_at)));
                r.leave_failures += usize::from(seen.is_none());
                r.anomalies += usize::from(anomaly);
            }
            (r, join, leave)
        });
    }
    let (mut total, mut join, mut leave) = (ConvergeReport::default(), Latency::default(), Latency::default());
    while let Some(done) = set.join_next().await {
        let (r, worker_join, worker_leave) = done?;
        total.join_failures += r.join_failures;
        total.leave_failures += r.leave_failures;
        total.count_mismatches += r.count_mismatches;
        total.first_frame_mismatches += r.first_frame_mismatches;
        total.anomalies += r.anomalies;
        total.join_samples_ms.extend(r.join_samples_ms);
        join.merge(&worker_join);
        leave.merge(&worker_leave);
    }
    stop.cancel();
    while pollers.join_next().await.is_some() {}
    let (interval_ms, poll_ms) = (args.interval.as_secs_f64() * 1000.0, args.poll.as_secs_f64() * 1000.0);
    let (join, leave, mode, nodes, trials) =
        (join.summary(), leave.summary(), "converge".into(), args.nodes.len(), args.trials);
    Ok(ConvergeReport { mode, nodes, interval_ms, poll_ms, trials, join, leave, ..total })
}
