//! `churn`: clients that join and leave as fast as asked, for a while.
//!
//! One cycle is a whole visit: TCP connect, upgrade, first count frame, close
//! frame, server closes. With `--rate 0` it is closed-loop (`--concurrency`
//! workers back to back), which measures the most cycles per second the
//! server sustains on this machine: the number compared against the bare
//! server. With `--rate R` it is open-loop: R cycle starts per second
//! whatever the latency, at most `--concurrency` in flight; a start that finds
//! no free slot is counted as missed instead of being queued, so the achieved
//! rate is honest. Given `--server-pid`, the server's CPU time per cycle is
//! reported too, the figure least disturbed by a busy machine.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Args;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use super::{
    Report, client, procfs,
    stats::{Latency, LatencySummary, add_counts},
    topics::{Dist, NetArgs, TopicArgs},
};

/// Flags of `churn`.
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

/// What `churn` measured.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChurnReport {
    /// Always `churn`.
    pub mode: String,
    /// Asked rate (0: closed-loop).
    pub rate_target: f64,
    /// Workers or in-flight cap.
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
    /// Connect to first count frame.
    pub join: LatencySummary,
    /// Connect to closed.
    pub cycle: LatencySummary,
    /// Server CPU time per completed cycle, microseconds (all `--server-pid`).
    pub server_cpu_us_per_cycle: Option<f64>,
}

impl Report for ChurnReport {
    fn summary(&self) -> String {
        let cpu = self
            .server_cpu_us_per_cycle
            .map(|us| format!(", server CPU {us:.0} µs/cycle"))
            .unwrap_or_default();
        format!(
            "churn: {} cycles in {:.1}s = {:.0} cycles/s ({} failed, {} missed starts), join {}, cycle {}{cpu}",
            self.cycles,
            self.duration_secs,
            self.cycles_per_sec,
            self.failed,
            self.missed_starts,
            self.join.short(),
            self.cycle.short(),
        )
    }
}

#[derive(Default)]
struct Tally {
    join: Latency,
    cycle: Latency,
    errors: BTreeMap<String, u64>,
    unclean: u64,
}

impl Tally {
    fn absorb(&mut self, other: Tally) {
        self.join.merge(&other.join);
        self.cycle.merge(&other.cycle);
        add_counts(&mut self.errors, other.errors);
        self.unclean += other.unclean;
    }
}

/// What every cycle shares: where to go, the topic names, the next sequence number.
struct Plan {
    net: NetArgs,
    names: Vec<String>,
    timeout: Duration,
    sequence: AtomicU64,
}

impl Plan {
    /// One cycle with the next sequence number, tallied into `tally`.
    async fn cycle(&self, mut tally: Tally) -> Tally {
        let n = self.sequence.fetch_add(1, Ordering::Relaxed);
        let (target, source) = self.net.endpoint(n);
        let started = Instant::now();
        match client::join(
            target,
            source,
            &self.names[(n % self.names.len() as u64) as usize],
            self.timeout,
        )
        .await
        {
            Ok(joined) => {
                tally.join.record(joined.first_frame);
                if !client::leave(joined.ws, self.timeout).await {
                    tally.unclean += 1;
                }
                tally.cycle.record(started.elapsed());
            }
            Err(error) => *tally.errors.entry(error.kind()).or_default() += 1,
        }
        tally
    }
}

fn cpu_micros(pids: &[u32]) -> Option<u64> {
    pids.iter().map(|&pid| procfs::cpu_micros(pid)).sum()
}

/// Runs `churn`.
pub async fn run(args: ChurnArgs) -> anyhow::Result<ChurnReport> {
    let cpu_before = cpu_micros(&args.server_pid);
    // Topic names are drawn up front (a Zipf draw needs the picker's RNG):
    // every uniform topic once, or 64k Zipf draws that the cycles walk.
    let mut picker = args.topics.picker();
    let names: Vec<String> = match args.topics.dist {
        Dist::Uniform => (0..args.topics.topics.clamp(1, 1 << 20))
            .map(|rank| picker.name(rank))
            .collect(),
        Dist::Zipf => (0..65_536).map(|i| picker.topic(i)).collect(),
    };
    let (net, timeout, sequence) = (args.net.clone(), args.timeout, AtomicU64::new(0));
    let plan = Arc::new(Plan {
        net,
        names,
        timeout,
        sequence,
    });
    let started = Instant::now();
    let deadline = started + args.duration;
    let mut missed = 0;
    let mut tally = Tally::default();
    if args.rate <= 0.0 {
        let mut workers = tokio::task::JoinSet::new();
        for _ in 0..args.concurrency.max(1) {
            let plan = plan.clone();
            workers.spawn(async move {
                let mut tally = Tally::default();
                while Instant::now() < deadline {
                    tally = plan.cycle(tally).await;
                }
                tally
            });
        }
        while let Some(done) = workers.join_next().await {
            tally.absorb(done?);
        }
    } else {
        let slots = Arc::new(Semaphore::new(args.concurrency.max(1)));
        let mut ticker = tokio::time::interval(Duration::from_millis(1));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut started_cycles = 0u64;
        let mut inflight = tokio::task::JoinSet::new();
        while Instant::now() < deadline {
            ticker.tick().await;
            let due = (started.elapsed().as_secs_f64() * args.rate) as u64;
            while started_cycles < due {
                started_cycles += 1;
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    missed += 1;
                    continue;
                };
                let plan = plan.clone();
                inflight.spawn(async move {
                    let tally = plan.cycle(Tally::default()).await;
                    drop(permit);
                    tally
                });
            }
            while let Some(done) = inflight.try_join_next() {
                tally.absorb(done?);
            }
        }
        while let Some(done) = inflight.join_next().await {
            tally.absorb(done?);
        }
    }

    let elapsed = started.elapsed().as_secs_f64();
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
