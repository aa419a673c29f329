//! `count`: `GET /count/{topic}` latency while the node is under load,
//! paced (open-loop, `--rate` per second over `--connections` keep-alive
//! connections) because the question is how long a reader waits at a
//! realistic rate. Latency runs from sending the request to having the whole
//! body (tokio's 1 ms timer would add the load generator's own lateness to
//! samples timed from the scheduled start); requests that start more than
//! 5 ms late are counted instead, to show when the generator fell behind.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use clap::Args;
use serde::{Deserialize, Serialize};

use super::{
    api::Api,
    stats::{Latency, LatencySummary, add_counts},
    topics::{TopicArgs, loopback_addr},
};

#[derive(Debug, Clone, Args)]
pub struct CountArgs {
    /// HTTP addresses of the nodes to query, comma-separated.
    #[arg(long, value_delimiter = ',', required = true, value_parser = loopback_addr)]
    pub targets: Vec<std::net::SocketAddr>,
    #[command(flatten)]
    pub topics: TopicArgs,
    /// Requests per second, all connections together.
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// Keep-alive connections (one worker each).
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// How long to measure.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Unmeasured warm-up before it.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub warmup: Duration,
}

/// What `count` measured (`mode` is always `count`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CountReport {
    pub mode: String,
    pub rate_target: f64,
    /// Measured requests that succeeded, failures by kind, successes per second.
    pub requests: u64,
    pub errors: BTreeMap<String, u64>,
    pub achieved_rps: f64,
    /// Requests that started more than 5 ms after their slot.
    pub late_starts: u64,
    /// Send to full body.
    pub latency: LatencySummary,
}

/// Runs `count`; the latency histogram comes too, so rounds can be merged exactly.
pub async fn run(args: CountArgs) -> anyhow::Result<(CountReport, Latency)> {
    let workers = args.connections.max(1);
    let period = Duration::from_secs_f64(workers as f64 / args.rate.max(1.0));
    let begin = Instant::now() + Duration::from_millis(50);
    let measure_from = begin + args.warmup;
    let end = measure_from + args.duration;
    let mut picker = args.topics.picker();
    let names: Vec<String> = (0..4096).map(|i| picker.topic(i)).collect();
    let (rate_target, duration, mut set) = (args.rate, args.duration, tokio::task::JoinSet::new());
    for worker in 0..workers {
        let api = Api::new(Duration::from_secs(5), 1)?;
        let target = args.targets[worker % args.targets.len()];
        let names = names.clone();
        // Workers are offset within the period so their requests interleave.
        let offset = period.mul_f64(worker as f64 / workers as f64);
        set.spawn(async move {
            let (mut latency, mut errors, mut late) = (Latency::default(), BTreeMap::<String, u64>::new(), 0);
            let mut slot = begin + offset;
            let mut n = worker;
            while slot < end {
                tokio::time::sleep_until(slot.into()).await;
                let sent = Instant::now();
                let measured = slot >= measure_from;
                if measured && sent.duration_since(slot) > Duration::from_millis(5) {
                    late += 1;
                }
                let topic = &names[n % names.len()];
                n += workers;
                match api.count(target, topic).await {
                    Ok(_) if measured => latency.record(sent.elapsed()),
                    Ok(_) => {}
                    Err(error) if measured => {
                        let kind = if error.to_string().contains("HTTP") { "status" } else { "transport" };
                        *errors.entry(kind.to_owned()).or_default() += 1;
                    }
                    Err(_) => {}
                }
                slot += period;
            }
            let rps = latency.len() as f64 / duration.as_secs_f64();
            (
                CountReport { rate_target, errors, achieved_rps: rps, late_starts: late, ..CountReport::default() },
                latency,
            )
        });
    }
    let mut workers = Vec::new();
    while let Some(done) = set.join_next().await {
        workers.push(done?);
    }
    // Each worker's rate is its share: the whole run's is their sum.
    let (mut report, latency) = merge(&workers).unwrap_or_default();
    report.achieved_rps *= workers.len() as f64;
    Ok((report, latency))
}

/// Merges rounds (or workers) into one report: percentiles over every
/// sample, errors and late starts summed, the mean rate.
pub fn merge(rounds: &[(CountReport, Latency)]) -> Option<(CountReport, Latency)> {
    let mut merged =
        CountReport { mode: "count".into(), rate_target: rounds.first()?.0.rate_target, ..CountReport::default() };
    let mut latency = Latency::default();
    for (report, histogram) in rounds {
        latency.merge(histogram);
        add_counts(&mut merged.errors, report.errors.clone());
        merged.late_starts += report.late_starts;
        merged.achieved_rps += report.achieved_rps / rounds.len() as f64;
    }
    (merged.requests, merged.latency) = (latency.len(), latency.summary());
    Some((merged, latency))
}
