//! `churn`: clients that join and leave as fast as asked, for a while. A
//! cycle is a whole visit (connect, upgrade, first count frame, close). With
//! `--rate 0` it is closed-loop, `--concurrency` cycles back to back: the most
//! cycles per second the server sustains here, compared against bare. With
//! `--rate R` it is open-loop: R starts per second whatever the latency, at
//! most `--concurrency` in flight, a start finding no free slot counted as
//! missed rather than queued. Given `--server-pid`, the server's CPU time per
//! cycle is reported too, the figure least disturbed by a busy machine.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use clap::Args;
use serde::{Deserialize, Serialize};
use tokio::{sync::Semaphore, task::JoinSet, time::MissedTickBehavior};

use super::{
    client, procfs,
    stats::{Latency, LatencySummary},
    topics::{Dist, NetArgs, TopicArgs},
};

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
    /// Longest a join or a close may take.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
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

#[derive(Default)]
struct Tally {
    join: Latency,
    cycle: Latency,
    errors: BTreeMap<String, u64>,
    unclean: u64,
}

/// One cycle: join `topic` on `target` from `source`, leave, record it in `tally`.
async fn cycle(
    target: (std::net::SocketAddr, Option<std::net::IpAddr>),
    topic: &str,
    timeout: Duration,
    tally: &Mutex<Tally>,
) {
    let started = Instant::now();
    let (joined, left) = match client::join(target.0, target.1, topic, timeout).await {
        Ok(joined) => (Ok(joined.first_frame), client::leave(joined.ws, timeout).await),
        Err(error) => (Err(error), true),
    };
    let mut tally = tally.lock().unwrap_or_else(PoisonError::into_inner);
    match joined {
        Ok(first_frame) => {
            tally.join.record(first_frame);
            tally.unclean += u64::from(!left);
            tally.cycle.record(started.elapsed());
        }
        Err(kind) => *tally.errors.entry(kind).or_default() += 1,
    }
}

fn cpu_micros(pids: &[u32]) -> Option<u64> {
    pids.iter().map(|&pid| procfs::cpu_micros(pid)).sum()
}

pub async fn run(args: ChurnArgs) -> anyhow::Result<ChurnReport> {
    let cpu_before = cpu_micros(&args.server_pid);
    // Topic names are drawn up front: every uniform topic once, or 64k Zipf
    // draws that the cycles walk.
    let mut picker = args.topics.picker();
    let names: Vec<String> = match args.topics.dist {
        Dist::Uniform => (0..args.topics.topics.clamp(1, 1 << 20)).map(|rank| picker.name(rank)).collect(),
        Dist::Zipf => (0..65_536).map(|i| picker.topic(i)).collect(),
    };
    let (slots, tally) = (Arc::new(Semaphore::new(args.concurrency.max(1))), Arc::new(Mutex::default()));
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
        let (target, topic) = (args.net.endpoint(sequence), names[(sequence % names.len() as u64) as usize].clone());
        let (tally, timeout) = (tally.clone(), args.timeout);
        sequence += 1;
        inflight.spawn(async move {
            cycle(target, &topic, timeout, &tally).await;
            drop(permit);
        });
        while inflight.try_join_next().is_some() {}
    }
    while inflight.join_next().await.is_some() {}

    let elapsed = started.elapsed().as_secs_f64();
    let tally = std::mem::take(&mut *tally.lock().unwrap_or_else(PoisonError::into_inner));
    let cycles = tally.cycle.len();
    let server_cpu_us_per_cycle = match (cpu_before, cpu_micros(&args.server_pid)) {
        (Some(before), Some(after)) if cycles > 0 && !args.server_pid.is_empty() => {
            Some(after.saturating_sub(before) as f64 / cycles as f64)
        }
        _ => None,
    };
    Ok(ChurnReport {
        mode: "churn".into(),
        rate_target: args.rate,
        concurrency: args.concurrency,
        duration_secs: elapsed,
        cycles,
        failed: tally.errors.values().sum(),
        errors: tally.errors,
        cycles_per_sec: cycles as f64 / elapsed,
        missed_starts: missed,
        unclean_closes: tally.unclean,
        join: tally.join.summary(),
        cycle: tally.cycle.summary(),
        server_cpu_us_per_cycle,
    })
}
