//! `hold`: open C websocket connections over T topics (100 handshakes in flight) and keep them open; how fast the
//! handshakes went (rate, connect p50/p99) and, given `--server-pid`, what the held connections cost the server in
//! resident memory. One process holds at most ~19k sockets (the open-files limit is 20,000), so bigger runs start
//! several: with `--wait-stdin` a process prints its report so far once connected and releases when its stdin
//! closes. With `--min-available-mib` it stops opening connections once the machine's available memory falls below
//! that floor, so a run that asks for more than the box holds ends with a measurement of the most it held, not with
//! the kernel's OOM killer choosing a victim among the processes of everyone on the machine; `--connect-for` does the
//! same for a run that would take longer than its time budget.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use clap::Args;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::client::{self, Ws};
use super::topics::{NetArgs, TopicArgs};
use super::{Latency, LatencySummary};

#[derive(Debug, Clone, Args)]
pub struct HoldArgs {
    #[command(flatten)]
    pub net: NetArgs,
    #[command(flatten)]
    pub topics: TopicArgs,
    /// Connections to open.
    #[arg(long, default_value_t = 1000)]
    pub connections: u64,
    /// How long to hold once connected (ignored with --wait-stdin).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub hold: Duration,
    /// Print the report so far when connected, hold until stdin closes.
    #[arg(long)]
    pub wait_stdin: bool,
    /// Pause between the last handshake and the memory reading.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub settle: Duration,
    /// Server process ids whose VmRSS is read before and after.
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Stop opening connections once MemAvailable (`/proc/meminfo`) is below this many MiB; 0: never.
    #[arg(long, default_value_t = 0)]
    pub min_available_mib: u64,
    /// Stop opening connections this long after the first (a run with a time budget); default: never.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub connect_for: Option<Duration>,
}

/// VmRSS of one server process in KiB: before connecting, with every connection held and settled, after release.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerMemory {
    pub pid: u32,
    pub rss_before_kib: u64,
    pub rss_held_kib: u64,
    pub rss_released_kib: u64,
}

/// What `hold` measured (`mode` is `ready` in the line printed once connected, `hold` in the final one).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HoldReport {
    pub mode: String,
    /// Connections asked for, joined, failed (in all and by kind).
    pub requested: u64,
    pub held: u64,
    pub failed: u64,
    pub errors: BTreeMap<String, u64>,
    /// Seconds from the first connect to the last join, and joins per second over it.
    pub connect_secs: f64,
    pub handshakes_per_sec: f64,
    /// TCP connect to the end of the upgrade, and to the first count frame.
    pub handshake: LatencySummary,
    pub first_frame: LatencySummary,
    /// Held connections the server ended before the release.
    pub dropped_while_held: u64,
    /// Count pushes received while held.
    pub pushes: u64,
    /// Seconds to close every connection, and closes the server did not complete in time.
    pub release_secs: f64,
    pub unclean_closes: u64,
    /// Memory of each `--server-pid`.
    pub servers: Vec<ServerMemory>,
    /// SYNs the kernel dropped on full listen queues while connecting (machine-wide): 1 s retransmits each.
    #[serde(default)]
    pub listen_overflows: u64,
    /// Why it stopped opening connections before all were asked for (the memory floor), if it did.
    #[serde(default)]
    pub stopped: Option<String>,
    /// This load process's own VmRSS once connected, KiB (what a held connection costs the client side).
    #[serde(default)]
    pub rss_self_kib: u64,
}

impl HoldReport {
    /// Resident bytes per held connection, over all server processes.
    pub fn bytes_per_connection(&self) -> Option<f64> {
        let grown = |s: &ServerMemory| s.rss_held_kib as i64 - s.rss_before_kib as i64;
        let grown: i64 = self.servers.iter().map(grown).sum();
        let some = self.held > 0 && !self.servers.is_empty();
        some.then(|| grown as f64 * 1024.0 / self.held as f64)
    }
}

/// What the connections saw: the report's counts, handshake and first-frame latencies, when the last one joined.
type Tally = Mutex<(HoldReport, Latency, Latency, Option<Instant>)>;

fn lock(tally: &Tally) -> std::sync::MutexGuard<'_, (HoldReport, Latency, Latency, Option<Instant>)> {
    tally.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Holds a joined connection until `stop`, then leaves; counts pushes and a close by the server.
async fn hold(mut ws: Ws, stop: CancellationToken, tally: Arc<Tally>) {
    loop {
        tokio::select! {
            () = stop.cancelled() => {
                let clean = client::leave(ws, Duration::from_secs(5)).await;
                lock(&tally).0.unclean_closes += u64::from(!clean);
                return;
            }
            frame = client::next_data_frame(&mut ws) => {
                let mut tally = lock(&tally);
                if frame.is_none() {
                    tally.0.dropped_while_held += 1;
                    return;
                }
                tally.0.pushes += 1;
            }
        }
    }
}

fn rss_each(pids: &[u32]) -> Vec<u64> {
    pids.iter().map(|&pid| super::rss_kib(pid).unwrap_or(0)).collect()
}

pub async fn run(args: HoldArgs) -> anyhow::Result<HoldReport> {
    let (rss_before, overflows) = (rss_each(&args.server_pid), super::listen_overflows());
    let (stop, tracker, tally) = (CancellationToken::new(), TaskTracker::new(), Arc::<Tally>::default());
    let (gate, started) = (Arc::new(Semaphore::new(100)), Instant::now());
    let mut stopped = None;
    for (sequence, topic) in (0..).zip(args.topics.names(args.connections)) {
        let permit = gate.clone().acquire_owned().await?;
        if let Some(budget) = args.connect_for.filter(|&budget| started.elapsed() > budget) {
            stopped = Some(format!("time: {sequence} joins started in {budget:?}"));
            break;
        }
        // Read every 100 joins (the joins in flight): a /proc read per join would cost more than the join.
        if args.min_available_mib > 0 && sequence % 100 == 0 {
            let available = super::mem_available_mib().unwrap_or(u64::MAX);
            if available < args.min_available_mib {
                let floor = args.min_available_mib;
                stopped = Some(format!(
                    "memory: MemAvailable {available} MiB < {floor} MiB after {sequence} joins"
                ));
                break;
            }
        }
        let ((target, source), stop, tally) = (args.net.endpoint(sequence), stop.clone(), tally.clone());
        tracker.spawn(async move {
            let joined = client::join(target, source, &topic, Duration::from_secs(15)).await;
            {
                let (r, handshake, first_frame, last) = &mut *lock(&tally);
                match &joined {
                    Ok(joined) => {
                        handshake.record(joined.handshake);
                        first_frame.record(joined.first_frame);
                        *last = Some(Instant::now());
                    }
                    Err(kind) => *r.errors.entry(kind.clone()).or_default() += 1,
                }
            }
            drop(permit);
            if let Ok(joined) = joined {
                let _ = hold(joined.ws, stop, tally).await;
            }
        });
    }
    // Every join has ended once every permit is back.
    drop(gate.acquire_many(100).await?);
    {
        let (r, handshake, first_frame, last) = &mut *lock(&tally);
        (r.requested, r.held, r.failed) = (args.connections, handshake.len(), r.errors.values().sum());
        (r.handshake, r.first_frame) = (handshake.summary(), first_frame.summary());
        r.connect_secs = last.map_or(0.0, |last| (last - started).as_secs_f64());
        let per_sec = r.held as f64 / r.connect_secs;
        r.handshakes_per_sec = if r.connect_secs > 0.0 { per_sec } else { 0.0 };
        let overflows = super::listen_overflows().zip(overflows);
        r.listen_overflows = overflows.map_or(0, |(after, before)| after.saturating_sub(before));
        r.stopped = stopped;
    }
    tokio::time::sleep(args.settle).await;
    let rss_held = rss_each(&args.server_pid);
    lock(&tally).0.rss_self_kib = super::rss_kib(std::process::id()).unwrap_or(0);
    if args.wait_stdin {
        let mut ready = lock(&tally).0.clone();
        ready.mode = "ready".into();
        println!("{}", serde_json::to_string(&ready)?);
        // Any line or the end of stdin releases the connections.
        let _ = BufReader::new(tokio::io::stdin()).lines().next_line().await;
    } else {
        tokio::time::sleep(args.hold).await;
    }
    let releasing = Instant::now();
    stop.cancel();
    tracker.close();
    tracker.wait().await;
    let mut r = std::mem::take(&mut lock(&tally).0);
    (r.release_secs, r.mode) = (releasing.elapsed().as_secs_f64(), "hold".into());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss = args.server_pid.iter().zip(rss_before).zip(rss_held);
    for ((&pid, rss_before_kib), rss_held_kib) in rss {
        let rss_released_kib = super::rss_kib(pid).unwrap_or(0);
        let memory = ServerMemory {
            pid,
            rss_before_kib,
            rss_held_kib,
            rss_released_kib,
        };
        r.servers.push(memory);
    }
    Ok(r)
}
