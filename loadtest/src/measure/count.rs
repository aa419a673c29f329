//! `count`: `GET /count/{topic}` latency while the node is under load, paced (open-loop, `--rate` per second over 4
//! keep-alive connections after a 0.5 s unmeasured warm-up) because the question is how long a reader waits at a
//! realistic rate. Latency runs from sending the request to having the whole body (tokio's 1 ms timer would add the
//! load generator's own lateness to samples timed from the scheduled start); requests that start more than 5 ms
//! late are counted instead, to show when the generator fell behind.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clap::Args;
use serde::{Deserialize, Serialize};

use super::client::Api;
use super::topics::{NetArgs, TopicArgs};
use super::{Latency, LatencySummary};

const WORKERS: usize = 4;

#[derive(Debug, Clone, Args)]
pub struct CountArgs {
    #[command(flatten)]
    pub net: NetArgs,
    #[command(flatten)]
    pub topics: TopicArgs,
    /// Requests per second, all connections together.
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// How long to measure.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
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
    let period = Duration::from_secs_f64(WORKERS as f64 / args.rate.max(1.0));
    let begin = Instant::now() + Duration::from_millis(50);
    let (measure_from, names) = (begin + Duration::from_millis(500), args.topics.names(4096));
    let (end, mut workers) = (measure_from + args.duration, Vec::new());
    for worker in 0..WORKERS {
        let (target, source) = args.net.endpoint(worker as u64);
        let (api, names) = (Api::new(Duration::from_secs(5), 1, source)?, names.clone());
        // Workers are offset within the period so their requests interleave.
        let mut slot = begin + period.mul_f64(worker as f64 / WORKERS as f64);
        let (mut r, mut latency, mut n) = (CountReport::default(), Latency::default(), worker);
        r.rate_target = args.rate;
        workers.push(tokio::spawn(async move {
            while slot < end {
                tokio::time::sleep_until(slot.into()).await;
                let (sent, measured) = (Instant::now(), slot >= measure_from);
                r.late_starts += u64::from(measured && sent - slot > Duration::from_millis(5));
                let answer = api.count(target, &names[n % names.len()]).await;
                (n, slot) = (n + WORKERS, slot + period);
                match answer {
                    _ if !measured => {}
                    Ok(_) => latency.record(sent.elapsed()),
                    // `Api` names the status of an answer that is not 200.
                    Err(error) => {
                        let kind = ["transport", "status"][usize::from(error.to_string().contains("HTTP"))];
                        *r.errors.entry(kind.to_owned()).or_default() += 1;
                    }
                }
            }
            r.achieved_rps = latency.len() as f64 / (end - measure_from).as_secs_f64();
            (r, latency)
        }));
    }
    let workers = futures_util::future::try_join_all(workers).await?;
    // Each worker's rate is its share: the whole run's is their sum.
    let (mut report, latency) = merge(&workers).unwrap_or_default();
    report.achieved_rps *= workers.len() as f64;
    Ok((report, latency))
}

/// Rounds (or workers) as one report: percentiles over every sample, errors and late starts summed, mean rate.
pub fn merge(rounds: &[(CountReport, Latency)]) -> Option<(CountReport, Latency)> {
    let (mut merged, mut latency) = (CountReport::default(), Latency::default());
    (merged.mode, merged.rate_target) = ("count".into(), rounds.first()?.0.rate_target);
    for (report, histogram) in rounds {
        latency.merge(histogram);
        for (kind, n) in &report.errors {
            *merged.errors.entry(kind.clone()).or_default() += n;
        }
        merged.late_starts += report.late_starts;
        merged.achieved_rps += report.achieved_rps / rounds.len() as f64;
    }
    (merged.requests, merged.latency) = (latency.len(), latency.summary());
    Some((merged, latency))
}
