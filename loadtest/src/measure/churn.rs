//! `churn`: clients that join and leave as fast as asked, for a while. A cycle is a whole visit (connect, upgrade,
//! first count frame, close). With `--rate 0` it is closed-loop, `--concurrency` cycles back to back: the most
//! cycles per second the server sustains here, compared against bare. With `--rate R` it is open-loop: R starts per
//! second whatever the latency, at most `--concurrency` in flight, a start finding no free slot counted as missed
//! rather than queued. Given `--server-pid`, the server's CPU time per cycle is reported too, the figure least
//! disturbed by a busy machine.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use clap::Args;
use serde::{Deserialize, Serialize};
use tokio::{sync::Semaphore, task::JoinSet, time::MissedTickBehavior};

use super::client;
use super::topics::{Dist, NetArgs, TopicArgs};
use super::{Latency, LatencySummary};

/// Longest a join or a close may take.
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Args)]
pub struct ChurnArgs {
    #[command(flatten)]
    pub net: NetArgs,
    #[command(flatten)]
    pub topics: TopicArgs,
    /// Cycle starts per second; 0 runs closed-loop as fast as possible.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    /// Cycles in flight at most (closed-loop: the number of workers).
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// How long to churn.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// Server process ids whose CPU time is read before and after.
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
}

/// What `churn` measured (`mode` is always `churn`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChurnReport {
    pub mode: String,
    /// Asked rate (0: closed-loop), and workers or in-flight cap.
    pub rate_target: f64,
    pub concurrency: usize,
    pub duration_secs: f64,
    /// Completed cycles, failed cycles (in all and by kind), completed per second.
    pub cycles: u64,
    pub failed: u64,
    pub errors: BTreeMap<String, u64>,
    pub cycles_per_sec: f64,
    /// Open-loop starts skipped because every slot was busy.
    pub missed_starts: u64,
    /// Closes the server did not complete within the timeout.
    pub unclean_closes: u64,
    /// Connect to first count frame, and connect to closed.
    pub join: LatencySummary,
    pub cycle: LatencySummary,
    /// Server CPU time per completed cycle, microseconds (all `--server-pid`).
    pub server_cpu_us_per_cycle: Option<f64>,
}

/// What the cycles measured so far: the report's tallies, join and cycle latencies.
type Tally = Mutex<(ChurnReport, Latency, Latency)>;

/// One cycle: join `topic` on `target` from `source`, leave, record it in `tally`.
async fn cycle((target, source): (SocketAddr, Option<IpAddr>), topic: &str, tally: &Tally) {
    let started = Instant::now();
    let joined = match client::join(target, source, topic, TIMEOUT).await {
        Ok(joined) => Ok((joined.first_frame, client::leave(joined.ws, TIMEOUT).await)),
        Err(error) => Err(error),
    };
    let mut tally = tally.lock().unwrap_or_else(PoisonError::into_inner);
    let (r, join, cycle) = &mut *tally;
    match joined {
        Ok((first_frame, clean)) => {
            r.unclean_closes += u64::from(!clean);
            join.record(first_frame);
            cycle.record(started.elapsed());
        }
        Err(kind) => *r.errors.entry(kind).or_default() += 1,
    }
}

fn cpu_micros(pids: &[u32]) -> Option<u64> {
    pids.iter().map(|&pid| super::cpu_micros(pid)).sum()
}

pub async fn run(args: ChurnArgs) -> anyhow::Result<ChurnReport> {
    let cpu_before = cpu_micros(&args.server_pid);
    // Topic names are drawn up front: every uniform topic once, or 64k Zipf draws that the cycles walk.
    let names = args.topics.names(match args.topics.dist {
        Dist::Uniform => args.topics.topics.clamp(1, 1 << 20),
        Dist::Zipf => 65_536,
    });
    let slots = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let tally = Arc::<Tally>::default();
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let (mut sequence, mut missed, mut inflight) = (0, 0, JoinSet::new());
    let started = Instant::now();
    while started.elapsed() < args.duration {
        let permit = if args.rate > 0.0 {
            if sequence + missed >= (started.elapsed().as_secs_f64() * args.rate) as u64 {
                ticker.tick().await;
                continue;
            }
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                missed += 1;
                continue;
            };
            permit
        } else {
            let permit = slots.clone().acquire_owned().await?;
            if started.elapsed() >= args.duration {
                break;
            }
            permit
        };
        let (endpoint, tally) = (args.net.endpoint(sequence), tally.clone());
        let topic = names[(sequence % names.len() as u64) as usize].clone();
        sequence += 1;
        inflight.spawn(async move {
            cycle(endpoint, &topic, &tally).await;
            drop(permit);
        });
        while inflight.try_join_next().is_some() {}
    }
    while inflight.join_next().await.is_some() {}

    let elapsed = started.elapsed().as_secs_f64();
    let (mut r, join, cycle) = std::mem::take(&mut *tally.lock().unwrap_or_else(PoisonError::into_inner));
    (r.mode, r.rate_target, r.concurrency) = ("churn".into(), args.rate, args.concurrency);
    (r.duration_secs, r.cycles, r.missed_starts) = (elapsed, cycle.len(), missed);
    (r.failed, r.cycles_per_sec) = (r.errors.values().sum(), r.cycles as f64 / elapsed);
    (r.join, r.cycle) = (join.summary(), cycle.summary());
    let cpu = cpu_before.zip(cpu_micros(&args.server_pid)).filter(|_| r.cycles > 0);
    let per_cycle = |(before, after): (u64, u64)| after.saturating_sub(before) as f64 / r.cycles as f64;
    r.server_cpu_us_per_cycle = cpu.filter(|_| !args.server_pid.is_empty()).map(per_cycle);
    Ok(r)
}
