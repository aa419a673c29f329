//! `hold`: open C websocket connections over T topics and keep them open;
//! how fast the handshakes went (rate, connect p50/p99) and, given
//! `--server-pid`, what the held connections cost the server in resident
//! memory. One process holds at most ~19k sockets (the open-files limit is
//! 20,000), so bigger runs start several: with `--wait-stdin` a process prints
//! a `ready` line once connected and releases when its stdin closes.

use std::{
    collections::BTreeMap,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use clap::Args;
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    sync::{Semaphore, mpsc},
};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    client::{self, Ws},
    human, procfs,
    stats::{Latency, LatencySummary},
    topics::{NetArgs, TopicArgs},
};

#[derive(Debug, Clone, Args, Serialize)]
pub struct HoldArgs {
    #[command(flatten)]
    #[serde(flatten)]
    pub net: NetArgs,
    #[command(flatten)]
    #[serde(flatten)]
    pub topics: TopicArgs,
    /// Connections to open.
    #[arg(long, default_value_t = 1000)]
    pub connections: u64,
    /// Handshakes in flight at once.
    /// headcount's listener has tokio's default backlog of 128: more in
    /// flight than that overflows its accept queue.
    #[arg(long, default_value_t = 100)]
    pub concurrency: usize,
    /// How long to hold once connected (ignored with --wait-stdin).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "human")]
    pub hold: Duration,
    /// Print a `ready` JSON line when connected, hold until stdin closes.
    #[arg(long)]
    pub wait_stdin: bool,
    /// Pause between the last handshake and the memory reading.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "human")]
    pub settle: Duration,
    /// Server process ids whose VmRSS is read before and after.
    #[arg(long, value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Longest a single join may take.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    #[serde(serialize_with = "human")]
    pub timeout: Duration,
}

/// Memory of one server process (VmRSS, KiB): before connecting, with
/// every connection held and settled, after the release.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerMemory {
    pub pid: u32,
    pub rss_before_kib: u64,
    pub rss_held_kib: u64,
    pub rss_released_kib: u64,
}

/// The `ready` line printed with `--wait-stdin` (`event` is always `ready`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ready {
    pub event: String,
    pub held: u64,
    pub failed: u64,
    pub connect_secs: f64,
}

/// What `hold` measured (`mode` is always `hold`).
#[derive(Debug, Clone, Serialize, Deserialize)]
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
    /// Connection attempts the kernel dropped on full listen queues while
    /// connecting (machine-wide); each costs its client a 1 s SYN retransmit.
    #[serde(default)]
    pub listen_overflows: u64,
}

impl HoldReport {
    /// Resident bytes per held connection, over all server processes.
    pub fn bytes_per_connection(&self) -> Option<f64> {
        let grown = |s: &ServerMemory| s.rss_held_kib as i64 - s.rss_before_kib as i64;
        let grown: i64 = self.servers.iter().map(grown).sum();
        (self.held > 0 && !self.servers.is_empty()).then(|| grown as f64 * 1024.0 / self.held as f64)
    }
}

/// What the held connections saw, shared by their tasks.
#[derive(Default)]
struct Tally {
    dropped: AtomicU64,
    pushes: AtomicU64,
    unclean: AtomicU64,
}

/// Holds a joined connection until `stop`, then leaves (`None` once the server ended it).
async fn hold(mut ws: Ws, stop: CancellationToken, tally: Arc<Tally>) -> Option<()> {
    loop {
        tokio::select! {
            () = stop.cancelled() => {
                let clean = client::leave(ws, Duration::from_secs(5)).await;
                tally.unclean.fetch_add(u64::from(!clean), Relaxed);
                return Some(());
            }
            frame = client::next_data_frame(&mut ws) => {
                (if frame.is_some() { &tally.pushes } else { &tally.dropped }).fetch_add(1, Relaxed);
                frame?;
            }
        }
    }
}

fn rss_each(pids: &[u32]) -> Vec<u64> {
    pids.iter().map(|&pid| procfs::rss_kib(pid).unwrap_or(0)).collect()
}

pub async fn run(args: HoldArgs) -> anyhow::Result<HoldReport> {
    let (rss_before, overflows_before) = (rss_each(&args.server_pid), procfs::listen_overflows().unwrap_or(0));
    let (stop, tracker, tally) = (CancellationToken::new(), TaskTracker::new(), Arc::new(Tally::default()));
    let (outcomes, mut results) = mpsc::channel(1024);
    let started = Instant::now();
    let spawning = tokio::spawn({
        let (args, stop, tracker, tally) = (args.clone(), stop.clone(), tracker.clone(), tally.clone());
        let (gate, mut picker) = (Arc::new(Semaphore::new(args.concurrency.max(1))), args.topics.picker());
        async move {
            for sequence in 0..args.connections {
                let Ok(permit) = gate.clone().acquire_owned().await else {
                    break;
                };
                let ((target, source), topic) = (args.net.endpoint(sequence), picker.topic(sequence));
                let (outcomes, stop, tally, timeout) = (outcomes.clone(), stop.clone(), tally.clone(), args.timeout);
                tracker.spawn(async move {
                    let joined = client::join(target, source, &topic, timeout).await;
                    drop(permit);
                    let outcome = joined.as_ref().map(|joined| (joined.handshake, joined.first_frame));
                    let _ = outcomes.send(outcome.map_err(Clone::clone)).await;
                    drop(outcomes);
                    if let Ok(joined) = joined {
                        let _ = hold(joined.ws, stop, tally).await;
                    }
                });
            }
        }
    });

    let (mut handshake, mut first_frame) = (Latency::default(), Latency::default());
    let mut errors = BTreeMap::<String, u64>::new();
    let mut last_join = started;
    for _ in 0..args.connections {
        match results.recv().await {
            Some(Ok((h, f))) => {
                handshake.record(h);
                first_frame.record(f);
                last_join = Instant::now();
            }
            Some(Err(kind)) => *errors.entry(kind).or_default() += 1,
            None => break,
        }
    }
    spawning.await?;
    let (held, failed) = (handshake.len(), errors.values().sum());
    let connect_secs = last_join.duration_since(started).as_secs_f64();
    let listen_overflows = procfs::listen_overflows().unwrap_or(0).saturating_sub(overflows_before);
    tokio::time::sleep(args.settle).await;
    let rss_held = rss_each(&args.server_pid);

    if args.wait_stdin {
        let ready = Ready { event: "ready".into(), held, failed, connect_secs };
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
    let release_secs = releasing.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_released = rss_each(&args.server_pid);
    let memory = (args.server_pid.iter().zip(rss_before).zip(rss_held).zip(rss_released)).map(
        |(((&pid, rss_before_kib), rss_held_kib), rss_released_kib)| ServerMemory {
            pid,
            rss_before_kib,
            rss_held_kib,
            rss_released_kib,
        },
    );
    Ok(HoldReport {
        mode: "hold".into(),
        requested: args.connections,
        held,
        failed,
        errors,
        connect_secs,
        handshakes_per_sec: if connect_secs > 0.0 { held as f64 / connect_secs } else { 0.0 },
        handshake: handshake.summary(),
        first_frame: first_frame.summary(),
        dropped_while_held: tally.dropped.load(Relaxed),
        pushes: tally.pushes.load(Relaxed),
        release_secs,
        unclean_closes: tally.unclean.load(Relaxed),
        servers: memory.collect(),
        listen_overflows,
    })
}
